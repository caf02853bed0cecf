"""Building kanode's C++ CPU kernels (``torch.utils.cpp_extension``), once per machine.

:func:`build` compiles one source file with g++ and ninja into a Python
module, cached under ``TORCH_EXTENSIONS_DIR`` (default
``~/.cache/torch_extensions``) by a name that carries a hash of the source,
the flags and the CPU's model and flags — machines of different kinds that
share a home directory build their own copies, and an edited source builds
anew. The first build prints one notice on stderr (it takes about a minute).
"""

from __future__ import annotations

import hashlib
import platform
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

__all__ = ["Kernel", "build", "cpu_tag"]

HEADERS = Path(__file__).with_name("csrc")  # headers the kernels' sources include


def cpu_tag() -> str:
    """A short hash of this CPU's model and flags."""
    text = platform.processor() + platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            text += "".join(line for line in fh if line.startswith(("model name", "flags")))[:20000]
    except OSError:
        pass
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def build(source: Path, prefix: str, what: str) -> ModuleType:
    """The module compiled from ``source`` (``-O3 -fopenmp``, ``-march=native`` on x86-64;
    it may include the headers of ``kanode/csrc``);
    ``prefix`` starts its cache name, ``what`` names it in the first build's notice.
    Raises whatever the compiler raises (callers fall back to PyTorch code)."""
    from torch.utils import cpp_extension

    flags = ["-O3", "-fopenmp"]  # at::parallel_for is inline OpenMP; torch ships the libgomp it binds to
    if platform.machine().lower() in ("x86_64", "amd64"):
        flags.append("-march=native")
    # the shared headers (kanode/csrc/*.h) are part of every kernel: an edit rebuilds them all
    text = b"".join(path.read_bytes() for path in [source, *sorted(HEADERS.glob("*.h"))])
    digest = hashlib.sha1(text + " ".join(flags).encode()).hexdigest()[:8]
    name = f"{prefix}_{digest}_{cpu_tag()}"
    try:  # a private helper: only for the notice below
        built = any(Path(cpp_extension._get_build_directory(name, verbose=False)).glob(f"{name}*.so"))
    except Exception:
        built = False
    if not built:
        print(f"kanode: compiling {what} (once per machine, about a minute) ...", file=sys.stderr, flush=True)
    return cpp_extension.load(name=name, sources=[str(source)], extra_cflags=flags, extra_ldflags=["-fopenmp"],
                              verbose=False)


class Kernel:
    """One C++ kernel, built on first use: :meth:`get` returns the module, or None when
    ``enabled()`` says kanode's kernels are switched off (``KANODE_NATIVE=0``: pass
    :func:`kanode.nn._native.enabled`, the one switch) or the build failed (then one warning
    says why and the callers use their PyTorch code)."""

    def __init__(self, source: Path, prefix: str, what: str, enabled: Callable[[], bool]) -> None:
        self.source, self.prefix, self.what, self.enabled = source, prefix, what, enabled
        self._built: dict[str, ModuleType | None] = {}

    def get(self) -> ModuleType | None:
        if not self.enabled():
            return None
        if "module" not in self._built:
            try:
                self._built["module"] = build(self.source, self.prefix, self.what)
            except Exception as exc:  # no compiler, no ninja, read-only cache, ...
                self._built["module"] = None
                line = next((x for x in str(exc).splitlines() if "error" in x.lower()), repr(exc))
                warnings.warn(f"kanode: {self.what} could not be built ({line.strip()[:200]}); kanode uses its "
                              "PyTorch code instead (same results, slower)", RuntimeWarning, stacklevel=3)
        return self._built["module"]
