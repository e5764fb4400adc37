"""Campaigns through the real services: does active learning beat random, in the running system?

    .venv/bin/python bench/bench_campaign.py [--quick]

For each staleness setting (``sampling.max_model_lag`` K = 0, 1, 2) one deployment runs: nats-server
and the six services as processes (what ``labelloop demo`` starts), and in it, side by side, the
digits project of ``examples/`` for 5 seeds (the data split, the sampler and the crew) twice: with
hybrid sampling and with random sampling. The simulated crew is the example's (one confuser, one
spammer); the budget is 400 labels in batches of 40 (36 labels and 4 gold).

Reported per K and strategy, over the seeds: the learning curve (held-out accuracy of the model
serving after each round, at the labels spent by then), labels to 90% and 95% on the mean curve,
the share of annotations spent on annotators QA had flagged, labels per item, and wall time.
Checked: the hybrid mean above the random mean at every checkpoint from 100 labels on; 95% within
200 labels; and the running system within 2 points of an offline replay of the same campaign
(``replay.py``: the services' own functions in one process, no bus) at equal labels.
``--quick``: one seed, K = 1, 160 labels.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from harness import row, standalone
from labelloop.client import connect
from labelloop.events import RequestSampling, deterministic_id
from labelloop.natsserver import EmbeddedNats
from labelloop.project import ProjectConfig, load_project, parse_project
from labelloop.settings import ServiceSettings
from labelloop_console.campaign import CampaignView, CampaignWatcher
from labelloop_console.demo import (
    DEFAULT_PROJECT,
    DigitsData,
    digits_items,
    evaluate_models,
    load_digits_data,
    submit_items,
    wait_for,
)
from labelloop_console.processes import Supervisor
from replay import replay

NAME = "campaign"
SEEDS = (20, 21, 22, 23, 24)
LAGS = (0, 1, 2)
STRATEGIES = ("hybrid", "random")
BUDGET = 400
N_GOLD = 30
CHECKPOINTS = (108, 144, 180, 216, 252, 288, 324, 360, 396)
"""Labels spent after rounds 3 to 11 (36 labels a round): every checkpoint from 100 on."""


def _config(base: ProjectConfig, seed: int, strategy: str, lag: int, budget: int) -> ProjectConfig:
    raw = base.model_dump(mode="json")
    raw["name"] = f"s{seed}-{strategy}"
    raw["budget"] = {**raw["budget"], "max_labels": budget}
    raw["sampling"] = {
        **raw["sampling"],
        "strategy": strategy,
        "seed": seed,
        "max_model_lag": lag,
        "start": "on_command",
    }
    raw["simulation"] = {**raw["simulation"], "seed": seed}
    return parse_project(raw)


def _at(curve: list[tuple[int, float]], labels: int) -> float | None:
    """Accuracy of the model serving once ``labels`` were spent (the last point at or before)."""
    before = [acc for n, acc in curve if n <= labels]
    return before[-1] if before else None


def _labels_to(curve: list[tuple[int, float]], target: float) -> int | None:
    return next((n for n, acc in curve if acc >= target - 1e-9), None)


def _spam_share(view: CampaignView, flagged: set[str]) -> float:
    spent = [who for who, _, _ in view.annotations.values()]
    return sum(w in flagged for w in spent) / len(spent) if spent else 0.0


async def _campaign(
    nats_url: str, namespace: str, arms: list[tuple[ProjectConfig, DigitsData]], timeout: float
) -> dict[str, Any]:
    settings = ServiceSettings(nats_url=nats_url, namespace=namespace)
    async with connect(settings) as bus:
        watcher = CampaignWatcher(bus.nc, bus.ns, [c.name for c, _ in arms])
        await watcher.start()
        pools = {}
        for config, data in arms:
            await bus.apply_project(config)
            pools[config.name] = digits_items(data, N_GOLD, config.sampling.seed)
            await submit_items(bus, config.name, pools[config.name])
        await wait_for(
            watcher,
            lambda: all(watcher.view(c.name).items_ingested >= len(pools[c.name]) for c, _ in arms),
            timeout=timeout,
            stall=120,
        )
        started = time.monotonic()
        for config, _ in arms:
            await bus.publish(
                RequestSampling(
                    event_id=deterministic_id("bench-start", namespace, config.name),
                    project=config.name,
                    action="start",
                )
            )
        finished = await wait_for(
            watcher,
            lambda: all(watcher.view(c.name).settled for c, _ in arms),
            timeout=timeout,
            stall=240,
        )
        wall = time.monotonic() - started
        out: dict[str, Any] = {"finished": finished, "wall_seconds": round(wall, 1), "arms": {}}
        for config, data in arms:
            view = watcher.view(config.name)
            curve, final, _, _ = await evaluate_models(bus, view, data)
            last = view.reports[-1] if view.reports else None
            flagged = {s.annotator_id for s in last.annotators if s.flagged} if last else set()
            out["arms"][config.name] = {
                "curve": curve,
                "final_accuracy": final,
                "labels_used": view.labels_used,
                "annotations": view.annotations_used,
                "labels_per_item": round(view.annotations_used / max(view.labels_used, 1), 3),
                "flagged": sorted(flagged),
                "spam_share": round(_spam_share(view, flagged), 4),
                "rounds": len(view.labeling_batches()),
                "dead_letters": view.dead_letters,
                "settled": view.settled,
            }
        await watcher.stop()
    return out


def _deployment(
    workdir: Path, arms: list[tuple[ProjectConfig, DigitsData]], timeout: float
) -> dict[str, Any]:
    namespace = f"bench{uuid.uuid4().hex[:8]}"
    server = EmbeddedNats(store_dir=workdir / "nats", log_file=workdir / "nats.log").start()
    env = {
        "LABELLOOP_EXPORTER_EXPORT_DIR": str(workdir / "exports"),
        "LABELLOOP_BRIDGE_BACKEND": "simulated",
    }
    supervisor = Supervisor(server.url, namespace, workdir, env=env)
    try:
        supervisor.start_all()
        supervisor.wait_ready(timeout=120)
        return asyncio.run(_campaign(server.url, namespace, arms, timeout))
    finally:
        supervisor.stop_all()
        server.cleanup()


def _offline(config: ProjectConfig, data: DigitsData) -> list[tuple[int, float]]:
    items = digits_items(data, N_GOLD, config.sampling.seed)
    x_test = data.features[data.test_index]
    y_test = data.target[data.test_index].astype(str)
    curve = []
    for r in replay(config, items):
        if r.model is not None:
            predicted = np.asarray(r.model.predict(x_test)).astype(str)
            curve.append((r.labels_spent, float(np.mean(predicted == y_test))))
    return curve


def _mean_curve(curves: list[list[tuple[int, float]]]) -> list[tuple[int, float]]:
    out = []
    for n in CHECKPOINTS:
        points = [_at(c, n) for c in curves]
        if all(p is not None for p in points):
            out.append((n, round(statistics.fmean(p for p in points if p is not None), 4)))
    return out


def run(quick: bool) -> dict[str, Any]:
    base = load_project(DEFAULT_PROJECT)
    seeds = SEEDS[:1] if quick else SEEDS
    lags = (1,) if quick else LAGS
    budget = 160 if quick else BUDGET
    results: dict[str, Any] = {"seeds": list(seeds), "budget": budget, "lags": {}}
    rows = []
    for lag in lags:
        arms = [
            (_config(base, seed, strategy, lag, budget), load_digits_data(seed, 0.3))
            for seed in seeds
            for strategy in STRATEGIES
        ]
        workdir = Path(tempfile.mkdtemp(prefix="bench-campaign-"))
        live = _deployment(workdir, arms, timeout=1800)
        per: dict[str, Any] = {"wall_seconds": live["wall_seconds"], "finished": live["finished"]}
        if live["finished"]:
            shutil.rmtree(workdir, ignore_errors=True)
        else:  # the services' logs and the NATS store say why: keep them
            per["kept_workdir"] = str(workdir)
        for strategy in STRATEGIES:
            names = [f"s{seed}-{strategy}" for seed in seeds]
            curves = [live["arms"][n]["curve"] for n in names]
            replays = (
                [_offline(c, d) for c, d in arms if c.sampling.strategy.value == strategy]
                if strategy == "hybrid"
                else []
            )
            mean = _mean_curve(curves)
            per[strategy] = {
                "mean_curve": mean,
                "curves": {n: live["arms"][n]["curve"] for n in names},
                "labels_to_90": _labels_to(mean, 0.90),
                "labels_to_95": _labels_to(mean, 0.95),
                "final_accuracy_mean": round(
                    statistics.fmean(live["arms"][n]["final_accuracy"] or 0.0 for n in names), 4
                ),
                "spam_share_mean": round(
                    statistics.fmean(live["arms"][n]["spam_share"] for n in names), 4
                ),
                "labels_per_item_mean": round(
                    statistics.fmean(live["arms"][n]["labels_per_item"] for n in names), 3
                ),
                "flagged": {n: live["arms"][n]["flagged"] for n in names},
            }
            if replays:
                offline = _mean_curve(replays)
                gaps = [
                    round(a - b, 4) for (n, a), (m, b) in zip(offline, mean, strict=False) if n == m
                ]
                per[strategy]["offline_mean_curve"] = offline
                per[strategy]["offline_minus_live"] = gaps
                per[strategy]["offline_curves"] = replays
        hybrid, rnd = per["hybrid"], per["random"]
        above = all(
            a > b for (n, a), (m, b) in zip(hybrid["mean_curve"], rnd["mean_curve"], strict=False)
        )
        within = max((abs(g) for g in hybrid.get("offline_minus_live", [])), default=0.0)
        per["hybrid_above_random_from_100"] = above
        per["max_gap_to_offline"] = within
        results["lags"][str(lag)] = per
        rows += [
            row(
                f"campaign K={lag}: labels to 95% (hybrid)",
                str(hybrid["labels_to_95"]),
                f"random: {rnd['labels_to_95']}",
                f"final {hybrid['final_accuracy_mean']:.3f} vs {rnd['final_accuracy_mean']:.3f}",
                quick or (hybrid["labels_to_95"] is not None and hybrid["labels_to_95"] <= 200),
            ),
            row(
                f"campaign K={lag}: hybrid above random >=100",
                "yes" if above else "no",
                "",
                f"max gap to offline replay {within:.3f}"
                + ("" if live["finished"] else f"; UNFINISHED, logs in {workdir}"),
                above and within <= 0.02 and live["finished"],
            ),
            row(
                f"campaign K={lag}: spam share, labels/item",
                f"{hybrid['spam_share_mean']:.1%}, {hybrid['labels_per_item_mean']:.2f}",
                "",
                f"wall {live['wall_seconds']:.0f} s for {len(arms)} campaigns",
            ),
        ]
    results["rows"] = rows
    return results


if __name__ == "__main__":
    standalone(NAME, run)
