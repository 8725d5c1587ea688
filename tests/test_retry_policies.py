"""with_retries(policy_for=...): a second policy for some errors, each policy counting its own retries."""

from __future__ import annotations

import pytest

from rs_embed_core.errors import TransientProviderError
from rs_embed_core.retry import RetryPolicy, with_retries


class Quota(TransientProviderError):
    pass


def test_each_policy_counts_its_own_retries():
    plain, quota = RetryPolicy(max_retries=1, base_delay_s=1.0), RetryPolicy(max_retries=4, base_delay_s=10.0)
    script = [Quota("429")] * 4 + [TransientProviderError("503")]
    slept: list[float] = []

    def fn() -> str:
        if script:
            raise script.pop(0)
        return "ok"

    pick = lambda exc: quota if isinstance(exc, Quota) else None  # noqa: E731
    assert with_retries(fn, plain, sleep=slept.append, policy_for=pick) == ("ok", 6)
    assert [d >= 5.0 for d in slept] == [True] * 4 + [False]  # quota delays from the quota policy
    script[:] = [TransientProviderError("503")] * 2
    with pytest.raises(TransientProviderError) as info:
        with_retries(fn, plain, sleep=slept.append, policy_for=pick)
    assert info.value.attempts == 2
