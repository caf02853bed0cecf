"""Ensemble training throughput: M neural ODEs per step against M sequential fits.

Protocol: Lotka–Volterra with the ``kanode.fit`` defaults (one trajectory;
the training window, the first 25 % of t ∈ [0, 14] at Δt = 0.1: 35 points,
t ≤ 3.4, as in experiments/bench_ode.py), RK4 with the sampling
interval as step, direct backpropagation, float64, Adam. One training step is
one step of ``kanode.train.Trainer``, for a single fit (its field stacked as an
ensemble of one, as ``kanode.fit`` runs it) and for M such fields (seeds 0 .. M-1)
stacked with ``EnsembleVectorField.from_fields`` — forward solve over the
window, backward of the (summed per-member) MSE, the per-member Adam step of
``kanode.optim``, and the trainers' per-step bookkeeping (parameter snapshot
and best-model tracking; no evaluation during the timed steps). Speed-up = M · t_single / t_ensemble,
the throughput against M sequential single steps timed in the same process.

Also printed (and written): the layer at batch 1 (forward + backward per
member against the single layer's tiny-batch path), and the NFE of one
dopri5 solve of an ensemble against the members' single solves, after a few
ensemble Adam steps so that the members differ.

Times are wall-clock medians (``speedup``); the process CPU times
(``cpu_speedup``) are the steadier measure on a shared machine.

Usage: python experiments/bench_ensemble.py [--quick] [--members 1,4,16,32,64,256]
       [--threads 1,2] [--repeats 10] [--device cpu] [--out experiments/results]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kanode.config import FitConfig  # noqa: E402
from kanode.data import load_data  # noqa: E402
from kanode.ensemble import EnsembleKANLayer, EnsembleVectorField, solve_ensemble  # noqa: E402
from kanode.fit import build_field  # noqa: E402
from kanode.nn import KANLayer  # noqa: E402
from kanode.ode import solve  # noqa: E402
from kanode.train import Trainer  # noqa: E402

MODELS = {"kan": [2, 10, 2], "mlp": [2, 50, 2]}
LR = 3e-2


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _median_time(step, repeats: int, device: str, warmup: int = 1) -> tuple[float, float]:
    """Median wall time and median process CPU time (s) of ``step()``. On a
    busy machine the CPU time (all threads summed) is the steadier of the two."""
    walls, cpus = [], []
    for k in range(warmup + repeats):
        _sync(device)
        wall, cpu = time.perf_counter(), time.process_time()
        step()
        _sync(device)
        if k >= warmup:
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def _fields(model: str, n: int, data, device: str, first_seed: int = 0):
    fields = []
    for seed in range(first_seed, first_seed + n):
        config = FitConfig(model=model, widths=MODELS[model], seed=seed, device=device, plots=False)
        fields.append(build_field(config, data))
    return fields


def _config(model: str, seed: int, device: str) -> FitConfig:
    """The timed recipe: Adam, RK4 at the sampling interval, direct backprop, no evaluation
    during the timed steps."""
    return FitConfig(model=model, widths=MODELS[model], seed=seed, device=device, plots=False,
                     optimizer="adam", steps=10_000, lr=LR, method="rk4", adjoint=False,
                     eval_every=10_000)


def _step_time(steps, repeats: int, device: str, warmup: int = 1) -> tuple[float, float]:
    return _median_time(lambda: next(steps), repeats, device, warmup=warmup)


def single_step_time(model: str, data, t, y0, target, repeats: int, device: str) -> tuple[float, float]:
    """Median time of one step of kanode.train.Trainer (a single fit), cycling over 4 seeds."""
    trainers = [Trainer(EnsembleVectorField.from_fields([build_field(c, data)]), [data], [c]) for c in
                (_config(model, seed, device) for seed in range(1000, 1004))]
    iterators = [t.steps() for t in trainers]
    counter = [0]

    def step():
        k = counter[0] % len(iterators)
        counter[0] += 1
        next(iterators[k])

    return _median_time(step, repeats, device, warmup=len(iterators))


def ensemble_step(field: EnsembleVectorField, opt, t, y0, target):
    """One bare Adam step over all members (used to make members differ); returns the losses (M,)."""
    opt.zero_grad()
    pred = solve_ensemble(field, y0, t, method="rk4", step_size=0.1, adjoint=False)  # (n_t, M, n_traj, dim)
    losses = ((pred - target.unsqueeze(1)) ** 2).mean(dim=(0, 2, 3))
    losses.sum().backward()
    opt.step()
    return losses


def ensemble_step_time(model: str, members: int, data, t, y0, target, repeats: int,
                       device: str) -> tuple[float, float]:
    """Median time of one step of kanode.train.Trainer over ``members`` seeds."""
    configs = [_config(model, seed, device) for seed in range(members)]
    field = EnsembleVectorField.from_fields([build_field(c, data) for c in configs])
    trainer = Trainer(field, [data] * members, configs)
    return _step_time(trainer.steps(), repeats, device)


def layer_rows(members_list, repeats: int, device: str) -> list[dict]:
    """Batch-1 forward + backward of a KAN layer: single tiny-batch path vs ensemble, per member."""
    rows = []
    for n_in, n_out in ((2, 10), (10, 2)):
        gen = torch.Generator().manual_seed(0)
        single = KANLayer(n_in, n_out, generator=gen).to(device=device, dtype=torch.float64)
        x1 = torch.randn(1, n_in, dtype=torch.float64, device=device, requires_grad=True)

        def single_call():
            single(x1).sum().backward()

        t_single = _median_time(single_call, 50 * repeats, device, warmup=10)[0]
        for members in members_list:
            ensemble = EnsembleKANLayer([single] * members)
            xm = torch.randn(members, 1, n_in, dtype=torch.float64, device=device, requires_grad=True)

            def ensemble_call():
                ensemble(xm).sum().backward()

            t_ens = _median_time(ensemble_call, 10 * repeats, device, warmup=5)[0]
            rows.append(dict(layer=f"{n_in}->{n_out}", members=members, threads=torch.get_num_threads(),
                             single_us=round(1e6 * t_single, 2), ensemble_us=round(1e6 * t_ens, 2),
                             per_member_us=round(1e6 * t_ens / members, 3),
                             speedup=round(members * t_single / t_ens, 2)))
    return rows


def nfe_rows(data, t, y0, target, members: int, device: str) -> list[dict]:
    """dopri5 NFE (rtol 1e-7, atol 1e-9) of ensemble solves vs the members' single solves,
    and the errors of both against a tight single solve (rtol 1e-11)."""
    rows = []
    for model in MODELS:
        field = EnsembleVectorField.from_fields(_fields(model, members, data, device))
        opt = torch.optim.Adam(field.parameters(), lr=LR)
        y0m = y0.expand(members, *y0.shape)
        for _ in range(30):  # make the members differ
            ensemble_step(field, opt, t, y0m, target)
        singles = []
        with torch.no_grad():
            for m in range(members):
                single = field.member(m)
                single.reset_nfe()
                ref = solve(single, y0, t, method="dopri5", rtol=1e-7, atol=1e-9, adjoint=False)
                nfe = single.reset_nfe()
                tight = solve(single, y0, t, method="dopri5", rtol=1e-11, atol=1e-13, adjoint=False)
                singles.append((nfe, ref, tight))
            single_error = max(float((ref - tight).abs().max()) for _, ref, tight in singles)
            for norm in ("member", "joint"):
                field.reset_nfe()
                pred = solve_ensemble(field, y0m, t, method="dopri5", rtol=1e-7, atol=1e-9, adjoint=False,
                                      norm=norm)
                nfe = field.reset_nfe()
                diff = max(float((pred[:, m] - ref).abs().max()) for m, (_, ref, _) in enumerate(singles))
                error = max(float((pred[:, m] - tight).abs().max()) for m, (_, _, tight) in enumerate(singles))
                counts = [n for n, _, _ in singles]
                rows.append(dict(model=model, members=members, norm=norm, ensemble_nfe=nfe,
                                 single_nfe_mean=round(statistics.mean(counts), 1),
                                 single_nfe_max=max(counts), single_nfe_sum=sum(counts),
                                 max_diff_vs_single=f"{diff:.1e}", max_error_single=f"{single_error:.1e}",
                                 max_error_ensemble=f"{error:.1e}"))
    return rows


def print_table(rows: list[dict]) -> None:
    keys = list(rows[0])
    widths = [max(len(k), *(len(str(r[k])) for r in rows)) for k in keys]
    print("  ".join(k.rjust(w) for k, w in zip(keys, widths)))
    for row in rows:
        print("  ".join(str(row[k]).rjust(w) for k, w in zip(keys, widths)))
    print()


def write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 repeats instead of --repeats")
    parser.add_argument("--members", default="1,4,16,32,64,256")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--nfe-members", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=str(ROOT / "experiments" / "results"))
    args = parser.parse_args(argv)
    repeats = 3 if args.quick else args.repeats
    members_list = [int(v) for v in args.members.split(",")]
    threads_list = [int(v) for v in args.threads.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    data = load_data(FitConfig(plots=False)).to(torch.float64, args.device)
    t, y = data.t_train, data.y_train  # (n_t,), (n_traj, n_t, dim)
    y0, target = y[:, 0], y.transpose(0, 1)  # (n_traj, dim), (n_t, n_traj, dim)
    print(f"Lotka–Volterra, {t.numel()} points on t ∈ [0, {float(t[-1]):.1f}], RK4 Δt = 0.1, "
          f"direct backprop, float64, {args.device}; repeats {repeats}\n")

    step_rows, layer_table = [], []
    for threads in threads_list:
        torch.set_num_threads(threads)
        for model, widths in MODELS.items():
            t_single, cpu_single = single_step_time(model, data, t, y0, target, repeats, args.device)
            for members in members_list:
                t_ens, cpu_ens = ensemble_step_time(model, members, data, t, y0, target, repeats, args.device)
                step_rows.append(dict(model=model, widths=str(widths).replace(" ", ""), device=args.device,
                                      threads=threads, members=members,
                                      single_step_ms=round(1e3 * t_single, 2),
                                      ensemble_step_ms=round(1e3 * t_ens, 2),
                                      per_member_ms=round(1e3 * t_ens / members, 3),
                                      speedup=round(members * t_single / t_ens, 2),
                                      single_cpu_ms=round(1e3 * cpu_single, 2),
                                      ensemble_cpu_ms=round(1e3 * cpu_ens, 2),
                                      cpu_speedup=round(members * cpu_single / cpu_ens, 2)))
            print(f"{model} {widths}, {threads} thread(s): single step {1e3 * t_single:.1f} ms")
        layer_table += layer_rows(members_list, repeats, args.device)
    print("\nTraining step (speedup = M · single / ensemble):")
    print_table(step_rows)
    write_csv(out / "bench_ensemble.csv", step_rows)
    print("KAN layer at batch 1, forward + backward (speedup per member against the single layer):")
    print_table(layer_table)
    write_csv(out / "bench_ensemble_layer.csv", layer_table)
    torch.set_num_threads(threads_list[0])
    nfe = nfe_rows(data, t, y0, target, args.nfe_members, args.device)
    print(f"dopri5 (rtol 1e-7, atol 1e-9) NFE, {args.nfe_members} members after 30 ensemble Adam steps "
          "(norm member: largest per-member RMS; joint: RMS over all members); errors: max abs "
          "against a single solve at rtol 1e-11:")
    print_table(nfe)
    write_csv(out / "bench_ensemble_nfe.csv", nfe)
    print(f"wrote {out / 'bench_ensemble.csv'}, bench_ensemble_layer.csv, bench_ensemble_nfe.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
