"""What the acceleration layer refuses before it evaluates a network itself.

A fast evaluator re-implements a module's forward from its parameters, so it may only stand in for
modules whose forward it knows exactly: the exact classes listed by each evaluator (no
subclasses, whose ``forward`` may do anything), no forward or backward hooks anywhere (they may
change inputs or outputs), no parametrizations (the stored parameter is not the one used) and no
uninitialised lazy parameters. Each refusal is an ``UnsupportedNetworkError`` whose message is the reason the
run prints ("MyQ overrides forward", "LayerNorm not supported").
"""

from __future__ import annotations

from torch import nn
from torch.nn.modules import module as nn_module
from torch.nn.parameter import UninitializedParameter
from torch.nn.utils import parametrize

__all__ = ["UnsupportedNetworkError", "check_exact_type", "check_readable"]


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


def check_readable(module: nn.Module) -> None:
    """Raise ``UnsupportedNetworkError`` if a hook, a parametrization or a lazy parameter could make the
    module compute something other than its parameters and layer types say."""
    if any(getattr(nn_module, name, None) for name in _GLOBAL_HOOKS):
        raise UnsupportedNetworkError(
            "a global module hook is registered (torch.nn.modules.module)"
        )
    for sub in module.modules():
        for attr, what in _HOOK_DICTS.items():
            if getattr(sub, attr, None):
                raise UnsupportedNetworkError(f"{type(sub).__name__} has {what}")
        if parametrize.is_parametrized(sub):
            raise UnsupportedNetworkError(f"{type(sub).__name__} has a parametrization")
        if any(isinstance(p, UninitializedParameter) for p in sub.parameters(recurse=False)):
            raise UnsupportedNetworkError(
                f"{type(sub).__name__} has uninitialised (lazy) parameters"
            )
