"""Framework overhead: time per training step of the package's fastai SSL loop against a plain PyTorch loop.

Both loops do the same work on the same device, from the same initial weights, on the same pre-made batches
(`(x, y_lb)`, `x` the labelled weak and strong views then the unlabelled ones, made once by the real loader and kept
on the device, so that no data loading is timed): one forward pass of the dual batch, the DeFixMatch risk (`sup_loss`,
`fixmatch_h` on unlabelled and labelled views, `dessl_risk` of `defixmatch.losses`), backward, `torch.optim.SGD`
with Nesterov momentum and the two weight-decay groups, FixMatch's cosine learning rate, and the EMA of the weights
(`AveragedModel`'s EMA function, BatchNorm buffers copied). `PlainStep` is that plain step; `gpu_step.py` uses it too.

Timing: the fastai loop runs `fit_ssl` for one long epoch; every `--block` steps a callback synchronises the
device, records the block's time, then runs a block of plain steps (timed the same way) before the fastai loop goes
on. The two loops therefore alternate block by block, which cancels most of the drift of a shared machine. The
first block of each is warm-up and is dropped; the figures are medians over the remaining blocks of the time per
step. Before timing, the script checks that both loops give the same weights after the same steps.

    python benchmarks/step_overhead.py --net smallcnn --batch-size 16            # a small CNN
    python benchmarks/step_overhead.py --net wrn28-2 --batch-size 4 --block 4    # WRN-28-2, reduced batch
    python benchmarks/step_overhead.py --breakdown                               # time per callback and event
    python benchmarks/step_overhead.py --tiny                                    # seconds: the CI check
"""
import argparse, copy, math, statistics, sys, time, warnings
from collections import defaultdict
from pathlib import Path

import torch
from torch import nn, Tensor
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from defixmatch.losses import sup_loss, fixmatch_h, dessl_risk
from defixmatch.models import get_model

NETS = {'smallcnn': ('SmallCNN', {}), 'wrn28-2': ('WideResNet', dict(depth=28, widen_factor=2)),
        'tinycnn': ('SmallCNN', dict(width=8))}


# ----------------------------------------------------------------------------------------------------------------
# The plain PyTorch reference step

def param_groups(model:nn.Module, wd:float)->list:
    "Two SGD groups: weight decay `wd`, and none for normalisation parameters and names containing 'bn' (as the reference)."
    norm = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
    no_wd = {id(p) for m in model.modules() if isinstance(m, norm) for p in m.parameters(recurse=False)}
    decay, rest = [], []
    for n, p in model.named_parameters():
        if p.requires_grad: (rest if ('bn' in n or id(p) in no_wd) else decay).append(p)
    return [g for g in ({'params': decay, 'weight_decay': wd}, {'params': rest, 'weight_decay': 0.}) if g['params']]


