"""Ensemble vector field and solve: fixed-step solves exact member by member,
adaptive solves share the step; non-finite members."""

import pytest
import torch

from kanode.ensemble import EnsembleVectorField, finite_members, member_rms_norm, solve_ensemble
from kanode.ode import SolverError, VectorField, solve
from tests.kanode.ensemble.conftest import make_models

WIDTHS = [2, 5, 2]
T = torch.linspace(0.0, 1.0, 11, dtype=torch.float64)


def make_fields(family, n=3, time_input=False):
    widths = [3, 5, 2] if time_input else WIDTHS
    fields = []
    for m, net in enumerate(make_models(family, n=n, widths=widths)):
        scale = torch.tensor([1.0 + 0.2 * m, 0.5])
        fields.append(VectorField(net, in_weight=scale, in_bias=torch.tensor([-0.3, 0.1 * m]),
                                  out_scale=torch.tensor([1.5, 0.7 + 0.1 * m]), time_input=time_input))
    return fields


def initial_states(n=3, n_traj=2):
    gen = torch.Generator().manual_seed(5)
    return 0.5 + torch.rand(n, n_traj, 2, generator=gen)


def max_rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1.0)).item()


@pytest.mark.parametrize("family", ["bspline", "bspline-nonuniform", "rswaf", "mlp"])
@pytest.mark.parametrize("adjoint", [False, True])
def test_rk4_solve_is_exact_member_by_member(family, adjoint):
    fields = make_fields(family)
    ensemble = EnsembleVectorField.from_fields(fields)
    y0 = initial_states()
    y = solve_ensemble(ensemble, y0, T, method="rk4", step_size=0.05, adjoint=adjoint)
    assert y.shape == (T.numel(), 3, 2, 2)
    losses = (y ** 2).mean(dim=(0, 2, 3))  # (M,) per-member losses
    params = dict(ensemble.named_parameters())
    grads = dict(zip(params, torch.autograd.grad(losses.sum(), list(params.values()))))
    for m, field in enumerate(fields):
        ym = solve(field, y0[m], T, method="rk4", step_size=0.05, adjoint=adjoint)
        assert max_rel(y[:, m], ym) <= 1e-12
        single = dict(field.named_parameters())
        for name, g in zip(single, torch.autograd.grad((ym ** 2).mean(), list(single.values()))):
            assert max_rel(grads[name][m], g) <= 1e-12, name


def test_field_members_and_time_input():
    fields = make_fields("bspline-nonuniform", time_input=True)
    ensemble = EnsembleVectorField.from_fields(fields)
    y = initial_states()
    t = torch.tensor(0.7)
    out = ensemble(t, y)
    for m, field in enumerate(fields):
        assert max_rel(out[m], field(t, y[m])) <= 1e-12
        back = ensemble.member(m)
        assert back.time_input
        assert all(torch.equal(back.state_dict()[k], v) for k, v in field.state_dict().items())
    assert ensemble.nfe == 1 and ensemble.reset_nfe() == 1 and ensemble.nfe == 0
    assert ensemble(t, y[:, 0]).shape == (3, 2)  # (M, dim) states
    ensemble.load_member(0, fields[2].state_dict())  # a single field's state into member 0
    assert max_rel(ensemble(t, y)[0], fields[2](t, y[0])) <= 1e-12


def test_dopri5_single_member_is_the_single_solve():
    field = make_fields("bspline", n=1)[0]
    ensemble = EnsembleVectorField.from_fields([field])
    y0 = initial_states(n=1)
    y = solve_ensemble(ensemble, y0, T, method="dopri5", rtol=1e-6, atol=1e-8, adjoint=False)
    nfe = ensemble.reset_nfe()
    field.reset_nfe()
    ref = solve(field, y0[0], T, method="dopri5", rtol=1e-6, atol=1e-8, adjoint=False)
    assert max_rel(y[:, 0], ref) <= 1e-12 and nfe == field.reset_nfe()  # same steps


