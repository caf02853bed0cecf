"""kanode.optim: batched Adam / L-BFGS against torch.optim, members against single runs,
non-finite trial points, per-member state and legacy torch state dicts, the cubic step."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Generator, Sequence

import pytest
import torch
from torch import Tensor
from torch.nn import Parameter
from torch.optim.lbfgs import _cubic_interpolate, _strong_wolfe

from kanode.optim import OPTIMIZERS, BatchedAdam, BatchedLBFGS, cubic_minimum, strong_wolfe
from kanode.optim.line_search import search_members

Params = dict[str, Parameter]


pytestmark = pytest.mark.usefixtures("float64_one_thread")  # tests/conftest.py


def assert_rel(ours: Sequence[float], ref: Sequence[float], rtol: float, what: str = "") -> None:
    """|ours − ref| <= rtol·|ref| entry by entry (equal entries always pass, zeros included)."""
    assert len(ours) == len(ref), (what, len(ours), len(ref))
    for k, (a, b) in enumerate(zip(ours, ref)):
        assert math.isfinite(a) and math.isfinite(b), (what, k, a, b)
        assert a == b or abs(a - b) <= rtol * abs(b), (what, k, a, b, abs(a - b) / max(abs(b), 1e-300))


# ------------------------------------------------------------------ Adam objective
# Elementwise per member, so a member's gradient is computed by the same operations
# whether it sits in an ensemble (M, ...) or is a single model (1, ...).
_GEN = torch.Generator().manual_seed(1234)
A_DATA = torch.randn(3, 4, generator=_GEN, dtype=torch.float64)
T_DATA = torch.randn(3, 4, generator=_GEN, dtype=torch.float64)


def adam_params(seed: int, n_members: int | None = None) -> Params:
    """weight (3, 4), bias (3,), scale () for a single model; each with a leading M for an ensemble."""
    gen = torch.Generator().manual_seed(seed)
    lead = () if n_members is None else (n_members,)
    return {"weight": Parameter(torch.randn((*lead, 3, 4), generator=gen)),
            "bias": Parameter(torch.randn((*lead, 3), generator=gen)),
            "scale": Parameter(1.0 + 0.1 * torch.randn(lead, generator=gen))}


def member_copy(params: Params, m: int) -> Params:
    return {name: Parameter(p.detach()[m].clone()) for name, p in params.items()}


def adam_rows(weight: Tensor, bias: Tensor, scale: Tensor) -> Tensor:
    """(M, 3, 4), (M, 3), (M,) -> (M,) losses."""
    z = torch.tanh(weight * A_DATA + bias[..., None]) * scale[:, None, None] - T_DATA  # (M, 3, 4)
    return ((z ** 2).sum(dim=(1, 2)) + 0.1 * (weight ** 4).sum(dim=(1, 2))
            + (bias.sin() ** 2).sum(dim=1) + (scale - 2.0) ** 2)


def adam_backward(params: Params, stacked: bool) -> Tensor:
    """Sets the gradients of the summed losses; returns the (M,) losses (M = 1 unstacked)."""
    for p in params.values():
        p.grad = None
    rows = adam_rows(*(p if stacked else p[None] for p in params.values()))
    rows.sum().backward()
    return rows.detach()


def lr_at(k: int) -> float:
    return 0.05 * (1.0 + 0.5 * math.sin(0.7 * k))


def torch_adam_step(opt: torch.optim.Adam, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr
    opt.step()


# ------------------------------------------------------------------ Adam tests
def test_single_adam_is_torch_adam_bitwise() -> None:
    ours, ref, start = adam_params(0), adam_params(0), adam_params(0)
    opt = BatchedAdam(ours.items())
    torch_opt = torch.optim.Adam(ref.values(), lr=lr_at(0))
    for k in range(50):
        adam_backward(ours, stacked=False)
        adam_backward(ref, stacked=False)
        opt.step(lr_at(k))
        torch_adam_step(torch_opt, lr_at(k))
        for name in ours:
            assert torch.equal(ours[name], ref[name]), (k, name, (ours[name] - ref[name]).abs().max())
    for i, p in enumerate(ref.values()):
        assert torch.equal(opt.exp_avg[i][0], torch_opt.state[p]["exp_avg"])
        assert torch.equal(opt.exp_avg_sq[i][0], torch_opt.state[p]["exp_avg_sq"])
    assert opt.steps_ == [50]
    # the run went somewhere (an optimiser that did nothing would also be "equal")
    assert (ours["weight"] - start["weight"]).abs().max() > 0.1
    with torch.no_grad():
        assert float(adam_rows(*(p[None] for p in ours.values()))) < 0.5 * float(
            adam_rows(*(p[None] for p in start.values())))


def ensemble_active(k: int) -> list[bool]:
    """Member 1 frozen on steps 10-19, member 3 on 30-32, everyone on step 25."""
    if k == 25:
        return [False] * 4
    return [True, not 10 <= k < 20, True, not 30 <= k < 33]


def test_ensemble_adam_is_separate_torch_adams_with_frozen_members() -> None:
    n_members, n_steps = 4, 45
    ens = adam_params(1, n_members)
    refs = [member_copy(ens, m) for m in range(n_members)]
    opt = BatchedAdam(ens.items(), n_members=n_members)
    torch_opts = [torch.optim.Adam(r.values(), lr=0.1) for r in refs]
    lrs_at = lambda k: [lr_at(k) * (1.0 + 0.25 * m) for m in range(n_members)]  # noqa: E731
    frozen_checks = 0
    for k in range(n_steps):
        active = ensemble_active(k)
        adam_backward(ens, stacked=True)
        before = ([p.detach().clone() for p in ens.values()], [t.clone() for t in opt.exp_avg],
                  [t.clone() for t in opt.exp_avg_sq], list(opt.steps_))
        opt.step(lrs_at(k), active)
        for m in range(n_members):
            if active[m]:
                adam_backward(refs[m], stacked=False)
                torch_adam_step(torch_opts[m], lrs_at(k)[m])
            else:  # parameters, moments and step count untouched
                frozen_checks += 1
                assert all(torch.equal(p.detach()[m], b[m]) for p, b in zip(ens.values(), before[0]))
                assert all(torch.equal(t[m], b[m]) for t, b in zip(opt.exp_avg, before[1]))
                assert all(torch.equal(t[m], b[m]) for t, b in zip(opt.exp_avg_sq, before[2]))
                assert opt.steps_[m] == before[3][m]
            for name in ens:
                assert torch.equal(ens[name].detach()[m], refs[m][name].detach()), (k, m, name)
    assert frozen_checks == 10 + 3 + 4
    assert opt.steps_ == [44, 34, 44, 41]
    for m in range(n_members):
        for i, p in enumerate(refs[m].values()):
            assert torch.equal(opt.exp_avg[i][m], torch_opts[m].state[p]["exp_avg"])
            assert torch.equal(opt.exp_avg_sq[i][m], torch_opts[m].state[p]["exp_avg_sq"])
    # the members' learning rates differ, so their parameters do (a shared lr would not show)
    assert (ens["weight"].detach()[0] - ens["weight"].detach()[2]).abs().max() > 1e-3


# ------------------------------------------------------------------ Rosenbrock problems
START = (-1.2, 1.0, -0.5, 0.3)
STARTS = (START, (0.5, -0.8, 1.3, 0.1), (2.0, 2.0, -1.0, 0.5))


def rosenbrock(x: Tensor) -> Tensor:
    """(..., P) -> (...)."""
    return (100.0 * (x[..., 1:] - x[..., :-1] ** 2) ** 2 + (1.0 - x[..., :-1]) ** 2).sum(dim=-1)


def rosen_params(start: Sequence[float], split: bool = False) -> Params:
    """One (4,) parameter, or a (2,) and a (1, 2) one that flatten to the same vector."""
    x = torch.tensor(start)
    if not split:
        return {"x": Parameter(x.clone())}
    return {"head": Parameter(x[:2].clone()), "tail": Parameter(x[2:].reshape(1, 2).clone())}


def flat_x(params: Params) -> Tensor:
    return torch.cat([p.reshape(-1) for p in params.values()])


def single_closure(params: Params, batched: bool) -> Callable[[], Tensor]:
    """Rosenbrock of a single model; (1,) loss for kanode's optimisers, () for torch's."""
    def closure() -> Tensor:
        for p in params.values():
            p.grad = None
        loss = rosenbrock(flat_x(params))
        loss.backward()
        return loss.detach().reshape(1) if batched else loss.detach()
    return closure


def ensemble_closure(x: Parameter, rows: Callable[[Tensor], Tensor] = rosenbrock) -> Callable[[], Tensor]:
    """x (M, P); ``rows`` (M, P) -> (M,) losses."""
    def closure() -> Tensor:
        x.grad = None
        losses = rows(x)
        losses.sum().backward()
        return losses.detach()
    return closure


def torch_lbfgs(params: Params, history_size: int, max_iter: int) -> torch.optim.LBFGS:
    return torch.optim.LBFGS(params.values(), lr=1, max_iter=max_iter, max_eval=25 * max_iter,
                             history_size=history_size, line_search_fn="strong_wolfe",
                             tolerance_grad=0, tolerance_change=0)


# ------------------------------------------------------------------ L-BFGS tests
@pytest.mark.parametrize("max_iter, n_steps, n_close, n_tight", [(1, 60, 15, 12), (5, 25, 6, 4)])
@pytest.mark.parametrize("split", [False, True], ids=["one-tensor", "two-tensors"])
def test_single_lbfgs_follows_torch_lbfgs(max_iter: int, n_steps: int, n_close: int, n_tight: int,
                                          split: bool) -> None:
    history = 5  # fewer than the iterations: the ring buffer wraps
    ours, ref = rosen_params(START, split), rosen_params(START, split)
    opt = BatchedLBFGS(ours.items(), history_size=history, max_iter=max_iter)
    torch_opt = torch_lbfgs(ref, history, max_iter)
    ours_losses, torch_losses = [], []
    for _ in range(n_steps):
        ours_losses.append(float(opt.step(single_closure(ours, True), 1.0)[0]))
        torch_losses.append(float(torch_opt.step(single_closure(ref, False))))
    assert ours_losses[0] == torch_losses[0] == pytest.approx(float(rosenbrock(torch.tensor(START))))
    # the same arithmetic up to rounding: ~1e-15 at first, growing only as the iterates converge
    assert_rel(ours_losses[:n_tight], torch_losses[:n_tight], 1e-12, "first losses")
    assert_rel(ours_losses[:n_close], torch_losses[:n_close], 1e-8, "losses")
    assert ours_losses[n_close - 1] < 0.5 * ours_losses[0]  # the compared steps made progress
    final_ours = float(rosenbrock(flat_x(ours).detach()))
    final_torch = float(rosenbrock(flat_x(ref).detach()))
    assert final_ours < 1e-12 and final_torch < 1e-12, (final_ours, final_torch)
    torch.testing.assert_close(flat_x(ours).detach(), torch.ones(4), rtol=0, atol=1e-6)
    assert min(opt.count_) == history


@pytest.mark.parametrize("max_iter, n_steps", [(1, 40), (4, 12)])
def test_ensemble_lbfgs_is_separate_single_runs(max_iter: int, n_steps: int) -> None:
    lrs = [1.0, 0.7, 1.0]
    x = Parameter(torch.tensor(STARTS))                       # (3, 4)
    opt = BatchedLBFGS([("x", x)], n_members=3, history_size=6, max_iter=max_iter)
    ens_losses = [opt.step(ensemble_closure(x), lrs).tolist() for _ in range(n_steps)]
    for m, start in enumerate(STARTS):
        single = rosen_params(start)
        single_opt = BatchedLBFGS(single.items(), history_size=6, max_iter=max_iter)
        losses = [float(single_opt.step(single_closure(single, True), lrs[m])[0]) for _ in range(n_steps)]
        assert_rel([row[m] for row in ens_losses], losses, 1e-12, f"member {m}")
        torch.testing.assert_close(x.detach()[m], single["x"].detach(), rtol=1e-12, atol=0)
        assert opt.n_iter_[m] == single_opt.n_iter_[0]
    assert max(ens_losses[-1]) < 0.1 * min(ens_losses[0])       # all three made progress


def test_lbfgs_frozen_member_keeps_state_and_resumes_like_a_run_that_skipped() -> None:
    x = Parameter(torch.tensor(STARTS))
    opt = BatchedLBFGS([("x", x)], n_members=3, history_size=4)
    frozen = range(3, 7)
    ens_losses = []
    for k in range(14):
        active = [True, True, k not in frozen]
        before = (x.detach()[2].clone(), copy.deepcopy(opt.member_state(2)))
        ens_losses.append(opt.step(ensemble_closure(x), 1.0, active).tolist())
        if not active[2]:
            assert torch.equal(x.detach()[2], before[0])
            after = opt.member_state(2)
            for key, value in before[1].items():
                assert (torch.equal(value, after[key]) if isinstance(value, Tensor) else value == after[key]), key
    single = rosen_params(STARTS[2])
    single_opt = BatchedLBFGS(single.items(), history_size=4)
    losses = [float(single_opt.step(single_closure(single, True), 1.0)[0]) for _ in range(14 - len(frozen))]
    # a frozen step still returns the member's (unchanged) loss: drop the repeats
    kept = [row[2] for k, row in enumerate(ens_losses) if k not in frozen]
    assert_rel(kept, losses, 1e-12, "frozen member")
    torch.testing.assert_close(x.detach()[2], single["x"].detach(), rtol=1e-12, atol=0)


@pytest.mark.parametrize("max_eval", [3, 8])
def test_lbfgs_max_eval_stops_iterating_like_torch(max_eval: int) -> None:
    """max_iter = 20 would run on; the evaluations per step (line search included) stop it."""
    ours, ref = rosen_params(START), rosen_params(START)
    opt = BatchedLBFGS(ours.items(), history_size=10, max_iter=20, max_eval=max_eval)
    torch_opt = torch.optim.LBFGS(ref.values(), lr=1, max_iter=20, max_eval=max_eval, history_size=10,
                                  line_search_fn="strong_wolfe", tolerance_grad=0, tolerance_change=0)
    calls = {"ours": 0, "torch": 0}

    def counted(closure: Callable[[], Tensor], key: str) -> Callable[[], Tensor]:
        def wrapped() -> Tensor:
            calls[key] += 1
            return closure()
        return wrapped

    for step in range(3):
        before = dict(calls)
        loss = float(opt.step(counted(single_closure(ours, True), "ours"), 1.0)[0])
        torch_loss = float(torch_opt.step(counted(single_closure(ref, False), "torch")))
        assert_rel([loss], [torch_loss], 1e-10, f"step {step}")
        used = calls["ours"] - before["ours"]
        assert used == calls["torch"] - before["torch"]
        assert max_eval <= used < max_eval + 26   # the last line search may run past max_eval
    assert opt.n_iter_[0] == torch_opt.state[ref["x"]]["n_iter"]


def test_search_members_evaluates_finished_and_idle_members_at_their_start() -> None:
    """Once a member's search has ended (or for a member without one) the shared
    evaluations put it back at its start point, a point known to be finite."""
    x = torch.tensor([[3.0, -1.0], [0.9, 0.8], [0.5, 0.5]])      # (3, 2)
    d = torch.tensor([[-3.0, 1.0], [2.0, 4.0], [1.0, 1.0]])
    trials: list[Tensor] = []

    def evaluate(points: Tensor, members: list[int]) -> tuple[list[float], Tensor]:
        trials.append(points.clone())
        value0 = 0.5 * float((points[0] ** 2).sum())          # the exact minimum at step 1
        value1 = float(((points[1] - 1.0) ** 2).sum()) if float(points[1].abs().max()) <= BOUND else math.nan
        grads = torch.stack([points[0], 2.0 * (points[1] - 1.0), torch.zeros(2)])
        return [value0, value1, 0.0], grads

    def search(m: int, loss: float, grad: Tensor) -> Generator[float, tuple, tuple]:
        gtd = float(grad.dot(d[m]))
        return strong_wolfe(1.0, loss, grad, gtd, float(d[m].abs().max()))

    searches = {0: search(0, 5.0, x[0]), 1: search(1, 0.05, 2.0 * (x[1] - 1.0))}
    found = search_members(evaluate, x, d, searches)
    assert sorted(found) == [0, 1]
    assert found[0][2] == 1.0 and found[0][3] == 1 and found[0][0] == 0.0
    assert len(trials) == found[1][3] >= 3       # member 1 stepped back more than once
    assert 0.0 < found[1][2] <= 0.0625            # the step back stays inside the bound
    assert float((x[1] + found[1][2] * d[1]).abs().max()) <= BOUND
    assert torch.equal(trials[0][0], x[0] + d[0])
    for points in trials:
        assert torch.equal(points[2], x[2])
    for points in trials[1:]:
        assert torch.equal(points[0], x[0])


# ------------------------------------------------------------------ non-finite members
BOUND = 1.05
WEIGHTS = torch.tensor((1.0, 3.0, 0.5, 2.0), dtype=torch.float64)
INSIDE_START = (0.9, 0.8, 0.95, 0.85)      # L-BFGS's first trial step leaves |x| <= BOUND
OUTSIDE_START = (0.9, 1.2, 0.95, 0.85)     # starts where the loss is not finite


class _NanGradientOutside(torch.autograd.Function):
    """Identity whose gradient is NaN when any |x| > BOUND (the loss stays finite)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # noqa: ANN001
        ctx.save_for_backward(x)
        return x.clone()

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # noqa: ANN001
        (x,) = ctx.saved_tensors
        return torch.where(x.abs().max() > BOUND, torch.full_like(grad, math.nan), grad)


