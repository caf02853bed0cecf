"""Cost and sharpness analyses of KAN and MLP neural ODEs.

* Parameter counts (:mod:`~kanode.analysis.params`): KAN layer
  ``I·O·(G + S + 2)``, linear layer ``O·(I + 1)``, whole networks.
* Memory models (:mod:`~kanode.analysis.memory_model`): Eq. 1 of Pal & Das
  (2024) and the exact count of what the dense (efficient-kan) layer saves
  for backward; measured by :func:`saved_elements`.
* The cost table over layer sizes (:mod:`~kanode.analysis.cost`) and the
  peak memory of one training step (:mod:`~kanode.analysis.step_memory`).
* Hessian spectra (:mod:`~kanode.analysis.hessian`): a run's training loss
  as ``f(theta)`` (:func:`load_objective`), exact Hessians from batched
  Hessian-vector products, Lanczos extremes, Hutchinson trace, SLQ density.

``python -m kanode.analysis {cost,memory,hessian} ... --out DIR`` runs them.
"""

from kanode.analysis.cost import COST_COLUMNS, cost_row, cost_summary, cost_table
from kanode.analysis.hessian import (EXACT_MAX_PARAMS, SLQDensity, exact_hessian, hutchinson_trace,
                                     hvp_operator, lanczos_extremes, slq_density)
from kanode.analysis.hessian_run import HessianResult, find_runs, run_hessian
from kanode.analysis.memory_model import (dense_saved_elements, eq1_extra_elements, fc_saved_elements,
                                          kanode_saved_elements)
from kanode.analysis.objective import load_objective, load_run_field, objective_of
from kanode.analysis.params import (config_params, kan_layer_params, kan_params, linear_params, mlp_params,
                                    rswaf_layer_params)
from kanode.analysis.saved import saved_elements, saved_storages
from kanode.analysis.spectra import spectrum_stats, write_table
from kanode.analysis.step_memory import peak_bytes, step_memory, step_memory_table

__all__ = [
    "COST_COLUMNS", "EXACT_MAX_PARAMS", "HessianResult", "SLQDensity", "config_params", "cost_row",
    "cost_summary", "cost_table", "dense_saved_elements", "eq1_extra_elements", "exact_hessian",
    "fc_saved_elements", "find_runs", "hutchinson_trace", "hvp_operator", "kan_layer_params", "kan_params",
    "kanode_saved_elements", "lanczos_extremes", "linear_params", "load_objective", "load_run_field", "mlp_params",
    "objective_of", "peak_bytes", "rswaf_layer_params", "run_hessian", "saved_elements", "saved_storages",
    "slq_density", "spectrum_stats", "step_memory", "step_memory_table", "write_table",
]
