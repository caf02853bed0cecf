"""The Trainer's regulariser hook and the sparsity penalty."""

from __future__ import annotations

import pytest
import torch

from kanode.config import ConfigError, FitConfig
from kanode.fit import fit
from kanode.symbolic import score_l1, sparsity_penalty, training_inputs

TINY = dict(train_fraction=0.1, eval_every=5, n_test_traj=0, optimizer="adam", steps=30, lbfgs_steps=0,
            lr=2e-2, plots=False, widths=[2, 4, 2], grid_size=4)


def test_regularised_training_lowers_the_edge_score_l1() -> None:
    plain = fit(FitConfig(**TINY))
    sparse = fit(FitConfig(**TINY, sparsity=0.05))
    z = training_inputs(plain.field, plain.data.y_train)
    l1_plain, l1_sparse = score_l1(plain.field.net, z), score_l1(sparse.field.net, z)
    assert l1_sparse < 0.7 * l1_plain, (l1_plain, l1_sparse)
    # the penalty is recorded per step, and only when asked for
    assert plain.history[0]["reg_loss"] is None
    assert sparse.history[0]["reg_loss"] > 0


def test_penalty_gradient_is_finite_for_constant_edges() -> None:
    from kanode.nn import KAN

    kan = KAN([2, 3, 2]).double()
    with torch.no_grad():
        for layer in kan.layers:
            layer.spline_coef.zero_()
            layer.base_weight.zero_()
    z = torch.rand(20, 2, dtype=torch.float64)
    sparsity_penalty(kan, z).backward()
    assert all(torch.isfinite(p.grad).all() for p in kan.parameters() if p.grad is not None)


def test_sparsity_needs_a_kan() -> None:
    with pytest.raises(ConfigError, match="sparsity"):
        FitConfig(model="mlp", sparsity=1e-3)
    with pytest.raises(ConfigError, match="sparsity"):
        FitConfig(sparsity=-1.0)
