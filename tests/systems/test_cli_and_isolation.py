"""Command line, import without torch, and the README's systems examples."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import systems
from systems import _registry
from systems.cli import main

README = Path(__file__).resolve().parents[2] / "README.md"


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "lotka_volterra" in out and "dim=28" in out and "αx − βxy" in out


@pytest.mark.parametrize("suffix", [".npz", ".csv"])
def test_simulate_writes_loadable_file(tmp_path, capsys, suffix):
    out = tmp_path / f"rb{suffix}"
    assert main(["simulate", "rigid_body", "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    loaded = systems.load(out, system="rigid_body")
    assert np.array_equal(loaded.y, systems.simulate(systems.get("rigid_body")).y)


def test_simulate_default_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["simulate", "spiral"]) == 0
    assert systems.load(tmp_path / "spiral.npz").y.shape == (1, 1000, 2)


@pytest.mark.parametrize("name", ["pleiades", "lotka_volterra"])
def test_plot_writes_png(tmp_path, name):
    out = tmp_path / f"{name}.png"
    assert main(["plot", name, "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv", [["simulate", "lorenz96"], ["plot", "spiral", "--out", "x.jpg"],
                                  ["simulate", "spiral", "--out", "x.txt"], ["frobnicate"], []])
def test_bad_input_exits_2_with_one_line(argv, capsys):
    with pytest.raises(SystemExit) as info:
        sys.exit(main(argv))
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("systems: error: ") and err.count("\n") == 1


def test_bad_name_in_subprocess(tmp_path):
    run = subprocess.run([sys.executable, "-m", "systems", "simulate", "lorenz96"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert run.stderr.splitlines() == [run.stderr.strip()]
    assert "lorenz96" in run.stderr and "lotka_volterra" in run.stderr


def test_import_without_torch(tmp_path):
    code = ("import sys; sys.modules['torch'] = None\n"
            "import systems\n"
            "traj = systems.simulate(systems.get('lotka_volterra'))\n"
            "assert traj.y.shape == (1, 141, 2)\n"
            "systems.make_dataset(systems.get('rigid_body'), n_traj=2, noise=0.1)\n"
            "print(sorted(m for m in ('kanode', 'matplotlib', 'sympy') if m in sys.modules))\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"  # neither kanode, matplotlib nor sympy was imported


def test_readme_systems_examples_run(tmp_path, monkeypatch):
    blocks = [b for b in re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
              if "import systems" in b and "kanode" not in b]
    assert len(blocks) == 3
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    try:
        for block in blocks:
            exec(compile(block, str(README), "exec"), namespace)
        assert "damped_oscillator" in systems.names()
        traj = namespace["traj"]
        assert traj.y.shape == (1, 201, 2)
        # damped: amplitude decays like exp(-ζωt) = exp(-0.2 * 20)
        assert np.max(np.abs(traj.y[0, -20:, 0])) < 2 * np.exp(-0.2 * 18)
        assert namespace["mine"].train.n_t == 105
        assert namespace["vdp"].equations() == ("v", "2.0*(1 - x**2)*v - x")
    finally:
        _registry._REGISTRY.pop("damped_oscillator", None)
