"""Which services exist, and how to run one: a ``ServiceSpec`` per service, found by entry point.

Each service package declares one spec in its composition root (``labelloop_qa.app:SPEC``) and
registers it under the ``labelloop.services`` entry point group. Everything that needs a service's
names reads them from its spec: the name it runs under (``qa-scorer``), its package
(``labelloop_qa``), its settings' environment prefix (``LABELLOOP_QA_``) and its default HTTP
port. Nobody maps them by hand.

``labelloop-service NAME`` (``main``) is what a service container runs: the kernel alone, without
the operator console.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from labelloop import memory
from labelloop.events import Event
from labelloop.settings import ServiceSettings

if TYPE_CHECKING:
    from labelloop.runtime import Service

__all__ = ["ServiceSpec", "main", "service_spec", "service_specs"]

_GROUP = "labelloop.services"

ORDER = ("ingester", "sampler", "annotation-bridge", "qa-scorer", "exporter", "trainer")
"""The order services start and are listed in: upstream first."""


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    """What the service runs and is known as: ``labelloop-service qa-scorer``, metrics, logs."""
    settings: type[ServiceSettings]
    build: Callable[..., Service]
    """The composition root: settings (and test doubles) in, a runnable ``Service`` out."""
    publishes: tuple[type[Event], ...] = ()
    """The events the service produces (besides dead letters, which every service publishes).
    The docs' routing table and the production NATS permissions are checked against it."""
    state_keys: tuple[str, ...] = ()
    """The key prefixes it writes in the state bucket (``sampler`` for ``sampler.<project>...``,
    ``seq.qa-rounds`` for its round sequencer): production permissions let it write those keys
    and no others."""
    artifacts: str | None = None
    """The artefact area it writes (its own object bucket, the first segment of every artefact
    name it writes: ``catalog`` for the ingester; :mod:`labelloop.artifacts`); ``None``: none.
    It reads every area."""

    @property
    def package(self) -> str:
        return self.build.__module__.split(".")[0]

    @property
    def env_prefix(self) -> str:
        """The prefix of the service's own settings, e.g. ``LABELLOOP_QA_``."""
        return str(self.settings.model_config.get("env_prefix", "LABELLOOP_"))

    @property
    def default_port(self) -> int:
        return int(self.settings.model_fields["http_port"].default)

    def env(self, field: str) -> str:
        """The environment variable of one of the service's own settings."""
        return f"{self.env_prefix}{field.upper()}"


@cache
def service_specs() -> dict[str, ServiceSpec]:
    """Every installed service, upstream first."""
    found: dict[str, ServiceSpec] = {}
    for ep in entry_points(group=_GROUP):
        spec = ep.load()
        if not isinstance(spec, ServiceSpec):
            raise TypeError(f"entry point {ep.name} = {ep.value} is not a ServiceSpec")
        if spec.name != ep.name:
            raise ValueError(f"entry point {ep.name} names the service {spec.name!r}")
        found[spec.name] = spec
    rank = {name: i for i, name in enumerate(ORDER)}
    return dict(sorted(found.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))


def service_spec(name: str) -> ServiceSpec:
    specs = service_specs()
    if name not in specs:
        raise KeyError(f"unknown service {name!r}; known: {', '.join(specs)}")
    return specs[name]


def main(argv: Sequence[str] | None = None) -> Any:
    """``labelloop-service NAME``: run one service until SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="labelloop-service", description="Run one labelloop service until SIGTERM."
    )
    parser.add_argument("service", nargs="?", help="the service to run")
    parser.add_argument("--list", action="store_true", help="list the installed services")
    parser.add_argument(
        "--provision",
        action="store_true",
        help="create or update the namespace's streams and buckets, then exit (run it as a user"
        " that may: in production the services' users may not)",
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="with --provision: how long to keep trying while the servers start or a cluster has"
        " no quorum yet (default 60)",
    )
    args = parser.parse_args(argv)
    if args.provision:
        return _provision(args.wait)
    if args.list or not args.service:
        for spec in service_specs().values():
            print(f"{spec.name}\t{spec.package}\t{spec.env_prefix}\t{spec.default_port}")
        return 0 if args.list else 2
    try:
        spec = service_spec(args.service)
    except KeyError as exc:
        print(exc.args[0], file=sys.stderr)
        return 2
    _system_allocator_for_arrow()
    memory.fixed_mmap_threshold()  # before the first large block: see labelloop.memory
    service = spec.build()
    service.metrics.declare_published(spec.publishes)  # their counters at 0 from the start
    service.run()
    return 0


def _system_allocator_for_arrow() -> None:
    """Arrow allocates with the C library's allocator, not its default (mimalloc or
    jemalloc), unless ``ARROW_DEFAULT_MEMORY_POOL`` says otherwise. A service writes small
    Parquet files all campaign long (a delta a round), and mimalloc kept the pages they
    freed: an exporter grew about 40 MB every 1,000 rounds of the soak, in mappings of its own
    that the C library's statistics do not count.

    Set on the pool itself: the variable is read when pyarrow is imported, and the service's
    package (which imports it) is imported to find the service, before this runs."""
    import pyarrow as pa

    chosen = os.environ.get("ARROW_DEFAULT_MEMORY_POOL")
    if chosen is None:
        pa.set_memory_pool(pa.system_memory_pool())
    elif pa.default_memory_pool().backend_name != chosen:
        raise SystemExit(f"ARROW_DEFAULT_MEMORY_POOL={chosen!r}: pyarrow has no such pool")


def _provision(wait: float) -> int:
    import asyncio
    import time

    from nats.errors import Error as NatsError

    from labelloop.client import Unreachable, connect
    from labelloop.provisioning import NotProvisioned
    from labelloop.settings import ServiceSettings

    settings = ServiceSettings()
    deadline = time.monotonic() + wait

    async def run() -> None:
        # A cluster that is starting refuses for a while: no server yet, no JetStream leader
        # (no answer: NotProvisioned), too few nodes for the replicas (an API error), a
        # connection reset while a node restarts.
        while True:
            try:
                async with connect(settings, give_up_after=max(1.0, deadline - time.monotonic())):
                    return  # connecting provisions
            except (Unreachable, NotProvisioned, NatsError, OSError) as exc:
                if time.monotonic() >= deadline:
                    raise
                print(f"not provisioned yet, retrying: {exc}", file=sys.stderr)
                await asyncio.sleep(2.0)

    try:
        asyncio.run(run())
    except (Unreachable, NotProvisioned, NatsError, OSError) as exc:
        print(f"provisioning gave up after {wait:.0f} s: {exc}", file=sys.stderr)
        return 1
    print(f"namespace {settings.namespace}: streams and buckets provisioned")
    return 0


if __name__ == "__main__":
    sys.exit(main())
