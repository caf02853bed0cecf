"""kanode.symbolic refuses data with missing values in one line (its polish does not mask them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kanode.exit_codes import EXIT_BAD_INPUT
from kanode.symbolic.__main__ import main


def test_missing_value_is_refused_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = tmp_path / "gap.csv"
    data.write_text("traj,t,hare,lynx\n0,1900,30,4\n0,1901,47.2,\n0,1902,70.2,9.8\n"
                    "0,1903,77.4,35.2\n0,1904,36.3,59.4\n0,1905,20.6,41.7\n", encoding="utf-8")
    out = tmp_path / "out"
    assert main(["--data", str(data), "--out", str(out)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kanode: error: ") and "missing values" in err[0]
    assert not out.exists()
