"""Optimisers over M members at once (a single model is M = 1).

``BatchedAdam`` and ``BatchedLBFGS`` take a module's named parameters, each
(M, ...) for an ensemble or the single model's own, and update member m
exactly as ``torch.optim.Adam`` / ``torch.optim.LBFGS(line_search_fn=
"strong_wolfe")`` would update a model holding member m's parameters (the
L-BFGS differences are listed in :mod:`kanode.optim.lbfgs`). Single fits and
ensemble members therefore run one algorithm. Per-member learning rates and
an ``active`` mask (frozen members keep their state) come with each step;
``member_state(m)`` / ``load_member_state(m, state)`` move one member's state
in the single-model format, so an ensemble member's checkpoint resumes as a
single fit and back.

``levenberg_marquardt`` is the one optimiser over a single flat parameter vector: the
damped Gauss–Newton steps of :mod:`kanode.polish`, after a fit.
"""

from kanode.optim.adam import BatchedAdam
from kanode.optim.lbfgs import BatchedLBFGS
from kanode.optim.levenberg import LMResult, levenberg_marquardt
from kanode.optim.line_search import cubic_minimum, strong_wolfe

OPTIMIZERS = {"adam": BatchedAdam, "lbfgs": BatchedLBFGS}

__all__ = ["BatchedAdam", "BatchedLBFGS", "LMResult", "OPTIMIZERS", "cubic_minimum", "levenberg_marquardt",
           "strong_wolfe"]
