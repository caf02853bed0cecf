"""Hare and lynx: train 1900–1915, forecast 1916–1920, against the least-squares LV fit.

Data: Hudson's Bay Company snowshoe hare and lynx pelt counts, thousands per
year, 1900–1920 (public domain; the series of PyMC's, Stan's and many
textbooks' Lotka–Volterra examples; kanode issue 20), in
``experiments/data/hare_lynx.csv`` (all 21 years) and
``experiments/data/hare_lynx_1900_1915.csv`` (the 16 training years).

What it runs (each ensemble is one ``kanode.fit`` command; ``--fits`` skips
the ones whose run directories exist)::

    python -m kanode.fit --data experiments/data/hare_lynx_1900_1915.csv \
        --n-test-traj 0 --train-fraction 1 --recipe short-series --model kan \
        --seeds 0-4 --out experiments/results/hare_lynx/runs/hare_lynx-kan --quiet --no-plots
    python -m kanode.fit ... --model mlp ... --out experiments/results/hare_lynx/runs/hare_lynx-mlp

(each first chooses the recipe's l2 by rolling-origin validation on the
training years, kanode.selection, and writes ``selection.json``; the summary
lists the choice), then, for every member, solves its field from its fitted
1900 state to 1920 (rk4 at the recipe's step) and scores 1916–1920 against
the held-back years.
The baseline is the 6-parameter Lotka–Volterra model (α, β, γ, δ and the
1900 state) fitted by ``scipy.optimize.least_squares`` through ``solve_ivp``
on the same 16 years.

``--check`` adds the cases the recipe was not tuned on: simulated
Lotka–Volterra with other constants and a Brusselator (a chemical
oscillator), each 21 yearly-like points with 5 % noise, and FitzHugh–Nagumo
(a relaxation oscillator, 21 points with 10 % noise), trained on the first
16 and forecast on the last 5, against the true model's own least-squares
refit.

``--ablation`` fits the hare–lynx ensembles twice more with the recipe's
resolved settings but one part taken out (written to a ``config.toml`` and run
with ``kanode.fit --config``): no horizon curriculum (``horizons = []``), and
no l2 selection (the noise-derived l2, :mod:`kanode.selection`'s factor 1).

Writes ``experiments/results/hare_lynx/``: ``forecast.csv`` (one row per
fit), ``summary.md`` (the table), ``hare_lynx.png`` (median and min–max band
of the members against the data and the LV fit), and with ``--check``
``check.csv``.

    python experiments/hare_lynx.py [--check] [--ablation] [--seeds 0-4]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.integrate import solve_ivp
from scipy.optimize import least_squares

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "experiments" / "data"
OUT = ROOT / "experiments" / "results" / "hare_lynx"
N_TRAIN = 16


# ------------------------------------------------------------------ data
def read_series(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(t (n,), y (n, 2)) of a one-trajectory CSV ``traj,t,a,b``."""
    rows = np.loadtxt(path, delimiter=",", skiprows=1)
    return rows[:, 1], rows[:, 2:]


def write_series(path: Path, t: np.ndarray, y: np.ndarray, names: tuple[str, str]) -> None:
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["traj", "t", *names])
        for ti, yi in zip(t, y):
            out.writerow([0, f"{ti:g}", *(f"{v:.6g}" for v in yi)])


# ------------------------------------------------------ least-squares LV
def lv_rhs(_t: float, y: np.ndarray, a: float, b: float, c: float, d: float) -> list[float]:
    return [a * y[0] - b * y[0] * y[1], d * y[0] * y[1] - c * y[1]]


def fit_lv(t: np.ndarray, y: np.ndarray, guess: np.ndarray) -> np.ndarray:
    """(a, b, c, d, x0, y0) minimising the squared error of the LV trajectory on (t, y)."""
    def residual(p: np.ndarray) -> np.ndarray:
        sol = solve_ivp(lv_rhs, (t[0], t[-1]), p[4:], t_eval=t, args=tuple(p[:4]), rtol=1e-9, atol=1e-9)
        if not sol.success or sol.y.shape[1] != t.size:
            return np.full(y.size, 1e6)
        return (sol.y.T - y).ravel()

    return least_squares(residual, guess, bounds=(1e-6, np.inf)).x


