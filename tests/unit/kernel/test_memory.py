"""``labelloop.memory``: glibc's allocator asked to give freed pages back, and to keep its mmap
threshold, on the C library the services run on; nothing asked elsewhere. And the allocator a
service gives Arrow."""

from __future__ import annotations

import ctypes
import os
import subprocess
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


_POOL_OF_A_SERVICE = """
import dataclasses, sys
import pyarrow as pa
from labelloop import services

def build(*args, **kwargs):
    print(pa.default_memory_pool().backend_name)
    raise SystemExit(0)

real = services.service_spec("exporter")  # imports the service's package, and pyarrow with it
services.service_spec = lambda name: dataclasses.replace(real, build=build)
services.main(["exporter"])
"""


def _start_a_service(pool_variable: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    if pool_variable is not None:
        env["ARROW_DEFAULT_MEMORY_POOL"] = pool_variable
    return subprocess.run(
        [sys.executable, "-c", _POOL_OF_A_SERVICE],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(("variable", "pool"), [(None, "system"), ("jemalloc", "jemalloc")])
def test_a_service_allocates_arrow_memory_from_the_pool_it_was_told(
    variable: str | None, pool: str
) -> None:
    """The C library's allocator unless ``ARROW_DEFAULT_MEMORY_POOL`` names another, although
    pyarrow was imported (and read the variable) before the service started: setting the
    variable then had no effect, and every service ran on mimalloc."""
    run = _start_a_service(variable)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == [pool]


def test_a_pool_arrow_does_not_have_stops_the_service_with_its_name() -> None:
    run = _start_a_service("tcmalloc")
    assert run.returncode != 0
    assert "ARROW_DEFAULT_MEMORY_POOL='tcmalloc'" in run.stderr
