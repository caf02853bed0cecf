"""kanode.compare: grouping, median/min/max curves, the table, the figure and the CLI.

Run directories are written by hand here (``write_run``) in the format that
``kanode.fit`` produces, with curves whose medians are known exactly.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from kanode.compare import find_runs, group_curve, group_runs, load_run, loss_table, main
from kanode.config import FitConfig, dump_config
from tests.kanode.drawn import panels, record_figures

METRICS_HEADER = ("step,phase,train_loss,val_loss,extrap_loss,lr,nfe_forward,nfe_backward,"
                  "wall_time,grad_norm")


def write_run(run_dir: Path, train_loss: Sequence[float], *, system: str = "lotka_volterra",
              model: str = "kan", seed: int = 0, n_params: int = 400, lbfgs_from: int | None = None,
              val_every: int = 0, status: str | None = "finished", seconds_per_step: float = 0.5,
              final: float | None = None, **config: object) -> Path:
    """Write a run directory like kanode.fit's; ``train_loss[i]`` belongs to step ``i + 1``.

    ``val_loss`` is ``2 * train_loss`` on every ``val_every``-th step and the last one.
    ``status=None`` leaves out ``summary.json`` (an unfinished run); ``final`` is the
    summary's ``final_train_loss`` (the loss after the last step; default: the last row's).
    """
    train_loss = [float(v) for v in train_loss]
    run_dir.mkdir(parents=True)
    cfg = FitConfig(system=system, model=model, seed=seed, **config)
    (run_dir / "config.toml").write_text(dump_config(cfg))
    lines = [METRICS_HEADER]
    n = len(train_loss)
    for i, loss in enumerate(train_loss):
        step = i + 1
        phase = "lbfgs" if lbfgs_from is not None and step >= lbfgs_from else "adam"
        has_val = val_every and (step % val_every == 0 or step == n)
        val = f"{2 * loss!r}" if has_val else ""
        lines.append(f"{step},{phase},{loss!r},{val},{val},0.01,20,30,"
                     f"{step * seconds_per_step!r},1.0")
    (run_dir / "metrics.csv").write_text("\n".join(lines) + "\n")
    if status is not None:
        final = train_loss[-1] if final is None else final
        summary = {"status": status, "reason": "", "system": system, "model": model,
                   "widths": cfg.widths or [2, 10 if model == "kan" else 50, 2], "seed": seed,
                   "final_train_loss": final, "best_train_loss": min(*train_loss, final),
                   "final_val_loss": 2.0 * train_loss[-1],
                   "final_extrap_loss": 2.0 * train_loss[-1], "n_params": n_params, "steps": n,
                   "wall_time_s": n * seconds_per_step, "time_per_step_s": seconds_per_step,
                   "nfe_per_step": 50.0}
        (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    """3 KAN seeds (scales 1, 2, 4 of 0.5**step), 2 MLP seeds (0.1, 0.3 flat), 1 spiral KAN."""
    steps = np.arange(1, 11)
    for seed, scale in enumerate((1.0, 2.0, 4.0)):
        write_run(tmp_path / "sweep" / f"kan{seed}", list(scale * 0.5 ** steps), seed=seed,
                  lbfgs_from=9, val_every=5)
    for seed, level in enumerate((0.1, 0.3)):
        write_run(tmp_path / "sweep" / f"mlp{seed}", [level] * 10, model="mlp", seed=seed,
                  n_params=402, widths=[2, 80, 2], val_every=5)
    write_run(tmp_path / "spiral", [1.0, 0.5], system="spiral")
    return tmp_path


def test_find_runs_descends_into_sweep_directories(runs: Path) -> None:
    found = find_runs([runs / "sweep", runs / "spiral"])
    assert len(found) == 6
    assert found[-1] == runs / "spiral"


def test_groups_and_median_band(runs: Path) -> None:
    groups = group_runs([load_run(p) for p in find_runs([runs])])
    assert [(g.system, g.model, len(g.runs)) for g in groups] == [
        ("lotka_volterra", "kan", 3), ("lotka_volterra", "mlp", 2), ("spiral", "kan", 1)]
    assert groups[1].label == "MLP [2, 80, 2]"
    curve = group_curve(groups[0], "train_loss", "step")
    np.testing.assert_array_equal(curve.x, np.arange(1, 11))
    np.testing.assert_allclose(curve.median, 2.0 * 0.5 ** np.arange(1, 11), rtol=1e-12)
    np.testing.assert_allclose(curve.low, 0.5 ** np.arange(1, 11), rtol=1e-12)
    np.testing.assert_allclose(curve.high, 4.0 * 0.5 ** np.arange(1, 11), rtol=1e-12)
    assert curve.switch == 9.0
    mlp = group_curve(groups[1], "train_loss", "time")
    np.testing.assert_allclose(mlp.x, 0.5 * np.arange(1, 11))
    np.testing.assert_allclose(mlp.median, 0.2, rtol=1e-12)
    assert math.isnan(mlp.switch)


def test_sparse_metric_uses_filled_rows_only(runs: Path) -> None:
    groups = group_runs([load_run(p) for p in find_runs([runs / "sweep"])])
    curve = group_curve(groups[0], "val_loss", "step")
    np.testing.assert_array_equal(curve.x, [5, 10])
    np.testing.assert_allclose(curve.median, [4 * 0.5 ** 5, 4 * 0.5 ** 10], rtol=1e-12)


def test_shorter_run_only_counts_where_it_exists(tmp_path: Path) -> None:
    write_run(tmp_path / "a", [1.0, 1.0, 1.0, 1.0], seed=0)
    write_run(tmp_path / "b", [3.0, 3.0], seed=1, status="diverged")
    write_run(tmp_path / "c", [5.0, 5.0, 5.0, 5.0], seed=2)
    (group,) = group_runs([load_run(p) for p in find_runs([tmp_path])])
    curve = group_curve(group)
    np.testing.assert_allclose(curve.median, [3.0, 3.0, 3.0, 3.0])  # median of (1,3,5), (1,5)
    np.testing.assert_allclose(curve.high, [5.0] * 4)
    (row,) = loss_table([group])
    assert (row["runs"], row["finished"]) == (3, 2)
    assert (row["final_median"], row["final_min"], row["final_max"]) == (3.0, 1.0, 5.0)


def test_final_loss_of_a_finished_run_comes_from_its_summary(tmp_path: Path) -> None:
    write_run(tmp_path / "done", [1.0, 0.5], final=0.25, seed=0)
    write_run(tmp_path / "killed", [1.0, 0.75], final=0.125, seed=1, status=None)
    (group,) = group_runs([load_run(p) for p in find_runs([tmp_path])])
    (row,) = loss_table([group])
    assert (row["final_min"], row["final_max"], row["best_min"]) == (0.25, 0.75, 0.25)


def test_loss_table_numbers(runs: Path) -> None:
    groups = group_runs([load_run(p) for p in find_runs([runs])])
    table = loss_table(groups, "train_loss")
    kan, mlp, spiral = table
    assert kan["final_median"] == pytest.approx(2 / 1024, rel=1e-12)
    assert (kan["final_min"], kan["final_max"]) == pytest.approx((1 / 1024, 4 / 1024), rel=1e-12)
    assert kan["best_median"] == pytest.approx(2 / 1024, rel=1e-12)
    assert (kan["n_params"], kan["runs"], kan["steps"]) == (400, 3, 10)
    assert (mlp["final_median"], mlp["n_params"]) == (pytest.approx(0.2), 402)
    assert (spiral["system"], spiral["best_median"]) == ("spiral", 0.5)


def test_cli_writes_png_and_tables(runs: Path, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    drawn = record_figures(monkeypatch)
    out = runs / "figs" / "cmp.png"
    assert main([str(runs / "sweep" / "kan0"), str(runs / "sweep" / "mlp1"), "--out",
                 str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (panel,) = panels(drawn["cmp.png"])  # one system, one panel
    assert (panel.get_title(), panel.get_ylabel(), panel.get_yscale()) == (
        "Lotka–Volterra", "training loss", "log")
    kan, switch, mlp = panel.lines  # the KAN's curve, its Adam → L-BFGS switch, the MLP's curve
    assert np.allclose(kan.get_ydata(), 0.5 ** np.arange(1, 11)) and list(kan.get_xdata()) == list(range(1, 11))
    assert list(switch.get_xdata()) == [9, 9]
    assert np.allclose(mlp.get_ydata(), 0.3)
    assert [t.get_text() for t in panel.get_legend().get_texts()] == [
        "KAN [2, 10, 2] (400 params)", "MLP [2, 80, 2] (402 params)"]
    with out.with_suffix(".csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["model"], float(r["final_median"])) for r in rows] == [
        ("KAN [2, 10, 2]", 1 / 1024), ("MLP [2, 80, 2]", 0.3)]
    printed = capsys.readouterr().out
    assert ("| lotka_volterra | KAN [2, 10, 2] | 400 | 1/1 "
            "| 0.000977 [0.000977, 0.000977]") in printed
    assert "MLP [2, 80, 2] | 402" in out.with_suffix(".md").read_text()


def test_cli_labels_settings_that_differ_within_a_model(tmp_path: Path) -> None:
    write_run(tmp_path / "a", [1.0, 0.5], lr=0.01)
    write_run(tmp_path / "b", [1.0, 0.25], lr=0.001)
    groups = group_runs([load_run(p) for p in find_runs([tmp_path])])
    assert sorted(g.label for g in groups) == ["KAN [2, 10, 2] lr=0.001", "KAN [2, 10, 2] lr=0.01"]


@pytest.mark.parametrize("args, message", [
    (["does/not/exist"], "is not a directory"),
    (["{empty}"], "no run directories"),
    (["{runs}", "--metric", "nope"], "invalid choice"),
])
def test_cli_bad_input_exits_2_with_one_line(args: list[str], message: str, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    write_run(tmp_path / "runs" / "r", [1.0])
    argv = [a.format(empty=tmp_path / "empty", runs=tmp_path / "runs") for a in args]
    assert exit_code(main, argv + ["--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kanode: error: ") and message in err and err.count("\n") == 1


def test_cli_metric_without_values_is_an_error(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    write_run(tmp_path / "r", [1.0, 0.5], status=None)  # unfinished, no validation rows
    assert main([str(tmp_path / "r"), "--metric", "val_loss", "--out",
                 str(tmp_path / "x.png")]) == 2
    assert "no val_loss values" in capsys.readouterr().err


def exit_code(cli_main, argv: list[str]) -> int:
    """A CLI's exit status whether it returns it or raises SystemExit (argparse)."""
    try:
        return cli_main(argv)
    except SystemExit as exc:
        return int(exc.code)


