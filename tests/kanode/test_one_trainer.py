"""One trainer for single fits and ensembles: a single fit (``fit``), the same config as an
ensemble of one, and as a member of an ensemble of eight (the others with other seeds and
learning rates) take the same steps; a packed sparsity ensemble's member is its single fit,
and its penalty is the single-model penalty of :mod:`kanode.symbolic.regularize`.

Classic RK4 (fixed steps: a member's solve is its single solve, to rounding), a short
Lotka–Volterra window, small networks.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from kanode.config import FitConfig
from kanode.fit import fit
from kanode.fitting import fit_ensemble
from kanode.lifecycle import make_trainer, prepare
from kanode.ode import VectorField
from kanode.symbolic.regularize import sparsity_regularizer
from kanode.train import Trainer

SMALL = dict(method="rk4", train_fraction=0.1, widths=[2, 5, 2], grid_size=5, n_test_traj=1,
             eval_every=5, plots=False, model="kan", optimizer="adam+lbfgs", steps=15, lbfgs_steps=5)
AT = 3  # the single fit's place among the eight members


def rel_errs(got: list[float], want: list[float]) -> list[float]:
    assert len(got) == len(want)
    return [0.0 if g == w else abs(g - w) / abs(w) for g, w in zip(got, want)]


def column(history: list[dict[str, Any]], name: str, phase: str) -> list[float]:
    return [row[name] for row in history if row["phase"] == phase]


def others(config: FitConfig, n: int) -> list[FitConfig]:
    """Other members: their own seeds, learning rates and L-BFGS step scales."""
    return [config.replace(seed=10 + k, lr=config.lr * (0.5 + 0.25 * k), lbfgs_lr=0.6 + 0.05 * k)
            for k in range(n)]


@pytest.mark.parametrize("settings", [dict(), dict(l2=1e-3, grad_clip=0.05)], ids=["plain", "l2-clipped"])
def test_a_single_fit_is_its_ensemble_of_one_and_its_member_of_eight(settings: dict[str, Any]) -> None:
    config = FitConfig(seed=4, lr=2e-2, **SMALL, **settings)
    single = fit(config)
    alone = fit_ensemble([config])[0]
    crowd = others(config, 7)
    eight = fit_ensemble(crowd[:AT] + [config] + crowd[AT:])
    member = eight[AT]
    assert isinstance(single.field, VectorField) and single.summary["status"] == "finished"
    assert [r["phase"] for r in single.history] == ["adam"] * 15 + ["lbfgs"] * 5
    for other in (alone, member):
        assert [r["step"] for r in other.history] == [r["step"] for r in single.history]
        for phase in ("adam", "lbfgs"):
            for name in ("train_loss", "grad_norm") + (("reg_loss",) if settings else ()):
                assert max(rel_errs(column(other.history, name, phase),
                                    column(single.history, name, phase))) <= 1e-10, (phase, name)
        assert max(rel_errs([other.summary["final_train_loss"], other.summary["final_extrap_loss"]],
                            [single.summary["final_train_loss"], single.summary["final_extrap_loss"]])) <= 1e-10
        for key, value in single.field.state_dict().items():
            torch.testing.assert_close(other.field.state_dict()[key], value, rtol=1e-9, atol=1e-12)
    # the trainer on the unstacked field (kanode.nn's single layers, trained in place): the same
    # steps to rounding of other kernels
    data, field = prepare(config)
    in_place = [s.records[0].train_loss for s in Trainer.single(field, data, config).steps()]
    assert max(rel_errs(in_place, [r["train_loss"] for r in single.history])) <= 1e-10
    # the comparison covers a fit that moved, among members that really differ
    losses = column(single.history, "train_loss", "adam")
    assert losses[-1] < 0.5 * losses[0]
    finals = {round(r.summary["final_train_loss"], 8) for r in eight}
    assert len(finals) == 8
    if settings:  # the penalty and the clipping acted
        assert all(v > 0 for v in column(single.history, "reg_loss", "adam"))
        assert any(r["grad_norm"] > 0.05 for r in single.history)


SPARSE = dict(SMALL, sparsity=1e-2, sparsity_l1=1.0, sparsity_entropy=2.0, coef_l1=1e-3)


def test_a_packed_sparsity_member_is_its_single_fit() -> None:
    configs = [FitConfig(seed=s, lr=(1e-2, 2e-2, 3e-2)[s], **SPARSE) for s in range(3)]
    members = fit_ensemble(configs)
    for m, config in enumerate(configs):
        single = fit(config)
        for phase in ("adam", "lbfgs"):
            for name in ("train_loss", "reg_loss"):
                got, want = column(members[m].history, name, phase), column(single.history, name, phase)
                assert all(v > 0 for v in want)
                assert max(rel_errs(got, want)) <= 1e-10, (m, phase, name)
    # without the penalty the fit is another one (the penalty acted)
    plain = fit(configs[0].replace(sparsity=0.0, coef_l1=0.0))
    assert all(r["reg_loss"] is None for r in plain.history)
    assert plain.history[-1]["train_loss"] != pytest.approx(members[0].history[-1]["train_loss"], rel=1e-6)


def test_the_ensemble_sparsity_penalty_is_each_members_single_penalty() -> None:
    """The trainer's (M,) penalty against the single-KAN implementation on each member."""
    configs = [FitConfig(seed=s, **SPARSE) for s in range(3)]
    trainer = make_trainer(configs)
    with torch.no_grad():  # members that differ more than by their seeds
        for p in trainer.field.net.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1), dtype=p.dtype))
    got = trainer.regularizer(trainer.field)
    assert got.shape == (3,)
    for m, config in enumerate(configs):
        field = trainer.field.member(m)
        single = sparsity_regularizer(field, trainer.data.members[m].train_states, config.sparsity,
                                      config.sparsity_l1, config.sparsity_entropy, config.coef_l1,
                                      seed=config.seed)
        want = single(field)
        assert want.ndim == 0 and want > 0
        torch.testing.assert_close(got[m], want, rtol=1e-12, atol=0)
    assert len({round(v, 10) for v in got.tolist()}) == 3