class PlainStep:
    "One DeFixMatch (or FixMatch) training step in plain PyTorch, the work `ssl_learner(...).fit_ssl` does per step."
    def __init__(self, model:nn.Module, # the network, already on its device (and in its memory format)
                 num_train_iter:int=2**20, # K of the cosine schedule
                 lr:float=0.03, momentum:float=0.9, wd:float=5e-4, ema_m:float=0.999,
                 lambda_u:float=0.5, p_cutoff:float=0.95,
                 debiased:bool=True, # DeFixMatch (True) or FixMatch (False)
                 modified:bool=True, # supervised loss on weak and strong views (paper eq. 52)
                 amp:str|None=None, # None, 'bf16' or 'fp16' autocast of the forward pass
                 channels_last:bool=False, # feed the batch in channels-last memory format
                 forward=None, # callable used for the forward pass (e.g. a `torch.compile`d model); default `model`
                 check_labels:bool=True, # `sup_loss` checks the label range (one host sync per step on a GPU)
                 fused:bool=False, # `torch.optim.SGD(fused=True)`: one kernel for the whole update (CUDA)
                ):
        if amp not in (None, 'bf16', 'fp16'): raise ValueError(f"amp must be None, 'bf16' or 'fp16', got {amp!r}")
        self.model, self.forward = model, forward if forward is not None else model
        self.K, self.lr, self.lambda_u, self.p_cutoff = num_train_iter, lr, lambda_u, p_cutoff
        self.debiased, self.modified, self.channels_last, self.k = debiased, modified, channels_last, 0
        self.check_labels = check_labels
        self.opt = torch.optim.SGD(param_groups(model, wd), lr=lr, momentum=momentum, nesterov=True,
                                   **({'fused': True} if fused else {}))
        self.ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(ema_m), use_buffers=False)
        self.ema.update_parameters(model)
        self._p, self._ema_p = list(model.parameters()), list(self.ema.module.parameters())
        self._b, self._ema_b = list(model.buffers()), list(self.ema.module.buffers())
        dev = next(model.parameters()).device
        self.amp_dtype = {'bf16': torch.bfloat16, 'fp16': torch.float16}.get(amp)
        self.dev_type = dev.type
        self.scaler = torch.amp.GradScaler(dev.type, enabled=amp == 'fp16')

    def __call__(self, x:Tensor, # the step's images: labelled weak and strong views, then unlabelled weak and strong
                 y_lb:Tensor, # the labels of the labelled images
                )->Tensor:
        "Run one step; returns the (detached) risk."
        lr = self.lr * math.cos(7 * math.pi * self.k / (16 * self.K))
        for g in self.opt.param_groups: g['lr'] = lr
        n = y_lb.shape[0]
        if self.channels_last: x = x.contiguous(memory_format=torch.channels_last)
        self.model.train()
        with torch.autocast(self.dev_type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            logits = self.forward(x)
        logits = logits.float()
        lb_w, lb_s = logits[:n], logits[n:2 * n]
        ulb_w, ulb_s = logits[2 * n:].chunk(2)
        if self.check_labels: sup = sup_loss(lb_w, y_lb, lb_s if self.modified else None)
        else:  # the same value without the label-range check
            ce = lambda z: nn.functional.cross_entropy(z, y_lb, reduction='none')
            sup = ((ce(lb_w) + ce(lb_s)) / 2 if self.modified else ce(lb_w)).mean()
        h_ulb, _ = fixmatch_h(ulb_w, ulb_s, p_cutoff=self.p_cutoff)
        with torch.set_grad_enabled(self.debiased): h_lb, _ = fixmatch_h(lb_w, lb_s, p_cutoff=self.p_cutoff)
        loss = dessl_risk(sup, h_ulb, h_lb, self.lambda_u, debiased=self.debiased)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt); self.scaler.update()
        with torch.no_grad():
            self.ema.multi_avg_fn(self._ema_p, self._p, None)
            if self._b: torch._foreach_copy_(self._ema_b, self._b)
        self.k += 1
        return loss.detach()


# ----------------------------------------------------------------------------------------------------------------
# Data: a synthetic dataset through the real pipeline, then pre-made batches

def synthetic_data(n_train:int=2048, n_test:int=64, num_classes:int=10, seed:int=0):
    "An `SSLData` of random uint8 32x32 RGB images (the augmentation and the network cost the same on any content)."
    from defixmatch.data import SSLData
    g = torch.Generator().manual_seed(seed)
    x = lambda n: torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    y = lambda n: torch.arange(n) % num_classes
    return SSLData('synthetic', x(n_train), y(n_train), x(n_test), y(n_test), [str(i) for i in range(num_classes)],
                   (0.49, 0.48, 0.45), (0.25, 0.24, 0.26), True)

class _Cycle:
    "Iterable of `n` pre-made batches, cycling over `batches`: a training loader that loads nothing."
    n_inp = 1
    def __init__(self, batches, n): self.batches, self.n = batches, n
    def __len__(self): return self.n
    def __iter__(self): return (self.batches[i % len(self.batches)] for i in range(self.n))

def premade_dataloaders(batch_size:int, uratio:int, n_iter:int, device, n_batches:int=4, data=None):
    "`ssl_dataloaders` whose training loader yields `n_iter` steps of `n_batches` pre-made batches on `device`."
    from defixmatch.data import ssl_dataloaders
    data = synthetic_data() if data is None else data
    dls = ssl_dataloaders(data, num_labels=4 * data.num_classes, batch_size=batch_size, uratio=uratio,
                          n_iter=n_batches, eval_batch_size=64, num_workers=0, device=device)
    batches = [tuple(t.to(device) for t in b) for b in dls.train]
    dls.loaders[0] = _Cycle(batches, n_iter)
    return dls, batches


# ----------------------------------------------------------------------------------------------------------------
# `--lean`: a prototype of the changes proposed for `defixmatch.learner` (measured here, not part of the package)