def bounded_quadratic(x: Tensor, kind: str) -> Tensor:
    """(P,) -> (): sum w (x − 1)², not finite (as ``kind`` says) outside |x| <= BOUND."""
    if kind == "nan-gradient":
        x = _NanGradientOutside.apply(x)
    value = (WEIGHTS * (x - 1.0) ** 2).sum()
    outside = x.abs().max() > BOUND
    if kind == "nan":
        return torch.where(outside, torch.tensor(math.nan), value)
    if kind == "inf":
        return torch.where(outside, torch.tensor(math.inf), value)
    if kind == "nan-loss":  # the gradient stays that of the quadratic: finite, not zero
        return value + torch.where(outside, torch.tensor(math.nan), torch.tensor(0.0))
    if kind in ("nan-gradient", "plain"):
        return value
    raise ValueError(kind)


def mixed_rows(kind: str, bad_evals: list[int]) -> Callable[[Tensor], Tensor]:
    """Rows 0 and 2 Rosenbrock, row 1 the bounded quadratic; counts row 1's non-finite evaluations."""
    def rows(x: Tensor) -> Tensor:
        losses = torch.stack([rosenbrock(x[0]), bounded_quadratic(x[1], kind), rosenbrock(x[2])])
        if kind == "nan-gradient":
            bad_evals[0] += bool((x[1].detach().abs().max() > BOUND))
        else:
            bad_evals[0] += not math.isfinite(float(losses[1].detach()))
        return losses
    return rows


