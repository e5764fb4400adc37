"""``labelloop.memory``: glibc's allocator asked to give freed pages back, and to keep its mmap
threshold, on the C library the services run on; nothing asked elsewhere."""

from __future__ import annotations

import ctypes
import sys

import pytest

from labelloop import memory
from labelloop.runtime import quiet_fetch_timeouts


def _glibc() -> bool:
    try:
        return bool(ctypes.CDLL("libc.so.6").gnu_get_libc_version)
    except (OSError, AttributeError):
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux") or not _glibc(), reason="glibc only")
def test_trim_and_the_fixed_threshold_reach_glibc() -> None:
    assert memory.trim() is True
    assert memory.fixed_mmap_threshold() is True


def test_without_glibc_nothing_is_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "_glibc", lambda function: None)
    assert memory.trim() is False
    assert memory.fixed_mmap_threshold() is False


class _Subscription:
    def __init__(self, *outcomes: object) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    async def fetch(self, batch: int = 1, timeout: float = 1.0) -> object:
        self.calls += 1
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


async def test_a_fetch_that_times_out_returns_no_messages_and_other_errors_pass() -> None:
    import nats.errors

    subscription = _Subscription(
        TimeoutError(), nats.errors.TimeoutError(), ["m"], ConnectionResetError("gone")
    )
    quiet_fetch_timeouts(subscription)
    quiet_fetch_timeouts(subscription)  # wrapped once, however often asked
    assert await subscription.fetch(batch=1) == []
    assert await subscription.fetch(batch=1) == []
    assert await subscription.fetch(batch=1) == ["m"]
    with pytest.raises(ConnectionResetError):
        await subscription.fetch(batch=1)
    assert subscription.calls == 4
    quiet_fetch_timeouts(None)  # a subscriber without a subscription yet: nothing to do