def make_lean(learn, check_every:int=50):
    """Remove, in place, the per-step costs of the fastai loop that are not training work:
    1. dispatch each inner-loop event only to the callbacks whose class defines it (fastai calls every callback
       for every event, and a callback without the method costs a failed attribute lookup through `GetAttr`);
    2. keep the smoothed training loss on the device (fastai's `AvgSmoothLoss` copies the loss to the CPU every
       step, a host-device synchronisation on a GPU); the epoch's losses reach the CPU in one copy at its end;
    3. the progress bar reads the smoothed loss only when it redraws (about every 0.2 s);
    4. `StopOnNonFinite` accumulates a device-side flag and reads it every `check_every` steps and at the end of
       each epoch instead of every step (it still stops before the checkpoint that follows a bad step)."""
    import defixmatch.callbacks as dl
    from fastai.learner import AvgSmoothLoss
    from fastai.callback.core import Callback, CancelFitException, _inner_loop
    from fastai.callback.progress import ProgressCallback
    inner = set(_inner_loop)

    class AsyncStopOnNonFinite(dl.StopOnNonFinite):
        order = dl.StopOnNonFinite.order
        def before_train(self): self._bad, self._k = None, 0
        def after_batch(self):
            if not self.training: return
            bad = ~torch.isfinite(self.learn.loss.detach()).all()
            self._bad = bad if self._bad is None else self._bad | bad
            self._k += 1
            if self._k % check_every == 0: self._check()
        def after_train(self): self._check()
        def _check(self):
            if self._bad is None or not bool(self._bad): return
            it = getattr(self.learn, 'iteration', self.train_iter)
            self.message = (f"non-finite training loss by iteration {it}: training stopped, "
                            "no checkpoint was written after the last evaluation")
            warnings.warn(self.message)
            raise CancelFitException()

    class LeanLearner(type(learn)):
        def __call__(self, event_name):
            if isinstance(event_name, str): self._call_one(event_name)
            else:
                for e in event_name: self._call_one(e)
        def _call_one(self, event_name):
            cache = self.__dict__.setdefault('_cb_cache', {})
            cbs = cache.get(event_name)
            if cbs is None:
                cbs = [c for c in self.cbs.sorted('order') if event_name not in inner or callable(getattr(type(c), event_name, None))]
                cache[event_name] = cbs
            for cb in cbs: cb(event_name)
        def add_cb(self, cb): self.__dict__.pop('_cb_cache', None); return super().add_cb(cb)
        def remove_cb(self, cb): self.__dict__.pop('_cb_cache', None); return super().remove_cb(cb)
        def fit(self, *args, cbs=None, **kwargs):
            for c in (cbs or []):  # the same object, so that `fit_ssl` reads the message it records
                if type(c) is dl.StopOnNonFinite: c.__class__ = AsyncStopOnNonFinite
            return super().fit(*args, cbs=cbs, **kwargs)
    learn.__class__ = LeanLearner

    class DeviceSmoothLoss(AvgSmoothLoss):
        def accumulate(self, learn):
            self.count += 1
            v = learn.loss.detach().float().mean()
            self.val = v * (1 - self.beta) if self.count == 1 else torch.lerp(v, self.val, self.beta)
    rec = learn.recorder
    rec.smooth_loss = DeviceSmoothLoss(beta=rec.smooth_loss.beta)

    class HostLosses(Callback):
        "Move the epoch's smoothed losses to the CPU in one copy, at the end of training."
        order = 51
        def before_train(self): self.start = len(self.recorder.losses)
        def after_train(self):
            ls = self.recorder.losses
            if len(ls) > self.start and isinstance(ls[-1], torch.Tensor) and ls[-1].device.type != 'cpu':
                ls[self.start:] = list(torch.stack(ls[self.start:]).cpu().unbind())
            if isinstance(getattr(self.learn, 'smooth_loss', None), torch.Tensor): self.learn.smooth_loss = self.learn.smooth_loss.cpu()
    learn.add_cb(HostLosses())

    if isinstance(getattr(learn, 'progress', None), ProgressCallback):
        class LeanProgress(ProgressCallback):
            def after_batch(self):
                pb, i = self.pbar, self.iter + 1
                if i < pb.last_v + pb.wait_for and i < pb.total: return
                pb.update(i)
                if hasattr(self, 'smooth_loss'): pb.comment = f'{float(self.smooth_loss):.4f}'
        object.__setattr__(learn.progress, '__class__', LeanProgress)  # (fastai's Callback.__setattr__ would warn)
    return learn


# ----------------------------------------------------------------------------------------------------------------
# Timing

def sync(device):
    if torch.device(device).type == 'cuda': torch.cuda.synchronize(device)

def make_pair(net:str, num_classes:int, device, channels_last:bool=False, seed:int=0):
    "Two identical copies of the network `net` on `device`."
    torch.manual_seed(seed)
    name, kw = NETS[net]
    m = get_model(name, num_classes, **kw).to(device)
    if channels_last: m = m.to(memory_format=torch.channels_last)
    return m, copy.deepcopy(m)

