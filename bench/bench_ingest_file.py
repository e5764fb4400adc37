"""``labelloop ingest`` of a large JSONL file with bad lines: CLI peak RSS, every row accounted for.

    .venv/bin/python bench/bench_ingest_file.py [--size-mb 200] [--out PATH]

The claim measured: "``labelloop ingest`` of a 200 MB JSONL with bad lines: CLI peak RSS under
200 MB, all good rows ingested, each bad one reported."

Generates (in a temporary folder) a JSONL file of ``--size-mb`` MB (2**20 bytes) of review-like
rows of about 1 kB each, with bad lines spread through it by byte offset (the first and the last
line among them): lines that are not UTF-8, lines that are not JSON, rows over the CLI's 800 kB
message limit (``too_large``) and rows without the project's required ``text`` field. The CLI
cannot know the last kind is bad (the field is the project's, checked by the ingester): they are
submitted and must come back as ``ItemsRejected`` (``missing_field``), counted apart.

Starts an embedded nats-server and ``labelloop-service ingester`` (``Supervisor``), applies a text
project, runs ``labelloop ingest FILE --project P`` as a subprocess and samples the RSS of it and
its children every 50 ms (psutil); ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` after it exits is the
cross-check. Then waits, against a deadline, until the ingester has handled every submitted row
(its metrics and its consumer's backlog), and reads back every ``ItemsIngested`` and
``ItemsRejected`` event from the stream. Checked: exit code 2; every bad line the CLI can see
reported once with its line number and the right reason and no other line reported; the good rows
ingested exactly once each under the ids computed locally; every missing-field row rejected by
the ingester; peak RSS under 200 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bus import namespace, text_project
from harness import RESULTS, row, write_result
from labelloop.client import BusClient, connect
from labelloop.events import ItemsIngested, ItemsRejected, ItemsSubmitted
from labelloop.natsserver import EmbeddedNats
from labelloop.payloads import resolve
from labelloop.project import parse_project
from labelloop.settings import ServiceSettings
from labelloop_console.processes import ServiceProcess, Supervisor
from labelloop_ingester.domain.identity import item_id

NAME = "ingest_file"
PROJECT = "bench-ingest-file"
MB = 2**20
RSS_LIMIT_MB = 200.0
CLI = str(Path(sys.executable).parent / "labelloop")
SAMPLE_SECONDS = 0.05
BAD_PER_KIND = 5
CLI_KINDS = ("invalid_utf8", "not_json", "too_large")
"""Bad lines the CLI itself must report; ``missing_field`` is the ingester's to reject."""
CLI_REASON = {
    "invalid_utf8": "not valid UTF-8",
    "not_json": "not valid JSON",
    "too_large": "too_large",
}
MACHINE_NOTE = (
    "2 cores shared: the CLI, the ingester, nats-server and this benchmark run on the same 2-core"
    " VM, possibly alongside other jobs"
)

# --------------------------------------------------------------------------- the file

