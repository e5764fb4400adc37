"""Learning curves of the active-learning benchmarks: the seed labels, and per strategy the mean
curve over seeds, labels to each target, the area under the curve and the summary rows.

A curve is ``curve(data, strategy, seed, budget) -> dict`` holding ``labels`` (the labels used
after each batch), one list per measure (``entity_f1``, ``accuracy``, ...) and the seconds spent
(``train_seconds``, ...). Every seed's curve has the same ``labels``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from harness import row
from labelloop.project import SamplingStrategy, TrainingConfig
from labelloop_sampler.domain.selection import select
from labelloop_trainer.domain.estimators import (
    Estimator,
    InputKind,
    aligned_proba,
    make_pipeline,
    regularization_grid,
)
from labelloop_trainer.domain.evaluation import evaluate
from labelloop_trainer.domain.training import LabeledData, train_round

SECONDS = {"train": 2, "select": 3}
"""The seconds a curve reports, and the decimals their totals keep."""


def fit_classifier(
    rows: npt.NDArray[Any],
    inputs: npt.NDArray[Any],
    y: npt.NDArray[Any],
    classes: list[str],
    *,
    kind: InputKind,
    estimator: Estimator,
) -> tuple[Any, float]:
    """The trainer's single-label round on the items ``rows`` (their ``inputs``, texts or
    vectors as ``kind`` says, labeled ``y``), tuned as each round tunes it; its model and the
    seconds it took."""
    n = len(rows)
    labeled = LabeledData(rows.astype(str), inputs, y, np.asarray(["train"] * n), np.ones(n))
    started = time.perf_counter()
    result = train_round(
        make_pipeline(kind, estimator, 0),
        labeled,
        classes,
        current_model=None,
        fresh=None,
        tolerance=0.01,
        random_state=0,
        grid=regularization_grid(TrainingConfig(estimator=estimator), kind),
    )
    return result.model, time.perf_counter() - started


def accuracy_of(
    model: Any, inputs: npt.NDArray[Any], y: npt.NDArray[Any], classes: list[str]
) -> tuple[float, float]:
    """Held-out accuracy and macro-F1 of a single-label model."""
    proba = aligned_proba(model, inputs, classes)
    predicted = np.asarray(classes, dtype=object)[np.argmax(proba, axis=1)]
    ev = evaluate(y, predicted, classes)
    return float(ev.accuracy), float(ev.macro_f1)


def seed_labels(n: int, size: int, seed: int) -> npt.NDArray[np.bool_]:
    """Which of the ``n`` pool items are labeled first: ``size`` of them at random."""
    rng = np.random.default_rng(seed)
    labeled = np.zeros(n, dtype=bool)
    labeled[rng.choice(n, size=size, replace=False)] = True
    return labeled


def stratified_split(
    y: npt.NDArray[Any], classes: Sequence[str], seed: int
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Stratified 70/30 positions into ``y``: the pool, then the held-out test set."""
    rng = np.random.default_rng(seed)
    pool, test = [], []
    for name in classes:
        members = rng.permutation(np.flatnonzero(y == name))
        n_test = round(len(members) * 0.3)
        test.extend(members[:n_test].tolist())
        pool.extend(members[n_test:].tolist())
    return np.sort(np.asarray(pool)), np.sort(np.asarray(test))


class Vectors(Protocol):
    """A benchmark's items as the ingester's feature vectors, their labels and the classes."""

    X: npt.NDArray[Any]
    y: npt.NDArray[Any]
    classes: list[str]


def vector_curve(
    data: Vectors,
    strategy: str,
    seed: int,
    budget: int,
    *,
    seed_size: int,
    batch: int,
    estimator: Estimator,
) -> dict[str, Any]:
    """The loop on feature vectors (the sampler's ``select``, the trainer's round) from
    ``seed_size`` random labels, ``batch`` more a round up to ``budget``: labels used and
    held-out accuracy and macro-F1 after each round, and the seconds spent."""
    pool, test = stratified_split(data.y, data.classes, seed)
    labeled = seed_labels(len(pool), seed_size, seed)
    sizes: list[int] = []
    accuracy: list[float] = []
    macro: list[float] = []
    train_seconds = select_seconds = 0.0
    round_no = 0
    while True:
        rows = pool[labeled]
        model, seconds = fit_classifier(
            rows, data.X[rows], data.y[rows], data.classes, kind="vectors", estimator=estimator
        )
        train_seconds += seconds
        sizes.append(int(labeled.sum()))
        acc, f1 = accuracy_of(model, data.X[test], data.y[test], data.classes)
        accuracy.append(acc)
        macro.append(f1)
        if labeled.sum() >= budget:
            break
        candidates = np.flatnonzero(~labeled)
        proba = aligned_proba(model, data.X[pool[candidates]], data.classes)
        started = time.perf_counter()
        chosen = select(
            SamplingStrategy(strategy),
            min(batch, budget - int(labeled.sum())),
            n_candidates=len(candidates),
            X=data.X[pool[candidates]],
            proba=proba,
            random_state=seed * 1000 + round_no,
        )
        select_seconds += time.perf_counter() - started
        labeled[candidates[chosen.indices]] = True
        round_no += 1
    return {
        "labels": sizes,
        "accuracy": accuracy,
        "macro_f1": macro,
        "train_seconds": train_seconds,
        "select_seconds": select_seconds,
    }


