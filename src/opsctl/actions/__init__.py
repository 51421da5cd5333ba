"""The action registry: action name -> class.

Backend modules register their classes with ``@register``.  Importing an action module is cheap
(client libraries are imported lazily inside the actions), so ``load_all()`` is fine for
``opsctl validate`` / ``schema`` / ``actions``; ``opsctl --help`` never calls it.
"""

from __future__ import annotations

import importlib
from typing import TypeVar

from opsctl.actions.base import Action

# One module per backend.  Order is the order of `opsctl actions`.
ACTION_MODULES = (
    "opsctl.actions.core",
    "opsctl.actions.http",
    "opsctl.actions.postgres",
    "opsctl.actions.redis",
    "opsctl.actions.aws",
    "opsctl.actions.kafka",
    "opsctl.actions.k8s",
    "opsctl.actions.notify",
    "opsctl.actions.incident",
)

_REGISTRY: dict[str, type[Action]] = {}
_loaded = False

A = TypeVar("A", bound=type[Action])


def register(cls: A) -> A:
    if not cls.name:
        raise TypeError(f"{cls.__qualname__} has no name")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise TypeError(f"action {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def load_all() -> dict[str, type[Action]]:
    global _loaded
    if not _loaded:
        for mod in ACTION_MODULES:
            try:
                importlib.import_module(mod)
            except ModuleNotFoundError as e:
                if e.name != mod:  # a module that exists but fails to import is a bug
                    raise
        _loaded = True
    return dict(_REGISTRY)


def get(name: str) -> type[Action] | None:
    return load_all().get(name)
