"""kanode.native_build.Kernel: a kernel that cannot be built warns once and is None (its callers
then run their PyTorch code: a fit still trains, with the eager numbers); switched off, it is
None without trying to build."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

import kanode.native_build as native_build
import kanode.window as window
from kanode.config import FitConfig
from kanode.lifecycle import make_trainer
from kanode.native_build import Kernel

SOURCE = Path(window.__file__).with_name("csrc") / "window_cpu.cpp"


def test_a_failed_build_warns_once_and_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def failing(source, prefix, what):
        calls.append(prefix)
        raise RuntimeError("x.cpp:1: error: no C++ compiler here")

    monkeypatch.setattr(native_build, "build", failing)
    kernel = Kernel(SOURCE, "kanode_test", "a test kernel", lambda: True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert kernel.get() is None and kernel.get() is None
    messages = [str(w.message) for w in caught]
    assert calls == ["kanode_test"]  # built once, not again
    assert len(messages) == 1 and "a test kernel could not be built" in messages[0]
    assert "no C++ compiler here" in messages[0]


def test_switched_off_it_never_builds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(native_build, "build", lambda *a: pytest.fail("built although switched off"))
    assert Kernel(SOURCE, "kanode_test", "a test kernel", lambda: False).get() is None


def test_without_the_window_kernel_a_fit_trains_eagerly(monkeypatch: pytest.MonkeyPatch) -> None:
    """The trainer's losses without the kernel are the eager ones, step by step."""
    settings = dict(widths=[2, 4, 2], grid_size=3, train_fraction=0.25, n_test_traj=1, optimizer="adam",
                    steps=5, eval_every=1000, checkpoint_every=1000, plots=False, threads=1)
    eager = [s.records[0].train_loss for s in make_trainer([FitConfig(compile="off", **settings)]).steps()]
    monkeypatch.setattr(window.KERNEL, "get", lambda: None)
    trainer = make_trainer([FitConfig(compile="auto", **settings)])
    got = [s.records[0].train_loss for s in trainer.steps()]
    assert trainer.compiled is not None and trainer.compiled.last_route is None  # neither compiled route ran
    assert got == eager


@pytest.mark.skipif(window.KERNEL.get() is None, reason="the window kernel cannot be built here")
def test_a_built_kernel_loads_from_any_checkout_without_a_rebuild(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The same source text at another path (a second checkout, a worktree) loads the library
    built before instead of handing ninja a new source path (which rebuilt it, a minute each time)."""
    from torch.utils import cpp_extension

    checkout = tmp_path / "csrc"
    checkout.mkdir()
    copy = checkout / SOURCE.name
    copy.write_bytes(SOURCE.read_bytes())
    monkeypatch.setattr(native_build, "HEADERS", SOURCE.parent)  # the headers hashed with it, as in kanode
    monkeypatch.setattr(cpp_extension, "load", lambda **kw: pytest.fail(f"rebuilt {kw['name']}"))
    module = native_build.build(copy, "kanode_window", "the fused CPU solve kernel")
    assert module.__name__ == window.KERNEL.get().__name__
    assert Path(module.__file__).samefile(window.KERNEL.get().__file__)
