"""A token bucket: the quotas' (server/listener.py) and the connection rate's
(server/address_limits.py)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class TokenBucket:
    """Tokens refill at ``rate``/s up to one second's worth.

    A request is admitted while the balance is positive and then charged in
    full, possibly into debt; so a single batch larger than the burst still
    passes (when the bucket is full) and the debt throttles what follows, the
    way Kafka quotas do. Refusing happens BEFORE the handler runs, so a
    throttled produce appended nothing.
    """

    rate: float
    tokens: float
    stamp: float
    # Fetch quotas: bytes that fetches admitted and not yet answered may still
    # return (server/listener.py Quotas). Not in ``tokens``: nothing was served.
    reserved: float = 0.0

    @classmethod
    def full(cls, rate: float, now: float) -> TokenBucket:
        return cls(rate, rate, now)

    def retuned(self, rate: float, now: float) -> TokenBucket:
        """The same bucket at a new ``rate`` (a user's quota altered): its balance,
        debt included, carries over, capped at the new burst."""
        self.take(0.0, now)  # refill up to now at the old rate
        return TokenBucket(rate, min(rate, self.tokens), now, self.reserved)

    def full_at(self, now: float) -> bool:
        """Refilled to the brim by ``now`` and nothing reserved: indistinguishable
        from a fresh bucket."""
        return self.tokens + (now - self.stamp) * self.rate >= self.rate and not self.reserved

    def charge(self, cost: float, now: float) -> None:
        """Charge ``cost`` after the fact (its size known only once served), into
        debt if need be: what follows waits for it (``take``)."""
        self.tokens = min(self.rate, self.tokens + (now - self.stamp) * self.rate) - cost
        self.stamp = now

    def take(self, cost: float, now: float) -> float:
        """Charge ``cost``; return 0 if admitted, else the seconds to wait."""
        self.tokens = min(self.rate, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens <= 0:
            return -self.tokens / self.rate + 1.0 / self.rate
        self.tokens -= cost
        return 0.0
