"""Service settings: shared variables, per-service prefixes, secrets kept out of reprs and logs."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from faststream.nats.security import NatsSecurity, NatsUserPassword
from pydantic import ValidationError
from pydantic_settings import SettingsConfigDict

from labelloop.runtime import (
    Service,
    ServiceSettings,
    _redact,
    broker_options,
    nats_connect_options,
)


class DemoSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="LABELLOOP_DEMOSVC_")
    http_port: int = 8099


def test_shared_variables_and_service_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABELLOOP_NATS_URL", "nats://a:4222,nats://b:4222")
    monkeypatch.setenv("LABELLOOP_NAMESPACE", "acme")
    monkeypatch.setenv("LABELLOOP_DEMOSVC_HTTP_PORT", "9100")
    settings = DemoSettings()
    assert settings.nats_url == "nats://a:4222,nats://b:4222"
    assert settings.namespace == "acme"
    assert settings.http_port == 9100


def test_password_is_secret_and_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cr3t-from-file\n")
    settings = ServiceSettings(nats_user="svc", nats_password_file=secret)
    assert settings.nats_password_value() == "s3cr3t-from-file"
    inline = ServiceSettings(nats_user="svc", nats_password="hunter2")
    assert "hunter2" not in repr(inline)
    assert "hunter2" not in str(inline.model_dump())
    with pytest.raises(ValidationError, match="not both"):
        ServiceSettings(nats_password="x", nats_password_file=secret)


def test_token_from_a_file_reaches_the_connection(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("tok-from-file\n")
    settings = ServiceSettings(nats_token_file=secret)
    assert nats_connect_options(settings)["token"] == "tok-from-file"
    assert broker_options(settings)["token"] == "tok-from-file"
    assert "tok-from-file" not in repr(settings)
    with pytest.raises(ValidationError, match="not both"):
        ServiceSettings(nats_token="x", nats_token_file=secret)


def test_user_password_and_tls_reach_the_broker_as_security(tmp_path: Path) -> None:
    settings = ServiceSettings(nats_user="svc", nats_password="pw")
    options = broker_options(settings)
    assert isinstance(options["security"], NatsUserPassword)
    assert "user" not in options
    assert "password" not in options
    Service("svc", settings)  # FastStream accepts it

    ca = ssl.get_default_verify_paths().cafile
    if ca:
        tls_only = broker_options(ServiceSettings(nats_tls_ca_file=Path(ca)))
        assert isinstance(tls_only["security"], NatsSecurity)
        assert tls_only["security"].ssl_context is not None


def test_credentials_never_appear_in_logged_urls() -> None:
    assert _redact("nats://svc:pw@nats-1:4222,nats://nats-2:4222") == (
        "nats://***@nats-1:4222,nats://nats-2:4222"
    )


def test_credentials_in_urls_become_options_for_every_server() -> None:
    """nats-py adds the servers a cluster advertises without a URL's userinfo: credentials in
    the URLs must travel as options, or a failover leaves the client unable to log in."""
    settings = ServiceSettings(
        nats_url="nats://svc:p%40ss@n1:4222, nats://svc:p%40ss@n2:4222,nats://n3:4222"
    )
    options = nats_connect_options(settings)
    assert options["servers"] == ["nats://n1:4222", "nats://n2:4222", "nats://n3:4222"]
    assert (options["user"], options["password"]) == ("svc", "p@ss")
    explicit = ServiceSettings(nats_url="nats://a:b@n1:4222", nats_user="me", nats_password="pw")
    assert (nats_connect_options(explicit)["user"], nats_connect_options(explicit)["password"]) == (
        "me",
        "pw",
    )
    with pytest.raises(ValueError, match="different users"):
        nats_connect_options(ServiceSettings(nats_url="nats://a:b@n1:4222,nats://c:d@n2:4222"))
