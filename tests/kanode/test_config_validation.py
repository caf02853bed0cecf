"""FitConfig.validate as the one validation layer: property tests over every field
(Python, TOML and command-line paths), the issue's CLI cases, and the single
homes of widths, exit codes, solver defaults and ``kanode.fit``.

Every generated value must end as a valid FitConfig whose fields hold what was
asked, or as a ConfigError with a one-line message naming the field; anything
else (another exception, a traceback, a second stderr line) fails. Outcomes are
recorded as hypothesis events (``--hypothesis-show-statistics`` lists them).
"""

from __future__ import annotations

import io
import math
import subprocess
import sys
import tomllib
import types
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import kanode
from kanode import config as cfg
from kanode.config import (ADAPTIVE_METHODS, FIXED_STEP_METHODS, FLOAT_RANGES, INT_RANGES,
                           MAX_PARAMS, METHODS, SOLVER_DEFAULTS, ConfigError, FitConfig,
                           check_fixed_steps, dump_config, estimate_params, load_config)
from kanode.exit_codes import EXIT_BAD_INPUT, EXIT_DIVERGED

FIELDS = {f.name: f.type for f in cfg.fields(FitConfig)}
SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])

def _lv_grid() -> tuple[float, float]:
    import systems

    t = systems.get("lotka_volterra").default_t()  # the default system's grid: [0, 14]
    return float(t[-1] - t[0]), float(min(t[1:] - t[:-1]))


LV_SPAN, LV_GAP = _lv_grid()


def rk4_steps(step: float) -> float:
    """Steps a fixed-step solve over the default system's span takes (ceil, as torchdiffeq)."""
    ratio = LV_SPAN / step
    return math.ceil(ratio) if math.isfinite(ratio) else math.inf


def outcome(values: dict[str, Any], names: tuple[str, ...]) -> FitConfig | None:
    """FitConfig.from_dict(values) or None after a ConfigError that is one line and names
    one of ``names`` (any other exception propagates and fails the test)."""
    try:
        config = FitConfig.from_dict(values, source="test.toml")
    except ConfigError as exc:
        message = str(exc)
        assert "\n" not in message and message.strip() == message, message
        assert any(name.split()[0] in message for name in names), (names, message)
        event("ConfigError")
        return None
    event("valid")
    return config


def python_outcome(values: dict[str, Any], names: tuple[str, ...]) -> FitConfig | None:
    """The same through the Python constructor (no TOML coercion)."""
    try:
        config = FitConfig(**values)
    except ConfigError as exc:
        assert "\n" not in str(exc) and any(n.split()[0] in str(exc) for n in names), str(exc)
        return None
    return config


# ------------------------------------------------------------ scalar fields
ANY_INT = st.one_of(st.integers(-10, 10), st.integers(-2**70, 2**70),
                    st.sampled_from([0, 1, 2, 7, 8, 1000, 1001, 10_000, 10_001, 2**31, 2**63 - 1,
                                     2**63, 2**64]))
NOT_INT = st.one_of(st.booleans(), st.floats(allow_nan=True), st.text(max_size=5), st.none(),
                    st.lists(st.integers(), max_size=2))


def int_oracle(name: str, value: Any, base: dict[str, Any]) -> bool:
    """Whether ``value`` must be accepted for ``name`` on top of ``base``."""
    if isinstance(value, bool) or not isinstance(value, int):
        return False
    lo, hi = INT_RANGES[name]
    if not lo <= value <= hi:
        return False
    if name == "batch_time" and value == 1:
        return False
    if name == "max_num_steps" and base.get("method", "rk4") in FIXED_STEP_METHODS:
        return value >= rk4_steps(LV_GAP)  # rk4 over lotka_volterra: about 140 steps
    return True


