"""Debiased semi-supervised learning (DeSSL, DeFixMatch) as fastai callbacks, derived in notebooks

Modules:

- `defixmatch.config`: The flags of `defixmatch-train`, a configuration file (`--config`), and the defaults, resolved and checked once into the one configuration that training, `config.json` and evaluation read. The flags of each method come from the method itself."""

__version__ = "0.0.1"
