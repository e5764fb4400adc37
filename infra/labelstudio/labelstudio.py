"""Install, start and stop a local Label Studio 1.23 for tests and people (standard library only).

Usage (through ``labelstudio.sh``, which picks a Python):

    labelstudio.sh install                 # cached venv with label-studio==1.23.2 (idempotent)
    labelstudio.sh start [--dir DIR]       # loopback port, temp data, token in DIR/labelstudio.env
        [--media-dir MEDIA]                # serve the media files under MEDIA to people
        [--document-root ROOT]             # Label Studio's LOCAL_FILES_DOCUMENT_ROOT
    labelstudio.sh stop --dir DIR          # stops the server started in DIR (by its PID)
    labelstudio.sh status --dir DIR

``start`` prints one line, ``LABELSTUDIO_ENV=<path of the env file>``; the env file (mode 0600)
holds the URL, the API token and the admin password. Nothing secret is printed or logged.

``--media-dir`` and ``--document-root`` turn Label Studio's Local Files serving on
(``LOCAL_FILES_SERVING_ENABLED=true``, ``LOCAL_FILES_DOCUMENT_ROOT=ROOT``, by default MEDIA's
parent: Label Studio serves a storage only strictly inside its document root), so that the
annotation bridge's ``media_root`` paths play in people's browsers; with ``--media-dir`` the env
file also sets the bridge's ``LABELLOOP_BRIDGE_MEDIA_ROOT`` and ``_LABEL_STUDIO_DOCUMENT_ROOT``.
Every user of this Label Studio may add a storage anywhere under the document root and read
it: give it a directory that holds nothing else.

Verified against label-studio 1.23.2:

* ``label-studio start --internal-host 127.0.0.1`` binds loopback only (``--host`` alone does not:
  it only sets the host used in generated URLs, the server then listens on 0.0.0.0).
* Legacy API tokens are off by default. Headless provisioning: GET ``/user/login/`` (csrftoken
  cookie), POST the form with ``csrfmiddlewaretoken`` and a ``Referer``, POST ``/api/jwt/settings``
  ``{"legacy_api_tokens_enabled": true}`` with ``X-CSRFToken``, then GET ``/api/current-user/token``
  returns ``{"token": ...}`` usable as ``Authorization: Token ...``.
"""

from __future__ import annotations

import argparse
import contextlib
import http.cookiejar
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

LS_VERSION = "1.23.2"
ENV_FILE = "labelstudio.env"
PID_FILE = "labelstudio.pid"
LOG_FILE = "labelstudio.log"
DEFAULT_USER = "admin@example.com"


def _cache_dir() -> Path:
    return Path(os.environ.get("LABELLOOP_CACHE") or Path.home() / ".cache" / "labelloop")


def venv_dir() -> Path:
    return _cache_dir() / "ls-venv"


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _installed_version(venv: Path) -> str | None:
    python = _venv_python(venv)
    if not python.exists():
        return None
    probe = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('label-studio'))"],
        capture_output=True,
        text=True,
        check=False,
    )
    return probe.stdout.strip() if probe.returncode == 0 else None