_PRODUCTS = (
    "blender", "kettle", "headphones", "phone case", "desk lamp", "backpack", "coffee grinder",
    "running shoes", "keyboard", "air fryer", "water bottle", "e-reader", "vacuum cleaner",
    "office chair", "toaster", "monitor stand", "yoga mat", "smart watch", "rice cooker", "drill",
)  # fmt: skip
_OPENINGS = (
    "I bought this {p} for my {who} after reading a lot of reviews.",
    "We have been using the {p} every day for {n} weeks now.",
    "Ordered the {p} on a whim during a sale and it arrived in {n} days.",
    "This is my second {p} from this brand; the first one lasted {n} years.",
    "Honestly I was sceptical about a {p} at this price.",
    "Got the {p} as a gift for my {who} — she asked me to write this review.",
    "After {n} months of use, here is my honest take on the {p}.",
)
_BODY = (
    "The build quality is {adj}, and the finish feels {adj2} in the hand.",
    "Setup took about {n} minutes and the instructions were {adj}.",
    "Battery life is {adj}: I charge it roughly every {n} days.",
    "It is a bit louder than I expected, but nothing {adj2}.",
    "Customer service answered within {n} hours and were {adj} about the replacement.",
    "The packaging was {adj}, with far too much plastic for my taste.",
    "Compared with my old one it is {adj} and noticeably {adj2}.",
    "My {who} uses it too and finds it {adj}.",
    "The {part} broke after {n} weeks, which is {adj2} for something this expensive.",
    "Cleaning it is {adj}; the {part} comes off in seconds.",
    "Colour is exactly as pictured, a nice café-au-lait beige.",
    "It does what it says, no more, no less, and the {part} is {adj}.",
    "For the price I would have expected a {adj2} {part}.",
    "The app is {adj} and keeps asking me to update the firmware.",
)
_CLOSINGS = (
    "Would buy again. 👍",
    "I would not recommend it, sadly.",
    "Four stars because of the {part}, otherwise perfect.",
    "Returned it after {n} days.",
    "Overall a solid purchase for the money.",
    "If they fix the {part} this would be a five-star product.",
    "Not bad, not great: it is fine.",
)
_WORDS = {
    "who": ("wife", "husband", "daughter", "son", "mother", "flatmate", "office", "dad"),
    "adj": ("excellent", "decent", "disappointing", "surprisingly good", "mediocre", "clear",
            "confusing", "fantastic", "poor", "okay", "naïve at best", "straightforward"),
    "adj2": ("cheap", "premium", "flimsy", "sturdy", "unacceptable", "lighter", "heavier",
             "quieter", "better", "worse"),
    "part": ("lid", "handle", "cable", "button", "hinge", "strap", "filter", "charger", "screen",
             "base"),
}  # fmt: skip
_TITLES = (
    "Great value", "Does the job", "Disappointed", "Love it", "Not as described", "Five stars",
    "Broke quickly", "Better than expected", "Meh", "Exactly what I needed", "Too noisy",
)  # fmt: skip


def _fill(template: str, rng: random.Random) -> str:
    return template.format(
        p=rng.choice(_PRODUCTS),
        n=rng.randint(2, 30),
        **{key: rng.choice(values) for key, values in _WORDS.items()},
    )


def _review(rng: random.Random, number: int, text_chars: int) -> dict[str, Any]:
    sentences = [_fill(rng.choice(_OPENINGS), rng)]
    length = len(sentences[0])
    while length < text_chars:
        sentence = _fill(rng.choice(_BODY), rng)
        sentences.append(sentence)
        length += len(sentence) + 1
    sentences.append(_fill(rng.choice(_CLOSINGS), rng))
    return {
        "id": f"R{number:09d}",
        "product_id": "B0" + "".join(rng.choices("0123456789ABCDEFGHJKLMNPQRSTUVWXYZ", k=8)),
        "user_id": f"U{rng.getrandbits(40):010x}",
        "rating": rng.randint(1, 5),
        "title": rng.choice(_TITLES),
        "text": " ".join(sentences),
        "verified_purchase": rng.random() < 0.8,
        "helpful_votes": rng.randint(0, 40),
        "date": f"20{rng.randint(18, 25)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
    }


def _dumps(row_: dict[str, Any]) -> bytes:
    return json.dumps(row_, ensure_ascii=False).encode() + b"\n"


def _data(row_: dict[str, Any]) -> dict[str, Any]:
    """What the CLI makes the item's data of a flat row: every key but the reserved ones."""
    return {k: v for k, v in row_.items() if k != "id"}


