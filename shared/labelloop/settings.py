"""Settings every service shares: NATS connection and credentials, namespace, delivery, logging.

Shared fields read ``LABELLOOP_*`` variables (``LABELLOOP_NATS_URL``, ...). Each service subclasses
``ServiceSettings`` with its own prefix for its own fields (``LABELLOOP_SAMPLER_HTTP_PORT``).
Secrets are ``SecretStr`` without defaults, or read from ``*_FILE`` paths, and never logged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["CREDENTIAL_FIELDS", "CREDENTIAL_VARIABLES", "ServiceSettings", "shared_env"]


def shared_env(name: str) -> Any:
    """A field read from ``LABELLOOP_<NAME>`` whatever the subclass's prefix; settable by name."""
    return AliasChoices(name, f"LABELLOOP_{name.upper()}")


CREDENTIAL_FIELDS = (
    "nats_user",
    "nats_password",
    "nats_password_file",
    "nats_token",
    "nats_token_file",
    "nats_creds_file",
    "nats_nkey_seed_file",
)
"""The settings that say who a client is to NATS."""
CREDENTIAL_VARIABLES = tuple(f"LABELLOOP_{name.upper()}" for name in CREDENTIAL_FIELDS)


class ServiceSettings(BaseSettings):
    """Base of every service's settings. Defaults work on a laptop with the embedded NATS."""

    model_config = SettingsConfigDict(
        env_prefix="LABELLOOP_",
        extra="ignore",
        populate_by_name=True,
        frozen=True,
    )

    # --- NATS
    nats_url: str = Field(default="nats://127.0.0.1:4222", validation_alias=shared_env("nats_url"))
    nats_user: str | None = Field(default=None, validation_alias=shared_env("nats_user"))
    nats_password: SecretStr | None = Field(
        default=None, validation_alias=shared_env("nats_password")
    )
    nats_password_file: Path | None = Field(
        default=None, validation_alias=shared_env("nats_password_file")
    )
    nats_token: SecretStr | None = Field(default=None, validation_alias=shared_env("nats_token"))
    nats_token_file: Path | None = Field(
        default=None, validation_alias=shared_env("nats_token_file")
    )
    """A file holding the token (``labelloop nats`` writes one; the embedded default needs it)."""
    nats_creds_file: Path | None = Field(
        default=None, validation_alias=shared_env("nats_creds_file")
    )
    nats_nkey_seed_file: Path | None = Field(
        default=None, validation_alias=shared_env("nats_nkey_seed_file")
    )
    nats_tls_ca_file: Path | None = Field(
        default=None, validation_alias=shared_env("nats_tls_ca_file")
    )
    nats_tls_cert_file: Path | None = Field(
        default=None, validation_alias=shared_env("nats_tls_cert_file")
    )
    nats_tls_key_file: Path | None = Field(
        default=None, validation_alias=shared_env("nats_tls_key_file")
    )
    namespace: str = Field(
        default="labelloop",
        pattern=r"^[A-Za-z0-9_-]+$",
        validation_alias=shared_env("namespace"),
    )
    stream_replicas: int = Field(
        default=1, ge=1, le=5, validation_alias=shared_env("stream_replicas")
    )

    # --- delivery
    max_deliver: int = Field(default=5, ge=1, le=100, validation_alias=shared_env("max_deliver"))
    """Deliveries of a message whose handler keeps failing before it goes to the dead letters."""
    ack_wait_seconds: float = Field(
        default=30.0, gt=0, validation_alias=shared_env("ack_wait_seconds")
    )
    max_handler_seconds: float = Field(
        default=900.0, gt=0, validation_alias=shared_env("max_handler_seconds")
    )
    """A handler still running after this stops heartbeating: the message is redelivered (and
    dead-lettered after max_deliver), so a hung handler cannot hold a message forever."""
    retry_backoff_seconds: float = Field(
        default=0.5, ge=0, validation_alias=shared_env("retry_backoff_seconds")
    )
    bus_retry_seconds: float = Field(
        default=120.0, ge=0, validation_alias=shared_env("bus_retry_seconds")
    )
    """How long a handler that fails on the bus itself (a NATS timeout, no responders, a
    connection being re-established: a node lost, a leader being elected) is retried in place,
    its message held, before the failure counts as one of the max_deliver deliveries."""
    graceful_timeout_seconds: float = Field(
        default=15.0, gt=0, validation_alias=shared_env("graceful_timeout_seconds")
    )
    sweep_interval_seconds: float = Field(
        default=5.0, gt=0, validation_alias=shared_env("sweep_interval_seconds")
    )
    """How often a service looks for rounds parked for an earlier one that is already done (a
    safety net: normally the replica that finishes a round hands the next one over at once)."""
    max_inline_payload_bytes: int = Field(
        default=512 * 1024, ge=1024, validation_alias=shared_env("max_inline_payload_bytes")
    )
    """Events larger than this travel by reference through the object store (NATS refuses
    messages over the server's ``max_payload``, 1 MB by default)."""

    # --- HTTP (metrics, health, docs): per service, with the service's own prefix
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535)

    # --- logs
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", validation_alias=shared_env("log_level")
    )
    log_format: Literal["json", "console"] = Field(
        default="json", validation_alias=shared_env("log_format")
    )

    @model_validator(mode="after")
    def _check_auth(self) -> ServiceSettings:
        if self.nats_password is not None and self.nats_password_file is not None:
            raise ValueError("set nats_password or nats_password_file, not both")
        if self.nats_token is not None and self.nats_token_file is not None:
            raise ValueError("set nats_token or nats_token_file, not both")
        if (self.nats_tls_cert_file is None) != (self.nats_tls_key_file is None):
            raise ValueError("nats_tls_cert_file and nats_tls_key_file go together")
        return self

    def nats_password_value(self) -> str | None:
        """The NATS password from the environment or its file (never logged)."""
        return _secret(self.nats_password, self.nats_password_file)

    def nats_token_value(self) -> str | None:
        """The NATS token from the environment or its file (never logged)."""
        return _secret(self.nats_token, self.nats_token_file)


def _secret(inline: SecretStr | None, file: Path | None) -> str | None:
    """A secret given in the environment, or read from the file it names."""
    if inline is not None:
        return inline.get_secret_value()
    if file is not None:
        return file.read_text(encoding="utf-8").strip()
    return None
