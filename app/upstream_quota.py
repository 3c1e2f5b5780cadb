"""Per-key upstream quota: a worker's `rpm` is how many requests per minute each of its keys may
receive, across all of this gateway's processes (and instances, with a shared Redis).

The dispatcher asks `take(worker, rpm, key)` before an attempt with a key: one hit in a fixed
window of one minute that starts at the key's first request. A key over its quota is skipped
like a cooling key, so the provider never sees the request its own rate limiter would refuse.
Only attempts count: health probes do not go through the dispatcher.

The counters live in the same store as the client limits (app/limit_storage.py), under
`cortex-upstream/<worker>/<key position>`: a key's position, never the key. If the store
fails, this process counts in memory for a while (each process then allows `rpm`, which is
still a limit), logs it, and tries the store again; a dispatch never fails because of it.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage, Storage, storage_from_string
from limits.strategies import FixedWindowRateLimiter

from app import limit_storage  # noqa: F401 - registers the cortex+sqlite:// scheme

log = logging.getLogger("cortex.limits")

PREFIX = "cortex-upstream"
#: After a store failure, count in memory this long before trying the store again (seconds).
RETRY_STORE_AFTER = 30.0


class Quota(Protocol):
    def take(self, worker: str, rpm: int | None, key: int | None) -> float | None:
        """Count one request to `key` (a position; None for a keyless worker). None: go ahead;
        else the seconds until the key's window resets."""
        ...


class NoQuota:
    """The default: every key may receive every request."""

    def take(self, worker: str, rpm: int | None, key: int | None) -> float | None:
        return None


class UpstreamQuota:
    def __init__(self, storage_uri: str) -> None:
        self.storage_uri = storage_uri
        self._storage: Storage | None = None
        self._limiter: FixedWindowRateLimiter | None = None
        self._fallback: FixedWindowRateLimiter | None = None
        self._store_back_at = 0.0

    def _store(self) -> FixedWindowRateLimiter:
        if self._limiter is None:  # built on first use: create_app opens nothing (rule 1)
            options = limit_storage.storage_options(self.storage_uri)
            self._storage = storage_from_string(self.storage_uri, **options)  # type: ignore[assignment]
            self._limiter = FixedWindowRateLimiter(self._storage)  # type: ignore[arg-type]
        return self._limiter

    def _memory(self) -> FixedWindowRateLimiter:
        if self._fallback is None:
            self._fallback = FixedWindowRateLimiter(MemoryStorage())
        return self._fallback

    def take(self, worker: str, rpm: int | None, key: int | None) -> float | None:
        if not rpm:
            return None
        item = RateLimitItemPerMinute(rpm)
        ids = (PREFIX, worker, str(0 if key is None else key + 1))
        if time.time() >= self._store_back_at:
            try:
                return self._take(self._store(), item, ids)
            except Exception as exc:  # noqa: BLE001 - any store failure: count in memory instead
                self._store_back_at = time.time() + RETRY_STORE_AFTER
                log.warning(
                    "upstream quota: the store %s failed (%s); counting in this process for %gs",
                    limit_storage.describe(self.storage_uri), type(exc).__name__, RETRY_STORE_AFTER,
                )  # fmt: skip
        return self._take(self._memory(), item, ids)

    @staticmethod
    def _take(limiter: FixedWindowRateLimiter, item: RateLimitItemPerMinute, ids: tuple[str, ...]) -> float | None:
        if limiter.hit(item, *ids):
            return None
        reset, _ = limiter.get_window_stats(item, *ids)
        return max(0.0, reset - time.time())