def _interleave_cb(block, plain_block, device):
    from fastai.callback.core import Callback
    class Interleave(Callback):
        "Every `block` fastai steps: record their time, then time a block of plain steps."
        order = 1000  # after every other callback
        def before_fit(self): self.t0, self.k, self.fastai, self.plain = None, 0, [], []
        def after_batch(self):
            if not self.training: return
            self.k += 1
            if self.k % block: return
            sync(device); t, c = time.perf_counter(), time.process_time()
            if self.t0 is not None: self.fastai.append(((t - self.t0) / block, (c - self.c0) / block))
            self.plain.append(plain_block())
            sync(device); self.t0, self.c0 = time.perf_counter(), time.process_time()
    return Interleave()

def check_same_work(net, batch_size, uratio, device, amp=None, steps=3):
    "Largest difference between the weights (and EMA weights) of both loops after `steps` identical steps."
    from defixmatch.learner import ssl_learner
    dls, batches = premade_dataloaders(batch_size, uratio, steps, device)
    m_fa, m_pl = make_pair(net, 10, device)
    learn = ssl_learner(dls, m_fa, 'defixmatch', save_dir=None, amp=amp)
    with learn.no_bar(), learn.no_logging(): learn.fit_ssl(steps)
    plain = PlainStep(m_pl, num_train_iter=steps, amp=amp)
    for i in range(steps): plain(*batches[i % len(batches)])
    d = max((a - b).abs().max().item() for a, b in zip(m_fa.parameters(), m_pl.parameters()))
    d_ema = max((a - b).abs().max().item() for a, b in zip(learn.ema.module.parameters(), plain.ema.module.parameters()))
    return d, d_ema

def measure(net:str='smallcnn', batch_size:int=16, uratio:int=7, device='cpu', amp=None, channels_last=False,
            blocks:int=8, block:int=5, progress_bar:bool=True, breakdown:bool=False, compile_model:bool=False,
            lean:bool=False):
    "Median time per step of the fastai loop and of the plain loop, interleaved block by block. Returns a dict."
    from defixmatch.learner import ssl_learner
    device = torch.device(device)
    K = (blocks + 1) * block
    dls, batches = premade_dataloaders(batch_size, uratio, K, device)
    m_fa, m_pl = make_pair(net, 10, device, channels_last)
    fwd = torch.compile(m_pl) if compile_model else None
    plain = PlainStep(m_pl, num_train_iter=K, amp=amp, channels_last=channels_last, forward=fwd)
    for i in range(block): plain(*batches[i % len(batches)])          # warm-up of the plain loop
    state = {'i': 0}
    def plain_block():
        t, c = time.perf_counter(), time.process_time()
        for _ in range(block):
            plain(*batches[state['i'] % len(batches)]); state['i'] += 1
        sync(device)
        return (time.perf_counter() - t) / block, (time.process_time() - c) / block
    if compile_model: m_fa = torch.compile(m_fa)
    learn = ssl_learner(dls, m_fa, 'defixmatch', save_dir=None, amp=amp)
    if lean: make_lean(learn)
    if channels_last:
        from fastai.callback.core import Callback
        class ChannelsLast(Callback):
            order = -4.5
            def before_batch(self):
                if self.training: self.learn.xb = tuple(x.contiguous(memory_format=torch.channels_last) for x in self.xb)
        learn.add_cb(ChannelsLast())
    cb = _interleave_cb(block, plain_block, device)
    times = defaultdict(float) if breakdown else None
    if breakdown: _patch_callback_timing(times)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            if progress_bar: learn.fit_ssl(K, cbs=[cb])
            else:
                with learn.no_bar(), learn.no_logging(): learn.fit_ssl(K, cbs=[cb])
    finally:
        if breakdown: _unpatch_callback_timing()
    fa, pl = cb.fastai, cb.plain[1:]  # warm-up: the first fastai block is never recorded; drop the first plain block
    med = lambda xs, j: 1e3 * statistics.median(x[j] for x in xs)
    res = dict(net=net, batch_size=batch_size, uratio=uratio, images=2 * batch_size * (1 + uratio), device=str(device),
               amp=amp, channels_last=channels_last, blocks=len(fa), block=block, progress_bar=progress_bar,
               threads=torch.get_num_threads(), lean=lean, fastai_ms=med(fa, 0), plain_ms=med(pl, 0),
               fastai_cpu_ms=med(fa, 1), plain_cpu_ms=med(pl, 1))
    res['ratio'], res['ratio_cpu'] = res['fastai_ms'] / res['plain_ms'], res['fastai_cpu_ms'] / res['plain_cpu_ms']
    res['ratio_blocks'] = [a[0] / b[0] for a, b in zip(fa, pl)]
    res['median_block_ratio'] = statistics.median(res['ratio_blocks'])
    if breakdown: res['breakdown_us'] = {k: 1e6 * v / K for k, v in sorted(times.items(), key=lambda kv: -kv[1])}
    return res

