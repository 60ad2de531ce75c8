"""The task registry: ``@register_task("asr")`` on a :class:`tasks.base.Task` subclass.

The built-in tasks register themselves when their modules are imported; :func:`get_task` and
:func:`task_names` import them first, so callers never need to.
"""

from __future__ import annotations

import importlib

from core.registry import Registry
from tasks.base import Task
from tasks.schedules import SCHEDULES

TASKS: Registry[type[Task]] = Registry("task")
BUILTIN_MODULES = ("tasks.asr", "tasks.pr", "tasks.sid", "tasks.slu", "tasks.ks")


def register_task(name: str):
    """Class decorator: register a Task subclass under ``name`` (which also becomes ``cls.name``)."""

    def decorator(cls: type[Task]) -> type[Task]:
        missing = [s for s in SCHEDULES.names() if s not in cls.presets]
        if missing:
            raise ValueError(f"task {name!r} has no preset for the schedule(s) {', '.join(missing)} (tasks.schedules)")
        cls.name = name
        TASKS.register(name, cls)
        return cls

    return decorator


def _import_builtins() -> None:
    for module in BUILTIN_MODULES:
        importlib.import_module(module)


def get_task(name: str) -> Task:
    """A fresh instance of the task ``name``; an unknown name raises with the known ones."""
    _import_builtins()
    return TASKS.get(name)()


def task_names() -> list[str]:
    _import_builtins()
    return TASKS.names()
