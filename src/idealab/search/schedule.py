"""How each epoch's ideas split between exploiting winners and exploring new directions."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ExploitSchedule:
    """Exploit share a(t) = min(start + step * floor(t / every), cap) for epoch t >= 1 (0 at epoch 0).

    Defaults are the released code's: 0.5 at epochs 1, raised by 0.1 every two epochs, capped at 0.8, and
    the exploit count rounded down to a multiple of 10 when an epoch has at least 20 ideas.
    """

    start: float = 0.5
    step: float = 0.1
    every: int = 2
    cap: float = 0.8
    round_to: int = 10  # the exploit count is rounded down to a multiple of this (1: no rounding) ...
    round_from: int = 20  # ... in epochs of at least this many ideas (smaller ones would lose all exploits)

    def __post_init__(self) -> None:
        if not 0.0 <= self.start <= 1.0 or not 0.0 <= self.cap <= 1.0:
            raise ValueError("exploit shares must lie in [0, 1]")
        if self.every < 1 or self.round_to < 1 or self.round_from < 0:
            raise ValueError("every and round_to must be >= 1, round_from >= 0")

    def share(self, epoch: int) -> float:
        if epoch <= 0:
            return 0.0
        return min(self.start + self.step * (epoch // self.every), self.cap)

    def split(self, epoch: int, n: int) -> tuple[int, int]:
        """(exploit, explore) counts for an epoch of n ideas."""
        # a small epsilon keeps 0.6 * 50 = 29.999... from flooring to 29
        exploit = math.floor(n * self.share(epoch) + 1e-9)
        if n >= self.round_from:
            exploit -= exploit % self.round_to
        return exploit, n - exploit
