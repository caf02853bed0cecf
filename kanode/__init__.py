"""kanode: neural ODEs with KAN and MLP vector fields.

Layers live in :mod:`kanode.nn`, solving in :mod:`kanode.ode`, the training
loop in :mod:`kanode.train`, the run lifecycle in :mod:`kanode.lifecycle`;
:func:`kanode.fit` (:func:`kanode.fitting.fit`) runs one complete fit and
:func:`kanode.load_run` reloads a finished one (field, data, config)::

    from kanode import fit            # the function (so is kanode.fit.fit)
    result = fit(model="mlp", steps=200)
    run = kanode.load_run("runs/lotka_volterra-kan-20261122-101500")

``kanode.fit`` is also the name of the command-line module (``python -m
kanode.fit``, ``from kanode.fit import main, FitResult``). A package
attribute and a submodule of one name collide: importing the submodule
normally rebinds the package attribute to the module. So the attribute is
a property of the package that always gives the *function*, imported on
first use: the package never imports the submodule itself, and ``python -m
kanode.fit`` runs that module exactly once (no runpy warning). The one
consequence: ``import kanode.fit as m`` binds the function too; import the
module's other names with ``from kanode.fit import ...``.
"""

import sys as _sys
import types as _types

from .config import ConfigError, FitConfig, load_config
from .nn import KAN, MLP, RSWAF, KANLayer
from .ode import SolverError, VectorField, solve
from .predict import load_run

__version__ = "0.1.0"

__all__ = ["ConfigError", "FitConfig", "KAN", "KANLayer", "MLP", "RSWAF", "SolverError",
           "VectorField", "fit", "load_config", "load_run", "solve"]


class _Package(_types.ModuleType):
    """The ``kanode`` module: ``kanode.fit`` is the function :func:`kanode.fitting.fit`."""

    @property
    def fit(self):  # noqa: ANN201 - the fit function, see kanode.fit.fit
        override = self.__dict__.get("_fit_override")
        if override is not None:
            return override
        from .fitting import fit as fit_function  # the library module, imported on first use

        return fit_function

    @fit.setter
    def fit(self, value) -> None:
        # The import system binds the submodule here after importing it: keep the function.
        if not isinstance(value, _types.ModuleType):
            self.__dict__["_fit_override"] = value  # e.g. a test's monkeypatch

    @fit.deleter
    def fit(self) -> None:
        self.__dict__.pop("_fit_override", None)

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), "fit"})


_sys.modules[__name__].__class__ = _Package