def two_rosenbrock_run(n_steps: int, max_iter: int) -> tuple[list[list[float]], Tensor]:
    """Members 0 and 2 of the mixed ensembles alone: (losses per step, final (2, 4))."""
    x = Parameter(torch.tensor((STARTS[0], STARTS[2])))
    opt = BatchedLBFGS([("x", x)], n_members=2, history_size=5, max_iter=max_iter)
    losses = [opt.step(ensemble_closure(x), 1.0).tolist() for _ in range(n_steps)]
    return losses, x.detach()


@pytest.mark.parametrize("max_iter", [1, 3])
@pytest.mark.parametrize("kind", ["nan", "inf", "nan-loss", "nan-gradient"])
def test_nonfinite_trial_points_shrink_the_step(kind: str, max_iter: int) -> None:
    n_steps, bad_evals = 20, [0]
    x = Parameter(torch.tensor((STARTS[0], INSIDE_START, STARTS[2])))
    opt = BatchedLBFGS([("x", x)], n_members=3, history_size=5, max_iter=max_iter)
    closure = ensemble_closure(x, mixed_rows(kind, bad_evals))
    losses = []
    for _ in range(n_steps):
        losses.append(opt.step(closure, 1.0).tolist())
        assert torch.isfinite(x).all()
        assert float(x.detach()[1].abs().max()) <= BOUND
    assert bad_evals[0] >= 1  # the first trial step of member 1 did leave the bound
    quad = [row[1] for row in losses] + [float(bounded_quadratic(x.detach()[1], "plain"))]
    assert quad[1] < quad[0]
    for a, b in zip(quad, quad[1:]):
        assert b <= a or b < 1e-25, quad
    assert quad[-1] < 1e-12, quad
    # the other members never noticed
    ref_losses, ref_x = two_rosenbrock_run(n_steps, max_iter)
    assert [[row[0], row[2]] for row in losses] == ref_losses
    assert torch.equal(x.detach()[[0, 2]], ref_x)


