"""Run directories never nest, and over-long names are one line (issue 24, finding 6).

Every command that writes a directory refuses, before any work and with one
``kanode: error:`` line and exit 2: an ``--out`` inside a run directory, an
``--out`` that is a run of another kind (a sweep or ensemble into a single
run, a single fit into an ensemble), a file, and a name the file system
cannot hold. The run refused into keeps exactly its files.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from kanode.analysis.cli import main as analysis_main
from kanode.config import ConfigError
from kanode.fit import fit
from kanode.fit import main as fit_main
from kanode.outdirs import KINDS, check_out_dir, enclosing_run, is_run_dir
from kanode.sweep.__main__ import main as sweep_main
from tests.kanode.test_sweep import TINY

FIT = ["--widths", "2", "3", "2", "--grid-size", "3", "--steps", "1", "--lbfgs-steps", "0",
       "--optimizer", "adam", "--no-plots", "--quiet"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("outdirs") / "single"
    fit(out=run, widths=[2, 3, 2], grid_size=3, steps=1, lbfgs_steps=0, optimizer="adam", plots=False)
    return run


def listing(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def commands(tmp_path: Path) -> dict[str, Callable[[str], int]]:
    sweep_toml = tmp_path / "tiny.toml"
    sweep_toml.write_text(TINY)
    return {
        "fit": lambda out: fit_main([*FIT, "--out", out]),
        "fit --seeds": lambda out: fit_main([*FIT, "--seeds", "0-1", "--out", out]),
        "sweep": lambda out: sweep_main([str(sweep_toml), "--smoke", "--no-progress", "--out", out]),
        "analysis": lambda out: analysis_main(["cost", "--sizes", "2", "--batches", "1", "--grids", "3",
                                               "--out", out]),
    }


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("kanode: error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("command", ["fit", "fit --seeds", "sweep", "analysis"])
def test_out_inside_a_run_is_refused(finished_run, tmp_path, capsys, command):
    before = listing(finished_run)
    assert commands(tmp_path)[command](str(finished_run / "inner")) == 2
    assert f"is inside the run directory {finished_run}; run directories never nest" in one_line(capsys)
    assert listing(finished_run) == before


@pytest.mark.parametrize("command", ["fit --seeds", "sweep", "analysis"])
def test_a_finished_run_does_not_take_runs_or_results(finished_run, tmp_path, capsys, command):
    """The issue's cases: fit --seeds 0-1 --out RUN and sweep --out RUN exited 0 and wrote into RUN."""
    before = listing(finished_run)
    assert commands(tmp_path)[command](str(finished_run)) == 2
    assert f"--out {finished_run} holds a run (config.toml, metrics.csv)" in one_line(capsys)
    assert listing(finished_run) == before


@pytest.mark.parametrize("command", ["fit", "fit --seeds", "sweep", "analysis"])
def test_over_long_name_is_one_line(tmp_path, capsys, command):
    name = "a" * 256
    assert commands(tmp_path)[command](str(tmp_path / name)) == 2
    assert "is 256 bytes; the file system allows at most 255" in one_line(capsys)


@pytest.mark.parametrize("command", ["fit", "fit --seeds", "sweep", "analysis"])
def test_out_that_is_a_file(tmp_path, capsys, command):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert commands(tmp_path)[command](str(a_file)) == 2
    assert "is a file, not a directory" in one_line(capsys)
    assert a_file.read_text() == "x"


def test_a_single_fit_does_not_go_into_an_ensemble(tmp_path, capsys):
    ensemble = tmp_path / "E"
    ensemble.mkdir()
    (ensemble / "ensemble.json").write_text(json.dumps({"members": ["seed-0"]}))
    assert fit_main([*FIT, "--out", str(ensemble)]) == 2
    assert "holds an ensemble (ensemble.json)" in one_line(capsys)
    assert fit_main([*FIT, "--out", str(ensemble / "seed-9")]) == 2
    assert f"inside the run directory {ensemble}" in one_line(capsys)
    assert listing(ensemble) == ["ensemble.json"]


def test_kinds_table(finished_run, tmp_path):
    ensemble = tmp_path / "E"
    ensemble.mkdir()
    (ensemble / "ensemble.json").write_text("{}")
    fresh = tmp_path / "fresh"
    assert is_run_dir(finished_run) and is_run_dir(ensemble) and not is_run_dir(tmp_path)
    assert enclosing_run(finished_run / "a" / "b") == finished_run and enclosing_run(fresh) is None
    allowed = {("run", "single"), ("ensemble", "E")}
    for kind in KINDS:
        assert check_out_dir(fresh, kind) == fresh
        for target in (finished_run, ensemble):
            if (kind, target.name) in allowed:
                assert check_out_dir(target, kind) == target
            else:
                with pytest.raises(ConfigError, match="never nest"):
                    check_out_dir(target, kind)
    with pytest.raises(ValueError):
        check_out_dir(fresh, "cell")
