"""The fused CPU kernel of the B-spline layer (``csrc/spline_cpu.cpp``), built on first use.

:func:`kernel` compiles the C++ source with ``torch.utils.cpp_extension.load``
(g++ and ninja; about a minute, once per machine and torch version: the build
is cached under ``TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``)
and returns the module, or ``None`` when it cannot be built, with one warning
that says why; layers then use their PyTorch implementation, which gives the
same numbers more slowly. ``KANODE_NATIVE=0`` turns the kernel off; the
variable is read once, on first use (:func:`refresh` reads it again,
:func:`set_enabled` overrides it, e.g. in tests).

The build is :func:`kanode.native_build.build`'s (``-march=native``; the
extension's name carries a hash of the source, the flags and the CPU's model
and flags, so machines of different kinds that share a home directory build
their own copies).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from kanode.native_build import build

ACTIVATION_CODES = {"identity": 0, "silu": 1, "tanh": 2, "relu": 3, "softplus": 4, "gelu": 5}  # as in the C++
MAX_WIDTH = 8  # spline order + 1 <= kMaxWidth in the C++ source
SOURCE = Path(__file__).with_name("csrc") / "spline_cpu.cpp"
_OFF = ("0", "false", "no", "off")
_state: dict = {}  # "enabled": bool (the switch, once read), "module": the kernel or None (once built)


def enabled() -> bool:
    """Whether the kernel is switched on: ``KANODE_NATIVE`` is anything but
    0/false/no/off. Read from the environment on the first call only."""
    on = _state.get("enabled")
    if on is None:
        on = _state["enabled"] = os.environ.get("KANODE_NATIVE", "1").strip().lower() not in _OFF
    return on


def refresh() -> bool:
    """Read ``KANODE_NATIVE`` again (after changing it in this process); returns :func:`enabled`."""
    _state.pop("enabled", None)
    return enabled()


def set_enabled(on: bool) -> None:
    """Switch the kernel on or off for this process, whatever ``KANODE_NATIVE`` says.
    Switching on still needs a kernel that builds (:func:`kernel`)."""
    _state["enabled"] = bool(on)


def available() -> bool:
    """Whether the kernel is switched on and built (builds it on first call)."""
    return kernel() is not None


def _build():
    return build(SOURCE, "kanode_spline", "the fused CPU spline kernel")


def kernel():
    """The compiled module (``forward``, ``backward``), or None when switched off or unbuildable."""
    if not enabled():
        return None
    if "module" not in _state:
        try:
            _state["module"] = _build()
        except Exception as exc:  # no compiler, no ninja, read-only cache, ...
            _state["module"] = None
            text = str(exc).splitlines()
            lines = ([line for line in text if "error:" in line] or [line for line in text if "error" in line.lower()]
                     or [repr(exc)])
            warnings.warn(f"kanode: the fused CPU spline kernel could not be built ({lines[0].strip()}); using the "
                          "PyTorch implementation (same results, slower for large batches). "
                          "Set KANODE_NATIVE=0 to skip the build.", RuntimeWarning, stacklevel=3)
    return _state["module"]

