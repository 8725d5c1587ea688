"""Retries and rate limits: the one mechanism the runner and every provider share.

`with_retries(fn)` calls `fn` and retries it while it raises a `TransientProviderError`, at most
`RetryPolicy.max_retries` more times, sleeping an exponentially growing, jittered delay between
attempts (capped at `max_delay_s`; a server's Retry-After hint, when larger, wins). Anything else
propagates at once. `policy_for` picks another policy per error (e.g. a longer one for quota
errors); each policy counts its own retries. `TokenBucket` spaces requests out to a sustained
rate with a burst allowance.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Callable, TypeVar

from attrs import frozen, field

from .errors import SpecError, TransientProviderError

T = TypeVar("T")


def _non_negative(name: str):
    def check(_: object, attr: object, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or value != value:
            raise SpecError(f"{name} must be a number >= 0, got {value!r}")

    return check


@frozen
class RetryPolicy:
    """Bounded exponential backoff with full jitter.

    Delay before retry k (1-based) is uniform in [(1 - jitter) * d, d] with
    d = min(max_delay_s, base_delay_s * 2 ** (k - 1)).
    """

    max_retries: int = field(default=3, validator=_non_negative("max_retries"))
    base_delay_s: float = field(default=0.5, validator=_non_negative("base_delay_s"))
    max_delay_s: float = field(default=30.0, validator=_non_negative("max_delay_s"))
    jitter: float = field(default=0.5, validator=_non_negative("jitter"))

    def __attrs_post_init__(self) -> None:
        if int(self.max_retries) != self.max_retries:
            raise SpecError(f"max_retries must be an int, got {self.max_retries!r}")
        if self.jitter > 1:
            raise SpecError(f"jitter must be in [0, 1], got {self.jitter!r}")

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        d = min(self.max_delay_s, self.base_delay_s * 2 ** (retry - 1))
        u = (rng or random).random()
        return d * (1.0 - self.jitter * u)


DEFAULT_RETRY = RetryPolicy()
NO_RETRY = RetryPolicy(max_retries=0)


def with_retries(
    fn: Callable[[], T],
    policy: RetryPolicy = DEFAULT_RETRY,
    *,
    sleep: Callable[[float], None] = time.sleep,
    on_retry: Callable[[int, TransientProviderError, float], None] | None = None,
    policy_for: Callable[[TransientProviderError], RetryPolicy | None] | None = None,
) -> tuple[T, int]:
    """`(fn(), attempts)`, retrying transient failures. The last transient error is re-raised
    with `.attempts` set once the retries are spent (of the policy that error falls under)."""
    attempt = 0
    spent: dict[int, int] = {}  # retries made per policy (by identity)
    while True:
        attempt += 1
        try:
            return fn(), attempt
        except TransientProviderError as exc:
            exc.attempts = attempt  # type: ignore[attr-defined]
            p = (policy_for(exc) if policy_for is not None else None) or policy
            k = spent[id(p)] = spent.get(id(p), 0) + 1
            if k > p.max_retries:
                raise
            wait = p.delay(k)
            if exc.retry_after_s is not None:
                wait = max(wait, min(float(exc.retry_after_s), p.max_delay_s))
            if on_retry is not None:
                on_retry(attempt, exc, wait)
            sleep(wait)


class TokenBucket:
    """At most `rate` acquisitions per second on average, with bursts of up to `burst`.

    Thread-safe; `acquire()` blocks until a token is free. `rate=None` never blocks.
    """

    def __init__(self, rate: float | None, burst: int = 1, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if rate is not None and not rate > 0:
            raise SpecError(f"rate must be > 0 requests/second (or None), got {rate!r}")
        if int(burst) < 1:
            raise SpecError(f"burst must be >= 1, got {burst!r}")
        self.rate, self.burst = rate, int(burst)
        self._clock, self._sleep = clock, sleep
        self._tokens = float(self.burst)
        self._last = clock()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        if self.rate is None:
            return
        while True:
            with self._lock:
                now = self._clock()
                self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
                self._last = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                wait = (1 - self._tokens) / self.rate
            self._sleep(wait)