@pytest.mark.parametrize("kind, start", [("nan", OUTSIDE_START), ("inf", OUTSIDE_START),
                                         ("nan-loss", OUTSIDE_START), ("nan-gradient", OUTSIDE_START),
                                         ("plain", (1.0,) * 4)],
                         ids=["nan", "inf", "nan-loss", "nan-gradient", "zero-gradient"])
def test_member_with_nonfinite_or_zero_start_gradient_stays(kind: str, start: tuple[float, ...]) -> None:
    n_steps, max_iter = 12, 2
    x = Parameter(torch.tensor((STARTS[0], start, STARTS[2])))
    opt = BatchedLBFGS([("x", x)], n_members=3, history_size=5, max_iter=max_iter)
    closure = ensemble_closure(x, mixed_rows(kind, [0]))
    losses = [opt.step(closure, 1.0).tolist() for _ in range(n_steps)]
    assert torch.equal(x.detach()[1], torch.tensor(start))
    assert opt.n_iter_[1] == 0 and opt.count_[1] == 0
    assert all(math.isfinite(row[1]) == (kind in ("nan-gradient", "plain")) for row in losses)
    ref_losses, ref_x = two_rosenbrock_run(n_steps, max_iter)
    assert [[row[0], row[2]] for row in losses] == ref_losses
    assert torch.equal(x.detach()[[0, 2]], ref_x)


