"""What the acceleration layer refuses before it evaluates a network itself.

A fast evaluator re-implements a module's forward from its parameters, so it may only stand in for
modules whose forward it knows exactly: the exact classes listed by each evaluator (no
subclasses, whose ``forward`` may do anything), as their library defines them (no method
replaced on the instance, ``module.forward = ...``, or on the class, ``nn.ReLU.forward = ...``,
and the functions their forwards call, ``F.linear``, ``F.relu``, ..., not replaced), no forward or
backward hooks anywhere (they may change inputs or outputs), no parametrizations (the stored
parameter is not the one used) and no uninitialised lazy parameters. Each refusal is an
``UnsupportedNetworkError`` whose message is the reason the run prints ("MyQ overrides forward",
"LayerNorm not supported", "MLP.forward is replaced on the instance").
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as nn_module
from torch.nn.parameter import UninitializedParameter
from torch.nn.utils import parametrize

__all__ = [
    "UnsupportedNetworkError",
    "check_exact_type",
    "check_library_classes",
    "check_readable",
]

# The packages whose classes the evaluators know; a method of theirs defined anywhere else was put
# there by someone else (a patch).
_LIBRARIES = frozenset({"torch", "tensordict", "torchrl", "sac_tr"})
# What the known modules' forwards call (Linear, ReLU, Tanh, ELU), as they were when this was
# imported; each must still be there and be torch's own.
_FUNCTIONS = {
    (F, "linear"): F.linear,
    (F, "relu"): F.relu,
    (F, "elu"): F.elu,
    (torch, "tanh"): torch.tanh,
    (torch, "relu"): torch.relu,
}


class UnsupportedNetworkError(Exception):
    """A network the acceleration layer cannot prove equal; the message is the reason."""


def check_exact_type(module: nn.Module, known: tuple[type[nn.Module], ...]) -> None:
    """Raise ``UnsupportedNetworkError`` unless ``type(module)`` is exactly one of ``known``."""
    cls = type(module)
    if cls in known:
        return
    base = next((k for k in known if isinstance(module, k)), None)
    if base is None:
        raise UnsupportedNetworkError(f"{cls.__name__} not supported")
    if getattr(cls, "forward", None) is not getattr(base, "forward", None):
        raise UnsupportedNetworkError(f"{cls.__name__} overrides forward")
    raise UnsupportedNetworkError(f"{cls.__name__} subclasses {base.__name__}")


_HOOK_DICTS = {
    "_forward_hooks": "a forward hook",
    "_forward_pre_hooks": "a forward pre-hook",
    "_backward_hooks": "a backward hook",
    "_backward_pre_hooks": "a backward pre-hook",
}
_GLOBAL_HOOKS = (
    "_global_forward_hooks",
    "_global_forward_pre_hooks",
    "_global_backward_hooks",
    "_global_backward_pre_hooks",
)


def _library(obj: object) -> bool:
    return (getattr(obj, "__module__", None) or "").split(".")[0] in _LIBRARIES


def _function(attr: object) -> object:
    """The function behind a class attribute (a method, static/class method or property)."""
    if isinstance(attr, (staticmethod, classmethod)):
        return attr.__func__
    if isinstance(attr, property):
        return attr.fget
    return attr


def check_library_classes(classes: Iterable[type]) -> None:
    """Raise ``UnsupportedNetworkError`` if a method of a library class among ``classes`` (and
    their bases) was replaced from outside the libraries: a class patched in place still passes
    ``check_exact_type``, but no longer computes what the evaluators compute."""
    for cls in classes:
        for klass in cls.__mro__:
            if klass is object or not _library(klass):
                continue  # a user's class: check_exact_type names it
            for name, attr in vars(klass).items():
                fn = _function(attr)
                if isinstance(fn, types.FunctionType) and not _library(fn):
                    raise UnsupportedNetworkError(
                        f"{klass.__name__}.{name} is replaced (by {fn.__module__}.{fn.__qualname__})"
                    )


def _check_functions() -> None:
    for (owner, name), original in _FUNCTIONS.items():
        now = getattr(owner, name)
        if now is not original or not _library(now):
            raise UnsupportedNetworkError(f"{owner.__name__}.{name} is replaced")


def _check_instance(sub: nn.Module) -> None:
    """A method of the class shadowed on the instance (``sub.forward = ...``)."""
    for name, value in vars(sub).items():
        attr = inspect.getattr_static(type(sub), name, None)
        if callable(value) and isinstance(_function(attr), types.FunctionType):
            if not isinstance(attr, property):
                raise UnsupportedNetworkError(
                    f"{type(sub).__name__}.{name} is replaced on the instance"
                )


def check_readable(module: nn.Module) -> None:
    """Raise ``UnsupportedNetworkError`` if a hook, a parametrization, a lazy parameter or a
    replaced method could make the module compute something other than its parameters and layer
    types say."""
    if any(getattr(nn_module, name, None) for name in _GLOBAL_HOOKS):
        raise UnsupportedNetworkError(
            "a global module hook is registered (torch.nn.modules.module)"
        )
    _check_functions()
    check_library_classes(dict.fromkeys(type(sub) for sub in module.modules()))
    for sub in module.modules():
        _check_instance(sub)
        for attr, what in _HOOK_DICTS.items():
            if getattr(sub, attr, None):
                raise UnsupportedNetworkError(f"{type(sub).__name__} has {what}")
        if parametrize.is_parametrized(sub):
            raise UnsupportedNetworkError(f"{type(sub).__name__} has a parametrization")
        if any(isinstance(p, UninitializedParameter) for p in sub.parameters(recurse=False)):
            raise UnsupportedNetworkError(
                f"{type(sub).__name__} has uninitialised (lazy) parameters"
            )
