"""Consensus under bad crews: accuracy of each method against the truth, spammer detection AUC.

    .venv/bin/python bench/bench_consensus.py [--quick]

Three seeded crews of 20 annotators, 3 labels per item (distinct annotators), 5 seeds each:

* ``spammers``: 5 classes; 14 good annotators (accuracy 0.7, errors uniform) and 6 (30%)
  uniform spammers.
* ``adversaries``: binary; 14 good annotators (accuracy 0.8) and 6 (30%) adversaries who give
  the wrong class with probability 0.8.
* ``confusers``: 5 classes; 14 good annotators (accuracy 0.7) and 6 who, when wrong (40%), give
  the next class: a systematic confusion only full confusion matrices can learn.

Methods: labelloop's majority vote, Dawid-Skene, shrunk Dawid-Skene, one-coin and ``auto``
(``labelloop_qa.domain.aggregation``) beside crowd-kit's MajorityVote, DawidSkene,
OneCoinDawidSkene and MACE, all on the same ratings; accuracy = share of items whose consensus
equals the simulated truth (mean over seeds). Spammer detection: ROC AUC over annotators of
labelloop's spammer score (``annotators.spammer_score`` of each annotator's soft confusion
tally under the ``auto`` consensus) beside MACE's spamming probability. For the adversaries the
flagging signal is the estimated accuracy (an adversary is below chance, not a spammer), so the
AUC of ``1 - estimated accuracy`` is reported beside ``1 -`` crowd-kit DawidSkene's accuracy.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd

from harness import row, standalone
from labelloop_qa.domain.aggregation import aggregate, choose_method
from labelloop_qa.domain.annotators import spammer_score, tally_batch
from labelloop_qa.domain.crowd import simulate_crew

NAME = "consensus"
N_ANNOTATORS = 20
N_BAD = 6

SCENARIOS: dict[str, dict[str, Any]] = {
    "spammers": {"classes": 5, "bad": "spammer", "good_accuracy": 0.7, "bad_accuracy": 0.7},
    "adversaries": {"classes": 2, "bad": "adversary", "good_accuracy": 0.8, "bad_accuracy": 0.8},
    "confusers": {"classes": 5, "bad": "confuser", "good_accuracy": 0.7, "bad_accuracy": 0.6},
}
LABELLOOP_METHODS = ("majority", "dawid-skene", "shrunk-dawid-skene", "one-coin", "auto")


def _auc(is_bad: np.ndarray, score: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    ok = ~np.isnan(score)
    if len(set(is_bad[ok].tolist())) < 2:
        return None
    return float(roc_auc_score(is_bad[ok], score[ok]))


def one_seed(spec: dict[str, Any], n_items: int, seed: int) -> dict[str, Any]:
    from crowdkit.aggregation import MACE, DawidSkene, MajorityVote, OneCoinDawidSkene

    behaviours = ["good"] * (N_ANNOTATORS - N_BAD) + [spec["bad"]] * N_BAD
    accuracies = [spec["good_accuracy"]] * (N_ANNOTATORS - N_BAD) + [spec["bad_accuracy"]] * N_BAD
    crew = simulate_crew(
        n_items=n_items,
        n_classes=spec["classes"],
        behaviours=behaviours,
        accuracies=accuracies,
        labels_per_item=3,
        random_state=seed,
    )
    r, truth = crew.ratings, crew.truth
    is_bad = np.array([b != "good" for b in crew.behaviours])
    acc: dict[str, float] = {}
    seconds: dict[str, float] = {}

    def timed(name: str, fn: Any) -> Any:
        start = time.perf_counter()
        out = fn()
        seconds[name] = time.perf_counter() - start
        return out

    consensus = {}
    for method in LABELLOOP_METHODS:
        c = timed(f"labelloop {method}", lambda m=method: aggregate(r, m))
        consensus[method] = c
        acc[f"labelloop {method}"] = float((c.label == truth).mean())
    frame = pd.DataFrame({"task": r.item, "worker": r.annotator, "label": r.label})
    anchors = {
        "crowd-kit MajorityVote": MajorityVote(),
        "crowd-kit DawidSkene": DawidSkene(n_iter=100),
        "crowd-kit OneCoinDawidSkene": OneCoinDawidSkene(n_iter=100),
        "crowd-kit MACE": MACE(random_state=seed),
    }
    for name, model in anchors.items():
        labels = timed(name, lambda m=model: m.fit_predict(frame)).sort_index()
        acc[name] = float((labels.reindex(range(r.n_items)).to_numpy() == truth).mean())

    # spammer detection: labelloop's score from each annotator's tally under the auto consensus
    tallies = tally_batch(r, consensus["auto"])
    classes = [str(c) for c in r.classes.tolist()]
    spam = np.full(r.n_annotators, np.nan)
    est_acc = np.full(r.n_annotators, np.nan)
    for i, annotator in enumerate(r.annotator_ids.tolist()):
        conf = tallies[str(annotator)].confusion_matrix(classes)
        spam[i] = spammer_score(conf) if spammer_score(conf) is not None else np.nan
        est_acc[i] = np.trace(conf) / conf.sum()
    mace = anchors["crowd-kit MACE"]
    _, names = pd.factorize(frame["worker"])
    mace_spam = np.full(r.n_annotators, np.nan)
    mace_spam[np.asarray(names, dtype=int)] = mace.spamming_[:, 0]
    ds = anchors["crowd-kit DawidSkene"]
    errors = ds.errors_  # index (worker, given label), columns: true label
    ds_acc = np.full(r.n_annotators, np.nan)
    for w in range(r.n_annotators):
        e = errors.loc[w]
        diag = sum(float(e.loc[k, k]) if k in e.index else 0.0 for k in e.columns)
        ds_acc[w] = diag / len(e.columns)
    return {
        "accuracy": acc,
        "seconds": seconds,
        "auto_method": choose_method(r)[0],
        "auc": {
            "labelloop spammer score": _auc(is_bad, spam),
            "crowd-kit MACE spamming": _auc(is_bad, mace_spam),
            "labelloop 1 - estimated accuracy": _auc(is_bad, 1 - est_acc),
            "crowd-kit DawidSkene 1 - accuracy": _auc(is_bad, 1 - ds_acc),
        },
    }


def run(quick: bool) -> dict[str, Any]:
    seeds = [0] if quick else [0, 1, 2, 3, 4]
    n_items = 500 if quick else 2_000
    out: dict[str, Any] = {"seeds": seeds, "n_items": n_items, "n_annotators": N_ANNOTATORS}
    rows = []
    for name, spec in SCENARIOS.items():
        per_seed = [one_seed(spec, n_items, s) for s in seeds]

        def mean(key: str, field: str, runs: list[dict[str, Any]] = per_seed) -> float | None:
            values = [r[field][key] for r in runs if r[field][key] is not None]
            return float(np.mean(values)) if values else None

        accuracy = {k: mean(k, "accuracy") for k in per_seed[0]["accuracy"]}
        auc = {k: mean(k, "auc") for k in per_seed[0]["auc"]}
        seconds = {k: mean(k, "seconds") for k in per_seed[0]["seconds"]}
        out[name] = {
            "spec": spec,
            "accuracy": accuracy,
            "auc": auc,
            "seconds": seconds,
            "auto_method": [r["auto_method"] for r in per_seed],
            "per_seed": per_seed,
        }
        best_anchor = max(
            (k for k in accuracy if k.startswith("crowd-kit")), key=lambda k: accuracy[k] or 0
        )
        best_any = max(accuracy, key=lambda k: accuracy[k] or 0)
        for method in LABELLOOP_METHODS:
            ours = accuracy[f"labelloop {method}"] or 0.0
            theirs = accuracy[best_anchor] or 0.0
            best = accuracy[best_any] or 0.0
            rows.append(
                row(
                    f"{name}: accuracy, labelloop {method}",
                    f"{ours:.3f}",
                    f"{best_anchor} {theirs:.3f}",
                    f"{ours - theirs:+.3f}; best of all {best_any} {best:.3f}",
                    ours >= best - 0.005 if method == "auto" else None,
                )
            )
        anchors_line = ", ".join(
            f"{k.removeprefix('crowd-kit ')} {v:.3f}"
            for k, v in accuracy.items()
            if k.startswith("crowd-kit") and v is not None
        )
        rows.append(row(f"{name}: crowd-kit accuracies", "", anchors_line, "", None))
        if name == "spammers":
            ours_auc, theirs_auc = auc["labelloop spammer score"], auc["crowd-kit MACE spamming"]
            label = "spammer AUC (spammer score vs MACE)"
        else:
            ours_auc = auc["labelloop 1 - estimated accuracy"]
            theirs_auc = auc["crowd-kit DawidSkene 1 - accuracy"]
            label = f"{spec['bad']} AUC (1 - est. accuracy vs DS)"
        rows.append(
            row(
                f"{name}: {label}",
                f"{ours_auc:.3f}" if ours_auc is not None else "n/a",
                f"{theirs_auc:.3f}" if theirs_auc is not None else "n/a",
                "",
                None,
            )
        )
    out["rows"] = rows
    return out


if __name__ == "__main__":
    standalone(NAME, run)