def install() -> Path:
    """A venv with label-studio==LS_VERSION in the cache; reused when it has that version."""
    venv = venv_dir()
    if _installed_version(venv) == LS_VERSION:
        print(f"label-studio {LS_VERSION} already installed in {venv}", file=sys.stderr)
        return venv
    venv.parent.mkdir(parents=True, exist_ok=True)
    uv = shutil.which("uv")
    if uv:
        if not _venv_python(venv).exists():
            subprocess.run([uv, "venv", "--python", sys.executable, str(venv)], check=True)
        subprocess.run(
            [
                uv,
                "pip",
                "install",
                "--python",
                str(_venv_python(venv)),
                f"label-studio=={LS_VERSION}",
            ],
            check=True,
        )
    else:
        if not _venv_python(venv).exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(_venv_python(venv)), "-m", "pip", "install", f"label-studio=={LS_VERSION}"],
            check=True,
        )
    print(f"installed label-studio {LS_VERSION} in {venv}", file=sys.stderr)
    return venv


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_health(url: str, proc: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise SystemExit(f"label-studio exited with code {proc.returncode}; log tail:\n{tail}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:  # noqa: S310
                if json.load(resp).get("status") == "UP":
                    return
        except (OSError, ValueError):
            pass
        time.sleep(1.0)
    raise SystemExit(f"label-studio did not answer /health within {timeout:.0f} s (log: {log})")


def provision_token(url: str, email: str, password: str) -> str:
    """Log in with a session, enable legacy tokens for the organization, return the user's token."""
    if not url.startswith(("http://", "https://")):
        raise SystemExit(f"not an http URL: {url}")
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))

    def csrf() -> str:
        return next(c.value for c in jar if c.name == "csrftoken")

    opener.open(f"{url}/user/login/", timeout=30).read()
    form = urllib.parse.urlencode(
        {"csrfmiddlewaretoken": csrf(), "email": email, "password": password}
    ).encode()
    login = urllib.request.Request(  # noqa: S310 - an http URL we built
        f"{url}/user/login/", data=form, headers={"Referer": f"{url}/user/login/"}
    )
    opener.open(login, timeout=30).read()
    if not any(c.name == "sessionid" for c in jar):
        raise SystemExit("label-studio login failed (no session cookie): wrong username/password?")
    headers = {"X-CSRFToken": csrf(), "Referer": f"{url}/", "Content-Type": "application/json"}
    enable = urllib.request.Request(  # noqa: S310 - an http URL we built
        f"{url}/api/jwt/settings",
        data=json.dumps({"legacy_api_tokens_enabled": True}).encode(),
        headers=headers,
        method="POST",
    )
    with opener.open(enable, timeout=30) as resp:
        if not json.load(resp).get("legacy_api_tokens_enabled"):
            raise SystemExit("label-studio refused to enable legacy API tokens")
    with opener.open(f"{url}/api/current-user/token", timeout=30) as resp:
        token = json.load(resp).get("token")
    if not token:
        raise SystemExit("label-studio returned no API token")
    return str(token)


