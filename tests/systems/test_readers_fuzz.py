"""Property tests of ``systems.load``: any bytes in, a valid ``Trajectories`` or one error line out.

Every generated file is read in-process; the reader must either return
trajectories that satisfy the documented invariants or raise
``systems.TrajectoryFileError`` whose message is one line naming the file.
Any other exception (a traceback for a user) fails the test. The named
cases of issue 13 are checked one by one below the properties.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import systems
from systems import TrajectoryFileError
from systems.cli import main

FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                      HealthCheck.too_slow])


def fuzz(examples: int) -> settings:
    """Hypothesis settings for ``examples`` generated files (each read in about a millisecond)."""
    return settings(FUZZ, max_examples=examples)


@pytest.fixture(scope="module")
def valid_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The bytes of a valid ``.csv`` and ``.npz`` (2 trajectories of Lotka–Volterra)."""
    root = tmp_path_factory.mktemp("valid")
    traj = systems.simulate(systems.get("lotka_volterra"), t=np.linspace(0.0, 1.0, 4),
                            y0=np.array([[1.0, 1.0], [2.0, 1.0]]))
    return {s: traj.save(root / f"v{s}").read_bytes() for s in (".csv", ".npz")}


def check_load(path: Path) -> str:
    """Load ``path`` and check the result or the error; returns what happened.

    The fuzz tests record the outcome as a hypothesis event, so
    ``--hypothesis-show-statistics`` shows how many generated files loaded and
    how many were refused.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning would be a second line on stderr
        try:
            traj = systems.load(path)
        except TrajectoryFileError as error:
            message = str(error)
            assert len(message.splitlines()) == 1 and message.strip() == message, message
            assert message.startswith(str(path)), message
            return "refused with one line"
    assert traj.t.ndim == 1 and traj.n_t >= 2 and np.all(traj.t[1:] > traj.t[:-1])
    assert traj.y.shape == (traj.n_traj, traj.n_t, len(traj.state_names))
    assert np.all(np.isfinite(traj.t)) and not np.any(np.isinf(traj.y))  # NaN: missing
    assert np.all(traj.observed.any(axis=(1, 2)))  # every trajectory has an observation
    assert isinstance(traj.params, dict) and (traj.system is None or isinstance(traj.system, str))
    return "loaded"


# ----------------------------------------------------------------- strategies
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["system", "params", "alpha", "x"]) | st.text(max_size=4), inner,
        max_size=3),
    max_leaves=8)
metadata_text = (json_values.map(json.dumps) | st.text(max_size=30)
                 | st.integers(1, 3000).map(lambda n: "[" * n + "]" * n))
cells = (st.integers(-3, 3).map(str) | st.floats(allow_nan=True).map(repr)
         | st.sampled_from(["", " ", "nan", "inf", "-inf", "1e400", "abc", '"1', "1,2", "\x00",
                            "0x10", "1_0", "٣"]) | st.text(max_size=5))
header_names = st.sampled_from(["traj", "t", "x", "y", "z", "", "traj", " t ", "#x"])
line_ends = st.sampled_from(["\n", "\r\n", "\r", "\u2028", "\x0c"])


@st.composite
def csv_texts(draw: st.DrawFn) -> str:
    header = draw(st.lists(header_names, min_size=0, max_size=5))
    if draw(st.booleans()):
        header = ["traj", "t"] + header
    width = max(1, len(header) + draw(st.integers(-1, 1)))
    rows = draw(st.lists(st.lists(cells, min_size=width - 1, max_size=width + 1), max_size=6))
    if draw(st.booleans()):  # a well-formed grid (numbers, maybe one bad cell): some load
        header = ["traj", "t"] + [f"s{i}" for i in range(draw(st.integers(1, 3)))]
        n_t, n_traj = draw(st.integers(1, 4)), draw(st.integers(1, 2))
        ts = sorted(set(draw(st.lists(st.floats(-1e6, 1e6), min_size=n_t, max_size=n_t))))
        numbers = st.floats(-1e300, 1e300).map(repr)
        rows = [[str(k), repr(t)] + [draw(numbers) for _ in header[2:]]
                for k in range(n_traj) for t in ts]
        if rows and draw(st.booleans()):
            row = draw(st.integers(0, len(rows) - 1))
            rows[row][draw(st.integers(0, len(header) - 1))] = draw(cells)
    lines = [",".join(header)] + [",".join(r) for r in rows]
    if draw(st.booleans()):
        lines.insert(draw(st.integers(0, len(lines))),
                     "# systems-metadata: " + draw(metadata_text))
    return draw(line_ends).join(lines)


@st.composite
def npz_arrays(draw: st.DrawFn) -> dict[str, np.ndarray]:
    dtypes = st.sampled_from([np.float64, np.float32, np.float16, np.int64, np.uint8,
                              np.bool_, np.complex128, np.dtype("U3"), np.longdouble])
    n_t, n_traj, dim = draw(st.integers(0, 4)), draw(st.integers(0, 2)), draw(st.integers(0, 3))
    shapes = {"t": st.sampled_from([(n_t,), (), (n_t, 1), (n_t + 1,)]),
              "y": st.sampled_from([(n_traj, n_t, dim), (n_t, dim), (), (n_traj, n_t + 1, dim),
                                    (1, n_t, dim, 1)]),
              "state_names": st.sampled_from([(dim,), (), (1, dim), (dim + 1,)])}
    arrays: dict[str, np.ndarray] = {}
    for name, shape in shapes.items():
        if name != "y" and not draw(st.booleans()):
            if name == "t" and draw(st.booleans()):
                continue  # missing t
            if name == "state_names":
                continue
        dtype = draw(st.just(np.dtype("U3")) if name == "state_names" and draw(st.booleans())
                     else dtypes)
        arrays[name] = draw(hnp.arrays(dtype, draw(shape)))
    if draw(st.booleans()):  # well-formed arrays, maybe with one part replaced: some load
        valid = {"t": np.arange(max(n_t, 2), dtype=np.float64),
                 "y": draw(hnp.arrays(np.float64, (max(n_traj, 1), max(n_t, 2), max(dim, 1)),
                                      elements=st.floats(-1e300, 1e300))),
                 "state_names": np.array([f"s{i}" for i in range(max(dim, 1))])}
        if arrays and draw(st.booleans()):
            name = draw(st.sampled_from(sorted(arrays)))
            valid[name] = arrays[name]
        arrays = valid
    if draw(st.booleans()):
        meta = draw(metadata_text)
        arrays["metadata"] = np.array(meta) if draw(st.booleans()) else np.array([meta, meta])
    return arrays


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with a few bytes overwritten, a slice cut out, or truncated."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "truncate"]))
        if not out:
            break
        at = draw(st.integers(0, len(out) - 1))
        if kind == "flip":
            out[at] = draw(st.integers(0, 255))
        elif kind == "cut":
            del out[at:at + draw(st.integers(1, 64))]
        else:
            del out[at:]
    return bytes(out)


# ----------------------------------------------------------------- properties
@fuzz(300)
@given(text=csv_texts(), encoding=st.sampled_from(["utf-8", "utf-8-sig", "latin-1", "utf-16"]))
def test_csv_text_gives_trajectories_or_one_line(tmp_path: Path, text: str, encoding: str) -> None:
    path = tmp_path / "f.csv"
    path.write_bytes(text.encode(encoding, errors="replace"))
    event(check_load(path))


@fuzz(250)
@given(arrays=npz_arrays())
def test_npz_arrays_give_trajectories_or_one_line(tmp_path: Path,
                                                  arrays: dict[str, np.ndarray]) -> None:
    path = tmp_path / "f.npz"
    with path.open("wb") as handle:
        np.savez(handle, **arrays)
    event(check_load(path))


@fuzz(250)
@given(data=st.data(), suffix=st.sampled_from([".csv", ".npz"]))
def test_damaged_valid_file_gives_trajectories_or_one_line(
        tmp_path: Path, valid_files: dict[str, bytes], data: st.DataObject, suffix: str) -> None:
    path = tmp_path / f"f{suffix}"
    path.write_bytes(data.draw(mutated(valid_files[suffix])))
    event(check_load(path))


@fuzz(150)
@given(raw=st.binary(max_size=300), suffix=st.sampled_from([".csv", ".npz"]))
def test_random_bytes_give_one_line(tmp_path: Path, raw: bytes, suffix: str) -> None:
    path = tmp_path / f"f{suffix}"
    path.write_bytes(raw)
    event(check_load(path))


# ------------------------------------------------------------ named cases
GRID = "traj,t,x\n0,0,1\n0,1,2\n"
NAMED_CSV = {
    "metadata_list": ("# systems-metadata: [1, 2]\n" + GRID, "expected a JSON object"),
    "metadata_null": ("# systems-metadata: null\n" + GRID, "got null"),
    "params_5": ('# systems-metadata: {"params": 5}\n' + GRID, "'params' must be an object"),
    "system_5": ('# systems-metadata: {"system": 5}\n' + GRID, "'system' must be a name"),
    "metadata_invalid": ("# systems-metadata: {oops\n" + GRID, "corrupt metadata"),
    "metadata_deep": ("# systems-metadata: " + "[" * 100_000 + "]" * 100_000 + "\n" + GRID,
                      "nested too deeply"),
    "one_time_point": ("traj,t,x\n0,0,1\n", "at least 2"),
    "empty_column_name": ("traj,t,x,\n0,0,1,2\n0,1,2,3\n", "empty or duplicate"),
    "wrong_columns": ("a,b,c\n0,0,1\n0,1,2\n", "missing column"),
    "ragged": ("traj,t,x\n0,0,1\n0,1\n", "ragged row at line 3"),
    "non_numeric": ("traj,t,x\n0,0,1\n0,1,one\n", "non-numeric value 'one' at line 3"),
}


@pytest.mark.parametrize("case", sorted(NAMED_CSV))
def test_named_csv_cases(tmp_path: Path, case: str) -> None:
    text, words = NAMED_CSV[case]
    path = tmp_path / f"{case}.csv"
    path.write_text(text)
    with pytest.raises(TrajectoryFileError) as info:
        systems.load(path)
    assert words in str(info.value) and check_load(path) == "refused with one line"


def test_non_utf8_csv(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes("traj,t,x\n0,0,1\n0,1,2 # Größe\n".encode("latin-1"))
    with pytest.raises(TrajectoryFileError, match=r"not UTF-8 text \(byte 0xf6 at offset 25\)"):
        systems.load(path)


def test_csv_with_byte_order_mark_loads(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbf" + GRID.encode())
    assert systems.load(path).state_names == ("x",)


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    with path.open("wb") as handle:
        np.savez(handle, **arrays)
    return path


T3, Y3 = np.arange(3.0), np.zeros((1, 3, 2))
NAMED_NPZ = {
    "state_names_0d": ({"t": T3, "y": Y3, "state_names": np.array("ab")},
                       "'state_names' must be a 1-D array of strings, got shape ()"),
    "state_names_numbers": ({"t": T3, "y": Y3, "state_names": np.array([1, 2])},
                            "dtype int64"),
    "missing_y": ({"t": T3}, "missing arrays ['y']"),
    "y_strings": ({"t": T3, "y": np.full((1, 3, 2), "a")}, "must hold real numbers"),
    "y_complex": ({"t": T3, "y": Y3 + 1j}, "must hold real numbers, got dtype complex128"),
    "y_2d": ({"t": T3, "y": np.zeros((3, 2))}, "must have shape (n_traj, n_t=3, dim)"),
    "t_2d": ({"t": T3[:, None], "y": Y3}, "'t' must be a 1-D array"),
    "nan": ({"t": T3, "y": np.full((1, 3, 2), np.nan)}, "no observed value"),
    "inf_time": ({"t": np.array([0.0, 1.0, np.inf]), "y": Y3}, "non-finite"),
    "overflow_to_inf": ({"t": T3, "y": np.full((1, 3, 2), np.finfo(np.longdouble).max)},
                        "non-finite"),
    "non_increasing": ({"t": np.array([0.0, 2.0, 1.0]), "y": Y3}, "strictly increasing"),
    "one_time_point": ({"t": np.zeros(1), "y": np.zeros((1, 1, 2))}, "at least 2"),
    "metadata_list": ({"t": T3, "y": Y3, "metadata": np.array("[1]")}, "expected a JSON object"),
    "metadata_array": ({"t": T3, "y": Y3, "metadata": np.array(["{}", "{}"])},
                       "'metadata' must be one JSON string"),
    "object_array": ({"t": T3, "y": np.array([None, 1], dtype=object)}, "allow_pickle"),
}


@pytest.mark.parametrize("case", sorted(NAMED_NPZ))
def test_named_npz_cases(tmp_path: Path, case: str) -> None:
    arrays, words = NAMED_NPZ[case]
    if case == "overflow_to_inf" and np.finfo(np.longdouble).max <= np.finfo(np.float64).max:
        pytest.skip("long double is float64 on this platform")
    path = _npz(tmp_path / f"{case}.npz", **arrays)
    with pytest.raises(TrajectoryFileError) as info:
        systems.load(path)
    assert words in str(info.value) and check_load(path) == "refused with one line"


def _patch_central_directory(raw: bytes, offset: int, value: int) -> bytes:
    """Set one byte of every central-directory entry of a zip archive."""
    out = bytearray(raw)
    at = out.find(b"PK\x01\x02")
    while at != -1:
        out[at + offset] = value
        at = out.find(b"PK\x01\x02", at + 4)
    return bytes(out)


@pytest.mark.parametrize("damage, words", [
    (lambda raw: _patch_central_directory(raw, 8, 1), "encrypted"),  # general-purpose flags
    (lambda raw: _patch_central_directory(raw, 10, 99), "compression method"),
])
def test_npz_with_unreadable_zip_entries(tmp_path: Path, damage, words: str) -> None:
    path = _npz(tmp_path / "z.npz", t=T3, y=Y3)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(TrajectoryFileError, match=words):
        systems.load(path)


def test_npz_header_declaring_a_huge_array(tmp_path: Path) -> None:
    import io
    import zipfile

    from numpy.lib import format as npy_format

    header = io.BytesIO()
    npy_format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False,
                                               "shape": (10**13,)})  # 73 TiB
    path = tmp_path / "huge.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("t.npy", header.getvalue() + bytes(64))
        archive.writestr("y.npy", header.getvalue() + bytes(64))
    with pytest.raises(TrajectoryFileError) as info:
        systems.load(path)
    assert "cannot read the arrays" in str(info.value) and check_load(path) != "loaded"


def test_directory_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "d.csv").mkdir()
    with pytest.raises(TrajectoryFileError, match="is a directory"):
        systems.load(tmp_path / "d.csv")
    with pytest.raises(TrajectoryFileError, match="no such file"):
        systems.load(tmp_path / "nothing.npz")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs a POSIX FIFO")
def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)  # no writer: opening it for a blocking read would hang forever
    with pytest.raises(TrajectoryFileError, match="not a regular file"):
        systems.load(fifo)


def test_line_breaks_in_the_file_name_are_escaped(tmp_path: Path) -> None:
    path = tmp_path / "two\nlines.csv"
    path.write_text("traj,t,x\n0,0,1\n")
    with pytest.raises(TrajectoryFileError) as info:
        systems.load(path)
    assert "two\\nlines.csv" in str(info.value) and len(str(info.value).splitlines()) == 1


def test_error_is_a_value_error() -> None:
    assert issubclass(TrajectoryFileError, ValueError)  # callers catching ValueError still do


# ------------------------------------------------------------------ the CLI
@pytest.mark.parametrize("argv, words", [
    (["simulate", "spiral", "--out", "f.xyz"], "must end in .npz or .csv"),
    (["simulate", "spiral", "--out", ""], "--out is empty"),
    (["simulate", "lorenz96"], "unknown system 'lorenz96'"),
    (["plot", "spiral", "--out", "x.jpg"], "must end in .png"),
    (["simulate", "spiral", "--out", "{tmp}/no/such/dir/x.npz"], "No such file or directory"),
    (["simulate", "spiral", "--out", "{tmp}/isdir.npz"], "Is a directory"),
    (["simulate", "spiral", "--bogus", "1"], "unrecognized arguments"),
])
def test_cli_bad_input_exit_2_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       argv: list[str], words: str) -> None:
    (tmp_path / "isdir.npz").mkdir()
    argv = [a.format(tmp=tmp_path) for a in argv]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("systems: error: ") and err.count("\n") == 1, err
    assert words in err


def test_cli_entry_point_module_exits_with_main_status(monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    import runpy

    monkeypatch.setattr(sys, "argv", ["systems", "simulate", "lorenz96"])
    with pytest.raises(SystemExit) as info:
        runpy.run_module("systems", run_name="__main__")
    assert info.value.code == 2 and capsys.readouterr().err.count("\n") == 1
