"""Seeded fault injection: drop, duplicate, reorder and delay frames.

Pure decisions, no I/O: the engine asks :meth:`FaultInjector.decide` for
each frame it is about to send or to hand to a connection, and acts on the
answer.  Every decision draws from the injected ``random.Random``, so a
seeded run repeats.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field
from typing import Final

from ._errors import UsageError

__all__ = ["Faults", "FaultAction", "FaultInjector", "NO_FAULTS"]


_KINDS: Final = ("drop", "duplicate", "reorder", "delay")


class FaultAction(enum.Enum):
    PASS = "pass"
    DROP = "drop"
    DUPLICATE = "duplicate"
    REORDER = "reorder"
    DELAY = "delay"


@dataclass(frozen=True, slots=True)
class Faults:
    """Probabilities (0..1) of each fault for one frame; at most one applies.

    ``reorder`` holds a frame back for ``delay_range[1]`` seconds, so that
    the frames after it overtake it; ``delay`` holds it for a time drawn
    uniformly from ``delay_range``.
    """

    drop: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    delay: float = 0.0
    delay_range: tuple[float, float] = (0.001, 0.02)
    any: bool = field(init=False, repr=False, compare=False)
    """Whether any fault may apply: a field, not a property, as the pump reads it for every frame."""

    def __post_init__(self) -> None:
        for name in _KINDS:
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise UsageError(f"fault probability {name} must be within 0..1, got {p}")
        if self.drop + self.duplicate + self.reorder + self.delay > 1.0:
            raise UsageError("fault probabilities add up to more than 1")
        lo, hi = self.delay_range
        if not 0 <= lo <= hi:
            raise UsageError(f"delay_range must be (low, high) with 0 <= low <= high, got {self.delay_range}")
        object.__setattr__(self, "any", bool(self.drop or self.duplicate or self.reorder or self.delay))

    @classmethod
    def parse(cls, text: str) -> Faults:
        """``"drop=0.01,duplicate=0.01,reorder=0.01,delay=0.01"`` (any subset)."""
        values: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, _, value = part.partition("=")
            if key not in _KINDS:
                raise UsageError(f"unknown fault {key!r}; expected drop, duplicate, reorder or delay")
            try:
                values[key] = float(value)
            except ValueError:
                raise UsageError(f"fault {key} needs a probability, got {value!r}") from None
        return cls(**values)


NO_FAULTS = Faults()


class FaultInjector:
    """Decides, frame by frame, what a :class:`Faults` description does to it."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def decide(self, faults: Faults) -> tuple[FaultAction, float]:
        """The action for one frame and, for REORDER and DELAY, how long to hold it."""
        if not faults.any:
            return FaultAction.PASS, 0.0
        r = self._rng.random()
        for action, p in (
            (FaultAction.DROP, faults.drop),
            (FaultAction.DUPLICATE, faults.duplicate),
            (FaultAction.REORDER, faults.reorder),
            (FaultAction.DELAY, faults.delay),
        ):
            if r < p:
                if action is FaultAction.REORDER:
                    return action, faults.delay_range[1]
                if action is FaultAction.DELAY:
                    return action, self._rng.uniform(*faults.delay_range)
                return action, 0.0
            r -= p
        return FaultAction.PASS, 0.0
