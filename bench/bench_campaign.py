"""Campaign: wall time of the default demo campaign end to end (``labelloop demo``).

    .venv/bin/python bench/bench_campaign.py [--quick]

Runs ``labelloop demo`` (default options, runs directory in a temporary folder) as a subprocess
when the command exists (``labelloop demo --help`` succeeds) and records its wall time, exit
code and the tail of its output; otherwise records ``"skipped": "labelloop demo not
available"``. The demo runs in its own process group: on timeout the whole group (the demo, its
services and its nats-server) is stopped, so nothing is left running. ``--quick`` only probes
the command (a whole campaign does not fit a smoke check).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bus import LABELLOOP
from harness import row, standalone

NAME = "campaign"
TIMEOUT = 540.0
"""Keeps the full suite under 20 minutes on the 2-core machine."""
MEASURE = "campaign: labelloop demo end to end"


def _stop_group(proc: subprocess.Popen[str]) -> None:
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        if proc.poll() is not None:
            break
        os.killpg(proc.pid, sig)
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue


def run(quick: bool) -> dict[str, Any]:
    probe = subprocess.run(
        [LABELLOOP, "demo", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    if probe.returncode != 0:
        return {
            "skipped": "labelloop demo not available",
            "rows": [row(MEASURE, "skipped", "", "labelloop demo not available")],
        }
    if quick:
        return {
            "skipped": "quick run: labelloop demo --help only",
            "rows": [row(MEASURE, "skipped (quick)", "", "demo command present")],
        }
    with tempfile.TemporaryDirectory(prefix="bench-demo-") as runs_dir:
        argv = [LABELLOOP, "demo", "--runs-dir", runs_dir]
        start = time.perf_counter()
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            output, _ = proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            _stop_group(proc)
            output, _ = proc.communicate()
            return {
                "argv": argv,
                "timed_out_after_seconds": TIMEOUT,
                "output_tail": (output or "")[-4000:],
                "rows": [row(MEASURE, f"> {TIMEOUT:.0f} s (timed out)", "", "", False)],
            }
        elapsed = time.perf_counter() - start
        _stop_group(proc)  # whatever the demo left in its group
        summary = None
        for path in sorted(Path(runs_dir).glob("*/summary.json")):
            try:
                summary = json.loads(path.read_text())
            except (OSError, ValueError):
                summary = None
        files = sorted(
            os.path.relpath(os.path.join(d, f), runs_dir)
            for d, _, fs in os.walk(runs_dir)
            for f in fs
            if f.endswith((".json", ".md", ".png"))
        )
    return {
        "argv": argv,
        "wall_seconds_demo": elapsed,
        "returncode": proc.returncode,
        "output_tail": output[-4000:],
        "run_files": files[:50],
        "demo_summary": summary,
        "rows": [
            row(MEASURE, f"{elapsed:.1f} s", "", f"exit {proc.returncode}", proc.returncode == 0)
        ],
    }


if __name__ == "__main__":
    standalone(NAME, run)
