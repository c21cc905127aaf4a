"""Methods, registered by name. Importing this package registers every built-in method.

Each method declares itself once in its own file (``spec = MethodSpec(...)``, see
:mod:`adaptkd.methods.spec`); the rest of the package reads the spec from the registry.
"""

# Built-in methods (one module each; importing registers them).
from adaptkd.methods import afd as _afd  # noqa: F401
from adaptkd.methods import ce as _ce  # noqa: F401
from adaptkd.methods import compose as _compose  # noqa: F401
from adaptkd.methods import dkd as _dkd  # noqa: F401
from adaptkd.methods import dml as _dml  # noqa: F401
from adaptkd.methods import dtkd as _dtkd  # noqa: F401
from adaptkd.methods import fitnet as _fitnet  # noqa: F401
from adaptkd.methods import kd as _kd  # noqa: F401
from adaptkd.methods import rtk as _rtk  # noqa: F401
from adaptkd.methods import switokd as _switokd  # noqa: F401
from adaptkd.methods import unic as _unic  # noqa: F401
from adaptkd.methods.base import (
    METHODS,
    Method,
    MethodContext,
    MethodParams,
    StepIn,
    StepOut,
    build_method,
    check_method,
    example_networks,
    list_methods,
    method_class,
    register_method,
    warmup_factor,
)
from adaptkd.methods.spec import Example, MethodSpec, NetworkNeeds, Roster

__all__ = [
    "METHODS",
    "Example",
    "Method",
    "MethodContext",
    "MethodParams",
    "MethodSpec",
    "NetworkNeeds",
    "Roster",
    "StepIn",
    "StepOut",
    "build_method",
    "check_method",
    "example_networks",
    "list_methods",
    "method_class",
    "register_method",
    "warmup_factor",
]