# ------------------------------------------------- bad input: one line, exit 2 (issue 13)
def _damage(run_dir: Path, name: str, content: str) -> None:
    (run_dir / name).write_text(content)


@pytest.mark.parametrize("case, args, message", [
    ("unknown_format", ["{run}", "--out", "{tmp}/x.unknownext"], "must end in a figure format"),
    ("no_suffix", ["{run}", "--out", "{tmp}/x"], "must end in a figure format"),
    ("empty_out", ["{run}", "--out", ""], "--out is empty"),
    ("empty_run_path", ["", "--out", "{tmp}/x.png"], "run directory path is empty"),
    ("not_a_directory", ["{run}/config.toml", "--out", "{tmp}/x.png"], "is not a directory"),
    ("bad_mathtext", ["{run}", "--out", "{tmp}/x.png", "--title", "$\\frac{$"],
     "cannot be drawn"),
    ("summary_list", ["{run}", "--out", "{tmp}/x.png"], "must hold a JSON object, got list"),
    ("n_params_abc", ["{run}", "--out", "{tmp}/x.png"], 'n_params = "abc" is not an integer'),
    ("summary_not_json", ["{run}", "--out", "{tmp}/x.png"], "is not valid JSON"),
    ("metrics_without_step", ["{run}", "--out", "{tmp}/x.png"], "has no 'step' column"),
    ("time_without_wall_time", ["{run}", "--x", "time", "--out", "{tmp}/x.png"],
     "has no 'wall_time' column for --x time"),
    ("config_not_utf8", ["{run}", "--out", "{tmp}/x.png"], "not UTF-8 text"),
    ("out_is_a_directory", ["{run}", "--out", "{tmp}/dir.png"], "Is a directory"),
])
def test_cli_damaged_runs_and_bad_options_exit_2_with_one_line(
        case: str, args: list[str], message: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    run = write_run(tmp_path / "run", [1.0, 0.5])
    (tmp_path / "dir.png").mkdir()
    if case == "summary_list":
        _damage(run, "summary.json", "[1, 2]")
    elif case == "n_params_abc":
        _damage(run, "summary.json", json.dumps({"status": "finished", "n_params": "abc"}))
    elif case == "summary_not_json":
        _damage(run, "summary.json", '{"status": "fini')
    elif case in ("metrics_without_step", "time_without_wall_time"):
        column = "step" if case == "metrics_without_step" else "wall_time"
        lines = (run / "metrics.csv").read_text().splitlines()
        keep = [i for i, name in enumerate(lines[0].split(",")) if name != column]
        _damage(run, "metrics.csv", "\n".join(",".join(line.split(",")[i] for i in keep)
                                              for line in lines) + "\n")
    elif case == "config_not_utf8":
        (run / "config.toml").write_bytes(b'system = "\xe9"\n')
    argv = [a.replace("{run}", str(run)).replace("{tmp}", str(tmp_path)) for a in args]
    assert exit_code(main, argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("kanode: error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "x.png").exists()


def test_literal_dollars_in_labels_and_a_mathtext_title_render(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A ``$`` from a run (here in the data file name, which names its panel) is text; a valid
    ``$...$`` title is math."""
    write_run(tmp_path / "a", [1.0, 0.5], data="$\\frac.csv")
    write_run(tmp_path / "b", [1.0, 0.25], data="b.csv")
    out = tmp_path / "x.svg"
    assert main([str(tmp_path), "--out", str(out), "--title", r"$\alpha$ runs"]) == 0
    svg = out.read_text()
    assert "$\\frac" in svg and capsys.readouterr().err == ""


def test_toml_dates_in_a_run_config_do_not_break_grouping(tmp_path: Path) -> None:
    runs = [write_run(tmp_path / name, [1.0, 0.5], seed=seed) for seed, name in enumerate("ab")]
    for run in runs:
        with (run / "config.toml").open("a") as fh:
            fh.write("started = 2026-12-01T09:30:00\n")
    (group,) = group_runs([load_run(p) for p in runs])
    assert len(group.runs) == 2


def test_plot_takes_curves_and_imports_nothing_from_compare() -> None:
    import ast

    import kanode.plots.compare as plots
    from kanode.plots.compare import Curve, plot_loss_comparison

    source = Path(plots.__file__).read_text()
    imported = {node.module for node in ast.walk(ast.parse(source))
                if isinstance(node, ast.ImportFrom)}
    assert not {"kanode.compare", "kanode.fit", "..compare"} & imported
    x = np.arange(1.0, 4.0)
    curves = [Curve(x, 1 / x, 0.5 / x, 2 / x, 2.0, system="spiral", model="kan", label="KAN",
                    n_runs=3, n_params=40),
              Curve(np.empty(0), np.empty(0), np.empty(0), np.empty(0), math.nan,
                    system="pleiades", model="mlp", label="MLP")]
    fig = plot_loss_comparison(curves, title="two panels")
    spiral, pleiades = fig.axes[:2]
    assert [line.get_label() for line in spiral.get_lines()][0] == "KAN (40 params, 3 seeds)"
    np.testing.assert_array_equal(spiral.get_lines()[0].get_ydata(), 1 / x)
    assert spiral.get_lines()[1].get_xdata()[0] == 2.0  # the L-BFGS switch
    assert not pleiades.get_lines() and pleiades.get_yscale() == "linear"
