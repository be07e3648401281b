"""Which of the recipe's arguments a user's class or builder takes, read from its signature.

The recipe calls every part (loss class, actor / critic / value builder) with a few positional
arguments (the networks, or the dimensions) and offers it a set of keyword arguments from the
config. A part receives each offered keyword its signature names; ``kwargs`` from the config must
all be accepted; a required parameter nobody supplies is an error. Both are found here, before
anything is built.

A class's signature is read through its MRO: a constructor ``__init__(self, *args, **kwargs)``
(or any that takes ``**kwargs``) is taken to forward to its parent's, whose parameters then count
as the class's own. At every level, the first ``positional`` positional parameters are the
recipe's positional arguments (a subclass that names them passes them on). The walk ends at a
constructor without ``**kwargs``, at ``torch.nn.Module`` or at ``object``; a plain function
taking ``**kwargs`` accepts any keyword and is offered all of them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

__all__ = ["Accepted", "Lazy", "accepted_arguments", "argument_problems", "select_arguments"]

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
_KEYWORD = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


@dataclass(frozen=True)
class Accepted:
    """What a class or function takes beyond its positional arguments.

    Attributes:
        names: each keyword parameter and the class (or function) whose signature names it
            first, the most derived one.
        required: those of ``names`` without a default, in the order they were met.
        open: it takes ``**kwargs`` that lead nowhere we can read: any keyword is accepted.
    """

    names: dict[str, Any]
    required: tuple[str, ...]
    open: bool


class Lazy:
    """An offered argument that is built only when the part takes it (e.g. a value network);
    ``built`` says whether it was."""

    def __init__(self, build: Callable[[], Any]) -> None:
        self._build = build
        self.built = False

    def build(self) -> Any:
        """Build the argument (each call builds anew)."""
        self.built = True
        return self._build()


def _levels(obj: Any) -> Iterator[tuple[Any, inspect.Signature | None]]:
    """(owner, signature without ``self``) from the most derived level up; ``None`` = a closed end."""
    if not inspect.isclass(obj):
        yield obj, inspect.signature(obj)
        return
    for klass in obj.__mro__:
        if klass in (object, nn.Module):
            yield klass, None
            return
        if "__init__" in vars(klass):
            sig = inspect.signature(klass.__init__)
            yield klass, sig.replace(parameters=list(sig.parameters.values())[1:])


def accepted_arguments(obj: Any, positional: int) -> Accepted:
    """The keyword parameters of ``obj`` (a class: its constructor, through its MRO) after its
    first ``positional`` positional ones. A signature that cannot be read accepts anything."""
    names: dict[str, Any] = {}
    required: list[str] = []
    try:
        for owner, sig in _levels(obj):
            if sig is None:
                return Accepted(names, tuple(required), open=False)
            params = list(sig.parameters.values())
            slots = [p for p in params if p.kind in _POSITIONAL][:positional]
            for p in params:
                if p in slots or p.kind not in _KEYWORD or p.name in names:
                    continue
                names[p.name] = owner
                if p.default is inspect.Parameter.empty:
                    required.append(p.name)
            if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
                return Accepted(names, tuple(required), open=False)
    except (TypeError, ValueError):  # a builtin or C signature: nothing we can check
        return Accepted(names, tuple(required), open=True)
    return Accepted(names, tuple(required), open=True)


def _name(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', obj)}"


def argument_problems(
    obj: Any, positional: int, offered: Mapping[str, Any], kwargs: Mapping[str, Any], group: str
) -> list[str]:
    """What is wrong with calling ``obj`` with the recipe's ``offered`` names and the config's
    ``<group>.kwargs``: a keyword it does not take, a required parameter nobody supplies."""
    acc = accepted_arguments(obj, positional)
    problems = []
    if not acc.open:
        for key in kwargs:
            if key not in acc.names:
                problems.append(
                    f"{group}.kwargs.{key}: {_name(obj)} takes no argument {key!r} (it takes "
                    f"{sorted(acc.names) or 'none'}); remove it or add it to the signature."
                )
    for key in acc.required:
        if key not in offered and key not in kwargs:
            problems.append(
                f"{_name(obj)} requires {key!r}, which neither the config ({group}.*) nor "
                f"{group}.kwargs supplies: add +{group}.kwargs.{key}=... or give it a default."
            )
    return problems


def select_arguments(
    obj: Any, positional: int, offered: Mapping[str, Any], kwargs: Mapping[str, Any], group: str
) -> dict[str, Any]:
    """The keyword arguments to call ``obj`` with: every offered one it takes (all of them if it
    takes any keyword; ``Lazy`` ones built now), then ``kwargs``, which win. Raises ``TypeError`` as ``argument_problems`` finds."""
    problems = argument_problems(obj, positional, offered, kwargs, group)
    if problems:
        raise TypeError("\n".join(problems))
    acc = accepted_arguments(obj, positional)
    chosen = {k: v for k, v in offered.items() if (acc.open or k in acc.names) and k not in kwargs}
    chosen = {k: v.build() if isinstance(v, Lazy) else v for k, v in chosen.items()}
    return {**chosen, **kwargs}
