"""One-shot: make Label Studio accept the bridge's API token (the compose `labelstudio-init` job).

Label Studio 1.23 creates its first user with ``LABEL_STUDIO_USER_TOKEN`` as that user's legacy
API token, but legacy tokens are disabled for the organization by default, so the bridge's
``Authorization: Token ...`` calls are refused until an admin enables them. This script waits for
Label Studio, and if the token is refused, logs in as the admin (CSRF cookie + form), enables
legacy tokens (``POST /api/jwt/settings``) and checks the token again. Idempotent; standard
library only; prints no secret.

Environment: ``LABEL_STUDIO_URL``, ``LABEL_STUDIO_USERNAME``, ``LABEL_STUDIO_PASSWORD``,
``LABEL_STUDIO_TOKEN``, optional ``LABEL_STUDIO_WAIT_SECONDS`` (default 300).
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request


def _env(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise SystemExit(f"labelstudio-init: {name} is not set")
    return value


def _wait_healthy(url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as resp:  # noqa: S310
                if json.load(resp).get("status") == "UP":
                    return
        except (OSError, ValueError):
            pass
        time.sleep(2.0)
    raise SystemExit(f"labelstudio-init: {url}/health did not answer UP within {seconds:.0f} s")


def _token_accepted(url: str, token: str) -> bool:
    request = urllib.request.Request(  # noqa: S310 - an http URL from the deployment's config
        f"{url}/api/current-user/whoami", headers={"Authorization": f"Token {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=15) as resp:  # noqa: S310
            return bool(resp.status == 200)
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            return False
        raise


def _enable_legacy_tokens(url: str, email: str, password: str) -> None:
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))

    def csrf() -> str:
        return next(str(c.value) for c in jar if c.name == "csrftoken")

    opener.open(f"{url}/user/login/", timeout=30).read()
    form = urllib.parse.urlencode(
        {"csrfmiddlewaretoken": csrf(), "email": email, "password": password}
    ).encode()
    login = urllib.request.Request(  # noqa: S310
        f"{url}/user/login/", data=form, headers={"Referer": f"{url}/user/login/"}
    )
    opener.open(login, timeout=30).read()
    if not any(c.name == "sessionid" for c in jar):
        raise SystemExit("labelstudio-init: login failed (wrong LABEL_STUDIO_USERNAME/PASSWORD?)")
    enable = urllib.request.Request(  # noqa: S310
        f"{url}/api/jwt/settings",
        data=json.dumps({"legacy_api_tokens_enabled": True}).encode(),
        headers={"X-CSRFToken": csrf(), "Referer": f"{url}/", "Content-Type": "application/json"},
        method="POST",
    )
    with opener.open(enable, timeout=30) as resp:
        if not json.load(resp).get("legacy_api_tokens_enabled"):
            raise SystemExit("labelstudio-init: Label Studio refused to enable legacy API tokens")


def main() -> None:
    url = _env("LABEL_STUDIO_URL").rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise SystemExit(f"labelstudio-init: not an http URL: {url}")
    token = _env("LABEL_STUDIO_TOKEN")
    _wait_healthy(url, float(os.environ.get("LABEL_STUDIO_WAIT_SECONDS", "300")))
    if _token_accepted(url, token):
        print("labelstudio-init: the API token is accepted; nothing to do")
        return
    _enable_legacy_tokens(url, _env("LABEL_STUDIO_USERNAME"), _env("LABEL_STUDIO_PASSWORD"))
    if not _token_accepted(url, token):
        raise SystemExit(
            "labelstudio-init: legacy tokens are enabled but LABEL_STUDIO_TOKEN is refused: "
            "Label Studio sets it only when it creates its first user (an existing data volume "
            "keeps the old one; copy the admin's token from Account & Settings into .env)"
        )
    print("labelstudio-init: legacy API tokens enabled; the API token is accepted")


if __name__ == "__main__":
    main()