def _bad_line(kind: str, variant: int, rng: random.Random, number: int) -> bytes:
    good = _review(rng, number, rng.randint(500, 1000))
    if kind == "invalid_utf8":
        raw = _dumps(good)
        if variant % 3 == 0:  # a word written in Latin-1
            return raw.replace(b'"text": "', b'"text": "Caf\xe9 cr\xe8me. ', 1)
        if variant % 3 == 1:  # a 4-byte sequence cut short (a truncated emoji)
            return raw.replace(b'"title": "', b'"title": "\xf0\x9f\x91 ', 1)
        return b"\xff\xfe" + raw  # a UTF-16 byte-order mark
    if kind == "not_json":
        raw = _dumps(good)
        if variant % 3 == 0:  # cut in the middle (a writer killed mid-line)
            return raw[: len(raw) // 2] + b"\n"
        if variant % 3 == 1:  # a Python repr, not JSON
            return repr(good).encode() + b"\n"
        return raw.replace(b"}\n", b",}\n")  # a trailing comma
    if kind == "too_large":  # a review with a ~1 MB pasted log: over the 800 kB message limit
        good["text"] = (
            good["text"] + " " + "lorem ipsum dolor sit amet " * (40_000 + variant * 4000)
        )
        return _dumps(good)
    if kind == "missing_field":  # the review text under another name
        good["body"] = good.pop("text")
        return _dumps(good)
    raise ValueError(kind)


@dataclass
class Generated:
    path: Path
    bytes: int = 0
    lines: int = 0
    good_rows: int = 0
    bad: dict[str, list[int]] = field(default_factory=dict)
    """Line numbers (1-based) of the bad lines, by kind."""
    bad_external_ids: dict[str, int] = field(default_factory=dict)
    """``external_id`` of each missing-field row -> its line."""
    expected_ids: set[str] = field(default_factory=set)
    bad_bytes: int = 0
    seconds: float = 0.0


def generate(path: Path, size_mb: float, seed: int = 7) -> Generated:
    """About ``size_mb`` MB of rows; the bad lines at evenly spread byte offsets, shuffled kinds,
    the first line and the last line among them."""
    started = time.perf_counter()
    rng = random.Random(seed)
    target = int(size_mb * MB)
    kinds = [k for k in (*CLI_KINDS, "missing_field") for _ in range(BAD_PER_KIND)]
    rng.shuffle(kinds)
    variants: Counter[str] = Counter()
    # offset of the k-th bad line: 0 (line 1), ..., the end (the last line)
    offsets = [round(target * k / (len(kinds) - 1)) for k in range(len(kinds))]
    out = Generated(path, bad={k: [] for k in (*CLI_KINDS, "missing_field")})
    next_bad = 0
    with path.open("wb") as fh:
        while out.bytes < target or next_bad < len(kinds):
            out.lines += 1
            if next_bad < len(kinds) and (out.bytes >= offsets[next_bad] or out.bytes >= target):
                kind = kinds[next_bad]
                next_bad += 1
                line = _bad_line(kind, variants[kind], rng, out.lines)
                variants[kind] += 1
                out.bad[kind].append(out.lines)
                out.bad_bytes += len(line)
                if kind == "missing_field":
                    out.bad_external_ids[f"R{out.lines:09d}"] = out.lines
            else:
                review = _review(rng, out.lines, rng.randint(600, 1100))
                iid = item_id(_data(review))
                if iid in out.expected_ids:  # never in practice: random user and product ids
                    out.lines -= 1
                    continue
                out.expected_ids.add(iid)
                out.good_rows += 1
                line = _dumps(review)
            fh.write(line)
            out.bytes += len(line)
    out.seconds = time.perf_counter() - started
    return out


# --------------------------------------------------------------------------- the CLI


@dataclass
class CliRun:
    returncode: int
    seconds: float
    peak_rss_mb_psutil: float
    peak_rss_mb_rusage: float
    rusage_naive_mb: float
    """``RUSAGE_CHILDREN`` read in this process: polluted by its own RSS (see ``_LAUNCHER``)."""
    samples: int
    trace: list[dict[str, float]]
    stdout: str
    reported: list[tuple[int, str]]
    """(line, reason) of every ``line N: REASON: not submitted`` the CLI wrote."""
    unparsed_stderr: list[str]
    ingester_peak_rss_mb: float
    started_at: float


_REPORTED = re.compile(r"^line (\d+): (.*): not submitted$")


def _tree_rss(proc: psutil.Process) -> int:
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += child.memory_info().rss
    return int(total)


def _file_position(proc: psutil.Process, path: Path) -> int | None:
    try:
        for f in proc.open_files():
            if f.path == str(path):
                return int(f.position)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return None


_LAUNCHER = (
    "import resource, subprocess, sys\n"
    "code = subprocess.call(sys.argv[2:])\n"
    "with open(sys.argv[1], 'w') as out:\n"
    "    out.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n"
    "sys.exit(code)\n"
)
"""A small process that starts the CLI and reports ``ru_maxrss`` of its children (kB).

Not from this process: Linux carries the RSS high-water mark of the forking process over
``exec`` into the child's ``ru_maxrss`` (``true`` spawned from a 300 MB Python process reports
310 MB), so ``RUSAGE_CHILDREN`` here would be this benchmark's own peak (the expected ids and the
generator), not the CLI's. Forked from a ~10 MB launcher, the CLI's figure is its own."""


def _wait_child(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> psutil.Process:
    ps = psutil.Process(proc.pid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = ps.children()
        if children:
            return children[0]
        if proc.poll() is not None:
            break
        time.sleep(0.005)
    raise RuntimeError("the launcher did not start the CLI")


def run_cli(file: Path, env: dict[str, str], workdir: Path, ingester: ServiceProcess) -> CliRun:
    """``labelloop ingest FILE --project P``, its RSS (and its children's) every 50 ms."""
    out_path, err_path = workdir / "cli.stdout", workdir / "cli.stderr"
    rusage_path = workdir / "cli.maxrss"
    ing = psutil.Process(ingester.process.pid)
    peak = ing_peak = 0
    samples = 0
    trace: list[dict[str, float]] = []
    last_trace = -1.0
    command = [CLI, "ingest", str(file), "--project", PROJECT]
    with out_path.open("wb") as out, err_path.open("wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(rusage_path), *command],
            env=env,
            stdout=out,
            stderr=err,
        )
        ps = _wait_child(proc)
        while proc.poll() is None:
            try:
                rss = _tree_rss(ps)
            except psutil.NoSuchProcess:
                break
            samples += 1
            peak = max(peak, rss)
            ing_peak = max(ing_peak, int(ing.memory_info().rss))
            now = time.perf_counter() - started
            if now - last_trace >= 0.5:  # where the CLI is in the file, twice a second
                last_trace = now
                position = _file_position(ps, file)
                trace.append(
                    {
                        "seconds": round(now, 2),
                        "rss_mb": round(rss / MB, 1),
                        "file_position_mb": round(position / MB, 1) if position else -1.0,
                    }
                )
            time.sleep(SAMPLE_SECONDS)
        returncode = proc.wait()
        seconds = time.perf_counter() - started
    rusage_mb = int(rusage_path.read_text()) / 1024  # kB on Linux
    naive_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    reported: list[tuple[int, str]] = []
    unparsed: list[str] = []
    for text in err_path.read_text(errors="replace").splitlines():
        match = _REPORTED.match(text)
        if match:
            reported.append((int(match.group(1)), match.group(2)))
        elif text.strip():
            unparsed.append(text)
    return CliRun(
        returncode=returncode,
        seconds=seconds,
        peak_rss_mb_psutil=peak / MB,
        peak_rss_mb_rusage=rusage_mb,
        rusage_naive_mb=naive_mb,
        samples=samples,
        trace=trace,
        stdout=out_path.read_text(errors="replace").strip(),
        reported=reported,
        unparsed_stderr=unparsed,
        ingester_peak_rss_mb=ing_peak / MB,
        started_at=started,
    )


# --------------------------------------------------------------------------- the bus


def _metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            head, _, value = line.rpartition(" ")
            if head == name or head.startswith(name + "{"):
                total += float(value)
    return total


async def _apply(settings: ServiceSettings) -> None:
    async with connect(settings) as bus:
        await bus.apply_project(parse_project(text_project(PROJECT, ["positive", "negative"])))


async def _wait_handled(
    settings: ServiceSettings,
    ingester: ServiceProcess,
    submitted: int,
    deadline: float,
    ing_peak_mb: float,
) -> dict[str, Any]:
    """Poll the ingester's counters and its consumer's backlog until every submitted row is
    ingested, rejected or counted as a duplicate (or the deadline passes)."""
    psi = psutil.Process(ingester.process.pid)
    async with connect(settings) as bus:
        while True:
            metrics = ingester.metrics()
            ingested = _metric(metrics, "labelloop_ingester_items_ingested_total")
            rejected = _metric(metrics, "labelloop_ingester_items_rejected_total")
            duplicates = _metric(metrics, "labelloop_ingester_duplicates_total")
            ing_peak_mb = max(ing_peak_mb, psi.memory_info().rss / MB)
            handled = ingested + rejected + duplicates
            backlog = await bus.backlog("ingester", ItemsSubmitted)
            if (handled >= submitted and backlog == 0) or time.perf_counter() > deadline:
                return {
                    "done_at": time.perf_counter(),
                    "timed_out": handled < submitted or backlog > 0,
                    "metric_ingested": int(ingested),
                    "metric_rejected": int(rejected),
                    "metric_duplicates": int(duplicates),
                    "backlog": backlog,
                    "ingester_peak_rss_mb": ing_peak_mb,
                }
            await asyncio.sleep(0.2)


async def _read_all(bus: BusClient, event: type[ItemsIngested | ItemsRejected]) -> list[Any]:
    """Every message of ``event`` in its stream, from the start (by-reference bodies resolved)."""
    stream = bus.ns.stream_name(bus.ns.stream_for(event))
    subject = bus.ns.subject(event, PROJECT)
    blobs = await bus.blobs()
    sub = await bus.js.pull_subscribe(subject, stream=stream)
    out: list[Any] = []
    try:
        while True:
            try:
                msgs = await sub.fetch(100, timeout=2)
            except TimeoutError:
                info = await sub.consumer_info()
                if not info.num_pending:
                    return out
                continue
            for msg in msgs:
                body = await resolve(msg.data, msg.headers, blobs)
                out.append(event.model_validate_json(body))
                await msg.ack()
    finally:
        await sub.unsubscribe()


async def _read_back(settings: ServiceSettings) -> tuple[list[ItemsIngested], list[ItemsRejected]]:
    async with connect(settings) as bus:
        return await _read_all(bus, ItemsIngested), await _read_all(bus, ItemsRejected)


# --------------------------------------------------------------------------- the benchmark


def measure(size_mb: float, timeout: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-ingest-file-") as tmp:
        workdir = Path(tmp)
        gen = generate(workdir / "reviews.jsonl", size_mb)
        print(
            f"generated {gen.bytes / MB:.1f} MB, {gen.lines:,} lines "
            f"({gen.good_rows:,} good) in {gen.seconds:.1f} s",
            file=sys.stderr,
        )
        server = EmbeddedNats().start()
        ns = namespace("benchfile")
        settings = ServiceSettings(nats_url=server.url, namespace=ns)
        supervisor = Supervisor(server.url, ns, workdir)
        try:
            asyncio.run(_apply(settings))
            ingester = supervisor.start("ingester")
            supervisor.wait_ready()
            env = {
                **os.environ,
                "LABELLOOP_NATS_URL": server.url,
                "LABELLOOP_NAMESPACE": ns,
            }
            cli = run_cli(gen.path, env, workdir, ingester)
            print(
                f"cli exit {cli.returncode} in {cli.seconds:.1f} s, "
                f"peak RSS {cli.peak_rss_mb_psutil:.1f} MB: {cli.stdout}",
                file=sys.stderr,
            )
            match = re.search(r"submitted (\d+) items", cli.stdout)
            submitted = int(match.group(1)) if match else gen.good_rows + BAD_PER_KIND
            waited = asyncio.run(
                _wait_handled(
                    settings,
                    ingester,
                    submitted,
                    time.perf_counter() + timeout,
                    cli.ingester_peak_rss_mb,
                )
            )
            ingested_events, rejected_events = asyncio.run(_read_back(settings))
            ingester_log_tail = supervisor_log_errors(ingester)
        finally:
            supervisor.stop_all()
            server.cleanup()
    return _figures(gen, cli, submitted, waited, ingested_events, rejected_events) | {
        "ingester_log_errors": ingester_log_tail
    }


def supervisor_log_errors(proc: ServiceProcess) -> list[str]:
    """Error and warning lines of the ingester's log (JSON lines), at most 20."""
    found = []
    for text in proc.log_path.read_text(errors="replace").splitlines():
        if '"level": "ERROR"' in text or '"level": "WARNING"' in text or "Traceback" in text:
            found.append(text[:400])
    return found[:20]


def _figures(
    gen: Generated,
    cli: CliRun,
    submitted: int,
    waited: dict[str, Any],
    ingested_events: list[ItemsIngested],
    rejected_events: list[ItemsRejected],
) -> dict[str, Any]:
    ids = Counter(item.item_id for event in ingested_events for item in event.items)
    seen = set(ids)
    repeated = sum(n - 1 for n in ids.values() if n > 1)
    event_duplicates = sum(e.duplicates for e in ingested_events)
    rejections = [r for e in rejected_events for r in e.rejections]
    rejected_lines = sorted(gen.bad_external_ids.get(r.external_id or "", -1) for r in rejections)
    rejected_reasons = Counter(r.reason.split(":", 1)[0] for r in rejections)

    expected_cli = {line: kind for kind in CLI_KINDS for line in gen.bad[kind]}
    reported_lines = Counter(line for line, _ in cli.reported)
    by_kind: dict[str, dict[str, Any]] = {}
    for kind in CLI_KINDS:
        lines = gen.bad[kind]
        right = [
            line
            for line, reason in cli.reported
            if expected_cli.get(line) == kind and reason.startswith(CLI_REASON[kind])
        ]
        by_kind[kind] = {
            "lines": lines,
            "reported_with_right_reason": sorted(right),
            "missing": sorted(set(lines) - set(right)),
        }
    by_kind["missing_field"] = {
        "lines": gen.bad["missing_field"],
        "reported_by_cli": sorted(
            line for line in gen.bad["missing_field"] if line in reported_lines
        ),
        "rejected_by_ingester_lines": rejected_lines,
        "missing": sorted(set(gen.bad["missing_field"]) - set(rejected_lines)),
    }
    unexpected = sorted(line for line in reported_lines if line not in expected_cli)
    reported_twice = sorted(line for line, n in reported_lines.items() if n > 1)
    end_to_end = waited["done_at"] - cli.started_at
    examples = {
        kind: next((reason for line, reason in cli.reported if expected_cli.get(line) == kind), "")
        for kind in CLI_KINDS
    }
    return {
        "file": {
            "size_mb": round(gen.bytes / MB, 1),
            "bytes": gen.bytes,
            "lines": gen.lines,
            "good_rows": gen.good_rows,
            "mean_good_row_bytes": round((gen.bytes - gen.bad_bytes) / max(gen.good_rows, 1)),
            "bad_lines_bytes": gen.bad_bytes,
            "bad_lines_by_kind": {k: len(v) for k, v in gen.bad.items()},
            "generate_seconds": round(gen.seconds, 1),
        },
        "cli": {
            "command": f"labelloop ingest {gen.path.name} --project {PROJECT}",
            "exit_code": cli.returncode,
            "wall_seconds": round(cli.seconds, 2),
            "peak_rss_mb_psutil": round(cli.peak_rss_mb_psutil, 1),
            "peak_rss_mb_ru_maxrss": round(cli.peak_rss_mb_rusage, 1),
            "ru_maxrss_read_in_benchmark_process_mb": round(cli.rusage_naive_mb, 1),
            "rss_samples": cli.samples,
            "rss_trace": cli.trace,
            "stdout": cli.stdout,
            "submitted_items": submitted,
            "reported_bad_lines": len(cli.reported),
            "reported_examples": examples,
            "unexpected_reported_lines": unexpected,
            "lines_reported_twice": reported_twice,
            "other_stderr": cli.unparsed_stderr[:20],
            "file_mb_per_second": round(gen.bytes / MB / cli.seconds, 2),
        },
        "bad_lines": by_kind,
        "ingester": {
            "items_ingested": sum(ids.values()),
            "distinct_item_ids": len(seen),
            "item_ids_seen_twice": repeated,
            "duplicates_reported_in_events": event_duplicates,
            "ids_equal_expected": seen == gen.expected_ids,
            "good_rows_missing": len(gen.expected_ids - seen),
            "unexpected_ids": len(seen - gen.expected_ids),
            "ingested_events": len(ingested_events),
            "rejected_items": len(rejections),
            "rejected_by_reason": dict(rejected_reasons),
            "metrics": {
                k: waited[k]
                for k in ("metric_ingested", "metric_rejected", "metric_duplicates", "backlog")
            },
            "timed_out": waited["timed_out"],
            "peak_rss_mb_psutil": round(waited["ingester_peak_rss_mb"], 1),
        },
        "end_to_end_seconds": round(end_to_end, 2),
        "items_per_second_end_to_end": round(len(seen) / end_to_end, 1),
        "machine_note": MACHINE_NOTE,
    }


def checks(out: dict[str, Any]) -> dict[str, bool]:
    cli, ing, bad = out["cli"], out["ingester"], out["bad_lines"]
    good = out["file"]["good_rows"]
    return {
        "peak_rss_under_200_mb": max(cli["peak_rss_mb_psutil"], cli["peak_rss_mb_ru_maxrss"])
        < RSS_LIMIT_MB,
        "all_good_rows_ingested_once": (
            ing["ids_equal_expected"]
            and ing["items_ingested"] == good
            and ing["item_ids_seen_twice"] == 0
            and not ing["timed_out"]
        ),
        "every_bad_line_reported_by_cli": (
            all(not bad[k]["missing"] for k in CLI_KINDS)
            and not cli["unexpected_reported_lines"]
            and not cli["lines_reported_twice"]
        ),
        "missing_field_rows_rejected_by_ingester": (
            not bad["missing_field"]["missing"]
            and ing["rejected_items"] == len(bad["missing_field"]["lines"])
        ),
        "exit_code_2": cli["exit_code"] == 2,
    }


def run(size_mb: float, timeout: float) -> dict[str, Any]:
    out = measure(size_mb, timeout)
    out["checks"] = checks(out)
    out["claim_holds"] = all(
        out["checks"][k]
        for k in (
            "peak_rss_under_200_mb",
            "all_good_rows_ingested_once",
            "every_bad_line_reported_by_cli",
        )
    )
    cli, ing, c = out["cli"], out["ingester"], out["checks"]
    n_cli_bad = sum(len(out["bad_lines"][k]["lines"]) for k in CLI_KINDS)
    out["rows"] = [
        row(
            f"CLI peak RSS, {out['file']['size_mb']:.0f} MB JSONL",
            f"{cli['peak_rss_mb_psutil']:.1f} MB (ru_maxrss {cli['peak_rss_mb_ru_maxrss']:.1f})",
            f"limit {RSS_LIMIT_MB:.0f} MB",
            "",
            c["peak_rss_under_200_mb"],
        ),
        row(
            "good rows ingested once",
            f"{ing['distinct_item_ids']:,} of {out['file']['good_rows']:,}",
            f"{ing['item_ids_seen_twice']} twice",
            f"{out['items_per_second_end_to_end']:,.0f} items/s end to end",
            c["all_good_rows_ingested_once"],
        ),
        row(
            "bad lines reported by the CLI (with line)",
            f"{n_cli_bad - sum(len(out['bad_lines'][k]['missing']) for k in CLI_KINDS)}"
            f" of {n_cli_bad}",
            f"{len(cli['unexpected_reported_lines'])} other lines",
            f"exit {cli['exit_code']}",
            c["every_bad_line_reported_by_cli"] and c["exit_code_2"],
        ),
        row(
            "missing-field rows rejected by the ingester",
            f"{ing['rejected_items']} of {len(out['bad_lines']['missing_field']['lines'])}",
            "",
            "",
            c["missing_field_rows_rejected_by_ingester"],
        ),
        row(
            "CLI wall time / end to end",
            f"{cli['wall_seconds']:.1f} s / {out['end_to_end_seconds']:.1f} s",
            "",
            "",
            None,
        ),
    ]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description="labelloop benchmark: " + NAME)
    parser.add_argument("--size-mb", type=float, default=200.0, help="file size in MB (2**20)")
    parser.add_argument(
        "--timeout", type=float, default=1800.0, help="seconds to wait for the ingester"
    )
    parser.add_argument(
        "--out", type=Path, default=RESULTS / f"{NAME}.json", help="where to write the result"
    )
    args = parser.parse_args()
    started = time.perf_counter()
    payload = run(args.size_mb, args.timeout)
    payload["size_mb_requested"] = args.size_mb
    payload["wall_seconds"] = round(time.perf_counter() - started, 2)
    written = write_result(NAME, payload, quick=False, path=args.out)
    for r in payload["rows"]:
        mark = {True: "ok", False: "FAIL", None: ""}[r["check"]]
        print(f"{r['measure']:<44} {r['labelloop']:<28} {r['anchor']:<20} {r['comparison']} {mark}")
    print(f"wrote {written} in {payload['wall_seconds']} s", file=sys.stderr)
    return 0 if all(payload["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
