"""Ensemble networks: M same-shape KANs or MLPs stacked on a member axis.

``stack_models([model_0, ..., model_{M-1}])`` picks the ensemble class from
the models' type (one table, ``ENSEMBLES``); ``ensemble.member(m)`` gives
member ``m`` back as a single model, with the same state dict as the model
it was stacked from (parameters and buffers, per-member knots included).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from kanode.ensemble._members import MemberState, check_ensemble_input, check_members, check_same
from kanode.ensemble._stacked import EnsembleKANLayer, EnsembleLinear, EnsembleRSWAFLayer, layer_settings
from kanode.nn import KAN, MLP
from kanode.nn.network import LAYERS

_LAYERS = {"bspline": EnsembleKANLayer, "rswaf": EnsembleRSWAFLayer}


class EnsembleKAN(MemberState, KAN):
    """M KANs of equal widths and settings, (M, ..., widths[0]) → (M, ..., widths[-1]).

    A :class:`kanode.nn.KAN` with ``members=M`` (the same code: forward,
    ``update_grid`` and ``extend_grid`` per member, ``regularization`` (M,)),
    built from single KANs; ``layers`` holds one :class:`EnsembleKANLayer`
    (``basis="bspline"``) or :class:`EnsembleRSWAFLayer` (``"rswaf"``) per KAN
    layer; the state-dict keys are the KAN's (``layers.0.spline_coef`` …) with
    a leading member axis.
    """

    def __init__(self, models: Sequence[KAN]) -> None:
        nn.Module.__init__(self)
        models = check_members("KAN", models, KAN)
        check_same("KAN", models, ("__class__", "widths", "basis"))
        self.n_members = self.members = len(models)
        self.model_type = type(models[0])  # KAN or a subclass (kanode.nn.RSWAF): what member() returns
        self.widths, self.basis = list(models[0].widths), models[0].basis
        layer_cls = _LAYERS[self.basis]
        self.layers = nn.ModuleList(layer_cls([model.layers[n] for model in models])
                                    for n in range(len(self.widths) - 1))

    @classmethod
    def from_models(cls, models: Sequence[KAN]) -> "EnsembleKAN":
        """The ensemble of ``models`` (the constructor): member m is models[m]."""
        return cls(models)

    def member(self, m: int) -> KAN:
        """Member ``m`` as a new single model of the stacked models' class (copies)."""
        m = self._check_member(m)
        settings = layer_settings(self.layers[0], LAYERS[self.basis])
        if self.model_type is KAN:
            kan = KAN(self.widths, basis=self.basis, generator=torch.Generator(), **settings)
        else:  # a subclass fixes its basis
            kan = self.model_type(self.widths, generator=torch.Generator(), **settings)
        kan.layers = nn.ModuleList(layer.member(m) for layer in self.layers)
        return kan

    @torch.no_grad()
    def update_grid(self, x: Tensor) -> None:
        """Each member's :meth:`KAN.update_grid` on its own states x[m], x: (M, ..., widths[0]).

        Every layer refits all members at once (:meth:`kanode.nn.KANLayer.update_grid`
        with a member axis); the activations passed to the next layer are each
        member's single-layer forward, so the result is bitwise the single
        models' (a host loop over members for that forward only; grid updates are rare).
        """
        check_ensemble_input(x, self.n_members, self.widths[0])
        x = x.reshape(self.n_members, -1, self.widths[0])
        for layer in self.layers:
            layer.update_grid(x)
            x = torch.stack([layer.member(m)(x[m]) for m in range(self.n_members)])


class EnsembleMLP(MemberState, MLP):
    """M MLPs of equal widths and activation, (M, ..., widths[0]) → (M, ..., widths[-1]).

    A :class:`kanode.nn.MLP` with ``members=M`` built from single MLPs: ``net``
    mirrors the MLP's ``net`` with each ``Linear`` an :class:`EnsembleLinear`
    (a :class:`kanode.nn.linear.Linear` with a member axis), so the state-dict
    keys are the MLP's (``net.0.weight`` …) with a leading member axis.
    """

    def __init__(self, models: Sequence[MLP]) -> None:
        nn.Module.__init__(self)
        models = check_members("MLP", models, MLP)
        check_same("MLP", models, ("__class__", "widths", "activation"))
        self.n_members = self.members = len(models)
        self.widths, self.activation = list(models[0].widths), models[0].activation
        layers: list[nn.Module] = []
        for n, module in enumerate(models[0].net):
            if isinstance(module, nn.Linear):
                layers.append(EnsembleLinear([model.net[n] for model in models]))
            else:  # a parameter-free elementwise activation
                layers.append(type(module)())
        self.net = nn.Sequential(*layers)

    @classmethod
    def from_models(cls, models: Sequence[MLP]) -> "EnsembleMLP":
        """The ensemble of ``models`` (the constructor): member m is models[m]."""
        return cls(models)

    def member(self, m: int) -> MLP:
        """Member ``m`` as a new single :class:`kanode.nn.MLP` (copies; no RNG use)."""
        m = self._check_member(m)
        weight = self.net[0].weight
        with torch.device("meta"):
            mlp = MLP(self.widths, activation=self.activation)
        mlp = mlp.to_empty(device=weight.device).to(weight.dtype)
        mlp.load_state_dict(self.member_state_dict(m))
        return mlp


# model type → ensemble class; the one place that maps single models to ensembles
ENSEMBLES: dict[type, type] = {KAN: EnsembleKAN, MLP: EnsembleMLP}


def stack_models(models: Sequence[nn.Module]) -> EnsembleKAN | EnsembleMLP:
    """An ensemble of ``models`` (all KANs or all MLPs of one shape); member m is models[m]."""
    models = list(models)
    if not models:
        raise ValueError("an ensemble needs at least one model; got an empty list")
    for kind in type(models[0]).__mro__:  # subclasses (kanode.nn.RSWAF) stack as their base
        if kind in ENSEMBLES:
            return ENSEMBLES[kind](models)
    raise TypeError(f"no ensemble for {type(models[0]).__name__} models; stackable: "
                    f"{', '.join(k.__name__ for k in ENSEMBLES)} and their subclasses")
