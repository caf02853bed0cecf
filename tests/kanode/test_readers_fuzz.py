"""Property tests of kanode's file readers: a valid result or one ``ConfigError`` line.

Readers under test, each fed generated and damaged bytes in-process:
``read_toml`` (``--config``, a run's ``config.toml``), ``load_data``
(``--data``), ``read_summary`` and ``read_metrics`` (a run directory), and
``kanode.compare.load_run`` with the analysis that follows it. Each must
return a valid object or raise its documented exception with a one-line
message; anything else is a traceback a user would see. The command lines
(``kanode.fit``, ``kanode.compare``) are checked through ``main([...])``.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import systems
from kanode.compare import CompareError, group_curve, group_runs, load_run, loss_table
from kanode.config import ConfigError, FitConfig, dump_config, read_toml
from kanode.data import FitData, load_data
from kanode.fit import main as fit_main
from kanode.runs import read_metrics, read_summary

from .test_compare import write_run

FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                      HealthCheck.too_slow])


def fuzz(examples: int) -> settings:
    return settings(FUZZ, max_examples=examples)


def one_line(error: BaseException) -> None:
    message = str(error)
    assert message and len(message.splitlines()) == 1 and "Traceback" not in message, message


def outcome(read, *errors: type[BaseException]):
    """``(result, None)`` or ``(None, error)`` for one of ``errors``; warnings are failures."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning would add a line to stderr
        try:
            return read(), None
        except errors as error:
            one_line(error)
            return None, error


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with a few bytes overwritten or inserted, a slice cut out, or truncated.

    Zero changes are allowed, so that some drawn files are valid ones.
    """
    out = bytearray(data)
    for _ in range(draw(st.integers(0, 3))):
        if not out:
            break
        at = draw(st.integers(0, len(out) - 1))
        kind = draw(st.sampled_from(["flip", "insert", "cut", "truncate"]))
        if kind == "flip":
            out[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            out[at:at] = draw(st.sampled_from([b"\n", b",", b'"', b"[", b"\xff", b"nan", b"-"]))
        elif kind == "cut":
            del out[at:at + draw(st.integers(1, 32))]
        else:
            del out[at:]
    return bytes(out)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["status", "n_params", "steps", "widths", "final_train_loss", "seed",
                         "grid_size", "reason"]) | st.text(max_size=4), inner, max_size=4),
    max_leaves=10)
nested = st.integers(1, 2000).map(lambda n: "a = " + "[" * n + "]" * n)

CONFIG_BYTES = dump_config(FitConfig()).encode()


# ------------------------------------------------------------------ read_toml
@fuzz(250)
@given(raw=st.binary(max_size=200) | mutated(CONFIG_BYTES) | nested.map(str.encode)
       | st.text(max_size=60).map(str.encode))
def test_read_toml_gives_a_dict_or_one_line(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "c.toml"
    path.write_bytes(raw)
    result, error = outcome(lambda: read_toml(path), ConfigError)
    assert error is not None or isinstance(result, dict)
    event("refused with one line" if error else "parsed")


@pytest.mark.parametrize("content, words", [
    (b'system = "\xff"\n', "not UTF-8 text"),
    (("a = " + "[" * 3000 + "]" * 3000).encode(), "nested too deeply"),
    (("a = " + "{b = " * 600 + "1" + "}" * 600).encode(), "nested too deeply"),
    (b"steps = \n", "Invalid value (at line 1, column 9)"),
])
def test_read_toml_named_cases(tmp_path: Path, content: bytes, words: str) -> None:
    path = tmp_path / "c.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        read_toml(path)
    one_line(info.value)
    assert words in str(info.value) and str(path) in str(info.value)


def test_read_toml_refuses_directory_fifo_and_empty_path(tmp_path: Path) -> None:
    (tmp_path / "d.toml").mkdir()
    with pytest.raises(ConfigError, match="is a directory"):
        read_toml(tmp_path / "d.toml")
    with pytest.raises(ConfigError, match="path is empty"):
        read_toml("")
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "p.toml")  # no writer: a blocking open would hang
        with pytest.raises(ConfigError, match="not a regular file"):
            read_toml(tmp_path / "p.toml")


# ------------------------------------------------------------------ load_data
@pytest.fixture(scope="module")
def data_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    root = tmp_path_factory.mktemp("data")
    observed = systems.make_dataset(systems.get("lotka_volterra"), n_traj=3, noise=0.01).observed
    return {s: observed.window(0, 12).save(root / f"d{s}").read_bytes() for s in (".csv", ".npz")}


@fuzz(150)
@given(data=st.data(), suffix=st.sampled_from([".csv", ".npz"]))
def test_load_data_gives_fit_data_or_one_line(tmp_path: Path, data_files: dict[str, bytes],
                                              data: st.DataObject, suffix: str) -> None:
    path = tmp_path / f"d{suffix}"
    path.write_bytes(data.draw(mutated(data_files[suffix])))
    config = FitConfig(data=str(path), train_fraction=0.5, n_test_traj=1)
    result, error = outcome(lambda: load_data(config), ConfigError)
    if error is None:
        assert isinstance(result, FitData) and result.n_train >= 2
        assert result.y.shape[1:] == (result.t.shape[0], result.dim) and result.y.shape[0] >= 1
    event("refused with one line" if error else "loaded")


def test_load_data_refuses_directory_and_fifo(tmp_path: Path) -> None:
    (tmp_path / "d.csv").mkdir()
    with pytest.raises(ConfigError, match="d.csv: is a directory"):
        load_data(FitConfig(data=str(tmp_path / "d.csv")))
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "p.npz")
        with pytest.raises(ConfigError, match="not a regular file"):
            load_data(FitConfig(data=str(tmp_path / "p.npz")))


# --------------------------------------------------------------- read_summary
@fuzz(250)
@given(raw=st.binary(max_size=100) | json_values.map(lambda v: json.dumps(v).encode())
       | st.integers(1, 5000).map(lambda n: ("[" * n + "]" * n).encode()))
def test_read_summary_gives_an_object_or_one_line(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "summary.json"
    path.write_bytes(raw)
    result, error = outcome(lambda: read_summary(path), ConfigError)
    if error is None:
        assert isinstance(result, dict)
        for key in ("n_params", "steps", "seed"):
            assert key not in result or type(result[key]) is int
    event("refused with one line" if error else "read")


@pytest.mark.parametrize("content, words", [
    ("[1, 2]", "must hold a JSON object, got list"),
    ('{"status": "finished", "n_params": "abc"}', 'n_params = "abc" is not an integer'),
    ('{"widths": [2, "x"]}', "widths"),
    ('{"final_train_loss": true}', "final_train_loss = true is not a number"),
    ('{"status": 3}', "status = 3 is not a string"),
    ("{", "not valid JSON"),
])
def test_read_summary_named_cases(tmp_path: Path, content: str, words: str) -> None:
    path = tmp_path / "summary.json"
    path.write_text(content)
    with pytest.raises(ConfigError) as info:
        read_summary(path)
    one_line(info.value)
    assert words in str(info.value)


def test_read_summary_of_a_missing_file_is_none(tmp_path: Path) -> None:
    assert read_summary(tmp_path / "summary.json") is None


# ------------------------------------------- read_metrics and compare's inputs
@pytest.fixture(scope="module")
def run_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_run(tmp_path_factory.mktemp("tpl") / "run", [1.0, 0.5, 0.25, 0.125],
                     lbfgs_from=3, val_every=2)


@fuzz(200)
@given(raw=st.data())
def test_read_metrics_gives_rows_or_one_line(tmp_path: Path, run_template: Path,
                                             raw: st.DataObject) -> None:
    path = tmp_path / "metrics.csv"
    path.write_bytes(raw.draw(mutated((run_template / "metrics.csv").read_bytes())
                              | st.binary(max_size=80)))
    rows, error = outcome(lambda: read_metrics(path), ConfigError)
    if error is None:
        assert isinstance(rows, list) and all(isinstance(r, dict) for r in rows)
    event("refused with one line" if error else "read")


@fuzz(200)
@given(data=st.data(), target=st.sampled_from(["metrics.csv", "summary.json", "config.toml"]))
def test_compare_inputs_give_a_table_or_one_line(tmp_path: Path, run_template: Path,
                                                 data: st.DataObject, target: str) -> None:
    run = tmp_path / "run"
    if run.exists():
        shutil.rmtree(run)
    shutil.copytree(run_template, run)
    (run / target).write_bytes(data.draw(mutated((run / target).read_bytes())))
    loaded, error = outcome(lambda: load_run(run), CompareError, ConfigError)
    if error is None:  # what follows loading must work on anything loading accepts
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            groups = group_runs([loaded])
            (row,) = loss_table(groups, "train_loss")
            curve = group_curve(groups[0], "train_loss", "step")
        assert row["runs"] == 1 and curve.x.shape == curve.median.shape
        assert np.all(np.isfinite(curve.median)) and np.all(curve.median > 0)
        assert np.array_equal(curve.low, curve.median) and np.array_equal(curve.high, curve.median)
    event("refused with one line" if error else "compared")


# ---------------------------------------------------------------- the CLI
def fit_exit(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = fit_main(argv)
    except SystemExit as exc:
        code = int(exc.code)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("case", ["non_utf8", "deep", "directory", "fifo", "missing"])
def test_fit_bad_config_file_exit_2_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             case: str) -> None:
    path = tmp_path / "c.toml"
    if case == "non_utf8":
        path.write_bytes(b'system = "\xe9"\n')
    elif case == "deep":
        path.write_text("widths = " + "[" * 5000 + "]" * 5000)
    elif case == "directory":
        path.mkdir()
    elif case == "fifo":
        if not hasattr(os, "mkfifo"):
            pytest.skip("needs a POSIX FIFO")
        os.mkfifo(path)
    code, err = fit_exit(["--config", str(path), "--out", str(tmp_path / "run"), "--quiet"],
                         capsys)
    assert code == 2 and err.startswith("kanode: error: ") and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("case", ["directory", "fifo", "state_names_0d", "metadata_list",
                                  "non_utf8"])
def test_fit_bad_data_file_exit_2_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           case: str) -> None:
    path = tmp_path / ("d.npz" if case == "state_names_0d" else "d.csv")
    if case == "directory":
        path.mkdir()
    elif case == "fifo":
        if not hasattr(os, "mkfifo"):
            pytest.skip("needs a POSIX FIFO")
        os.mkfifo(path)
    elif case == "state_names_0d":
        with path.open("wb") as fh:
            np.savez(fh, t=np.arange(3.0), y=np.zeros((2, 3, 2)), state_names=np.array("xy"))
    elif case == "metadata_list":
        path.write_text("# systems-metadata: []\ntraj,t,x,y\n0,0,1,1\n0,1,2,2\n")
    else:
        path.write_bytes(b"traj,t,x,y\n0,0,1,\xe91\n")
    code, err = fit_exit(["--data", str(path), "--out", str(tmp_path / "run"), "--quiet"], capsys)
    assert code == 2 and err.startswith("kanode: error: data file ") and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------- a sweep's reading
def test_sweep_reports_damaged_run_files_and_plans_to_redo_them(tmp_path: Path) -> None:
    from kanode.sweep import LocalBackend, collect_results, expand, plan, run_sweep

    from .test_sweep import FakeRunner, tiny

    specs = expand(tiny(tmp_path), smoke=True)[:3]
    run_sweep(specs, tmp_path / "sw", LocalBackend(1), runner=FakeRunner(), progress=False)
    listed, half_written = (tmp_path / "sw" / specs[0].key), (tmp_path / "sw" / specs[1].key)
    (listed / "summary.json").write_text("[1, 2]")
    (half_written / "summary.json").unlink()
    with (half_written / "metrics.csv").open("a") as fh:
        fh.write("3,ad")  # a row cut short by a kill
    with (tmp_path / "sw" / "sweep_log.jsonl").open("a") as fh:
        fh.write('{"key": "torn by a ki')  # a kill during the append
    rows = collect_results(specs, tmp_path / "sw")
    assert [r.status for r in rows] == ["failed", "pending", "finished"]
    assert "summary.json must hold a JSON object" in rows[0].reason
    assert "metrics.csv line" in rows[1].reason and rows[1].steps == 0
    assert all(len(r.reason.splitlines()) <= 1 for r in rows)
    assert [a.kind for a in plan(specs, tmp_path / "sw")] == ["start", "start", "skip"]
