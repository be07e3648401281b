"""What the acceleration layer refuses before it evaluates a network itself.

A fast evaluator re-implements a module's forward from its parameters, so it may only stand in for
modules whose forward it knows exactly: the exact classes listed by each evaluator (no
subclasses, whose ``forward`` may do anything), as their library defines them (no method
replaced on the instance, ``module.forward = ...``, or compiled there; the classes it reproduces,
distributions and losses included, with every method as it was when sac_tr.accel was imported,
``nn.ReLU.forward = ...`` being a difference; the functions their forwards call, ``F.linear``,
``F.relu``, ..., not replaced; no ``TorchFunctionMode`` active), no forward or backward hooks
anywhere (they may change inputs or outputs), no parametrizations (the stored parameter is not
the one used) and no uninitialised lazy parameters. Each refusal is an
``UnsupportedNetworkError`` whose message is the reason the run prints ("MyQ overrides forward",
"LayerNorm not supported", "MLP.forward is replaced on the instance").
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Iterable

import torch
import torch.distributions.normal
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as nn_module
from torch.nn.parameter import UninitializedParameter
from torch.nn.utils import parametrize
from torch.utils._device import DeviceContext

from sac_tr.losses.common import MODULE_HOOKS

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
    (torch, "relu_"): torch.relu_,  # F.relu(inplace=True)
    (torch._C._nn, "elu"): torch._C._nn.elu,  # what F.elu calls
    (torch._C._nn, "elu_"): torch._C._nn.elu_,
    (torch.distributions.normal, "_standard_normal"): torch.distributions.normal._standard_normal,
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


_GLOBAL_HOOKS = (
    "_global_forward_hooks",
    "_global_forward_pre_hooks",
    "_global_backward_hooks",
    "_global_backward_pre_hooks",
)


# Where the standard library's decorators (``warnings.deprecated``, ``functools`` wrappers) run
# a library's function from: such a wrapper counts by the ``__module__`` it copied.
_DECORATORS = frozenset({"warnings", "typing_extensions", "functools", "contextlib", "typing"})


def _library(obj: object) -> bool:
    """Defined in one of ``_LIBRARIES``: a Python function by the module whose globals it runs in
    (``functools.wraps`` copies ``__module__``, not that; a standard-library decorator's wrapper
    by the ``__module__`` it copied), anything else by ``__module__``."""
    module = (getattr(obj, "__module__", None) or "").split(".")[0]
    globals_ = getattr(obj, "__globals__", None)
    if isinstance(globals_, dict):
        runs_in = (globals_.get("__name__") or "").split(".")[0]
        return runs_in in _LIBRARIES or (runs_in in _DECORATORS and module in _LIBRARIES)
    return module in _LIBRARIES


def _function(attr: object) -> object:
    """The function behind a class attribute (a method, static/class method or property)."""
    if isinstance(attr, (staticmethod, classmethod)):
        return attr.__func__
    if isinstance(attr, property):
        return attr.fget
    return attr


def _methods(klass: type) -> dict[str, object]:
    """A class's own methods and descriptors (what a patch would replace), by name."""
    return {name: a for name, a in vars(klass).items() if callable(a) or hasattr(a, "__get__")}


def _known_classes() -> list[type]:
    """Every class whose code a fast evaluator reproduces, and the losses whose methods they
    stand in for (with their bases)."""
    from tensordict.nn import NormalParamExtractor, TensorDictModule
    from torch import distributions as D
    from torchrl.modules import MLP, ProbabilisticActor, SafeProbabilisticModule, ValueOperator
    from torchrl.modules.distributions import continuous

    from sac_tr.losses.sac_v1 import SACv1Loss
    from sac_tr.losses.sac_v2 import SACv2Loss
    from sac_tr.modules import ClampedLogStdNormalParams

    known = [
        *(nn.Linear, nn.ReLU, nn.Tanh, nn.ELU, nn.Sequential, MLP, ValueOperator, TensorDictModule),
        *(ProbabilisticActor, SafeProbabilisticModule, NormalParamExtractor),
        *(ClampedLogStdNormalParams, continuous.TanhNormal, continuous.SafeTanhTransform),
        *(continuous._PatchedComposeTransform, continuous._PatchedAffineTransform),
        *(D.Normal, D.Independent, SACv1Loss, SACv2Loss),
    ]
    return [klass for cls in known for klass in cls.__mro__ if klass is not object]


