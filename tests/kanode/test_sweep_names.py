"""Sweep names and model labels become directory names: they cannot escape the sweep
directory, and two cells can never share a run directory (checked before any run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kanode.sweep import SweepError, expand, load_sweep
from kanode.sweep.__main__ import main as sweep_main

SWEEP = """
name = "{name}"
systems = ["lotka_volterra", "rigid_body"]
seeds = [0]

[base]
optimizer = "adam"
steps = 2
lbfgs_steps = 0

[models."{label}"]
model = "kan"
hidden = [4]
{extra}
"""


def write(tmp_path: Path, name: str = "names", label: str = "kan", extra: str = "") -> Path:
    path = tmp_path / "sweep.toml"
    path.write_text(SWEEP.format(name=name, label=label, extra=extra))
    return path


@pytest.mark.parametrize("name", ["../../..", "..", ".", "a/b", "/etc", "-rf", "has space",
                                  "x" * 101, ""])
def test_a_sweep_name_that_is_not_one_plain_component_is_refused(tmp_path: Path,
                                                                 name: str) -> None:
    with pytest.raises(SweepError, match="name .* is not a plain name"):
        load_sweep(write(tmp_path, name=name))


@pytest.mark.parametrize("label", ["..", ".", "../x", "a\\\\b", "k an", ".hidden", "é"])
def test_a_model_label_that_is_not_one_plain_component_is_refused(tmp_path: Path,
                                                                  label: str) -> None:
    with pytest.raises(SweepError, match="model label .* is not a plain name"):
        load_sweep(write(tmp_path, label=label))


def test_plain_names_and_labels_are_kept(tmp_path: Path) -> None:
    sweep = load_sweep(write(tmp_path, name="fig-2.v1_a", label="KAN_g5.k3-b"))
    specs = expand(sweep)
    assert sweep.name == "fig-2.v1_a"
    assert [s.key for s in specs] == ["lotka_volterra/KAN_g5.k3-b/seed0",
                                      "rigid_body/KAN_g5.k3-b/seed0"]


def test_a_file_name_that_is_no_plain_name_needs_an_explicit_name(tmp_path: Path) -> None:
    path = tmp_path / "my sweep.toml"
    path.write_text(write(tmp_path).read_text().replace('name = "names"\n', ""))
    with pytest.raises(SweepError, match=r"'my sweep' is not a plain name.*set name ="):
        load_sweep(path)


def test_labels_differing_only_in_case_collide(tmp_path: Path) -> None:
    extra = '[models.KAN]\nmodel = "mlp"\nhidden = [8]\n'
    with pytest.raises(SweepError, match=r"sweep cells lotka_volterra/kan/seed0 and "
                                         r"lotka_volterra/KAN/seed0 map to the same run "
                                         r"directory lotka_volterra/KAN/seed0"):
        expand(load_sweep(write(tmp_path, extra=extra)))


def test_grid_values_printed_alike_collide_before_any_run(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # 0.0100000001 and 0.01 are different learning rates but both print as "0.01"
    path = write(tmp_path, extra="[grid]\nlr = [0.01, 0.0100000001]\n")
    out = tmp_path / "out"
    code = sweep_main([str(path), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert ("sweep cells lotka_volterra/kan[lr=0.01]/seed0 and lotka_volterra/kan[lr=0.01]/seed0 "
            "map to the same run directory lotka_volterra/kan_lr=0.01_/seed0") in err
    assert not out.exists()  # refused before anything was written


def test_a_run_directory_name_too_long_for_a_file_system_is_refused(tmp_path: Path) -> None:
    extra = "[grid]\n" + "".join(f"{k} = [{v}]\n" for k, v in [
        ("lr", 0.0123456), ("lbfgs_lr", 0.5), ("rtol", 1.5e-6), ("atol", 2.5e-8),
        ("grid_size", 7), ("spline_order", 3), ("batch_size", 12), ("eval_every", 3),
        ("checkpoint_every", 9), ("lr_step_every", 11), ("lr_step_gamma", 0.75),
        ("lbfgs_history", 13), ("grad_clip", 2.5), ("noise", 0.01), ("n_traj", 5)])
    with pytest.raises(SweepError, match="run directory name is 2[0-9][0-9] bytes long"):
        expand(load_sweep(write(tmp_path, label="a_rather_long_model_label", extra=extra)))
