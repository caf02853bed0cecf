"""``python -m kanode.symbolic`` refuses every bad option before any work: one line, exit 2.

Each case is a finding of the reliability issue (24, item 4): before, ``--lr 0`` and ``--grid-size 0``
ended in tracebacks, ``--hidden 100000000`` in an allocator error, ``--digits 0`` and
``--library x,x`` were accepted, ``--digits 1000``, ``--polish-rounds=-1`` and ``--out FILE`` ran
on, and ``--sparsity nan`` exited 1 (``kanode.fit`` refuses it with 2).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kanode.config import ConfigError
from kanode.exit_codes import EXIT_BAD_INPUT
from kanode.symbolic import SymbolicConfig
from kanode.symbolic.__main__ import main

BAD = {
    "--lr 0": (["--lr", "0"], "lr must be a positive finite number, got 0.0"),
    "--finetune-lr inf": (["--finetune-lr", "inf"], "finetune_lr must be a positive finite number, got inf"),
    "--sparse-steps=-3": (["--sparse-steps=-3"], "sparse_steps must be at least 0, got -3"),
    "--grid-size 0": (["--grid-size", "0"], "grid_size must be at least 1, got 0"),
    "--hidden 100000000": (["--hidden", "100000000"], "hidden must be at most 256"),
    "--digits 0": (["--digits", "0"], "digits must be at least 1, got 0"),
    "--digits 1000": (["--digits", "1000"], "digits must be at most 17"),
    "--library x,x": (["--library", "x,x"], "library names each candidate once; x repeated"),
    "--library sinh": (["--library", "sinh"], "library must be 'all' or comma-separated names"),
    "--polish-rounds=-1": (["--polish-rounds=-1"], "polish_rounds must be at least 0, got -1"),
    "--sparsity nan": (["--sparsity", "nan"], "sparsity must be a non-negative finite number, got nan"),
    "--holdout-fraction 0.9": (["--holdout-fraction", "0.9"], "holdout_fraction must be a number in (0, 0.5]"),
    "--edge-threshold 1": (["--edge-threshold", "1"], "edge_threshold must be a number in [0, 1)"),
    "--first-layer dense": (["--first-layer", "dense"], "first_layer must be one of linear, spline"),
    "--start sindy": (["--start", "sindy"], "start must be one of sparse, kan, got 'sindy'"),
    "--derivatives fd": (["--derivatives", "fd"], "derivatives must be one of smoothed, kan, got 'fd'"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_option_is_one_line_before_any_work(case: str, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    argv, message = BAD[case]
    out = tmp_path / "out"
    assert main([*argv, "--out", str(out)]) == EXIT_BAD_INPUT
    captured = capsys.readouterr()
    assert captured.out == ""                                   # no stage started
    assert captured.err.startswith("kanode: error: ") and captured.err.count("\n") == 1
    assert message in captured.err
    assert not out.exists()


def test_out_that_is_a_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    existing = tmp_path / "a-file"
    existing.write_text("keep me")
    for out in (existing, existing / "below"):
        assert main(["--out", str(out)]) == EXIT_BAD_INPUT
        err = capsys.readouterr().err
        assert err.startswith("kanode: error: --out") and "exists and is not a directory" in err
    assert existing.read_text() == "keep me"


def test_run_dir_refuses_the_flags_it_would_ignore(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The run fixes its data and its trained KAN: --noise or --hidden with RUN_DIR were silently ignored."""
    assert main([str(tmp_path), "--noise", "0.1", "--hidden", "8"]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith("kanode: error: --noise, --hidden: RUN_DIR fixes its data")


def test_a_real_process_exits_2_like_fit(tmp_path: Path) -> None:
    """``--sparsity nan``: the same exit status and kind of line as ``kanode.fit --sparsity nan``."""
    runs = [subprocess.run([sys.executable, "-m", module, "--sparsity", "nan", "--out", str(tmp_path / module)],
                           capture_output=True, text=True, timeout=120)
            for module in ("kanode.symbolic", "kanode.fit")]
    for proc in runs:
        assert proc.returncode == EXIT_BAD_INPUT, proc.stderr
        assert proc.stderr.startswith("kanode: error: ") and proc.stderr.count("\n") == 1
        assert "Traceback" not in proc.stderr


def test_the_settings_validate_on_construction_and_on_demand() -> None:
    with pytest.raises(ConfigError, match="hidden must be an integer"):
        SymbolicConfig(hidden=2.5)
    settings = SymbolicConfig()
    settings.digits = 0
    with pytest.raises(ConfigError, match="digits must be at least 1"):
        settings.validate()


def test_a_window_too_short_for_the_selection_is_refused_up_front(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """4 training points cannot be split into points to fit and points to forecast."""
    data = tmp_path / "four.csv"
    data.write_text("traj,t,u,v\n" + "".join(f"0,{k},{1 + k},{2 - 0.1 * k}\n" for k in range(4)))
    assert main(["--data", str(data), "--out", str(tmp_path / "out")]) == EXIT_BAD_INPUT
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert "the training window has 4 points per trajectory; the term selection needs at least 5" in captured.err