_orig_call = None
def _patch_callback_timing(acc):
    "Time every callback call, per (callback, event)."
    global _orig_call
    from fastai.callback.core import Callback
    _orig_call = Callback.__call__
    def timed(self, event_name):
        t = time.perf_counter()
        try: return _orig_call(self, event_name)
        finally:
            if event_name in ('before_batch', 'after_pred', 'after_loss', 'before_backward', 'after_backward',
                              'before_step', 'after_step', 'after_batch', 'after_cancel_batch'):
                acc[(type(self).__name__, event_name)] += time.perf_counter() - t
    Callback.__call__ = timed

def _unpatch_callback_timing():
    from fastai.callback.core import Callback
    if _orig_call is not None: Callback.__call__ = _orig_call


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--net', default='smallcnn', choices=list(NETS))
    p.add_argument('--batch-size', type=int, default=16, help='labelled images per step (B); the step sees 2(B + uratio B)')
    p.add_argument('--uratio', type=int, default=7)
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--amp', default=None, choices=['bf16', 'fp16'])
    p.add_argument('--channels-last', action='store_true')
    p.add_argument('--compile', action='store_true', help='torch.compile the network in both loops')
    p.add_argument('--blocks', type=int, default=8, help='timed blocks per loop (plus one of warm-up)')
    p.add_argument('--block', type=int, default=5, help='steps per block')
    p.add_argument('--no-bar', action='store_true', help="fastai loop without its progress bar")
    p.add_argument('--lean', action='store_true', help='fastai loop with the proposed changes (see make_lean)')
    p.add_argument('--breakdown', action='store_true', help='also report the time spent in each callback and event')
    p.add_argument('--threads', type=int, default=None, help='torch.set_num_threads (CPU)')
    p.add_argument('--tiny', action='store_true', help='a few seconds: tiny CNN, 2 blocks of 2 steps (CI check)')
    a = p.parse_args(argv)
    if a.threads: torch.set_num_threads(a.threads)
    if a.tiny: a.net, a.batch_size, a.uratio, a.blocks, a.block = 'tinycnn', 2, 2, 2, 2
    d, d_ema = check_same_work(a.net, a.batch_size, a.uratio, a.device)
    print(f"same work: largest weight difference after 3 steps {d:.2e} (EMA {d_ema:.2e})")
    if not (d < 1e-4 and d_ema < 1e-4): sys.exit("the fastai loop and the plain loop do not compute the same step")
    r = measure(a.net, a.batch_size, a.uratio, a.device, a.amp, a.channels_last, a.blocks, a.block,
                progress_bar=not a.no_bar, breakdown=a.breakdown, compile_model=a.compile, lean=a.lean)
    print(f"\n{r['net']} on {r['device']}: {r['images']} images per step (B={r['batch_size']}, uratio={r['uratio']}), "
          f"amp={r['amp']}, channels_last={r['channels_last']}, threads={torch.get_num_threads()}, "
          f"progress bar={'on' if r['progress_bar'] else 'off'}, lean={r['lean']}")
    print(f"median time per step over {r['blocks']} blocks of {r['block']} steps (wall clock; CPU time of the process):")
    print(f"  fastai loop (ssl_learner.fit_ssl): {r['fastai_ms']:9.2f} ms   {r['fastai_cpu_ms']:9.2f} ms")
    print(f"  plain PyTorch loop (PlainStep):    {r['plain_ms']:9.2f} ms   {r['plain_cpu_ms']:9.2f} ms")
    print(f"  ratio fastai / plain:              {r['ratio']:9.3f}      {r['ratio_cpu']:9.3f}")
    print(f"  median of the per-block ratios (wall): {r['median_block_ratio']:.3f}; per block: {', '.join(f'{x:.3f}' for x in r['ratio_blocks'])}")
    if a.breakdown:
        print("time in callbacks, per step (µs):")
        items = [(k, us) for k, us in r['breakdown_us'].items() if k[0] != 'Interleave']
        for (cb, ev), us in items[:15]: print(f"  {cb:22s} {ev:14s} {us:8.1f}")
        print(f"  {'all callbacks and events (' + str(len(items)) + ' pairs)':37s} {sum(us for _, us in items):8.1f}")
    return r

if __name__ == '__main__': main()
