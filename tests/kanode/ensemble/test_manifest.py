"""Pack manifests of ``python -m kanode.ensemble`` against their schema (issue 24,
finding 3): every malformed manifest exits 2 with one ``kanode: error:`` line
before any run directory is written; a well-formed one is read as written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kanode.cli_args import MAX_ENSEMBLE
from kanode.config import FitConfig, dump_config
from kanode.ensemble.__main__ import main
from kanode.ensemble.manifest import Member, read_manifest


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "cell.toml"
    path.write_text(dump_config(FitConfig(widths=[2, 3, 2], grid_size=3, steps=1, plots=False)))
    return path


def manifest(tmp_path: Path, members: object, name: str = "m.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps({"members": members}) if not isinstance(members, str) else members)
    return path


def member(tmp_path: Path, cell: Path, **changes: object) -> dict:
    return {"run_dir": str(tmp_path / "r0"), "config_path": str(cell), "resume": False,
            "lbfgs_steps": None, **changes}


BAD_MEMBERS = [
    ({"run_dir": None}, "run_dir must be a non-empty path string, got null"),
    ({"run_dir": 3}, "run_dir must be a non-empty path string, got 3"),
    ({"run_dir": ["a"]}, 'run_dir must be a non-empty path string, got ["a"]'),
    ({"run_dir": ""}, 'run_dir must be a non-empty path string, got ""'),
    ({"run_dir": "   "}, "run_dir must be a non-empty path string"),
    ({"run_dir": "a" * 300}, "is 300 bytes; the file system allows at most"),
    ({"config_path": None}, "config_path must be a non-empty path string, got null"),
    ({"config_path": 7}, "config_path must be a non-empty path string, got 7"),
    ({"resume": "yes"}, 'resume must be true or false, got "yes"'),
    ({"resume": 1}, "resume must be true or false, got 1"),
    ({"lbfgs_steps": -1}, "lbfgs_steps must be null or an integer"),
    ({"lbfgs_steps": 1.5}, "lbfgs_steps must be null or an integer"),
    ({"lbfgs_steps": True}, "lbfgs_steps must be null or an integer"),
    ({"extra": 1}, "unknown key 'extra'"),
]


@pytest.mark.parametrize("changes, message", BAD_MEMBERS)
def test_bad_member_is_one_line(tmp_path, config_path, capsys, changes, message):
    path = manifest(tmp_path, [member(tmp_path, config_path, **changes)])
    assert main([str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"kanode: error: {path}: member 0") and err.count("\n") == 1, err
    assert message in err
    assert not (tmp_path / "r0").exists()


@pytest.mark.parametrize("text, message", [
    ("garbage", "not JSON"),
    ("[1]", "an object with one key, members; got list"),
    ('{"members": [], "x": 1}', "one key, members"),
    ('{"members": []}', "1 to 4096 members, got 0 members"),
    ('{"members": {}}', "got dict"),
    ('{"members": [3]}', "member 0 must be an object"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
])
def test_bad_manifest_is_one_line(tmp_path, capsys, text, message):
    path = manifest(tmp_path, text)
    assert main([str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kanode: error: ") and err.count("\n") == 1 and message in err, err


def test_too_many_members_mixed_and_duplicates(tmp_path, config_path, capsys):
    many = [member(tmp_path, config_path, run_dir=str(tmp_path / f"r{i}")) for i in range(MAX_ENSEMBLE + 1)]
    assert main([str(manifest(tmp_path, many))]) == 2
    assert f"1 to {MAX_ENSEMBLE} members, got {MAX_ENSEMBLE + 1}" in capsys.readouterr().err
    mixed = [member(tmp_path, config_path), member(tmp_path, config_path, run_dir="r1", resume=True)]
    assert main([str(manifest(tmp_path, mixed))]) == 2
    assert "all start or all resume" in capsys.readouterr().err
    twice = [member(tmp_path, config_path), member(tmp_path, config_path)]
    assert main([str(manifest(tmp_path, twice))]) == 2
    assert "two members write the run directory" in capsys.readouterr().err
    assert not any(p.name.startswith("r") for p in tmp_path.iterdir())


def test_missing_file_directory_and_nested_run_dir(tmp_path, config_path, capsys):
    assert main([str(tmp_path / "none.json")]) == 2
    assert "cannot read the manifest (No such file or directory)" in capsys.readouterr().err
    assert main([str(tmp_path)]) == 2
    assert "cannot read the manifest (is a directory)" in capsys.readouterr().err
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text(config_path.read_text())
    (run / "metrics.csv").write_text("step\n")
    inside = manifest(tmp_path, [member(tmp_path, config_path, run_dir=str(run / "inner"))])
    assert main([str(inside)]) == 2
    assert f"is inside the run directory {run}" in capsys.readouterr().err


@pytest.mark.parametrize("threads", ["1000000000", "-1"])
def test_threads_out_of_range(tmp_path, config_path, capsys, threads):
    path = manifest(tmp_path, [member(tmp_path, config_path)])
    assert main([str(path), f"--threads={threads}"]) == 2
    err = capsys.readouterr().err
    assert err == f"kanode: error: --threads must be in [0, 1024], got {threads}\n"


def test_a_valid_manifest_reads_as_written(tmp_path, config_path):
    rows = [member(tmp_path, config_path, run_dir=str(tmp_path / "a")),
            {"run_dir": str(tmp_path / "b"), "config_path": str(config_path), "resume": False}]
    assert read_manifest(manifest(tmp_path, rows)) == [
        Member(str(tmp_path / "a"), str(config_path), False, None),
        Member(str(tmp_path / "b"), str(config_path), False, None)]
    resumed = [{"run_dir": str(tmp_path / "a"), "config_path": None, "resume": True, "lbfgs_steps": 5}]
    assert read_manifest(manifest(tmp_path, resumed)) == [Member(str(tmp_path / "a"), None, True, 5)]


def test_deep_json_as_a_real_process(tmp_path):
    """The issue's 100,000-deep JSON, run as the sweep runs it: one line, exit 2."""
    path = manifest(tmp_path, "[" * 100_000 + "]" * 100_000)
    proc = subprocess.run([sys.executable, "-m", "kanode.ensemble", str(path)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "nested too deeply" in proc.stderr