# ------------------------------------------------------------------ member state
def test_lbfgs_member_state_round_trip() -> None:
    history = 4
    x = Parameter(torch.tensor(STARTS))
    opt = BatchedLBFGS([("x", x)], n_members=3, history_size=history)
    for _ in range(10):
        opt.step(ensemble_closure(x), 1.0)
    state = opt.member_state(1)
    saved = copy.deepcopy(state)
    assert state["s"].shape == (history, 4)   # the ring has wrapped: its order matters
    single = {"x": Parameter(x.detach()[1].clone())}
    single_opt = BatchedLBFGS(single.items(), history_size=history)
    single_opt.load_state_dict(state)
    ens = [opt.step(ensemble_closure(x), 1.0)[1].item() for _ in range(5)]
    alone = [single_opt.step(single_closure(single, True), 1.0).item() for _ in range(5)]
    assert_rel(alone, ens, 1e-12, "ensemble member -> single model")
    assert all(torch.equal(v, state[k]) if isinstance(v, Tensor) else v == state[k] for k, v in saved.items())
    # and back: the single model's state into member 0 of a fresh ensemble
    x2 = Parameter(torch.stack([single["x"].detach(), torch.tensor(STARTS[0])]))
    opt2 = BatchedLBFGS([("x", x2)], n_members=2, history_size=history)
    opt2.load_member_state(0, single_opt.state_dict())
    back = [opt2.step(ensemble_closure(x2), 1.0)[0].item() for _ in range(4)]
    alone = [single_opt.step(single_closure(single, True), 1.0).item() for _ in range(4)]
    assert_rel(back, alone, 1e-12, "single model -> ensemble member")
    assert back[-1] < ens[0]
    # a fresh member loads a never-stepped state as a reset
    opt2.load_member_state(1, BatchedLBFGS([("x", Parameter(torch.zeros(4)))]).state_dict())
    assert opt2.n_iter_[1] == 0 and opt2.count_[1] == 0


def test_adam_member_state_round_trip() -> None:
    n_members = 3
    ens = adam_params(2, n_members)
    opt = BatchedAdam(ens.items(), n_members=n_members)
    lrs = lambda k: [lr_at(k) * (1.0 + 0.5 * m) for m in range(n_members)]  # noqa: E731
    for k in range(10):
        adam_backward(ens, stacked=True)
        opt.step(lrs(k))
    state = opt.member_state(1)
    saved = copy.deepcopy(state)
    single = member_copy(ens, 1)
    single_opt = BatchedAdam(single.items())
    single_opt.load_member_state(0, state)
    ens_losses, alone = [], []
    for k in range(10, 15):
        ens_losses.append(adam_backward(ens, stacked=True)[1].item())
        alone.append(adam_backward(single, stacked=False).item())
        opt.step(lrs(k))
        single_opt.step(lrs(k)[1])
    assert_rel(alone, ens_losses, 1e-12, "adam ensemble member -> single")
    for name in single:
        torch.testing.assert_close(single[name].detach(), ens[name].detach()[1], rtol=1e-12, atol=0)
    assert single_opt.steps_ == [15] and opt.steps_ == [15] * 3
    assert saved["step"] == state["step"] == 10
    assert all(torch.equal(saved[key][n], state[key][n]) for key in ("exp_avg", "exp_avg_sq") for n in single)
    # and back into member 2 of a fresh ensemble
    ens2 = adam_params(3, n_members)
    with torch.no_grad():
        for name, p in ens2.items():
            p[2] = single[name].detach()
    opt2 = BatchedAdam(ens2.items(), n_members=n_members)
    opt2.load_member_state(2, single_opt.state_dict())
    for k in range(15, 20):
        adam_backward(ens2, stacked=True)
        adam_backward(single, stacked=False)
        opt2.step([0.01, 0.01, lr_at(k)])
        single_opt.step(lr_at(k))
    for name in single:
        torch.testing.assert_close(ens2[name].detach()[2], single[name].detach(), rtol=1e-12, atol=0)
    assert opt2.steps_ == [5, 5, 20]


# ------------------------------------------------------------------ legacy torch state dicts
@pytest.mark.parametrize("n_before", [0, 6])
def test_torch_adam_state_dict_loads(n_before: int) -> None:
    ref, ours = adam_params(4), adam_params(4)
    torch_opt = torch.optim.Adam(ref.values(), lr=0.1)
    for k in range(n_before):
        adam_backward(ref, stacked=False)
        torch_adam_step(torch_opt, lr_at(k))
    with torch.no_grad():
        for name, p in ours.items():
            p.copy_(ref[name])
    opt = BatchedAdam(ours.items())
    opt.load_state_dict(copy.deepcopy(torch_opt.state_dict()))
    assert opt.steps_ == [n_before]
    for k in range(n_before, n_before + 10):
        adam_backward(ref, stacked=False)
        adam_backward(ours, stacked=False)
        torch_adam_step(torch_opt, lr_at(k))
        opt.step(lr_at(k))
        for name in ours:
            assert torch.equal(ours[name], ref[name]), (k, name)