def vector_anchor(data: Vectors, seed: int, *, estimator: Estimator) -> dict[str, Any]:
    """The same model trained on every label of the pool of :func:`vector_curve`'s split."""
    pool, test = stratified_split(data.y, data.classes, seed)
    model, seconds = fit_classifier(
        pool, data.X[pool], data.y[pool], data.classes, kind="vectors", estimator=estimator
    )
    acc, f1 = accuracy_of(model, data.X[test], data.y[test], data.classes)
    return {"labels": len(pool), "accuracy": acc, "macro_f1": f1, "train_seconds": seconds}


def vector_strategies(
    data: Vectors,
    strategies: Sequence[str],
    *,
    seeds: Sequence[int],
    budget: int,
    targets: Sequence[float],
    seed_size: int,
    batch: int,
    estimator: Estimator,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The offline anchor over ``seeds`` (its mean accuracy and macro-F1, and each seed's), then
    each strategy's :func:`summary` of its :func:`vector_curve` over the same seeds."""
    anchors = [vector_anchor(data, s, estimator=estimator) for s in seeds]
    offline = float(np.mean([a["accuracy"] for a in anchors]))
    anchor = {
        "accuracy_mean": offline,
        "macro_f1_mean": float(np.mean([a["macro_f1"] for a in anchors])),
        "per_seed": anchors,
    }
    found: dict[str, Any] = {}
    for strategy in strategies:
        per_seed = [
            vector_curve(
                data,
                strategy,
                s,
                budget,
                seed_size=seed_size,
                batch=batch,
                estimator=estimator,
            )
            for s in seeds
        ]
        found[strategy] = summary(
            per_seed, "accuracy", also=["macro_f1"], targets=targets, offline=offline
        )
    return anchor, found


def labels_to(sizes: Sequence[int], values: npt.NDArray[Any], target: float) -> int | None:
    """The labels at which ``values`` first reaches ``target``; ``None`` if it never does."""
    hit = np.flatnonzero(values >= target)
    return int(sizes[hit[0]]) if len(hit) else None


def summary(
    per_seed: Sequence[Mapping[str, Any]],
    measure: str,
    *,
    also: Sequence[str] = (),
    targets: Sequence[float],
    offline: float,
    extra: Mapping[str, Any] | None = None,
    seconds: Mapping[str, int] = SECONDS,
) -> dict[str, Any]:
    """One strategy's curves over seeds: the mean of ``measure`` (and of each of ``also``),
    the labels to each target on the mean and on each seed's curve, the area under the mean
    curve, its last value and share of the ``offline`` anchor, ``extra``, and the seconds."""
    sizes = per_seed[0]["labels"]
    values = np.array([p[measure] for p in per_seed], dtype=np.float64)
    mean = values.mean(axis=0)
    found: dict[str, Any] = {"labels": sizes, f"mean_{measure}": mean.round(4).tolist()}
    for name in also:
        found[f"mean_{name}"] = np.mean([p[name] for p in per_seed], axis=0).round(4).tolist()
    found |= {
        "labels_to": {f"{t:.2f}": labels_to(sizes, mean, t) for t in targets},
        "labels_to_per_seed": {
            f"{t:.2f}": [labels_to(sizes, v, t) for v in values] for t in targets
        },
        # area under the learning curve, normalised by the label range: the mean measure
        "aulc": float(np.trapezoid(mean, sizes) / (sizes[-1] - sizes[0])),
        f"final_{measure}": float(mean[-1]),
        "share_of_offline_anchor": float(mean[-1] / offline),
        **(extra or {}),
    }
    for name, decimals in seconds.items():
        found[f"{name}_seconds_total"] = round(
            sum(p[f"{name}_seconds"] for p in per_seed), decimals
        )
    return found


def reached(found: Mapping[str, Any], targets: Sequence[float], budget: int) -> str:
    """``0.25: 150, 0.30: >200``: the labels to each target, or more than the budget."""
    return ", ".join(
        f"{t:.2f}: {found['labels_to'][f'{t:.2f}'] or '>' + str(budget)}" for t in targets
    )


def strategy_rows(
    found: Mapping[str, Mapping[str, Any]],
    *,
    task: str,
    measure: str,
    name: str,
    targets: Sequence[float],
    budget: int,
) -> list[dict[str, Any]]:
    """A summary row per strategy of ``found``: labels to ``name`` (its ``measure``) and the
    area under the curve, against random sampling's; checked: no worse an area than random."""
    base = found["random"]
    rows = []
    for strategy, s in found.items():
        rows.append(
            row(
                f"{task} {strategy}: labels to {name} (AULC)",
                f"{reached(s, targets, budget)} ({s['aulc']:.3f})",
                f"random {reached(base, targets, budget)} ({base['aulc']:.3f})"
                if strategy != "random"
                else "",
                f"AULC {s['aulc'] - base['aulc']:+.3f} vs random; final "
                f"{s[f'final_{measure}']:.3f} = {s['share_of_offline_anchor']:.0%} of offline",
                None if strategy == "random" else s["aulc"] >= base["aulc"],
            )
        )
    return rows
