"""Tiny finished runs shared by the analysis tests (fixed-step RK4: the loss is
then a smooth function of the parameters, so finite differences apply)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kanode.fit import fit

TINY = dict(system="lotka_volterra", train_fraction=0.1, method="rk4", adjoint=False, optimizer="adam",
            steps=3, lr=1e-2, eval_every=3, checkpoint_every=3, plots=False, n_test_traj=0)
TINY_MODELS = {"kan": dict(model="kan", widths=[2, 3, 2], grid_size=3),
               "mlp": dict(model="mlp", widths=[2, 8, 2])}


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory) -> dict[str, Path]:
    """{"kan": run dir (96 parameters), "mlp": run dir (42 parameters)}."""
    root = tmp_path_factory.mktemp("analysis_runs")
    runs = {}
    for name, model in TINY_MODELS.items():
        runs[name] = root / "lotka_volterra" / name / "seed0"
        fit(out=runs[name], **TINY, **model)
    return runs