@pytest.mark.parametrize("name", sorted(INT_RANGES))
@SETTINGS
@given(value=st.one_of(ANY_INT, NOT_INT))
def test_every_int_field_is_typed_and_bounded(name: str, value: Any) -> None:
    base = {"optimizer": "adam+lbfgs"}
    config = outcome({**base, name: value}, (name,))
    expected = int_oracle(name, value, base)
    assert (config is not None) == expected, (name, value)
    if config is not None:
        assert getattr(config, name) == value and type(getattr(config, name)) is int
    assert (python_outcome({name: value}, (name,)) is not None) == expected


ANY_FLOAT = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                      st.sampled_from([0.0, -0.0, 1.0, 1e-12, 1e-3, 7e-4, 1e300, -1.0]),
                      st.integers(-3, 3))
NOT_FLOAT = st.one_of(st.booleans(), st.text(max_size=4), st.integers(2**1100, 2**1101))


def float_oracle(name: str, value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if isinstance(value, int) and abs(value) > 2**1000:
        return False  # beyond float range: not a number kanode can use
    value = float(value)
    lo, hi, open_lo = FLOAT_RANGES[name]
    if not (math.isfinite(value) and (value > lo if open_lo else value >= lo) and value <= hi):
        return False
    if name == "step_size" and value > 0:  # rk4 (the default) over lotka_volterra's span
        return rk4_steps(value) <= SOLVER_DEFAULTS["max_num_steps"]
    return True


@pytest.mark.parametrize("name", sorted(FLOAT_RANGES))
@SETTINGS
@given(value=st.one_of(ANY_FLOAT, NOT_FLOAT))
def test_every_float_field_is_finite_and_in_range(name: str, value: Any) -> None:
    config = outcome({name: value}, (name,))
    expected = float_oracle(name, value)
    assert (config is not None) == expected, (name, value)
    if config is not None:
        assert getattr(config, name) == float(value) and type(getattr(config, name)) is float
    assert (python_outcome({name: value}, (name,)) is not None) == expected


@pytest.mark.parametrize("name", ["plots", "adjoint", "time_input"])
@SETTINGS
@given(value=st.one_of(st.booleans(), st.integers(0, 1), st.text(max_size=3), st.floats()))
def test_bool_fields_take_only_booleans(name: str, value: Any) -> None:
    config = outcome({name: value}, (name,))
    assert (config is not None) == isinstance(value, bool)


def choice_oracle(name: str, value: str) -> bool:
    from kanode.nn.activations import ACTIVATIONS

    allowed = {"model": cfg.MODELS, "optimizer": cfg.OPTIMIZERS, "lr_schedule": cfg.SCHEDULES,
               "dtype": cfg.DTYPES, "loss": cfg.LOSSES, "method": METHODS,
               "activation": ("tanh",),  # the only one a KAN (the default model) allows
               "base_activation": tuple(ACTIVATIONS)}
    if name == "device":
        return value == "cpu" or value == "cuda" or (
            value.startswith("cuda:") and value[5:].isascii() and value[5:].isdigit())
    if name == "system":
        import systems

        return value in systems.names()
    return value in allowed[name]


CHOICES = ("model", "optimizer", "lr_schedule", "dtype", "loss", "method", "activation",
           "base_activation", "device", "system")


@pytest.mark.parametrize("name", CHOICES)
@SETTINGS
@given(data=st.data())
def test_every_choice_is_checked_against_its_table(name: str, data: st.DataObject) -> None:
    import systems
    from kanode.nn.activations import ACTIVATIONS

    known = sorted({*cfg.MODELS, *cfg.OPTIMIZERS, *cfg.SCHEDULES, *cfg.DTYPES, *METHODS,
                    *ACTIVATIONS, *systems.names(), "mse", "cpu", "cuda", "cuda:1", "gpu",
                    "sgd", "rk5", "dopri", "RK4", "cuda:x", "cuda:٣", "kan ", "scipy_solver"})
    value = data.draw(st.one_of(st.sampled_from(known), st.text(max_size=12)))
    config = outcome({name: value}, (name,) if name != "system" else ("system",))
    assert (config is not None) == choice_oracle(name, value), (name, value)


def test_method_table_is_torchdiffeqs_own() -> None:
    from torchdiffeq._impl.odeint import SOLVERS

    assert set(METHODS) == set(SOLVERS) - {"scipy_solver"}
    assert {"rk4", "euler", "heun3"} <= set(FIXED_STEP_METHODS)
    assert {"dopri5", "dopri8", "adaptive_heun"} <= set(ADAPTIVE_METHODS)


# --------------------------------------------------------------- list fields
@SETTINGS
@given(widths=st.lists(st.one_of(st.integers(-2, 12), st.integers(0, 4_000_000),
                                 st.booleans(), st.floats(0, 5)), max_size=36),
       model=st.sampled_from(cfg.MODELS), time_input=st.booleans())
def test_widths_are_bounded_and_fit_their_own_dimension(widths: list[Any], model: str,
                                                        time_input: bool) -> None:
    config = outcome({"widths": widths, "model": model, "time_input": time_input},
                     ("widths", "parameters"))
    ints = all(isinstance(w, int) and not isinstance(w, bool) for w in widths)
    if config is None:
        return
    assert ints and (not widths or 2 <= len(widths) <= cfg.MAX_LAYERS + 1)
    if widths:
        assert all(1 <= w <= cfg.MAX_LAYER_WIDTH for w in widths)
        assert widths[0] == widths[-1] + int(time_input)
        assert estimate_params(config, widths[-1]) <= MAX_PARAMS


@SETTINGS
@given(grid_range=st.lists(st.one_of(st.floats(allow_nan=True), st.integers(-5, 5),
                                     st.booleans()), max_size=3))
def test_grid_range_is_two_finite_increasing_numbers(grid_range: list[Any]) -> None:
    config = outcome({"grid_range": grid_range}, ("grid_range",))
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in grid_range)
    expected = (numeric and len(grid_range) == 2 and all(math.isfinite(v) for v in grid_range)
                and grid_range[0] < grid_range[1])
    assert (config is not None) == expected, grid_range


