"""Saying things once: a standing condition (held deletions, deployments
without a target, an unexpected exception that recurs) is logged when it
starts or changes, not every cycle; logged every 15 s it would bury everything
else. Also how an unexpected exception of one deployment or target becomes an
`InternalError` that fails only that.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from bridge.errors import InternalError, unexpected

log = logging.getLogger("bridge.reconcile")

OnEvent = Callable[[str, Mapping[str, object]], None]


class Notices:
    def __init__(self, on_event: OnEvent) -> None:
        self.on_event = on_event
        self._said: dict[tuple[str, str], object] = {}

    def changed(self, key: tuple[str, str], value: object) -> bool:
        """Whether `value` differs from what was last said under `key` (then remembered)."""
        if self._said.get(key) == value:
            return False
        self._said[key] = value
        return True

    def internal(self, error: Exception, what: str, key: str, **extra: object) -> InternalError:
        """An unexpected exception of one deployment or target, as an InternalError:
        logged at error level with its frames once per change (not every cycle),
        counted in /metrics."""
        where = "deployment" if "deployment_id" in extra else "target"
        internal = unexpected(error, what, where=where)
        self.on_event("internal-error", {"where": where})
        if self.changed((key, "internal"), internal.message):
            log.error("%s", internal, exc_info=error, extra=extra)
        else:
            log.debug("%s (again)", internal, extra=extra)
        return internal