@pytest.mark.parametrize("n_before", [0, 1, 7])
def test_torch_lbfgs_state_dict_loads(n_before: int) -> None:
    history, n_after = 5, 5
    ref = rosen_params(START, split=True)
    torch_opt = torch_lbfgs(ref, history, max_iter=1)
    for _ in range(n_before):
        torch_opt.step(single_closure(ref, False))
    ours = {name: Parameter(p.detach().clone()) for name, p in ref.items()}
    opt = BatchedLBFGS(ours.items(), history_size=history)
    opt.load_state_dict(copy.deepcopy(torch_opt.state_dict()))
    assert opt.n_iter_ == [n_before] and opt.count_ == [min(max(n_before - 1, 0), history)]
    torch_losses = [float(torch_opt.step(single_closure(ref, False))) for _ in range(n_after)]
    ours_losses = [float(opt.step(single_closure(ours, True), 1.0)[0]) for _ in range(n_after)]
    assert_rel(ours_losses, torch_losses, 1e-8, "after loading torch's state")
    # a resume that ignored the saved history would take other steps: check it did not
    fresh = {name: Parameter(p.detach().clone()) for name, p in ours.items()}
    if n_before > 1:
        with torch.no_grad():
            for name, p in fresh.items():
                p.copy_(rosen_params(START, split=True)[name])
        torch_opt2 = torch_lbfgs(fresh, history, max_iter=1)
        replay = [float(torch_opt2.step(single_closure(fresh, False))) for _ in range(n_before + n_after)]
        assert_rel(ours_losses, replay[n_before:], 1e-8, "uninterrupted torch run")


# ------------------------------------------------------------------ line search pieces
def cubic(a: float, b: float, c: float, e: float) -> tuple[Callable[[float], float], Callable[[float], float]]:
    return (lambda x: a * x ** 3 + b * x ** 2 + c * x + e), (lambda x: 3 * a * x ** 2 + 2 * b * x + c)


@pytest.mark.parametrize("coeffs, x1, x2, expected", [
    ((1.0, 0.0, -3.0, 0.0), 0.0, 2.0, 1.0),            # x³ − 3x: minimum at 1
    ((1.0, 0.0, -3.0, 0.0), 2.0, 0.0, 1.0),            # the points in the other order
    ((2.0, -3.0, -12.0, 5.0), -0.5, 3.0, 2.0),         # 6(x − 2)(x + 1) = f'
    ((-1.0, 0.0, 3.0, 1.0), -2.0, 0.5, -1.0),          # a < 0: the local minimum at −1
    ((0.0, 1.0, -1.4, 0.49), 0.0, 2.0, 0.7),           # a quadratic (x − 0.7)²
    ((0.5, -1.5, 0.0, 2.0), 1.0, 3.5, 2.0),            # f' = 1.5x(x − 2)
])
def test_cubic_minimum_of_exact_cubics(coeffs: tuple[float, ...], x1: float, x2: float, expected: float) -> None:
    f, g = cubic(*coeffs)
    assert abs(cubic_minimum(x1, f(x1), g(x1), x2, f(x2), g(x2)) - expected) < 1e-12


def test_cubic_minimum_bounds_and_degenerate_inputs() -> None:
    f, g = cubic(1.0, 0.0, -3.0, 0.0)
    args = (0.0, f(0.0), g(0.0), 2.0, f(2.0), g(2.0))
    assert cubic_minimum(*args, bounds=(1.5, 4.0)) == 1.5
    assert cubic_minimum(*args, bounds=(-3.0, 0.25)) == 0.25
    assert abs(cubic_minimum(*args, bounds=(-3.0, 4.0)) - 1.0) < 1e-12
    inf, nan = math.inf, math.nan
    assert cubic_minimum(0.0, 1.0, -1.0, 1.0, inf, inf) == 0.5
    assert cubic_minimum(0.0, 1.0, -1.0, 1.0, nan, nan) == 0.5
    assert cubic_minimum(0.0, 1.0, -1.0, 1.0, 2.0, nan) == 0.5
    assert cubic_minimum(1.0, inf, inf, 0.0, 1.0, -1.0) == 0.5
    assert cubic_minimum(0.0, 1.0, -1.0, 1.0, inf, inf, bounds=(0.2, 0.6)) == pytest.approx(0.4, abs=1e-15)
    assert cubic_minimum(1.0, 2.0, -1.0, 1.0, 2.0, -1.0) == 1.0                 # x1 == x2
    assert cubic_minimum(0.0, 0.0, 0.0, 1.0, 0.0, 0.0) == 0.5                   # flat: 0/0
    # a straight line through both points: its minimum is the lower end (as torch's ±inf clips)
    assert cubic_minimum(0.0, 1.0, 2.0, 1.0, 3.0, 2.0) == 0.0
    assert cubic_minimum(1.0, 3.0, 2.0, 0.0, 1.0, 2.0, bounds=(-1.0, 3.0)) == -1.0
    assert cubic_minimum(0.0, 1.0, -2.0, 1.0, -1.0, -2.0, bounds=(-1.0, 3.0)) == 3.0
    f, g = cubic(1.0, 0.0, 1.0, 0.0)  # x³ + x: increasing, no minimum (d2² < 0) -> the midpoint
    assert cubic_minimum(0.0, f(0.0), g(0.0), 1.0, f(1.0), g(1.0)) == 0.5


def cubic_cases() -> list[tuple[float, ...]]:
    """Random (x1, f1, g1, x2, f2, g2), and a grid of small integers full of degenerate
    cubics (straight lines, equal slopes, zero denominators)."""
    gen = torch.Generator().manual_seed(7)
    cases = [tuple((torch.randn(6, generator=gen, dtype=torch.float64) * 3).tolist()) for _ in range(100)]
    values = (0.0, 1.0, -1.0, 2.0, -3.0)
    cases += [(0.0, f1, g1, x2, f2, g2) for x2 in (1.0, 2.0) for f1 in values for g1 in values
              for f2 in values for g2 in values]
    return cases