def lv_trajectory(p: np.ndarray, t: np.ndarray) -> np.ndarray:
    sol = solve_ivp(lv_rhs, (t[0], t[-1]), p[4:], t_eval=t, args=tuple(p[:4]), rtol=1e-10, atol=1e-10)
    return sol.y.T


# ------------------------------------------------------------ kanode runs
def run_ensemble(train_file: Path, model: str, seeds: str, out: Path) -> None:
    if (out / "ensemble.json").exists():
        print(f"  {out} exists; reusing it")
        return
    cmd = [sys.executable, "-m", "kanode.fit", "--data", str(train_file.relative_to(ROOT)), "--n-test-traj", "0",
           "--train-fraction", "1", "--recipe", "short-series", "--model", model, "--seeds", seeds,
           "--out", str(out.relative_to(ROOT)), "--quiet", "--no-plots"]
    print("  " + " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=False, cwd=ROOT)


def selection_note(ensemble_dir: Path, model: str) -> str:
    """One line: the l2 the recipe chose by rolling-origin validation on the training years
    (the ensemble's ``selection.json``, kanode.selection), or that it chose none."""
    import json

    path = ensemble_dir / "selection.json"
    if not path.exists():
        return f"{model.upper()}: no l2 selection (the recipe's noise-derived l2)"
    s = json.loads(path.read_text())
    scores = ", ".join(f"×{c:g} {v:.3g}" for c, v in zip(s["factors"], s["scores"]))
    return (f"{model.upper()}: l2 = {s['l2']:.3g} = ×{s['factor']:g} the noise-derived {s['base_l2']:.3g}, chosen "
            f"on the training years (last {', '.join(map(str, s['holdouts']))} held back; mean relative "
            f"validation error {scores})")


def member_forecasts(ensemble_dir: Path, t_dense: np.ndarray) -> list[tuple[int, str, np.ndarray]]:
    """(seed, status, trajectory (len(t_dense), 2)) of every member, from its fitted initial state."""
    import json

    import torch

    from kanode.checkpoints import load_checkpoint
    from kanode.config import load_config
    from kanode.lifecycle import prepare
    from kanode.ode import solve

    out = []
    for name in json.loads((ensemble_dir / "ensemble.json").read_text())["members"]:
        run = ensemble_dir / name
        config = load_config(run / "config.toml")
        data, field = prepare(config)
        field.load_state_dict(load_checkpoint(run / "checkpoints" / "last.pt")["model"])
        summary = json.loads((run / "summary.json").read_text())
        with torch.no_grad():
            y0 = field.initial_values(data.y[:, 0])
            t = torch.as_tensor(t_dense, dtype=data.t.dtype)
            try:
                pred = solve(field, y0, t, method="rk4", step_size=config.step_size, adjoint=False,
                             max_num_steps=10**6)[:, 0].numpy()
            except Exception:  # noqa: BLE001 - a member whose forecast blows up scores inf
                pred = np.full((t_dense.size, 2), np.inf)
        out.append((config.seed, summary["status"], pred))
    return out


@dataclass
class Scored:
    label: str
    seed: int | str
    train_mse: float
    forecast_mse: float


def score(pred_at_obs: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    err = (pred_at_obs - y) ** 2
    return float(err[:N_TRAIN].mean()), float(err[N_TRAIN:].mean())


def evaluate_case(name: str, t: np.ndarray, y: np.ndarray, names: tuple[str, str], seeds: str,
                  lv_guess: np.ndarray, results: Path,
                  train_file: Path | None = None) -> tuple[list[Scored], dict]:
    """Fit LV, KAN and MLP ensembles to the first N_TRAIN points of (t, y) (``train_file``, or
    a CSV of them written under ``results``); score the rest."""
    results.mkdir(parents=True, exist_ok=True)
    if train_file is None:
        train_file = results / f"{name}_train.csv"
        write_series(train_file, t[:N_TRAIN], y[:N_TRAIN], names)
    p = fit_lv(t[:N_TRAIN], y[:N_TRAIN], lv_guess)
    rows = [Scored("mechanistic least squares", "-", *score(lv_trajectory(p, t), y))]
    t_dense = np.linspace(t[0], t[-1], 20 * (t.size - 1) + 1)
    curves = {"lv": lv_trajectory(p, t_dense), "lv_params": p}
    for model in ("kan", "mlp"):
        ens = results / "runs" / f"{name}-{model}"
        run_ensemble(train_file, model, seeds, ens)
        curves.setdefault("notes", []).append(selection_note(ens, model))
        members = member_forecasts(ens, t_dense)
        at_obs = [(seed, status, traj[::20]) for seed, status, traj in members]
        for seed, status, obs in at_obs:
            rows.append(Scored(f"{model.upper()} short-series", seed, *score(obs, y)))
        stack = np.stack([traj for _, _, traj in members])                      # (n_seeds, n_dense, 2)
        median = np.median(stack, axis=0)
        curves[model] = (median, stack.min(0), stack.max(0))
        rows.append(Scored(f"{model.upper()} median trajectory", "median", *score(median[::20], y)))
    curves["t_dense"] = t_dense
    return rows, curves


def median_of_seeds(rows: list[Scored], label: str) -> tuple[float, float]:
    seeds = [r for r in rows if r.label == label and isinstance(r.seed, int)]
    return (statistics.median(r.train_mse for r in seeds), statistics.median(r.forecast_mse for r in seeds))


def write_table(rows: list[Scored], path: Path, case: str) -> None:
    new = not path.exists()
    with path.open("a", newline="") as fh:
        out = csv.writer(fh)
        if new:
            out.writerow(["case", "fit", "seed", "train_mse", "forecast_mse"])
        for r in rows:
            out.writerow([case, r.label, r.seed, f"{r.train_mse:.6g}", f"{r.forecast_mse:.6g}"])


def markdown(rows: list[Scored], case: str, notes: list[str] = ()) -> str:
    lv = next(r for r in rows if r.label == "mechanistic least squares")
    lines = [f"### {case}", "", f"mechanistic least squares (the case's own model: LV, Brusselator or FitzHugh–Nagumo), 6 parameters: train MSE {lv.train_mse:.3g}, forecast MSE {lv.forecast_mse:.3g}",
             "", "| fit | forecast MSE per seed | median of seeds | × baseline | median trajectory | train MSE (median) |",
             "|---|---|---|---|---|---|"]
    for label in ("KAN short-series", "MLP short-series"):
        seeds = [r for r in rows if r.label == label]
        train, forecast = median_of_seeds(rows, label)
        traj = next(r for r in rows if r.label == label.replace("short-series", "median trajectory"))
        per_seed = " / ".join(f"{r.forecast_mse:.3g}" for r in seeds)
        lines.append(f"| {label} | {per_seed} | {forecast:.3g} | {forecast / lv.forecast_mse:.2g} | "
                     f"{traj.forecast_mse:.3g} | {train:.3g} |")
    if notes:
        lines += [""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def plot(t: np.ndarray, y: np.ndarray, curves: dict, names: tuple[str, str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 6.5), sharex=True)
    td = curves["t_dense"]
    for col, model in enumerate(("kan", "mlp")):
        median, lo, hi = curves[model]
        for row in range(2):
            ax = axes[row, col]
            ax.axvspan(t[N_TRAIN - 1], t[-1], color="0.92", lw=0)
            ax.fill_between(td, lo[:, row], hi[:, row], color="C0", alpha=0.25, lw=0, label="members (min–max)")
            ax.plot(td, median[:, row], color="C0", label=f"{model.upper()} median")
            ax.plot(td, curves["lv"][:, row], color="C3", ls="--", label="mechanistic least squares")
            ax.plot(t[:N_TRAIN], y[:N_TRAIN, row], "ko", ms=4, label="training data")
            ax.plot(t[N_TRAIN:], y[N_TRAIN:, row], "o", mfc="white", mec="k", ms=5, label="held back")
            top, low = 1.3 * float(np.nanmax(y[:, row])), 1.3 * min(0.0, float(np.nanmin(y[:, row])))
            ax.set_ylim(low, top)
            ax.set_ylabel(names[row])
            if row == 0:
                ax.set_title(f"{model.upper()} (short-series recipe), 5 seeds")
    axes[0, 0].legend(fontsize=7, loc="upper left")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------- cases not tuned on
def simulate(rhs, y0: np.ndarray, t: np.ndarray, noise: float, seed: int) -> np.ndarray:
    sol = solve_ivp(rhs, (t[0], t[-1]), y0, t_eval=t, rtol=1e-10, atol=1e-10).y.T
    rng = np.random.default_rng(seed)
    return sol * (1 + noise * rng.standard_normal(sol.shape))


def lv_other_series() -> tuple[np.ndarray, np.ndarray]:
    """Lotka–Volterra with other constants (0.8, 0.04, 0.6, 0.02) from (40, 12): 21 points on
    [0, 20], 5 % multiplicative noise. (t (21,), y (21, 2))"""
    t = np.arange(21.0)
    return t, simulate(lambda s, v: lv_rhs(s, v, 0.8, 0.04, 0.6, 0.02), np.array([40.0, 12.0]), t, 0.05, seed=1)


def brusselator_rhs(_t: float, v: np.ndarray, a: float, b: float, c: float, d: float) -> list[float]:
    return [a + v[0] ** 2 * v[1] - b * v[0], c * v[0] - d * v[0] ** 2 * v[1]]


def brusselator_series() -> tuple[np.ndarray, np.ndarray]:
    """The Brusselator (A = 1, B = 3) from (1, 1.5): 21 points on [0, 20], 5 % multiplicative noise."""
    t = np.linspace(0.0, 20.0, 21)
    return t, simulate(lambda s, v: brusselator_rhs(s, v, 1.0, 4.0, 3.0, 1.0), np.array([1.0, 1.5]), t, 0.05, seed=2)


def fitzhugh_nagumo_series() -> tuple[np.ndarray, np.ndarray]:
    """FitzHugh–Nagumo (systems.FitzHughNagumo's constants) from (1, 1): 21 points on [0, 80],
    additive noise of 10 % of each state's standard deviation."""
    from systems import FitzHughNagumo

    true = FitzHughNagumo()
    t = np.linspace(0.0, 80.0, 21)
    clean = solve_ivp(lambda s, v: true.rhs(s, v), (t[0], t[-1]), [1.0, 1.0], t_eval=t, rtol=1e-10, atol=1e-10).y.T
    rng = np.random.default_rng(3)
    return t, clean + 0.1 * clean.std(0) * rng.standard_normal(clean.shape)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0-4")
    parser.add_argument("--check", action="store_true", help="also run the cases not tuned on")
    parser.add_argument("--ablation", action="store_true",
                        help="also fit hare–lynx with the resolved recipe but no horizon curriculum, "
                             "and without the l2 selection")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    for stale in ("forecast.csv", "summary.md"):
        (OUT / stale).unlink(missing_ok=True)
    t, y = read_series(DATA / "hare_lynx.csv")
    rows, curves = evaluate_case("hare_lynx", t, y, ("hare", "lynx"), args.seeds,
                                 np.array([0.5, 0.02, 1.0, 0.03, 30.0, 4.0]), OUT,
                                 train_file=DATA / "hare_lynx_1900_1915.csv")
    write_table(rows, OUT / "forecast.csv", "hare_lynx")
    text = ["# Hare and lynx: train 1900–1915, forecast 1916–1920", "",
            markdown(rows, "hare_lynx", curves["notes"])]
    a, b, c, d, x0, y0 = curves["lv_params"]
    text.append(f"LV fit: a = {a:.3f}, b = {b:.4f}, c = {c:.3f}, d = {d:.4f}, state 1900 = ({x0:.1f}, {y0:.1f})\n")
    plot(t, y, curves, ("hare (thousands)", "lynx (thousands)"), OUT / "hare_lynx.png",
         "Hare and lynx pelts: trained on 1900–1915 (black), forecast 1916–1920 (white)")
    if args.ablation:
        text.append(ablation(t, y, args.seeds, "curriculum"))
        text.append(ablation(t, y, args.seeds, "selection"))
    if args.check:
        name, names = "lv_other", ("prey", "predator")
        t_sim, y_sim = lv_other_series()
        sim_rows, sim_curves = evaluate_case(name, t_sim, y_sim, names, args.seeds,
                                             np.array([0.8, 0.04, 0.6, 0.02, 40.0, 12.0]), OUT)
        write_table(sim_rows, OUT / "forecast.csv", name)
        text.append(markdown(sim_rows, name, sim_curves["notes"]))
        plot(t_sim, y_sim, sim_curves, names, OUT / f"{name}.png", f"{name}: 5 % noise, 16 + 5 points")
        text.append(brusselator_case(args.seeds))
        text.append(fitzhugh_nagumo_case(args.seeds))
    (OUT / "summary.md").write_text("\n".join(text), encoding="utf-8")
    print("\n".join(text))
    return 0


def ablation(t: np.ndarray, y: np.ndarray, seeds: str, what: str) -> str:
    """The hare–lynx ensembles again with the recipe's resolved settings (a member's
    ``config.toml``, run with ``recipe = "none"`` so that nothing is resolved again) but one
    part taken out, everything else equal: ``what`` = "curriculum" (``horizons = []``) or
    "selection" (``l2`` = the noise-derived weight, the selection's factor 1)."""
    import json

    from kanode.config import dump_config, load_config

    title = {"curriculum": "without the horizon curriculum",
             "selection": "without the l2 selection (the noise-derived l2)"}[what]
    lines = [f"### hare_lynx {title} (the recipe's other settings)", "",
             "| fit | forecast MSE per seed | median of seeds | train MSE per seed |", "|---|---|---|---|"]
    t_dense = np.linspace(t[0], t[-1], 20 * (t.size - 1) + 1)
    rows = []
    for model in ("kan", "mlp"):
        ens = OUT / "runs" / f"hare_lynx-{model}-no-{what}"
        if not (ens / "ensemble.json").exists():
            config = load_config(OUT / "runs" / f"hare_lynx-{model}" / "seed-0" / "config.toml")
            if what == "curriculum":
                config = config.replace(horizons=[], recipe="none")
            else:
                chosen = json.loads((OUT / "runs" / f"hare_lynx-{model}" / "selection.json").read_text())
                config = config.replace(l2=chosen["base_l2"], recipe="none")
            toml = OUT / "runs" / f"hare_lynx-{model}-no-{what}.toml"
            toml.write_text(dump_config(config), encoding="utf-8")
            cmd = [sys.executable, "-m", "kanode.fit", "--config", str(toml.relative_to(ROOT)), "--seeds", seeds,
                   "--out", str(ens.relative_to(ROOT)), "--quiet", "--no-plots"]
            print("  " + " ".join(cmd[1:]), flush=True)
            subprocess.run(cmd, check=False, cwd=ROOT)
        scored = [(seed, *score(traj[::20], y)) for seed, _status, traj in member_forecasts(ens, t_dense)]
        label = f"{model.upper()} no {what}"
        rows += [Scored(label, seed, train, fc) for seed, train, fc in scored]
        lines.append(f"| {label} | {' / '.join(f'{fc:.3g}' for _, _, fc in scored)} | "
                     f"{statistics.median(fc for _, _, fc in scored):.3g} | "
                     f"{' / '.join(f'{tr:.3g}' for _, tr, _ in scored)} |")
    write_table(rows, OUT / "forecast.csv", "hare_lynx")
    return "\n".join(lines) + "\n"


def mechanistic_case(name: str, rhs, t: np.ndarray, y: np.ndarray, guess: np.ndarray, lower: np.ndarray,
                     names: tuple[str, str], seeds: str, title: str) -> str:
    """A simulated case whose baseline is its own 4-parameter model ``rhs(t, v, *p)`` (and the
    initial state) refitted by least squares on the first N_TRAIN points; KAN and MLP ensembles
    of the short-series recipe on the same points; all scored on the rest."""
    def traj(p, tt):
        return solve_ivp(rhs, (tt[0], tt[-1]), p[4:], t_eval=tt, args=tuple(p[:4]), rtol=1e-9, atol=1e-9).y.T

    def residual(p):
        sol = solve_ivp(rhs, (t[0], t[N_TRAIN - 1]), p[4:], t_eval=t[:N_TRAIN], args=tuple(p[:4]),
                        rtol=1e-9, atol=1e-9)
        if not sol.success or sol.y.shape[1] != N_TRAIN:
            return np.full(2 * N_TRAIN, 1e6)
        return (sol.y.T - y[:N_TRAIN]).ravel()

    p = least_squares(residual, guess, bounds=(lower, np.inf)).x
    rows = [Scored("mechanistic least squares", "-", *score(traj(p, t), y))]  # the case's own model refitted
    OUT.mkdir(parents=True, exist_ok=True)
    train_file = OUT / f"{name}_train.csv"
    write_series(train_file, t[:N_TRAIN], y[:N_TRAIN], names)
    t_dense = np.linspace(t[0], t[-1], 20 * (t.size - 1) + 1)
    curves = {"lv": traj(p, t_dense), "t_dense": t_dense}
    notes = []
    for model in ("kan", "mlp"):
        ens = OUT / "runs" / f"{name}-{model}"
        run_ensemble(train_file, model, seeds, ens)
        notes.append(selection_note(ens, model))
        members = member_forecasts(ens, t_dense)
        for seed, _status, traj_m in members:
            rows.append(Scored(f"{model.upper()} short-series", seed, *score(traj_m[::20], y)))
        stack = np.stack([m[2] for m in members])
        median = np.median(stack, axis=0)
        curves[model] = (median, stack.min(0), stack.max(0))
        rows.append(Scored(f"{model.upper()} median trajectory", "median", *score(median[::20], y)))
    write_table(rows, OUT / "forecast.csv", name)
    plot(t, y, curves, names, OUT / f"{name}.png", title)
    return markdown(rows, f"{name} (baseline: its own model refitted)", notes)


def brusselator_case(seeds: str) -> str:
    """The Brusselator (A = 1, B = 3: a chemical oscillator), 21 points on [0, 20], 5 %
    multiplicative noise; baseline: x' = a + x²y − b x, y' = c x − d x²y refitted."""
    t, y = brusselator_series()
    return mechanistic_case("brusselator", brusselator_rhs, t, y, np.array([1.0, 4.0, 3.0, 1.0, y[0, 0], y[0, 1]]),
                            np.full(6, 1e-6), ("x", "y"), seeds,
                            "Brusselator (A = 1, B = 3): 5 % noise, 16 + 5 points")


def fitzhugh_nagumo_case(seeds: str) -> str:
    """FitzHugh–Nagumo (systems.FitzHughNagumo's constants: a = 0.7, b = 0.8, τ = 12.5, I = 0.5;
    a relaxation oscillator, period ≈ 42), 21 points on [0, 80] from (1, 1), additive noise of
    10 % of each state's standard deviation (v changes sign); baseline: its own 4 constants and
    the initial state refitted."""
    def rhs(_t, v, a, b, tau, current):
        return [v[0] - v[0] ** 3 / 3 - v[1] + current, (v[0] + a - b * v[1]) / tau]

    t, y = fitzhugh_nagumo_series()
    return mechanistic_case("fitzhugh_nagumo", rhs, t, y, np.array([0.7, 0.8, 12.5, 0.5, y[0, 0], y[0, 1]]),
                            np.array([1e-6] * 4 + [-np.inf] * 2), ("v", "w"), seeds,
                            "FitzHugh–Nagumo: 10 % noise, 16 + 5 points")


if __name__ == "__main__":
    sys.exit(main())
