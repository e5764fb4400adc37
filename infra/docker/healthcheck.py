"""Container healthcheck: GET /healthz of the service running here (2xx: healthy).

The port is ``LABELLOOP_HEALTHCHECK_PORT`` if set, else the one ``LABELLOOP_<SERVICE>_HTTP_PORT``
in the environment (compose sets exactly one per container), else the default port of the service
named on the command line of PID 1 (``labelloop-service <service>``). Standard library only.
"""

from __future__ import annotations

import os
import re
import sys
import urllib.error
import urllib.request

_DEFAULT_PORTS = {
    "ingester": 8081,
    "sampler": 8082,
    "annotation-bridge": 8083,
    "qa-scorer": 8084,
    "exporter": 8085,
    "trainer": 8086,
}


def _port() -> int:
    explicit = os.environ.get("LABELLOOP_HEALTHCHECK_PORT")
    if explicit:
        return int(explicit)
    ports = {v for k, v in os.environ.items() if re.fullmatch(r"LABELLOOP_[A-Z]+_HTTP_PORT", k)}
    if len(ports) == 1:
        return int(ports.pop())
    try:
        with open("/proc/1/cmdline", "rb") as handle:
            argv = handle.read().decode(errors="replace").split("\0")
    except OSError:
        argv = []
    for name, port in _DEFAULT_PORTS.items():
        if name in argv:
            return port
    raise SystemExit("healthcheck: cannot tell the service's port; set LABELLOOP_HEALTHCHECK_PORT")


def main() -> int:
    url = f"http://127.0.0.1:{_port()}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=4) as resp:
            return 0 if 200 <= resp.status < 300 else 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"healthcheck: {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
