"""The IPW weighting of informative labels is the base's, for every registered method: at constant φ it is today's risk
(value and gradient), otherwise the weighted risk of the method's own per-image terms (plus any term a method adds beside
the base's risk, which the weighting leaves as it is)."""
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from defixmatch.informative import ipw_risk, ipw_weights
from defixmatch.methods import SSL_METHODS, SSLMethod, load_package_methods, make_method, method_class

load_package_methods()
C, N_LB, N_ULB = 4, 6, 12


def _method(name, lam):
    kw = {'p_cutoff': 0.3} if 'p_cutoff' in method_class(name).hyperparams() else {}
    m = make_method(name, **kw, **({} if name == 'complete_case' else {'lambda_u': lam}))
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, C))
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, C))
    m.learn = SimpleNamespace(model=net, ema=SimpleNamespace(module=teacher))  # VAT reads the network, Mean Teacher the EMA one
    return m


def _loss(m, y):
    "The method's risk and the gradient of its network's weights, on one fixed batch of two views."
    torch.manual_seed(1)
    x = torch.randn(len(m.views) * (N_LB + N_ULB), 3, 4, 4)
    model = m.learn.model; model.zero_grad()
    torch.manual_seed(2)   # the same random draws inside h (VAT's direction, Π's noise) for every call
    r = m.loss(model(x), y, x=x)
    r.backward()
    return r.detach(), model[1].weight.grad.clone()


@pytest.mark.parametrize('name', sorted(SSL_METHODS))
def test_ipw_in_the_base(name):
    assert len(SSL_METHODS) >= 20   # every package method is registered
    y = torch.arange(N_LB) % C
    m0 = _method(name, 0.7); r0, g0 = _loss(m0, y); t0 = m0.terms
    plain = t0.l_lb.mean() + m0.lam * (t0.h_ulb.mean() - (t0.h_lb.mean() if m0.debiased else 0))
    extra = r0 - plain   # a term a method adds beside the base's risk (VAT + EntMin's VAT term), else 0
    if type(m0).loss is SSLMethod.loss: assert extra == 0
    m = _method(name, 0.7); m.set_label_probs([0.25] * C, rho=0.25)
    r1, g1 = _loss(m, y)
    torch.testing.assert_close(r1, r0); torch.testing.assert_close(g1, g0)         # constant φ: today's risk
    phi = torch.tensor([0.6, 0.4, 0.2, 0.1])
    m = _method(name, 0.7); m.set_label_probs(phi, rho=0.3)
    r2, _ = _loss(m, y); t = m.terms
    a, _ = ipw_weights(y, phi, 0.3)
    lam = m.lam
    if lam == 0: want = (a * t.l_lb).mean()
    elif m.debiased: want = ipw_risk(t.l_lb, t.h_lb, t.h_ulb, y, phi, lam, rho=0.3)
    else: want = (a * t.l_lb).mean() + lam * t.h_ulb.mean()
    torch.testing.assert_close(r2, (want + extra).to(r2.dtype))
    assert not torch.isclose(r2, r0)   # the weighting acts (the labelled classes differ in φ)
