"""A log file that never grows past its cap: the head and the tail of the output are kept, the middle is
dropped and a marker says how many bytes went.

Layout once something was dropped: `[head][marker][tail]`. The head (half the cap) is written once. The
tail grows in the file until it fills its region, then its last half is moved to the region's start: each
byte is copied at most once more, nothing is held in memory, and the file is readable at any moment.
Only the standard library is used: the per-job supervisor writes these.
"""

from __future__ import annotations

import os

DEFAULT_LOG_CAP_BYTES = 50 * 1024 * 1024
_MARKER = "\n\n[idealab: {:>15} bytes of output dropped here; the log keeps its first and last part]\n\n"
MARKER_LEN = len(_MARKER.format(0).encode())
MIN_CAP_BYTES = 4 * MARKER_LEN  # below this the head and tail would be smaller than the marker


def marker(dropped: int) -> bytes:
    return _MARKER.format(dropped).encode()


class CappedLog:
    """Write-only sink for one output stream. `total` bytes came in, `dropped` of them are not in the file."""

    def __init__(self, path: str | os.PathLike[str], cap_bytes: int = DEFAULT_LOG_CAP_BYTES) -> None:
        if cap_bytes < MIN_CAP_BYTES:
            raise ValueError(f"a log cap must be at least {MIN_CAP_BYTES} bytes, got {cap_bytes}")
        self.path = path
        self.total = 0
        self.dropped = 0
        self._head_left = cap_bytes // 2
        self._head_size = self._head_left
        self._tail_room = cap_bytes - self._head_size - MARKER_LEN  # the tail region's size
        self._tail_len = 0
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)

    @property
    def _tail_start(self) -> int:
        return self._head_size + (MARKER_LEN if self.dropped else 0)

    def write(self, data: bytes) -> None:
        self.total += len(data)
        if self._head_left:
            part = data[: self._head_left]
            os.pwrite(self._fd, part, self._head_size - self._head_left)
            self._head_left -= len(part)
            data = data[len(part) :]
        if not data:
            return
        if self._tail_len + len(data) <= self._tail_room:
            os.pwrite(self._fd, data, self._tail_start + self._tail_len)
            self._tail_len += len(data)
            return
        self._compact(data)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _compact(self, data: bytes) -> None:
        """The tail region overflows: keep the last half of (tail + data), drop the rest."""
        keep = self._tail_room // 2
        from_old = max(0, keep - len(data))
        old = os.pread(self._fd, from_old, self._tail_start + self._tail_len - from_old) if from_old else b""
        survivors = old + data[len(data) - (keep - from_old) :]
        self.dropped += self._tail_len + len(data) - len(survivors)
        os.pwrite(self._fd, marker(self.dropped), self._head_size)
        os.pwrite(self._fd, survivors, self._tail_start)
        os.ftruncate(self._fd, self._tail_start + len(survivors))
        self._tail_len = len(survivors)

    def __enter__(self) -> CappedLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
