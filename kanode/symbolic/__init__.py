"""Equations from data: sparsify, prune and symbolify a KAN vector field, export the ODE.

Pure functions over models (each takes a model and returns a new one or a result):

* :func:`edge_scores`, :func:`attribution` — scores on the states the data visits;
* :func:`sparsity_regularizer` — the KAN paper's L1 + entropy penalty as a ``Trainer`` regulariser;
* :func:`prune` — a genuinely smaller KAN;
* :func:`fit_candidates`, :func:`select`, :func:`symbolify` — per-edge symbolic fits;
* :class:`SymbolicKANLayer` — trainable symbolic edges mixed with spline edges;
* :func:`to_sympy`, :func:`simplify`, :func:`latex`, :func:`numpy_function`, :func:`to_system` — export;
* :func:`polish`, :func:`fit_initial_states` — the formula's coefficients, terms and initial
  states fitted through its own trajectories;
* :func:`polish_from`, :func:`term_library` — the polish started from a given formula or from
  every library term at zero (the ablation of what the KAN contributes);
* :func:`judge` — whether the formula reproduces the data (:mod:`kanode.symbolic.verdict`);
* :func:`smoothed_derivatives`, :func:`default_candidates`, :func:`stlsq`, :func:`threshold_path`,
  :func:`select_model`, :func:`sparse_start` — the sparse regression start (derivative estimates,
  the data-scaled candidate terms, STLSQ over a threshold path chosen by its trajectories);
* :func:`discover` — the whole recipe (``python -m kanode.symbolic``): :func:`discover_sparse`
  (the default) or :func:`discover_kan`; :class:`SymbolicConfig` its settings.
"""

from .ablation import TermSet, polish_from, term_library
from .edge_fit import CandidateFit, EdgeChoice, fit_candidates, select
from .export import Formula, NotSymbolicError, latex, numpy_function, python_source, simplify, to_sympy, to_system
from .library import LIBRARY, Candidate, get_candidate
from .pipeline import Discovery, DiscoveryError, discover_kan, formula_mse
from .recipe import discover
from .candidates import default_candidates, evaluate_candidates
from .derivatives import Derivatives, field_derivatives, smoothed_derivatives
from .sparse import (SparseModel, admissible_limit, backward_path, best_subsets, forward_path, refine_equations,
                     select_model, stlsq, threshold_path, tolerance_models)
from .sparse_recipe import SparseStart, discover_sparse, sparse_start
from .polish import Polished, SelectionStep, TermModel, fit_initial_states, polish
from .prune import PruneError, PruneWarning, connectivity, prune
from .regularize import coefficient_l1, member_sparsity_regularizer, score_l1, sparsity_penalty, sparsity_regularizer
from .scores import Scores, attribution, edge_scores, layer_inputs, training_inputs
from .settings import SymbolicConfig
from .symbolic_layer import PRUNED, SPLINE, SYMBOLIC, SymbolicKANLayer, as_mixed, set_edge
from .symbolify import EdgeReport, symbolify
from .verdict import FORMULA_TOLERANCE, Verdict, judge

__all__ = [
    "Derivatives", "SparseModel", "SparseStart", "default_candidates", "discover_kan", "discover_sparse",
    "evaluate_candidates", "field_derivatives", "select_model", "admissible_limit", "backward_path", "best_subsets",
    "forward_path", "refine_equations", "tolerance_models", "smoothed_derivatives", "sparse_start", "stlsq",
    "threshold_path", "FORMULA_TOLERANCE", "LIBRARY", "Polished", "SelectionStep", "Verdict", "fit_initial_states", "judge", "PRUNED", "SPLINE", "SYMBOLIC", "Candidate", "CandidateFit", "Discovery", "DiscoveryError",
    "EdgeChoice", "EdgeReport", "Formula", "NotSymbolicError", "PruneError", "PruneWarning", "Scores", "SymbolicConfig",
    "SymbolicKANLayer", "TermModel", "TermSet", "polish_from", "term_library", "as_mixed", "attribution",
    "coefficient_l1", "connectivity", "discover", "edge_scores", "fit_candidates", "formula_mse", "get_candidate",
    "latex", "layer_inputs", "member_sparsity_regularizer",
    "numpy_function", "polish", "prune", "python_source", "score_l1", "select", "set_edge", "simplify",
    "sparsity_penalty", "sparsity_regularizer", "symbolify", "to_sympy", "to_system", "training_inputs",
]
