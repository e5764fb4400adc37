"""The ``labelloop`` command against a real nats-server, as an operator types it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def _labelloop(
    *args: str, nats_url: str, namespace: str, cwd: Path
) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).parent / "labelloop"
    env = {**os.environ, "LABELLOOP_NATS_URL": nats_url, "LABELLOOP_NAMESPACE": namespace}
    return subprocess.run(
        [str(script), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_project_apply_ingest_dlq_and_status(nats_url: str, namespace: str, tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return _labelloop(*args, nats_url=nats_url, namespace=namespace, cwd=tmp_path)

    applied = run("project", "apply", str(EXAMPLES / "reviews" / "project.yaml"))
    assert applied.returncode == 0, applied.stderr
    assert "revision 1" in applied.stdout
    shown = run("project", "show", "reviews")
    assert json.loads(shown.stdout)["labels"]["classes"] == ["positive", "negative", "neutral"]

    items = tmp_path / "items.jsonl"
    items.write_text(
        "\n".join(json.dumps({"data": {"text": f"review {i}"}}) for i in range(5)) + "\n{oops\n"
    )
    ingested = run("ingest", str(items), "--project", "reviews")
    assert ingested.returncode == 2  # one row unreadable: said, not silently dropped
    assert "submitted 5 items" in ingested.stdout
    assert "row 5: not submitted" in ingested.stderr

    listed = run("dlq", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.strip() == ""

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: Bad Name\ntask_type: ner\n")
    refused = run("project", "apply", str(bad))
    assert refused.returncode == 1
    assert "name:" in refused.stdout + refused.stderr

    status = run("status", "--project", "reviews")
    assert status.returncode == 0, status.stderr