@SETTINGS
@given(steps=st.lists(ANY_INT, max_size=4),
       extend=st.lists(st.lists(ANY_INT, min_size=1, max_size=3), max_size=3),
       model=st.sampled_from(cfg.MODELS))
def test_grid_schedules_are_bounded_and_kan_only(steps: list[int], extend: list[list[int]],
                                                 model: str) -> None:
    config = outcome({"grid_update_steps": steps, "grid_extend": extend, "model": model},
                     ("grid_update_steps", "grid_extend", "parameters"))
    if config is None:
        return
    assert model != "mlp" or not (steps or extend)
    assert all(0 <= s <= cfg.MAX_STEPS for s in steps)
    for pair in extend:
        assert len(pair) == 2 and 0 <= pair[0] <= cfg.MAX_STEPS
        assert (2 if model == "rswaf" else 1) <= pair[1] <= cfg.MAX_GRID_SIZE


# ---------------------------------------------------------- whole configs
FIELD_VALUES = {
    "model": st.sampled_from(["kan", "mlp", "rswaf", "sgd"]),
    "method": st.sampled_from(["rk4", "dopri5", "euler", "foo"]),
    "widths": st.lists(st.integers(0, 30), max_size=4),
    "grid_size": ANY_INT, "spline_order": st.integers(-1, 9), "steps": st.integers(-1, 5),
    "lbfgs_steps": st.integers(-1, 5), "optimizer": st.sampled_from(cfg.OPTIMIZERS),
    "lr": ANY_FLOAT, "lr_step_gamma": ANY_FLOAT, "step_size": ANY_FLOAT,
    "max_num_steps": st.integers(0, 30_000), "activation": st.sampled_from(["tanh", "relu"]),
    "base_activation": st.sampled_from(["silu", "tanh", "bogus"]),
    "time_input": st.booleans(), "seed": ANY_INT, "batch_time": st.integers(-1, 3),
    "grid_update_steps": st.lists(st.integers(-2, 3), max_size=2),
}


