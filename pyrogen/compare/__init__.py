r"""Train one VAE under several objectives with the same seed and budget; table and figures.

``pyrogen compare`` (or :func:`run`) fits the same architecture, from the same initial
weights, on the same mini-batches, once per objective, on the
:class:`~pyrogen.inference.Trainer`, then scores every fit the same way: the
importance-sampled test log-likelihood with K particles (5000 by default; Burda et al.,
2015), the last epoch's training bound, seconds per epoch and active units. It writes to the
output folder:

* ``results.md``, ``results.csv``, ``results.json``: the table (and per-epoch histories in
  the JSON);
* ``curves.png``: training bound and held-out log-likelihood per epoch;
* ``samples.png``: mean images decoded from prior draws, one panel per objective;
* ``checkpoints/<objective>.pt``: the trainer's checkpoints, written atomically after every
  epoch and on Ctrl-C. ``--resume`` continues from them and ends with the same numbers as an
  uninterrupted run (CPU, fixed seed); an objective already finished is not trained again.

Objectives are named ``elbo``, ``iwae[:K]``, ``renyi:ALPHA[:K]``, ``vrmax[:K]`` (K defaults
to 5): the default set is ELBO, IWAE (K = 5), Rényi alpha = 0.5 and alpha = -1 (K = 5), and
VR-max (K = 5), as in Variational Inference with Rényi Divergence (Li & Turner, 2016,
https://arxiv.org/abs/1602.02311). ``avb`` and ``avb-ac`` (Adversarial Variational Bayes,
without and with adaptive contrast; not in the default set) train an implicit encoder with a
critic beside the same decoder, and are scored from a Gaussian fitted to its draws;
``sc[:NU[:K]]`` (self-contrastive NCE, On distinguishability criteria for estimating
generative models, Goodfellow, 2014, https://arxiv.org/abs/1412.6515; not in the default
set) trains the same VAE against a frozen copy of itself renewed every 5 epochs (see
:mod:`~pyrogen.compare.run`).

Modules: :mod:`~pyrogen.compare.config` (settings, objective names),
:mod:`~pyrogen.compare.run` (data, fitting, scoring), :mod:`~pyrogen.compare.report` (table
and figures), :mod:`~pyrogen.compare.cli` (the command).
"""

from pyrogen.compare.config import (
    DATASETS,
    DEFAULT_OBJECTIVES,
    CompareConfig,
    ObjectiveSpec,
    parse_objective,
)
from pyrogen.compare.run import Data, run

__all__ = [
    "DATASETS",
    "DEFAULT_OBJECTIVES",
    "CompareConfig",
    "Data",
    "ObjectiveSpec",
    "parse_objective",
    "run",
]
