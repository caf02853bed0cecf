"""kanode.symbolic writes next to the run it comes from, or outside every run (issue 24, finding 6)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kanode.config import ConfigError
from kanode.exit_codes import EXIT_BAD_INPUT
from kanode.symbolic.__main__ import _check_not_in_another_run, main


def _fake_run(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.toml").write_text("", encoding="utf-8")
    (path / "metrics.csv").write_text("", encoding="utf-8")
    return path


def test_out_inside_another_run_is_refused_before_any_work(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    run = _fake_run(tmp_path / "run")
    out = run / "formula"
    assert main(["--system", "lotka_volterra", "--out", str(out)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kanode: error: --out ") and str(run) in err[0]
    assert not out.exists()


def test_the_run_a_formula_comes_from_may_hold_it(tmp_path: Path) -> None:
    run = _fake_run(tmp_path / "run")
    other = _fake_run(tmp_path / "other")
    _check_not_in_another_run(run / "symbolic", str(run))        # RUN_DIR's default output
    _check_not_in_another_run(tmp_path / "elsewhere", None)
    with pytest.raises(ConfigError, match="inside the run directory"):
        _check_not_in_another_run(other / "symbolic", str(run))