def test_dopri5_adjoint_single_member_gradients_are_the_single_solves():
    field = make_fields("bspline-nonuniform", n=1)[0]
    ensemble = EnsembleVectorField.from_fields([field])
    y0 = initial_states(n=1)
    kw = dict(method="dopri5", rtol=1e-5, atol=1e-7, adjoint=True)
    loss = solve_ensemble(ensemble, y0, T[:6], **kw).pow(2).sum()
    grads = torch.autograd.grad(loss, list(ensemble.parameters()))
    ref = torch.autograd.grad(solve(field, y0[0], T[:6], **kw).pow(2).sum(), list(field.parameters()))
    for g, r in zip(grads, ref):
        assert max_rel(g[0], r) <= 1e-10


def test_dopri5_members_share_steps_within_tolerance():
    fields = make_fields("bspline")
    ensemble = EnsembleVectorField.from_fields(fields)
    y0 = initial_states()
    y = solve_ensemble(ensemble, y0, T, method="dopri5", rtol=1e-6, atol=1e-8, adjoint=False)
    nfe = ensemble.reset_nfe()
    single_nfe = []
    for m, field in enumerate(fields):
        field.reset_nfe()
        ref = solve(field, y0[m], T, method="dopri5", rtol=1e-6, atol=1e-8, adjoint=False)
        single_nfe.append(field.reset_nfe())
        exact = solve(field, y0[m], T, method="dopri5", rtol=1e-10, atol=1e-12, adjoint=False)
        # not bitwise (other steps), but as accurate as the member's own solve
        assert 1e-12 < max_rel(y[:, m], ref) < 1e-4
        assert max_rel(y[:, m], exact) <= 5 * max(max_rel(ref, exact), 1e-6)
    assert nfe < sum(single_nfe)  # one shared solve, not M
    # the member norm is the largest per-member RMS
    err = torch.stack([torch.full((2, 2), 0.1), torch.full((2, 2), 2.0), torch.zeros(2, 2)])
    assert member_rms_norm(err).item() == pytest.approx(2.0)


def test_a_nonfinite_member_leaves_the_others_alone_with_rk4():
    fields = make_fields("mlp")
    with torch.no_grad():
        fields[1].out_scale.fill_(float("nan"))
    ensemble = EnsembleVectorField.from_fields(fields)
    y0 = initial_states()
    with pytest.raises(SolverError, match=r"members \[1\]"):
        solve_ensemble(ensemble, y0, T, method="rk4", step_size=0.1, adjoint=False)
    y = solve_ensemble(ensemble, y0, T, method="rk4", step_size=0.1, adjoint=False, allow_nonfinite=True)
    assert finite_members(y).tolist() == [True, False, True]
    for m in (0, 2):
        assert max_rel(y[:, m], solve(fields[m], y0[m], T, method="rk4", step_size=0.1, adjoint=False)) <= 1e-12
    with pytest.raises(SolverError, match="share the step"):  # adaptive: the shared step fails for all
        solve_ensemble(ensemble, y0, T, method="dopri5", adjoint=False, allow_nonfinite=True)


def test_solve_checks_its_input():
    ensemble = EnsembleVectorField.from_fields(make_fields("mlp"))
    with pytest.raises(ValueError, match="members first"):
        solve_ensemble(ensemble, torch.ones(2, 2), T, method="rk4", step_size=0.1)
    with pytest.raises(ValueError, match="norm"):
        solve_ensemble(ensemble, initial_states(), T, method="dopri5", norm="max")
    with pytest.raises(ValueError, match="unknown method"):
        solve_ensemble(ensemble, initial_states(), T, method="rk5")
    with pytest.raises(SolverError, match="max_num_steps=5"):  # the same bound as a single solve
        solve_ensemble(ensemble, initial_states(), T, method="rk4", step_size=0.01, max_num_steps=5)
    with pytest.raises(ValueError, match="time_input"):
        EnsembleVectorField.from_fields([*make_fields("mlp", n=1), *make_fields("mlp", n=1, time_input=True)])
