"""Run labelloop's benchmark suite and print one table.

    .venv/bin/python bench/run.py [--quick] [--only NAME ...]

Each benchmark writes ``bench/results/<name>.json`` (``<name>.quick.json`` with ``--quick``)
with the machine, library versions, its figures and the anchors measured in the same run.
``--quick`` runs small sizes as a smoke check (under 2 minutes); the full run takes under 20
minutes on a 2-core machine. Each benchmark also runs alone: ``python bench/bench_<name>.py``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import machine, write_result

BENCHMARKS = {
    "qa_scale": "bench_qa_scale",
    "active_learning": "bench_active_learning",
    "consensus": "bench_consensus",
    "throughput": "bench_throughput",
    "latency": "bench_latency",
    "sampler": "bench_sampler",
    "campaign": "bench_campaign",
    "multilabel": "bench_multilabel",
    "ner": "bench_ner",
    "audio": "bench_audio",
    "text": "bench_text",
    "video": "bench_video",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke check)")
    parser.add_argument(
        "--only", action="append", choices=sorted(BENCHMARKS), help="run only this benchmark"
    )
    args = parser.parse_args()
    from rich.console import Console
    from rich.table import Table

    # a wide table even when piped to a file (``make bench | tee``)
    console = Console(width=None if sys.stdout.isatty() else 180)
    chosen = args.only or list(BENCHMARKS)
    rows: list[tuple[str, dict[str, Any]]] = []
    timings: dict[str, float] = {}
    failed = False
    started = time.perf_counter()
    for name in chosen:
        console.print(f"[bold]{name}[/] ...", highlight=False)
        t0 = time.perf_counter()
        try:
            module = importlib.import_module(BENCHMARKS[name])
            payload = module.run(args.quick)
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            failed = True
            traceback.print_exc()
            payload = {"error": f"{type(exc).__name__}: {exc}", "rows": []}
            rows.append(
                (
                    name,
                    {
                        "measure": "error",
                        "labelloop": str(exc)[:60],
                        "anchor": "",
                        "comparison": "",
                        "check": False,
                    },
                )
            )
        payload["wall_seconds"] = round(time.perf_counter() - t0, 2)
        timings[name] = payload["wall_seconds"]
        path = write_result(name, payload, quick=args.quick)
        console.print(
            f"  {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}"
            f" ({payload['wall_seconds']} s)",
            highlight=False,
        )
        rows += [(name, r) for r in payload.get("rows", [])]
        failed |= any(r["check"] is False for r in payload.get("rows", []))

    m = machine()
    table = Table(
        title=f"labelloop benchmarks{' (quick)' if args.quick else ''}: "
        f"{m['cpu_count']} x {m['cpu_model']}, {m['memory_gb']} GB, Python {m['python']}",
        show_lines=False,
    )
    for column in ("benchmark", "measure", "labelloop", "anchor (same run)", "comparison", "check"):
        table.add_column(column, overflow="fold")
    for name, r in rows:
        mark = {True: "[green]ok[/]", False: "[red]FAIL[/]", None: ""}[r["check"]]
        table.add_row(name, r["measure"], r["labelloop"], r["anchor"], r["comparison"], mark)
    console.print(table)
    total = time.perf_counter() - started
    console.print(
        "wall time: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
        + f"; total {total:.0f} s",
        highlight=False,
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
