"""Ensembles: M same-shape models stacked on a leading member axis.

Parameters are (M, ...) and states (M, batch, ...); member ``m`` computes
exactly what the single model it was stacked from computes (to rounding).
Stack single models, work on the stack, take members back out::

    from kanode.ensemble import EnsembleVectorField, solve_ensemble
    field = EnsembleVectorField.from_fields([field_0, ..., field_31])
    y = solve_ensemble(field, y0.expand(32, -1, -1), t, method="rk4", step_size=0.1)
    best = field.member(7)                      # a kanode.ode.VectorField
    field.load_member(3, other.state_dict())    # any single model of that shape

Per-member state: ``member_state_dict(m)`` is the single model's state dict;
the ensemble's state-dict keys are the single model's, with a member axis.
``flatten_members(ensemble.parameters())`` is (M, P), row m member m's
parameter vector (for per-member optimisers).

Training: :class:`kanode.train.Trainer` trains an ensemble field (a single fit is an
ensemble of one); :func:`kanode.fitting.fit_ensemble` adds one normal run directory per
member; ``check_packable`` / ``pack_groups`` say which configs can share one.
"""

from kanode.ensemble._members import flatten_members, unflatten_members
from kanode.ensemble._stacked import EnsembleKANLayer, EnsembleLinear, EnsembleRSWAFLayer
from kanode.ensemble.field import EnsembleVectorField
from kanode.ensemble.networks import ENSEMBLES, EnsembleKAN, EnsembleMLP, stack_models
from kanode.ensemble.solve import NORMS, finite_members, member_rms_norm, solve_ensemble
from kanode.ensemble.data import StackedData
from kanode.ensemble.packing import MEMBER_FIELDS, check_packable, pack_groups, pack_key

__all__ = [
    "ENSEMBLES",
    "MEMBER_FIELDS",
    "StackedData",
    "check_packable",
    "pack_groups",
    "pack_key",
    "NORMS",
    "EnsembleKAN",
    "EnsembleKANLayer",
    "EnsembleLinear",
    "EnsembleMLP",
    "EnsembleRSWAFLayer",
    "EnsembleVectorField",
    "finite_members",
    "flatten_members",
    "member_rms_norm",
    "solve_ensemble",
    "stack_models",
    "unflatten_members",
]
