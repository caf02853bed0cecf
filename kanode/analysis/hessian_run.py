"""The Hessian spectrum of one run: compute it, save ``hessian.npz``."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kanode.analysis.hessian import (EXACT_MAX_PARAMS, exact_hessian, hutchinson_trace, hvp_operator,
                                     lanczos_extremes, slq_density)
from kanode.analysis.objective import load_objective
from kanode.analysis.spectra import spectrum_stats
from kanode.config import ConfigError
from kanode.ode import SolverError

__all__ = ["METHODS", "HessianResult", "run_hessian", "find_runs", "run_meta",
           "check_exact_size"]

METHODS = ("exact", "lanczos")


@dataclass
class HessianResult:
    """Eigenvalues (ascending; all of them for ``exact``, the ``k`` largest and
    ``k`` smallest for ``lanczos``), the trace (exact, or Hutchinson's with
    its standard error), an optional SLQ density and the run's metadata."""

    run: str
    method: str
    n_params: int
    eigenvalues: np.ndarray
    trace: float
    trace_stderr: float
    time_s: float
    meta: dict[str, Any] = field(default_factory=dict)
    slq_nodes: np.ndarray | None = None
    slq_weights: np.ndarray | None = None

    def row(self) -> dict[str, Any]:
        """One row of :data:`kanode.analysis.spectra.TABLE_COLUMNS`."""
        return {"run": self.run, **self.meta, "n_params": self.n_params, "method": self.method,
                **spectrum_stats(self.eigenvalues, self.trace), "trace_stderr": self.trace_stderr,
                "time_s": self.time_s}

    def save(self, path: Path) -> None:
        """``hessian.npz``: eigenvalues, method, n_params, trace, trace_stderr,
        time_s (and slq_nodes / slq_weights when computed)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        extra = {} if self.slq_nodes is None else {"slq_nodes": self.slq_nodes, "slq_weights": self.slq_weights}
        np.savez(path, eigenvalues=self.eigenvalues, method=np.array(self.method),
                 n_params=np.array(self.n_params), trace=np.array(self.trace),
                 trace_stderr=np.array(self.trace_stderr), time_s=np.array(self.time_s), **extra)


def run_hessian(run_dir: str | Path, method: str = "exact", k: int = 20, probes: int = 200,
                slq_probes: int = 0, slq_steps: int = 80, chunk: int = 256, seed: int = 0,
                name: str | None = None, tol: float = 0.0) -> HessianResult:
    """The Hessian spectrum of the training loss of the run in ``run_dir`` at
    its final parameters (see :func:`kanode.analysis.load_objective`).

    ``exact`` (n ≤ ``EXACT_MAX_PARAMS``): the full Hessian from batched HVPs
    of ``chunk`` tangents, then ``eigvalsh``. ``lanczos``: the ``k`` largest
    and ``k`` smallest eigenvalues (``eigsh`` to relative accuracy ``tol``;
    0: machine precision) and
    Hutchinson's trace with ``probes`` Rademacher vectors. ``slq_probes`` > 0
    adds an SLQ density of ``slq_steps`` Lanczos steps per probe.

    Raises
    ------
    ConfigError : not a run, no checkpoint, unknown method, too many
        parameters for ``exact``, or a solver failure at the run's parameters.
    """
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    run_dir = Path(run_dir)
    meta = run_meta(run_dir)  # a damaged summary.json is refused before any work
    start = time.perf_counter()
    f, theta = load_objective(run_dir)
    n = theta.numel()
    check_exact_size(run_dir, n, method)
    try:
        hvp = hvp_operator(f, theta)
    except SolverError as exc:
        raise ConfigError(f"{run_dir}: the training loss cannot be solved at the run's last parameters "
                          f"({exc})") from None
    if method == "exact":
        eigenvalues = torch.linalg.eigvalsh(exact_hessian(hvp, n, chunk)).numpy()
        trace, stderr = float(eigenvalues.sum()), 0.0
    else:
        k = min(k, n - 1)
        eigenvalues = np.union1d(lanczos_extremes(hvp, n, k, "SA", tol=tol, seed=seed),
                                 lanczos_extremes(hvp, n, k, "LA", tol=tol, seed=seed))
        trace, stderr = hutchinson_trace(hvp, n, probes, seed=seed)
    density = slq_density(hvp, n, slq_steps, slq_probes, seed=seed) if slq_probes else None
    return HessianResult(run=name or run_dir.name, method=method, n_params=n, eigenvalues=eigenvalues,
                         trace=trace, trace_stderr=stderr, time_s=time.perf_counter() - start,
                         meta=meta, slq_nodes=None if density is None else density.nodes,
                         slq_weights=None if density is None else density.weights)


def check_exact_size(run_dir: str | Path, n: int, method: str) -> None:
    """ConfigError (one line) when ``method`` is exact and ``n`` > :data:`EXACT_MAX_PARAMS`."""
    if method == "exact" and n > EXACT_MAX_PARAMS:
        raise ConfigError(f"{run_dir} has {n} parameters, too many for the exact Hessian "
                          f"(at most {EXACT_MAX_PARAMS}); use --method lanczos")


def run_meta(run_dir: Path) -> dict[str, Any]:
    """system, model, seed and final_train_loss of the run's ``summary.json`` ({} if it has none);
    ConfigError (one line) when the file is damaged."""
    from kanode.runs import read_summary

    summary = read_summary(run_dir / "summary.json")  # ConfigError (one line) when damaged
    if summary is None:
        return {}
    return {key: summary.get(key) for key in ("system", "model", "seed", "final_train_loss")}


def find_runs(paths: list[str | Path]) -> list[tuple[Path, str]]:
    """Run directories (those with a ``config.toml``) given directly or found
    below sweep directories, each with a unique name: the shortest tail of
    its path that tells it from the others, joined by dashes
    (``.../pleiades/kan/seed0`` → ``pleiades-kan-seed0`` next to ``pleiades-mlp-seed0``).

    Raises ConfigError for a path that does not exist or holds no run.
    """
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            raise ConfigError(f"run directory {path} does not exist")
        if (path / "config.toml").exists():
            found.append(path)
            continue
        below = sorted(p.parent for p in path.rglob("config.toml") if (p.parent / "metrics.csv").exists())
        if not below:
            raise ConfigError(f"{path} holds no kanode run (no config.toml in it or below it)")
        found += below
    found = list(dict.fromkeys(p.resolve() for p in found))
    for depth in range(1, max(len(p.parts) for p in found) + 1):
        names = ["-".join(p.parts[-depth:]) for p in found]
        if len(set(names)) == len(names):
            break
    return list(zip(found, names))
