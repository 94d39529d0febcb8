"""The retry schedule: how long to wait after each failed attempt, as data.

``WATCHER_WEBHOOK_RETRY_SCHEDULE`` is a comma list of durations (``5s``, ``5m``,
``2h``, ``1d``; a bare number is seconds; fractions allowed so tests can compress
it). The first attempt is made at once; after failed attempt *k* the delivery waits
the *k*-th delay; after the last delay's attempt fails the delivery is ``failed``.
"""

from __future__ import annotations

import re

DEFAULT = "5s,5m,30m,2h,5h,10h,10h,10h,14h,20h"  # 11 attempts over 2 d 23 h 35 m
MAX_STEPS = 50
MAX_DELAY_SECONDS = 7 * 86400.0
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "": 1.0}
_STEP = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|)\s*$")

Schedule = tuple[float, ...]


def parse(text: str) -> Schedule:
    """The delays in seconds; ValueError says which step is wrong."""
    steps = [s for s in text.split(",")]
    if not text.strip():
        raise ValueError("the retry schedule is empty (give at least one delay, e.g. 5s)")
    if len(steps) > MAX_STEPS:
        raise ValueError(f"the retry schedule has {len(steps)} steps; at most {MAX_STEPS}")
    out: list[float] = []
    for step in steps:
        m = _STEP.match(step)
        if not m:
            raise ValueError(f"retry delay {step.strip()!r} is not a duration like 5s, 5m, 2h")
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
        if not 0 < seconds <= MAX_DELAY_SECONDS:
            raise ValueError(f"retry delay {step.strip()!r} must be above 0 and at most 7d")
        out.append(seconds)
    return tuple(out)


def delay_after(schedule: Schedule, attempt: int) -> float | None:
    """Seconds to wait after failed attempt number ``attempt`` (1-based); None: give up."""
    if attempt < 1:
        raise ValueError("attempts are numbered from 1")
    return schedule[attempt - 1] if attempt <= len(schedule) else None


def attempts(schedule: Schedule) -> int:
    """How many attempts a delivery gets in all."""
    return len(schedule) + 1
