"""Rate limits of forge hosts: our own write budget, and the forge's wishes.

GitHub blocks integrations that create content too fast (secondary limits: at
most 80 content-creating requests a minute and 500 an hour, per user or
installation); tools that ignored it were blocked for hours (multi-gitter
#276, create-pull-request #855, Renovate #12741). So every write to one host
goes through that host's `HostLimiter`, shared by every target on the host:

- writes are serialised (one at a time, under a lock) and admitted by a
  sliding-window log of the writes of the last minute and hour. A classic token
  bucket of 80 refilled at 80/minute admits up to 160 writes in some 60-second
  window; the log admits exactly the budget in every window;
- when the forge says "wait" (403/429 with `retry-after`, or a spent quota
  until `x-ratelimit-reset`), the whole host waits, reads included: another
  target's request would only be refused again and count against us;
- the primary quota the forge reports is kept for `/metrics`.

Clock and sleep are injected, so tests run minutes of budget in zero time.
This module knows no HTTP and no forge: `bridge.forges.http` feeds it.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

from bridge.forges.models import Quota

WRITES_PER_MINUTE = 80
WRITES_PER_HOUR = 500


class Clock(Protocol):
    """Time as the limiter and the token cache see it (tests pass a virtual one)."""

    def monotonic(self) -> float: ...

    def time(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class OverBudget(Exception):
    """The host's write budget is spent for longer than the caller may wait."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"the write budget frees a slot in {seconds:.0f}s")
        self.seconds = seconds


@dataclass(frozen=True)
class WriteBudget:
    per_minute: int = WRITES_PER_MINUTE
    per_hour: int = WRITES_PER_HOUR

    def __post_init__(self) -> None:
        if not 1 <= self.per_minute <= self.per_hour:
            raise ValueError("a write budget needs 1 <= per_minute <= per_hour")


class HostLimiter:
    """The write budget and the forge's wait orders for one host."""

    def __init__(self, host: str, clock: Clock, budget: WriteBudget | None = None) -> None:
        self.host = host
        self._clock = clock
        self._budget = budget or WriteBudget()
        self._writes: deque[float] = deque()  # monotonic times of the last hour's writes
        self._write_lock = threading.Lock()  # serialises writes to the host
        self._state = threading.Lock()  # guards the fields below
        self._blocked_until: float | None = None  # monotonic
        self._remaining: int | None = None
        self._limit: int | None = None
        self._reset_at: float | None = None

    # --- waits ---------------------------------------------------------------

    def wait_needed(self) -> float:
        """Seconds until the forge lets this host be asked again (0: now)."""
        with self._state:
            if self._blocked_until is None:
                return 0.0
            return max(0.0, self._blocked_until - self._clock.monotonic())

    def block_for(self, seconds: float) -> None:
        """The forge said wait: no request to this host for `seconds` (the longest
        order wins; an earlier, shorter one never shortens it)."""
        until = self._clock.monotonic() + max(0.0, seconds)
        with self._state:
            if self._blocked_until is None or until > self._blocked_until:
                self._blocked_until = until

    @contextmanager
    def write_slot(self, max_wait: float) -> Iterator[None]:
        """Held while one write is sent: waits for the budget, then counts the write.

        Holding the lock while waiting is the point: the next writer of this host
        queues behind, so writes leave in order and never in a burst. A wait
        longer than `max_wait` is not slept: OverBudget says how long it would be."""
        with self._write_lock:
            wait = self._budget_wait()
            if wait > max_wait:
                raise OverBudget(wait)
            self._clock.sleep(wait)
            with self._state:
                self._writes.append(self._clock.monotonic())
            yield

    def _budget_wait(self) -> float:
        """Seconds until one more write fits both windows (0: now)."""
        with self._state:
            now = self._clock.monotonic()
            while self._writes and self._writes[0] <= now - 3600.0:
                self._writes.popleft()
            wait = 0.0
            if len(self._writes) >= self._budget.per_hour:
                wait = self._writes[-self._budget.per_hour] + 3600.0 - now
            minute = [t for t in self._writes if t > now - 60.0]
            if len(minute) >= self._budget.per_minute:
                wait = max(wait, minute[-self._budget.per_minute] + 60.0 - now)
            return max(0.0, wait)

    # --- what the forge reports ------------------------------------------------

    def record_quota(
        self, remaining: int | None, limit: int | None, reset_at: float | None
    ) -> None:
        with self._state:
            if remaining is not None:
                self._remaining = remaining
            if limit is not None:
                self._limit = limit
            if reset_at is not None:
                self._reset_at = reset_at

    def quota(self) -> Quota:
        with self._state:
            now = self._clock.monotonic()
            blocked = None
            if self._blocked_until is not None and self._blocked_until > now:
                blocked = self._clock.time() + (self._blocked_until - now)
            return Quota(
                host=self.host,
                remaining=self._remaining,
                limit=self._limit,
                reset_at=self._reset_at,
                writes_last_minute=sum(1 for t in self._writes if t > now - 60.0),
                writes_last_hour=sum(1 for t in self._writes if t > now - 3600.0),
                blocked_until=blocked,
            )


class ForgeHosts:
    """One `HostLimiter` per forge host, shared by every target and client of the
    process (make one at start-up and hand it to each client)."""

    def __init__(self, clock: Clock | None = None, budget: WriteBudget | None = None) -> None:
        self.clock: Clock = clock or SystemClock()
        self._budget = budget
        self._hosts: dict[str, HostLimiter] = {}
        self._lock = threading.Lock()

    def limiter(self, host: str) -> HostLimiter:
        key = host.lower()
        with self._lock:
            found = self._hosts.get(key)
            if found is None:
                found = self._hosts[key] = HostLimiter(key, self.clock, self._budget)
            return found

    def quotas(self) -> list[Quota]:
        """Every host's quota, for `/metrics` (sorted by host)."""
        with self._lock:
            limiters = sorted(self._hosts.values(), key=lambda h: h.host)
        return [h.quota() for h in limiters]