def test_cubic_minimum_is_torch_cubic_interpolate() -> None:
    interpolated = midpoints = 0
    for case, args in enumerate(cubic_cases()):
        x1, x2 = args[0], args[3]
        for bounds in (None, (min(x1, x2) - 1.0, max(x1, x2) + 2.0)):
            lo, hi = bounds or (min(x1, x2), max(x1, x2))
            expected = float(_cubic_interpolate(*(torch.tensor(v) for v in args), bounds=bounds))
            ours = cubic_minimum(*args, bounds=bounds)
            if math.isnan(expected):  # torch's 0/0: ours falls back to the midpoint instead
                assert ours == (lo + hi) / 2, (case, args, bounds, ours)
                midpoints += 1
                continue
            assert abs(ours - expected) <= 1e-12 * (1.0 + abs(expected)), (case, args, bounds, ours, expected)
            interpolated += ours not in (lo, hi, (lo + hi) / 2)
    assert interpolated > 500 and midpoints > 0   # mostly true interpolation, and the NaN guard was taken


LINE_FUNCTIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "rosenbrock": rosenbrock,
    # these two take the zoom's "too close to the bracket's end" safeguard, both of its branches
    "sine": lambda x: (torch.sin(5.0 * x) + 0.05 * x ** 2).sum(),
    "softplus": lambda x: (5.0 * torch.nn.functional.softplus(10.0 * (x - 1.0)) - x + 0.01 * x ** 4).sum(),
    "quadratic": lambda x: (x ** 2 - 2.0 * x).sum(),   # 0 at x = 0: small steps still change it
}
# Not compared: a straight stretch of a line (e.g. exp(8(x − 1)) − x far left of 1), where
# the cubic's d2² is 0 up to rounding and torch's float / tensor (a reciprocal times the float)
# rounds it the other way from float arithmetic; nor trial points with an infinite loss,
# where torch's search carries the inf on (the deliberate difference).


def value_grad(function: Callable[[Tensor], Tensor], x: Tensor) -> tuple[float, Tensor]:
    x = x.detach().requires_grad_(True)
    loss = function(x)
    loss.backward()
    return float(loss.detach()), x.grad


@pytest.mark.parametrize("name, x0, t0, min_evals", [
    ("rosenbrock", START, 1e-6, 8),      # bracketing by extrapolation
    ("rosenbrock", START, 0.05, 2),
    ("rosenbrock", START, 1.0, 1),       # the first step is taken
    ("rosenbrock", START, 30.0, 4),      # zoom
    ("sine", (-1.6,), 30.0, 5),
    ("softplus", (-1.3,), 0.1, 9),
    ("softplus", (-1.4,), 10.0, 6),
    ("quadratic", (0.0,), 1e-27, 26),    # ×10 per extrapolation: stops at max_ls = 25
])
def test_strong_wolfe_is_torch_strong_wolfe(name: str, x0: tuple[float, ...], t0: float, min_evals: int) -> None:
    function = LINE_FUNCTIONS[name]
    x = torch.tensor(x0)
    f, g = value_grad(function, x)
    d = -g / g.abs().sum() if name == "rosenbrock" else -g
    gtd = g.dot(d)
    f_t, g_t, t_t, evals_t = _strong_wolfe(lambda x_, t, d_: value_grad(function, x_ + t * d_), x, t0, d, f, g, gtd)
    search = strong_wolfe(t0, f, g, float(gtd), float(d.abs().max()))
    trial = search.send(None)
    try:
        while True:
            f_new, g_new = value_grad(function, x + trial * d)
            trial = search.send((f_new, g_new, float(g_new.dot(d))))
    except StopIteration as stop:
        f_o, g_o, t_o, evals_o = stop.value
    assert evals_o == evals_t >= min_evals
    assert abs(t_o - float(t_t)) <= 1e-12 * abs(float(t_t))
    assert abs(f_o - f_t) <= 1e-12 * abs(f_t)
    torch.testing.assert_close(g_o, g_t, rtol=1e-10, atol=1e-12)
    assert f_o < f  # sufficient decrease: the step is not zero


# ------------------------------------------------------------------ errors and the table
def test_parameter_without_member_axis_is_named() -> None:
    good = Parameter(torch.zeros(3, 2))
    bad = Parameter(torch.zeros(2))
    for cls in (BatchedAdam, BatchedLBFGS):
        with pytest.raises(ValueError, match=r"parameter head\.bias has shape \(2,\), not \(3, \.\.\.\)"):
            cls([("head.weight", good), ("head.bias", bad)], n_members=3)
        with pytest.raises(ValueError, match="parameter scale"):
            cls([("head.weight", good), ("scale", Parameter(torch.tensor(1.0)))], n_members=3)
        with pytest.raises(ValueError, match="no parameters that require gradients"):
            cls([("frozen", torch.zeros(3, 2))], n_members=3)


def test_wrong_kind_or_shape_of_state_is_refused() -> None:
    params = rosen_params(START)
    adam, lbfgs = BatchedAdam(params.items()), BatchedLBFGS(params.items())
    with pytest.raises(ValueError, match="'adam' optimiser state does not load into L-BFGS"):
        lbfgs.load_state_dict(adam.state_dict())
    with pytest.raises(ValueError, match="'lbfgs' optimiser state does not load into Adam"):
        adam.load_state_dict(lbfgs.state_dict())
    for _ in range(3):
        lbfgs.step(single_closure(params, True), 1.0)
    bigger = BatchedLBFGS([("x", Parameter(torch.zeros(5)))])
    with pytest.raises(ValueError, match="the model has 5 parameters"):
        bigger.load_state_dict(lbfgs.state_dict())
    ensemble = BatchedAdam([("x", Parameter(torch.zeros(3, 4)))], n_members=3)
    with pytest.raises(ValueError, match="saved per member"):
        ensemble.state_dict()
    with pytest.raises(ValueError, match="one per member"):
        ensemble.step([0.1, 0.1])
    assert OPTIMIZERS == {"adam": BatchedAdam, "lbfgs": BatchedLBFGS}


