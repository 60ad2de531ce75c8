"""The downstream schedules a run can use (``--preset``): every task has a head and a training
schedule under each of these names, and every compression method a schedule of its own.

Torch-free, so that the commands can offer these names as choices without importing the tasks.
``tasks.registry.register_task`` refuses a task that lacks one of them.
"""

from dataclasses import dataclass

from core.registry import Registry


@dataclass(frozen=True)
class Schedule:
    name: str
    description: str


SCHEDULES: Registry[Schedule] = Registry("schedule")
for _schedule in (
    Schedule("demo", "small heads and short schedules, minutes on a CPU (the embedded benchmark)"),
    Schedule("paper", "SUPERB's heads and schedules, and each compression paper's own"),
):
    SCHEDULES.register(_schedule.name, _schedule)

#: What the commands use when ``--preset`` is not given.
DEFAULT_SCHEDULE = "demo"


def schedule_help() -> str:
    """``--preset``'s help: each schedule with its description."""
    described = "; ".join(f"{name}: {SCHEDULES.get(name).description}" for name in SCHEDULES.names())
    return f"{described} (default: {DEFAULT_SCHEDULE})"
