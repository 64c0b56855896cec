"""A virtual clock so a 24 h batch window can pass in seconds."""

from __future__ import annotations

import threading
import time


class VirtualClock:
    """Virtual unix time that runs ``time_scale`` times faster than real time.

    It starts at the real wall-clock time, can be sped up or slowed down without jumping,
    and can be moved forward by hand (`advance`).
    """

    def __init__(self, time_scale: float = 1.0) -> None:
        self._lock = threading.Lock()
        self._scale = time_scale
        self._real_anchor = time.monotonic()
        self._virtual_anchor = time.time()

    def now(self) -> float:
        """Current virtual unix time in seconds."""
        with self._lock:
            return self._virtual_anchor + (time.monotonic() - self._real_anchor) * self._scale

    @property
    def time_scale(self) -> float:
        """Virtual seconds per real second."""
        return self._scale

    def set_time_scale(self, time_scale: float) -> None:
        """Change the speed from now on; virtual time does not jump."""
        with self._lock:
            real = time.monotonic()
            self._virtual_anchor += (real - self._real_anchor) * self._scale
            self._real_anchor = real
            self._scale = time_scale

    def advance(self, seconds: float) -> float:
        """Move virtual time forward by ``seconds`` and return the new virtual time."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        with self._lock:
            self._virtual_anchor += seconds
        return self.now()

    def real_seconds_for(self, virtual_seconds: float) -> float:
        """How long real time takes to cover ``virtual_seconds`` at the current speed."""
        return virtual_seconds / self._scale