def test_a_search_that_cannot_move_is_not_repeated() -> None:
    """Member 1 reports the wrong sign of its gradient, so every trial step raises its loss and its
    line search ends at step 0. From then on it is not searched again (the search would repeat
    exactly): the steps cost one evaluation round instead of ~26, member 1 stays where it is, and
    member 0 follows its own solo run exactly."""
    start = torch.tensor([[1.5, -0.7], [0.8, 0.3]])
    x = Parameter(start.clone())
    opt = BatchedLBFGS([("x", x)], n_members=2)
    rounds: list[int] = []

    def closure() -> Tensor:
        opt.zero_grad()
        losses = (x ** 2).sum(dim=1) + 0.1 * x.prod(dim=1)
        losses.sum().backward()
        with torch.no_grad():
            x.grad[1].neg_()  # member 1: an inconsistent gradient
        rounds[-1] += 1
        return losses.detach()

    history = []
    for _ in range(6):
        rounds.append(0)
        history.append(opt.step(closure, 1.0)[0].item())
    assert opt.stuck_ == [False, True]
    assert torch.equal(x.detach()[1], start[1])
    # steps 1 and 2 search for member 1 (its first iteration uses another initial step); later
    # steps cost the start evaluation and member 0's one trial point
    assert rounds[0] > 5 and rounds[1] > 5 and rounds[2:] == [2, 2, 2, 2]
    solo = Parameter(start[:1].clone())
    alone = BatchedLBFGS([("x", solo)], n_members=1)

    def solo_closure() -> Tensor:
        alone.zero_grad()
        losses = (solo ** 2).sum(dim=1) + 0.1 * solo.prod(dim=1)
        losses.sum().backward()
        return losses.detach()

    assert [alone.step(solo_closure, 1.0)[0].item() for _ in range(6)] == history
    state = opt.member_state(1)
    assert state["stuck"] is True
    fresh = BatchedLBFGS([("x", Parameter(start[1:].clone()))], n_members=1)
    fresh.load_member_state(0, state)
    assert fresh.stuck_ == [True]


@pytest.mark.parametrize("n_members, size, history", [(1, 40, 5), (3, 17, 6)])
def test_two_loop_kernel_is_the_torch_recursion(n_members: int, size: int, history: int) -> None:
    """The C++ two-loop recursion gives the torch loops' directions, for full and partly
    filled ring buffers that wrapped around."""
    from kanode.optim.lbfgs import TWO_LOOP

    if TWO_LOOP.get() is None:
        pytest.skip("the L-BFGS CPU kernel is switched off (KANODE_NATIVE=0) or cannot be built")
    gen = torch.Generator().manual_seed(4)
    x = torch.zeros(n_members, size, dtype=torch.float64, requires_grad=True)
    opt = BatchedLBFGS([("x", x)], n_members=n_members, history_size=history)
    opt.steps_hist_.copy_(torch.randn(opt.steps_hist_.shape, generator=gen, dtype=torch.float64))
    opt.grads_hist_.copy_(opt.steps_hist_ + 0.3 * torch.randn(opt.steps_hist_.shape, generator=gen,
                                                                dtype=torch.float64))
    opt.count_ = [history - m for m in range(n_members)]
    opt.head_ = [(3 * m + 2) % history for m in range(n_members)]
    opt.h_diag_ = [0.5 + m for m in range(n_members)]
    grad = torch.randn(n_members, size, generator=gen, dtype=torch.float64)
    want = opt._two_loop_torch(grad)
    got = opt._two_loop(grad)
    assert float((got - want).abs().max() / want.abs().max()) <= 1e-13
    assert float((got + grad * torch.tensor(opt.h_diag_, dtype=torch.float64)[:, None]).abs().max()) > 1e-3


@pytest.mark.parametrize("max_iter", [1, 3])
def test_the_subset_closure_takes_the_same_steps_and_evaluates_only_the_searching(max_iter: int) -> None:
    """With ``subset`` the line searches evaluate only the members still searching; the members'
    steps are those of the all-member closure (the others' values are never read: here they
    are poisoned with NaN)."""
    def run(with_subset: bool) -> tuple[list[list[float]], Tensor, list[list[int]]]:
        x = Parameter(torch.tensor(STARTS))
        opt = BatchedLBFGS([("x", x)], n_members=len(STARTS), history_size=5, max_iter=max_iter)
        closure, asked = ensemble_closure(x), []

        def subset(members: list[int]) -> Tensor:
            asked.append(members)
            losses = closure()
            others = torch.ones(len(STARTS), dtype=torch.bool)
            others[members] = False
            x.grad[others] = math.nan
            return torch.where(others, torch.full_like(losses, math.nan), losses)

        losses = [opt.step(closure, 1.0, subset=subset if with_subset else None).tolist() for _ in range(25)]
        return losses, x.detach(), asked

    want, x_want, _ = run(False)
    got, x_got, asked = run(True)
    assert got == want and torch.equal(x_got, x_want)
    assert asked and all(m == sorted(set(m)) for m in asked)
    assert any(len(m) < len(STARTS) for m in asked)  # some evaluations left members out
