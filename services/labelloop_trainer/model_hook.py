"""The model hook's HTTP client: the pool sent to the producer's model, its box predictions back.

The model is the producer's, served by them; the trainer only asks it for predictions
(``POST <url>/predict`` in Label Studio's ML backend format, :mod:`.domain.boxes`), a batch of
``model_hook.batch_size`` tasks at a time, one request after another. It never asks the model to
train (the ML backend's ``/train`` and ``/webhook`` are not called): what it learns from, and
when, is the producer's business.

Each request has ``model_hook.timeout_seconds``; a timeout, a connection error, a 5xx or a 429 is
tried again up to ``model_hook.retries`` times, waiting 1 s, 2 s, 4 s ... (at most 30 s) in
between. Any other failure, and an answer that breaks the contract, fails at once. A failed
request fails the pool's scoring as a whole (:class:`HookError`, whose message names the
request and the reason): the trainer reports it in the round's ``ModelTrained`` and the loop
goes on with the predictions it had.

Credentials come from the trainer's environment variable or file the project names
(``model_hook.credentials_env`` / ``credentials_file``), read when the pool is scored (a file
may be rotated); they are never logged, and no error message carries them or the URL's query.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import JsonValue

from labelloop.project import ModelHookConfig
from labelloop_trainer.domain.boxes import (
    BoxPrediction,
    ContractError,
    label_config,
    parse_predict_response,
    predict_request,
)

__all__ = ["HookError", "ModelHook", "PoolPredictions"]

log = logging.getLogger("labelloop.trainer.hook")

_RETRIED_STATUS = frozenset({429, 500, 502, 503, 504})
_MAX_BACKOFF_SECONDS = 30.0


class HookError(RuntimeError):
    """The model hook gave no usable answer (down, refused, too slow, or garbage)."""


@dataclass(frozen=True, slots=True)
class PoolPredictions:
    item_ids: list[str]
    predictions: list[BoxPrediction]
    """One per item id, in order."""
    requests: int
    retries: int

    @property
    def model_versions(self) -> list[str]:
        """The model versions the answers named, in order of first appearance."""
        return list(dict.fromkeys(p.model_version for p in self.predictions if p.model_version))


class ModelHook:
    """``transport``: httpx's (tests pass an ``httpx.MockTransport``); ``env``: where
    ``credentials_env`` is looked up (the process environment by default)."""

    def __init__(
        self,
        config: ModelHookConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        env: Mapping[str, str] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        backoff_seconds: float = 1.0,
    ) -> None:
        self.config = config
        self._transport = transport
        self._env = env
        self._sleep = sleep
        self._backoff = backoff_seconds
        parts = urlsplit(config.url)
        # what messages may name: scheme, host and path, never a query (it may carry a key)
        self.where = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}/predict"
        self._endpoint = config.url.split("?", 1)[0].rstrip("/") + "/predict"

    def _auth(self) -> tuple[dict[str, str], httpx.Auth | None]:
        config = self.config
        if config.auth is None:
            return {}, None
        if config.credentials_env is not None:
            env = os.environ if self._env is None else self._env
            secret = env.get(config.credentials_env)
            if not secret:
                raise HookError(
                    f"the model hook's credentials: environment variable "
                    f"{config.credentials_env} is not set"
                )
        else:
            path = Path(str(config.credentials_file))
            try:
                secret = path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise HookError(
                    f"the model hook's credentials: cannot read {path}: {exc.strerror}"
                ) from None
            if not secret:
                raise HookError(f"the model hook's credentials: {path} is empty")
        secret = secret.strip()
        if config.auth == "bearer":
            return {"Authorization": f"Bearer {secret}"}, None
        user, colon, password = secret.partition(":")
        if not colon:
            raise HookError("the model hook's basic credentials are not user:password")
        return {}, httpx.BasicAuth(user, password)

    async def predict_pool(
        self,
        project: str,
        items: Sequence[tuple[str, Mapping[str, JsonValue]]],
        *,
        field_name: str,
        labels: Sequence[str],
    ) -> PoolPredictions:
        """Predictions for ``(item id, item data)`` pairs, ``batch_size`` per request. A task's
        ``id`` is the item's position in ``items`` (Label Studio's task ids are integers); the
        answers are matched to the tasks by their order, as the ML backend answers."""
        headers, auth = self._auth()
        xml = label_config(field_name, labels)
        out: list[BoxPrediction] = []
        requests = retries = 0
        size = self.config.batch_size
        async with httpx.AsyncClient(
            transport=self._transport,
            timeout=httpx.Timeout(self.config.timeout_seconds),
            headers=headers,
            auth=auth,
            follow_redirects=False,
            trust_env=False,
        ) as client:
            for start in range(0, len(items), size):
                chunk = items[start : start + size]
                tasks = [(start + k, data) for k, (_, data) in enumerate(chunk)]
                body = predict_request(tasks, project, xml)
                answer, tried = await self._post(client, body, start, len(chunk))
                requests += 1
                retries += tried
                try:
                    out.extend(parse_predict_response(answer, len(chunk), labels))
                except ContractError as exc:
                    raise HookError(f"{self._which(start, len(chunk))}: {exc}") from None
        return PoolPredictions([i for i, _ in items], out, requests, retries)

    def _which(self, start: int, n: int) -> str:
        return f"{self.where} (tasks {start}-{start + n - 1})"

    async def _post(
        self, client: httpx.AsyncClient, body: dict[str, Any], start: int, n: int
    ) -> tuple[object, int]:
        """The answer's JSON and the retries it took."""
        attempts = self.config.retries + 1
        reason = ""
        for attempt in range(attempts):
            if attempt:
                delay = min(self._backoff * 2 ** (attempt - 1), _MAX_BACKOFF_SECONDS)
                log.warning(
                    "model hook %s: %s; try %d of %d in %.1fs",
                    self._which(start, n),
                    reason,
                    attempt + 1,
                    attempts,
                    delay,
                )
                await self._sleep(delay)
            try:
                response = await client.post(self._endpoint, json=body)
            except httpx.TimeoutException:
                reason = f"no answer within {self.config.timeout_seconds:g} s"
                continue
            except httpx.TransportError as exc:
                reason = f"cannot connect ({type(exc).__name__})"
                continue
            except httpx.HTTPError as exc:  # anything else httpx raises is not worth a retry
                raise HookError(f"{self._which(start, n)}: {type(exc).__name__}") from None
            if response.status_code in _RETRIED_STATUS:
                reason = f"HTTP {response.status_code}"
                continue
            if response.status_code != 200:
                raise HookError(f"{self._which(start, n)}: HTTP {response.status_code}")
            try:
                return response.json(), attempt
            except ValueError:
                raise HookError(f"{self._which(start, n)}: the answer is not JSON") from None
        raise HookError(f"{self._which(start, n)}: {reason} after {attempts} attempts")
