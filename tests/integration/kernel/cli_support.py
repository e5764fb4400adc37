"""The ``labelloop`` command run as an operator types it, against a test's nats-server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

__all__ = ["labelloop"]


def labelloop(
    *args: str, nats_url: str, namespace: str, cwd: Path
) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).parent / "labelloop"
    env = {**os.environ, "LABELLOOP_NATS_URL": nats_url, "LABELLOOP_NAMESPACE": namespace}
    return subprocess.run(
        [str(script), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )
