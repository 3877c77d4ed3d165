"""Guest limits of docs/limits.md that need state: request rate and per-user bytes.

`RateLimiter` is a token bucket per guest userid. A bucket that has refilled
to its burst is the same as no bucket, so it is dropped; the dict is bounded
(`max_buckets`): when full, full buckets are swept, and if every bucket is
still in use the least recently used half is dropped (those users get a
fresh burst — the price of a bounded memory under a flood of many uids,
which only a site with that many local accounts can produce).

`UserBytes` keeps, per userid, the total size of the `user` namespace over
that user's active jobs. The service updates it from the C core's
`ApplyInfo.old_ns_len/new_ns_len` on every change (guest, owner and
scheduler writes alike) and subtracts a job's share when it goes INACTIVE;
it is never recomputed by scanning jobs. Users at 0 are dropped.
"""

import time

from flux_annot.errors import EAGAIN, EDQUOT, error


class RateLimiter:
    """Token buckets: `rate` tokens per second up to `burst`, per key."""

    def __init__(self, rate, burst, max_buckets=8192, clock=time.monotonic):
        self.rate = float(rate)
        self.burst = float(burst)
        self.max_buckets = max_buckets
        self.clock = clock
        self._buckets = {}  # key -> [tokens, t_last]; dict order = last use

    def __len__(self):
        return len(self._buckets)

    def message(self):
        return (
            f"guest request rate exceeds {self.rate:g} per second "
            f"(burst {self.burst:g}): try again later"
        )

    def take(self, key):
        """Spend one token for `key`: True, or False (nothing spent) when empty."""
        now = self.clock()
        buckets = self._buckets
        b = buckets.pop(key, None)
        if b is None:
            if len(buckets) >= self.max_buckets:
                self._sweep(now)
            tokens = self.burst
        else:
            tokens = b[0] + (now - b[1]) * self.rate
            if tokens > self.burst:
                tokens = self.burst
        if tokens < 1.0:
            buckets[key] = [tokens, now]
            return False
        buckets[key] = [tokens - 1.0, now]  # re-inserted last: LRU order
        return True

    def check(self, key):
        """`take`, raising EAGAIN when the bucket is empty."""
        if not self.take(key):
            raise error(EAGAIN, self.message())

    def _sweep(self, now):
        rate, burst = self.rate, self.burst
        full = [k for k, (tok, t) in self._buckets.items() if tok + (now - t) * rate >= burst]
        for k in full:
            del self._buckets[k]
        if len(self._buckets) >= self.max_buckets:
            # All in use: drop the least recently used half (front of the dict).
            drop = len(self._buckets) // 2
            for k in list(self._buckets)[:drop]:
                del self._buckets[k]


class UserBytes:
    """Per-user total of `user` namespace bytes over active jobs."""

    def __init__(self, limit):
        self.limit = limit
        self._total = {}

    def __len__(self):
        return len(self._total)

    def get(self, userid):
        return self._total.get(userid, 0)

    def add(self, userid, delta):
        """Account `delta` bytes (may be negative) to `userid`."""
        t = self._total.get(userid, 0) + delta
        if t > 0:
            self._total[userid] = t
        else:
            self._total.pop(userid, None)

    def check(self, userid, delta):
        """EDQUOT when growing by `delta` would take `userid` over the limit."""
        if delta > 0 and self._total.get(userid, 0) + delta > self.limit:
            raise error(
                EDQUOT,
                f"user {userid}'s annotations would exceed the {self.limit}-byte "
                f"total over their active jobs",
            )