# Those classes' methods as they were when sac_tr.accel was first imported: a patch made later, by
# any function (a library's own, ``nn.ReLU.forward = nn.ReLU6.forward``, or a callable object), is
# a difference by identity; one made earlier, by a function defined outside the libraries.
_SNAPSHOT: dict[type, dict[str, object]] = {klass: _methods(klass) for klass in _known_classes()}


# torch.compile's own wrapping of two methods (to tag the modules it has seen): the same module,
# not a user's patch, when the wrapper is dynamo's and wraps the method the snapshot holds.
_DYNAMO_TAGGING = {
    "__init__": "install_generation_tagging_init.<locals>.patched_init",
    "__setstate__": "install_generation_tagging_init.<locals>.patched_setstate",
}


def _instrumentation(klass: type, name: str, now: object, was: object) -> bool:
    """``now`` is torch.compile's tagging wrapper of ``was`` on ``nn.Module``."""
    if klass is not nn.Module or not isinstance(now, types.FunctionType):
        return False
    wrapped = [cell.cell_contents for cell in now.__closure__ or ()]
    return (
        now.__qualname__ == _DYNAMO_TAGGING.get(name)
        and now.__globals__.get("__name__") == "torch._dynamo.mutation_guard"
        and any(inner is was for inner in wrapped)
    )


def _replaced(klass: type, name: str, now: object) -> str:
    if now is None:
        return f"{klass.__name__}.{name} is removed"
    fn = _function(now)
    where = getattr(fn, "__module__", None)
    by = f" (by {where}.{fn.__qualname__})" if where and hasattr(fn, "__qualname__") else ""
    return f"{klass.__name__}.{name} is replaced{by}"


def check_library_classes(classes: Iterable[type], names: Iterable[str] | None = None) -> None:
    """Raise ``UnsupportedNetworkError`` if a method of a library class among ``classes`` (and
    their bases; only ``names`` when given) was replaced: a class patched in place still passes
    ``check_exact_type``, but no longer computes what the evaluators compute. A user's own class
    is left to ``check_exact_type``."""
    wanted = None if names is None else set(names)
    for cls in classes:
        for klass in cls.__mro__:
            if klass is object or not _library(klass):
                continue
            now, was = _methods(klass), _SNAPSHOT.get(klass, {})
            for name in (now.keys() | was.keys()) if wanted is None else wanted:
                if name not in now and name not in was:
                    continue
                fn = _function(now.get(name))
                if _instrumentation(klass, name, now.get(name), was.get(name)):
                    continue
                if klass in _SNAPSHOT and now.get(name) is not was.get(name):
                    raise UnsupportedNetworkError(_replaced(klass, name, now.get(name)))
                if isinstance(fn, types.FunctionType) and not _library(fn):
                    raise UnsupportedNetworkError(_replaced(klass, name, now[name]))


def _check_functions() -> None:
    for (owner, name), original in _FUNCTIONS.items():
        now = getattr(owner, name)
        if now is not original or not _library(now):
            raise UnsupportedNetworkError(_replaced(owner, name, now))


def _check_instance(sub: nn.Module) -> None:
    """A method of the class shadowed on the instance (``sub.forward = ...``), or a compiled call
    (``sub.compile()``: ``__call__`` runs it instead of ``forward``)."""
    if vars(sub).get("_compiled_call_impl") is not None:
        raise UnsupportedNetworkError(f"{type(sub).__name__} is compiled (module.compile())")
    for name, value in vars(sub).items():
        attr = inspect.getattr_static(type(sub), name, None)
        if isinstance(attr, property) or not callable(value):
            continue
        if isinstance(_function(attr), types.FunctionType):
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
    for mode in torch.overrides._get_current_function_mode_stack():
        if not isinstance(mode, DeviceContext):  # torch.set_default_device's: places, no more
            raise UnsupportedNetworkError(
                f"a TorchFunctionMode ({type(mode).__name__}) is active: it may change any call"
            )
    _check_functions()
    check_library_classes(dict.fromkeys(type(sub) for sub in module.modules()))
    for sub in module.modules():
        _check_instance(sub)
        for attr, what in MODULE_HOOKS.items():
            if getattr(sub, attr, None):
                raise UnsupportedNetworkError(f"{type(sub).__name__} has {what}")
        if parametrize.is_parametrized(sub):
            raise UnsupportedNetworkError(f"{type(sub).__name__} has a parametrization")
        if any(isinstance(p, UninitializedParameter) for p in sub.parameters(recurse=False)):
            raise UnsupportedNetworkError(
                f"{type(sub).__name__} has uninitialised (lazy) parameters"
            )