@settings(max_examples=600, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(values=st.fixed_dictionaries({}, optional=FIELD_VALUES))
def test_random_configs_are_valid_or_one_line_errors_and_round_trip(values: dict[str, Any]) -> None:
    config = outcome(values, tuple(values) + ("parameters", "optimizer", "steps", "system"))
    if config is None:
        return
    again = FitConfig.from_dict(tomllib.loads(dump_config(config)))
    assert again == config


def test_old_config_files_without_base_activation_still_load(tmp_path: Path) -> None:
    text = dump_config(FitConfig(model="mlp", activation="relu"))
    old = "\n".join(line for line in text.splitlines() if not line.startswith("base_activation"))
    (tmp_path / "config.toml").write_text(old + "\n")
    loaded = load_config(tmp_path / "config.toml")
    assert loaded.base_activation == "silu" and loaded.activation == "relu"


# ------------------------------------------------------------- fixed steps
def test_fixed_steps_are_counted_over_the_data_span() -> None:
    rk4 = FitConfig(method="rk4")
    check_fixed_steps(rk4, 14.0, 0.1)  # 140 steps: fine
    with pytest.raises(ConfigError, match=r"smallest time gap 1e-09 .* would take 1\.4e\+10 rk4 "
                                          r"steps .* max_num_steps=5000"):
        check_fixed_steps(rk4, 14.0, 1e-9)
    check_fixed_steps(FitConfig(method="dopri5"), 14.0, 1e-9)  # adaptive: not counted
    with pytest.raises(ConfigError, match="step_size=1e-12 would take 1.4e\\+13"):
        FitConfig(step_size=1e-12)
    assert FitConfig(step_size=1e-12, method="dopri5").step_size == 1e-12


# ------------------------------------------------------------ model building
def test_base_activation_reaches_every_kan_layer() -> None:
    from kanode.fit import build_model

    x = torch.linspace(-0.9, 0.9, 8, dtype=torch.float64).reshape(4, 2)
    outputs = {}
    for model in ("kan", "rswaf"):
        for act in ("silu", "tanh"):
            torch.manual_seed(0)
            net = build_model(FitConfig(model=model, base_activation=act), 2).double()
            assert [layer.base_activation for layer in net.layers] == [act, act]
            outputs[model, act] = net(x)
        assert not torch.allclose(outputs[model, "silu"], outputs[model, "tanh"])


def test_limits_agree_with_the_fused_kernel() -> None:
    from kanode.nn import _native

    assert cfg.MAX_SPLINE_ORDER == _native.MAX_WIDTH - 1
    from kanode.fit import build_model

    net = build_model(FitConfig(spline_order=cfg.MAX_SPLINE_ORDER), 2)
    assert net(torch.zeros(3, 2, dtype=torch.get_default_dtype())).shape == (3, 2)


def test_one_widths_rule_for_fit_and_sweep(tmp_path: Path) -> None:
    from kanode.fit import build_model, default_widths
    from kanode.sweep import expand, load_sweep

    config = FitConfig(time_input=True)
    assert config.resolved_widths(2) == default_widths(config, 2) == [3, 10, 2]
    net = build_model(config, 2)
    assert sum(p.numel() for p in net.parameters()) == estimate_params(config, 2) == 500
    mlp = FitConfig(model="mlp", time_input=True)
    assert sum(p.numel() for p in build_model(mlp, 3).parameters()) == estimate_params(mlp, 3)
    (tmp_path / "s.toml").write_text(
        'systems = ["rigid_body"]\n[base]\ntime_input = true\n'
        '[models.kan]\nmodel = "kan"\nhidden = [4]\n[models.mlp]\nmodel = "mlp"\n')
    specs = expand(load_sweep(tmp_path / "s.toml"))
    assert [s.config.widths for s in specs] == [[4, 4, 3], []]
    assert estimate_params(specs[0].config, 3) == (4 * 4 + 4 * 3) * 10
    assert estimate_params(specs[1].config, 3) == 50 * 5 + 3 * 51


def test_dispatches_end_in_a_raise() -> None:
    from kanode.train import phase_at

    with pytest.raises(ValueError, match="unknown optimizer 'sgd'"):
        phase_at(types.SimpleNamespace(optimizer="sgd", steps=1), 0)  # type: ignore[arg-type]


def test_solve_defaults_are_fitconfigs() -> None:
    import inspect

    from kanode.ode import solve

    params = inspect.signature(solve).parameters
    defaults = FitConfig()
    for name in ("method", "rtol", "atol", "max_num_steps"):
        assert params[name].default == getattr(defaults, name) == SOLVER_DEFAULTS[name]


# -------------------------------------------------------------- kanode.fit
def test_from_kanode_import_fit_gives_the_function_in_any_import_order() -> None:
    from kanode.fit import FitResult, main  # the module imported first

    from kanode import fit
    assert callable(fit) and fit.__name__ == "fit" and fit is sys.modules["kanode.fit"].fit
    assert kanode.fit is fit and "fit" in kanode.__all__ and "fit" in dir(kanode)
    assert main.__module__ == "kanode.fit" and FitResult.__module__ == "kanode.result"  # a leaf module
    code = ("from kanode import fit; import kanode.fit as m; from kanode.fit import main; "
            "import kanode; print(fit.__name__, m is fit, kanode.fit is fit, callable(main))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["fit", "True", "True", "True"], proc.stderr


def test_python_m_kanode_fit_runs_the_module_once_without_warnings() -> None:
    proc = subprocess.run([sys.executable, "-W", "error", "-m", "kanode.fit", "--method", "foo"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == EXIT_BAD_INPUT
    assert proc.stderr.splitlines() == [proc.stderr.strip()] and "method" in proc.stderr


def test_exit_codes_are_defined_once() -> None:
    from kanode import fit as _  # noqa: F401
    from kanode.sweep import backends

    assert (EXIT_BAD_INPUT, EXIT_DIVERGED) == (2, 3)
    assert sys.modules["kanode.fit"].EXIT_DIVERGED is EXIT_DIVERGED
    assert backends.EXIT_DIVERGED is EXIT_DIVERGED


# ------------------------------------------------------------ command line
def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    from kanode.fit import main

    try:
        code = main(argv)
    except SystemExit as exc:  # argparse errors
        code = int(exc.code)
    return code, capsys.readouterr().err.splitlines()


def _tiny_gap_csv(path: Path) -> Path:
    times = [0.0, 1e-9] + [0.1 * k for k in range(1, 30)]
    rows = [f"0,{t!r},{1 + t},{1 - t}" for t in times]
    path.write_text("traj,t,x,y\n" + "\n".join(rows) + "\n")
    return path


ISSUE_CASES = {
    "method": (["--method", "foo"], "method"),
    "lr-step-every": (["--lr-step-every", "0"], "lr_step_every"),
    "lr-step-gamma": (["--lr-step-gamma", "inf"], "lr_step_gamma"),
    "grid-range": (["--grid-range", "0", "inf"], "grid_range"),
    "spline-order": (["--spline-order", "1000000"], "spline_order must be at most 7"),
    "widths": (["--widths", "2", "3000000", "2"], "MAX_LAYER_WIDTH"),
    "params": (["--model", "mlp", "--widths", "2", "9000", "9000", "2"], "parameters"),
    "grid-size": (["--grid-size", "100000"], "grid_size"),
    "batch-size": (["--batch-size", "10000000"], "batch_size"),
    "grid-extend": (["--grid-extend", "10:1000000"], "grid_extend"),
    "n-traj": (["--n-traj", "2147483648"], "n_traj"),
    "threads": (["--threads", "99999"], "threads"),
    "seed": (["--seed", str(2**64)], "seed"),
    "step-size": (["--step-size", "1e-12"], "1.4e+13 rk4 steps"),
    "out": (["--out", ""], "--out must not be empty"),
    "config": (["--config", ""], "--config must not be empty"),
    "resume": (["--resume", ""], "--resume must not be empty"),
    "activation": (["--activation", "relu"], "--base-activation"),
    "grid-update-steps": (["--grid-update-steps", "-1"], "grid_update_steps"),
    "time-input-widths": (["--time-input", "--widths", "2", "10", "2"], "time_input"),
}


@pytest.mark.parametrize("case", sorted(ISSUE_CASES))
def test_issue_cases_exit_2_with_one_line(case: str, capsys: pytest.CaptureFixture[str],
                                          tmp_path: Path) -> None:
    argv, expected = ISSUE_CASES[case]
    code, lines = run_main([*argv, "--quiet"], capsys)
    assert code == EXIT_BAD_INPUT and len(lines) == 1, lines
    assert lines[0].startswith("kanode: error: ") and expected in lines[0], lines
    assert not any(tmp_path.iterdir())


def test_data_with_a_tiny_time_gap_is_refused_before_any_run_dir(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _tiny_gap_csv(tmp_path / "tiny.csv")
    code, lines = run_main(["--data", str(data), "--n-test-traj", "0", "--out",
                            str(tmp_path / "run"), "--quiet"], capsys)
    assert code == EXIT_BAD_INPUT and len(lines) == 1, lines
    assert "smallest time gap 1e-09" in lines[0] and "2.9e+09 rk4 steps" in lines[0]
    assert not (tmp_path / "run" / "metrics.csv").exists()


FLAGS = sorted("--" + name.replace("_", "-") for name in FIELDS if FIELDS[name] != "bool")
TOKENS = st.one_of(st.sampled_from(["0", "-1", "1", "2", "nan", "inf", "-inf", "1e-12", "1e308",
                                    "2147483648", str(2**64), "", " ", "rk4", "mlp", "3:7",
                                    "-5:2", "relu", "silu", "0.5", "cuda:0"]),
                   st.text(max_size=6).filter(lambda s: not s.startswith("-")))


class _Reached(Exception):
    """kanode.fit.main got as far as calling fit(): the options were accepted."""


@settings(max_examples=400, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(flag=st.sampled_from(FLAGS), tokens=st.lists(TOKENS, min_size=1, max_size=3))
def test_any_command_line_value_is_accepted_or_one_error_line(
        flag: str, tokens: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    module = sys.modules["kanode.fit"] if "kanode.fit" in sys.modules else None
    if module is None:
        import importlib

        module = importlib.import_module("kanode.fit")
    seen: list[FitConfig] = []

    def fake_fit(config: FitConfig, **_: Any) -> None:
        seen.append(config)
        raise _Reached

    monkeypatch.setattr(module, "fit", fake_fit)
    err = io.StringIO()
    with redirect_stderr(err), redirect_stdout(io.StringIO()):
        try:
            code = module.main([flag, *tokens, "--quiet", "--out", "unused"])
        except SystemExit as exc:
            code = int(exc.code)
        except _Reached:
            code = None
    if code is None:
        event("accepted")
        assert len(seen) == 1 and isinstance(seen[0], FitConfig) and not err.getvalue()
        seen[0].validate()
        return
    event("refused")
    lines = err.getvalue().splitlines()
    assert code == EXIT_BAD_INPUT and len(lines) == 1 and lines[0].startswith("kanode: error: ")


def test_sweep_list_catches_a_method_typo(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from kanode.sweep.__main__ import main as sweep_main

    path = tmp_path / "s.toml"
    path.write_text('systems = ["spiral"]\n[base]\nmethod = "dopri55"\n'
                    '[models.kan]\nmodel = "kan"\n')
    assert sweep_main([str(path), "--list", "--out", str(tmp_path / "out")]) == EXIT_BAD_INPUT
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "method must be one of" in lines[0] and "dopri55" in lines[0]
    assert not (tmp_path / "out").exists()
