"""The system clock and randomness, injected into the pure core from here."""

from __future__ import annotations

import os
import threading
import time

from ledger_core import encode_ulid


class UlidFactory:
    """ULIDs that sort in creation order within this process (monotonic per millisecond)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = -1
        self._last_rand = 0

    def __call__(self) -> str:
        return self.new()[0]

    def new(self) -> tuple[str, int]:
        """A fresh ULID and its millisecond (so callers need not decode it again)."""
        with self._lock:
            ms = time.time_ns() // 1_000_000
            if ms <= self._last_ms:
                ms = self._last_ms
                rand = (self._last_rand + 1) % (1 << 80)
            else:
                rand = int.from_bytes(os.urandom(10), "big")
            self._last_ms, self._last_rand = ms, rand
            return encode_ulid(ms, rand.to_bytes(10, "big")), ms


new_ulid = UlidFactory()


def now_seconds() -> int:
    return int(time.time())
