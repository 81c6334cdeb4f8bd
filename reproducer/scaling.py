"""When an analysis pool grows and shrinks: a pure policy, no Ray.

A pool runs between a minimum and a maximum number of actors (:class:`ActorRange`). Each
tick it shows the policy what it sees (:class:`PoolView`) and the policy answers how many
actors to add, which idle ones to retire and how many still-unplaced ones to give up
(:class:`Decision`):

- **Grow** while files wait longer than the target wait (the time one file takes, as
  measured, and never less than ``min_wait_s``): one actor per waiting file not already
  covered by an actor still starting, up to the maximum. A burst brings the whole range at
  once; an actor that cannot be placed yet is demand Ray's autoscaler answers.
- **Shrink** actors idle (nothing in flight) for ``idle_timeout_s``, longest idle first,
  down to the minimum. An idle actor holds no file, so retiring it never loses or repeats
  one, nor holds back an offset.
- **Give up** actors still waiting for a node once no file has waited for
  ``idle_timeout_s`` (above the minimum): a pending actor asks the autoscaler for a node
  the work no longer needs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["ActorRange", "Decision", "PoolView", "ScaleSettings", "decide"]

_RANGE = re.compile(r"\s*(\d+)\s*(?:\.\.\s*(\d+)\s*)?")


@dataclass(frozen=True)
class ActorRange:
    """How many actors an analysis runs: ``min`` always, up to ``max`` while files wait."""

    min: int
    max: int

    def __post_init__(self) -> None:
        if self.min < 1 or self.max < self.min:
            raise ValueError(f"an actor range needs 1 <= min <= max, not {self}")

    @property
    def elastic(self) -> bool:
        return self.max > self.min

    @classmethod
    def parse(cls, text: object) -> ActorRange:
        """``3`` (a fixed pool), ``"3"``, or ``"1..8"``; :class:`ValueError` says why not."""
        if isinstance(text, ActorRange):
            return text
        if isinstance(text, int) and not isinstance(text, bool):
            return cls(text, text)
        match = _RANGE.fullmatch(str(text))
        if match is None:
            raise ValueError(f"{text!r} is not a count (N) or a range (MIN..MAX)")
        low = int(match[1])
        high = int(match[2]) if match[2] is not None else low
        if low < 1 or high < low:
            raise ValueError(f"{text!r}: a count must be >= 1 and MIN <= MAX")
        return cls(low, high)

    def __str__(self) -> str:
        return f"{self.min}" if self.min == self.max else f"{self.min}..{self.max}"


@dataclass(frozen=True)
class ScaleSettings:
    idle_timeout_s: float = 60.0  # an actor idle this long is retired (above the minimum)
    min_wait_s: float = 0.5  # files wait at least this long before the pool grows


@dataclass(frozen=True)
class PoolView:
    """What a pool sees at one tick."""

    n_queued: int  # files waiting for an actor
    oldest_wait_s: float  # how long the longest-waiting of them has waited
    n_placed: int  # actors that answered, busy or not
    n_starting: int  # actors made that have not answered yet (starting, or no node yet)
    idle_s: tuple[tuple[int, float], ...] = ()  # (actor index, seconds idle) of idle placed actors
    quiet_s: float = 0.0  # seconds since a file last waited (0 while one waits)
    file_seconds: float | None = None  # what one file takes on one actor, as measured


@dataclass(frozen=True)
class Decision:
    add: int = 0
    retire: tuple[int, ...] = ()  # indices of idle actors to retire
    give_up: int = 0  # actors still starting to stop

    def __bool__(self) -> bool:
        return bool(self.add or self.retire or self.give_up)


def target_wait(settings: ScaleSettings, file_seconds: float | None) -> float:
    """How long a file may wait before the pool grows."""
    return max(settings.min_wait_s, file_seconds or 0.0)


def decide(limits: ActorRange, settings: ScaleSettings, view: PoolView) -> Decision:
    """How the pool changes now (see the module's docstring)."""
    current = view.n_placed + view.n_starting
    if not limits.elastic:
        return Decision()
    if view.n_queued and view.oldest_wait_s > target_wait(settings, view.file_seconds):
        wanted = view.n_queued - view.n_starting
        add = min(limits.max - current, wanted)
        return Decision(add=max(add, 0))
    spare = current - limits.min
    if spare <= 0:
        return Decision()
    give_up = 0
    if view.n_starting and not view.n_queued and view.quiet_s >= settings.idle_timeout_s:
        give_up = min(view.n_starting, spare)
        spare -= give_up
    idle = sorted(
        (item for item in view.idle_s if item[1] >= settings.idle_timeout_s),
        key=lambda item: -item[1],
    )
    retire = tuple(index for index, _ in idle[: max(spare, 0)])
    return Decision(retire=retire, give_up=give_up)
