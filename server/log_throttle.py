"""At most one log line per interval for an event that can repeat in a loop.

A misconfigured client reconnecting as fast as it can (a plaintext client at
a TLS node, a tenant over max_client_connections) must not flood the log, yet
the line that does get through should say how many occurrences it stands for.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(slots=True)
class LogThrottle:
    interval_s: float = 1.0
    clock: Callable[[], float] = field(default=time.monotonic)
    _unlogged: int = 0
    _logged_at: float = -math.inf

    def count(self) -> int:
        """Count one occurrence. Returns how many occurrences the caller should
        log now (this one and those muted since the last line), or 0 to stay quiet."""
        self._unlogged += 1
        now = self.clock()
        if now - self._logged_at < self.interval_s:
            return 0
        due, self._unlogged, self._logged_at = self._unlogged, 0, now
        return due
