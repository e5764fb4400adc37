"""A test-only service built with the runtime: RequestExport in, RequestTraining out.

The request's ``reason`` steers it: ``fail`` always raises, ``poison`` raises PoisonMessage,
``slow:<seconds>`` sleeps before succeeding. Run as a script it serves HTTP like a real service.
"""

from __future__ import annotations

import asyncio

from prometheus_client import Counter
from pydantic_settings import SettingsConfigDict

from labelloop.events import RequestExport, RequestTraining, deterministic_id
from labelloop.runtime import PoisonMessage, Service, ServiceSettings


class EchoSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="LABELLOOP_ECHO_")


def build_app(settings: EchoSettings | None = None) -> Service:
    settings = settings or EchoSettings()
    service = Service("echo", settings)
    handled = Counter(
        "labelloop_echo_handled_total", "Requests echoed", ["outcome"], registry=service.registry
    )
    service.calls = []  # type: ignore[attr-defined]  # per-call log for the tests
    service.broken = True  # type: ignore[attr-defined]  # "fail" requests fail while broken

    @service.handler(RequestExport, batch_size=4)
    async def on_request(event: RequestExport) -> None:
        """Echo an export request as a training request."""
        service.calls.append(event.event_id)  # type: ignore[attr-defined]
        if event.reason == "fail" and service.broken:  # type: ignore[attr-defined]
            raise RuntimeError("this handler always fails")
        if event.reason == "poison":
            raise PoisonMessage("cannot ever process this request")
        if event.reason.startswith("slow:"):
            await asyncio.sleep(float(event.reason.split(":", 1)[1]))
        await service.publish(
            RequestTraining(
                event_id=deterministic_id("echo", event.event_id),
                project=event.project,
                reason=f"echo of {event.event_id}",
            )
        )
        handled.labels(outcome="ok").inc()

    return service


if __name__ == "__main__":
    build_app().run()