def _write_env(path: Path, values: dict[str, str]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        for key, value in values.items():
            handle.write(f"{key}={value}\n")
    path.chmod(0o600)


def _local_files(media_dir: Path | None, document_root: Path | None) -> dict[str, str]:
    """Label Studio's environment for serving the files under the document root (none: off)."""
    if media_dir is None and document_root is None:
        return {}
    media = Path(os.path.abspath(media_dir)) if media_dir is not None else None
    if media is not None and not media.is_dir():
        raise SystemExit(f"--media-dir {media} is not a directory")
    if document_root is not None:
        root = Path(os.path.abspath(document_root))
    else:
        assert media is not None
        root = media.parent
    if not root.is_dir():
        raise SystemExit(f"--document-root {root} is not a directory")
    if media is not None and root not in media.parents:
        raise SystemExit(
            f"--media-dir {media} must be inside --document-root {root}: Label Studio serves a"
            " storage only strictly inside its LOCAL_FILES_DOCUMENT_ROOT"
        )
    return {"LOCAL_FILES_SERVING_ENABLED": "true", "LOCAL_FILES_DOCUMENT_ROOT": str(root)}


def start(
    state_dir: Path | None,
    port: int | None,
    timeout: float,
    media_dir: Path | None = None,
    document_root: Path | None = None,
) -> Path:
    files = _local_files(media_dir, document_root)
    venv = venv_dir()
    binary = venv / "bin" / "label-studio"
    if not binary.exists():
        raise SystemExit(f"label-studio is not installed in {venv}: run `labelstudio.sh install`")
    state = state_dir or Path(tempfile.mkdtemp(prefix="labelloop-ls-"))
    state.mkdir(parents=True, exist_ok=True)
    state.chmod(0o700)
    data = state / "data"
    data.mkdir(exist_ok=True)
    port = port or _free_port()
    url = f"http://127.0.0.1:{port}"
    email = os.environ.get("LABEL_STUDIO_USERNAME") or DEFAULT_USER
    password = os.environ.get("LABEL_STUDIO_PASSWORD") or secrets.token_urlsafe(18)
    env = {
        **os.environ,
        # no phoning home: empty DSNs stop Sentry from trying to reach the internet
        "SENTRY_DSN": "",
        "FRONTEND_SENTRY_DSN": "",
        # the bridge's webhook receiver lives on loopback / a private network
        "SSRF_PROTECTION_ENABLED": "false",
        "LABEL_STUDIO_USERNAME": email,
        "LABEL_STUDIO_PASSWORD": password,
        "LABEL_STUDIO_BASE_DATA_DIR": str(data),
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
        "COLLECT_ANALYTICS": "false",
        # how long a task a person opened stays theirs (Label Studio's default: 24 h, which held
        # a half-done task, and with it its batch, until that person came back)
        "LABEL_STUDIO_TASK_LOCK_TTL": os.environ.get("LABEL_STUDIO_TASK_LOCK_TTL", "600"),
        # media files people play in their browser (the bridge's Local Files URLs)
        **files,
    }
    log = state / LOG_FILE
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [
                str(binary),
                "start",
                "--no-browser",
                "--internal-host",
                "127.0.0.1",
                "--port",
                str(port),
                "--data-dir",
                str(data),
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    (state / PID_FILE).write_text(f"{proc.pid}\n")
    try:
        _wait_health(url, proc, timeout, log)
        token = provision_token(url, email, password)
    except BaseException:
        _stop_pid(proc.pid)
        raise
    env_file = state / ENV_FILE
    bridge_media = {}
    if media_dir is not None:
        bridge_media = {
            "LABELLOOP_BRIDGE_MEDIA_ROOT": os.path.abspath(media_dir),
            "LABELLOOP_BRIDGE_LABEL_STUDIO_DOCUMENT_ROOT": files["LOCAL_FILES_DOCUMENT_ROOT"],
        }
    _write_env(
        env_file,
        {
            "LABELLOOP_BRIDGE_LABEL_STUDIO_URL": url,
            "LABELLOOP_BRIDGE_LABEL_STUDIO_TOKEN": token,
            **bridge_media,
            "LABEL_STUDIO_URL": url,
            "LABEL_STUDIO_API_KEY": token,
            "LABEL_STUDIO_USERNAME": email,
            "LABEL_STUDIO_PASSWORD": password,
            "LABEL_STUDIO_PID": str(proc.pid),
        },
    )
    print(f"label-studio up at {url} (pid {proc.pid}, state {state})", file=sys.stderr)
    print(f"LABELSTUDIO_ENV={env_file}")
    return env_file


def _stop_pid(pid: int, grace: float = 15.0) -> None:
    # label-studio was started in its own session: its process group id is its pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def stop(state_dir: Path) -> None:
    pid_file = state_dir / PID_FILE
    if not pid_file.exists():
        print(f"no {PID_FILE} in {state_dir}: nothing to stop", file=sys.stderr)
        return
    pid = int(pid_file.read_text().strip())
    _stop_pid(pid)
    pid_file.unlink()
    print(f"label-studio (pid {pid}) stopped", file=sys.stderr)


def status(state_dir: Path) -> int:
    pid_file = state_dir / PID_FILE
    if not pid_file.exists():
        print("stopped")
        return 1
    pid = int(pid_file.read_text().strip())
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        print(f"stopped (stale pid {pid})")
        return 1
    print(f"running (pid {pid})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="labelstudio.sh", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("install", help=f"cached venv with label-studio=={LS_VERSION}")
    p_start = sub.add_parser("start", help="start on a free loopback port and provision a token")
    p_start.add_argument(
        "--dir", type=Path, default=None, help="state dir (default: a new temp dir)"
    )
    p_start.add_argument("--port", type=int, default=None)
    p_start.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for /health")
    p_start.add_argument(
        "--media-dir",
        type=Path,
        default=None,
        help="serve the media files under this directory to people (Local Files)",
    )
    p_start.add_argument(
        "--document-root",
        type=Path,
        default=None,
        help="LOCAL_FILES_DOCUMENT_ROOT (default: the media dir's parent); turns serving on",
    )
    for name in ("stop", "status"):
        p = sub.add_parser(name)
        p.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "install":
        install()
    elif args.command == "start":
        start(args.dir, args.port, args.timeout, args.media_dir, args.document_root)
    elif args.command == "stop":
        stop(args.dir)
    elif args.command == "status":
        return status(args.dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
