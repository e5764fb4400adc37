"""QA maths at scale: labelloop's agreement and consensus against the anchor libraries.

    .venv/bin/python bench/bench_qa_scale.py [--quick]

10k, 100k and 1M annotations (items = annotations / 4; 50 annotators, 5 classes, 3-5 labels per
item from a seeded simulated crew). Equality first, then time and peak memory:

* Krippendorff's alpha vs ``krippendorff.alpha`` (all items): equal to 1e-9.
* Fleiss' kappa vs statsmodels ``fleiss_kappa``: statsmodels needs the same number of raters on
  every item, so both run on the items with exactly 4 ratings; equal to 1e-9. labelloop's
  varying-raters Fleiss on all items is reported beside it (no anchor computes that one).
* Every annotator pair's Cohen kappa vs a loop of scikit-learn's ``cohen_kappa_score`` over the
  pairs (pairs built independently with a pandas self-merge): the whole matrix equal to 1e-9.
* Majority vote vs crowd-kit ``MajorityVote``: same labels on every item without a tie
  (crowd-kit breaks ties in data-dependent order; labelloop has a documented rule).
* Dawid-Skene vs crowd-kit ``DawidSkene``, each with its default stopping rule (labelloop: the
  log-likelihood changes by at most 1e-7 of itself; crowd-kit: the lower bound per rating by
  less than 1e-5): labels equal on at least 99.9% of the items. Then with the same number of EM
  iterations (the number labelloop's rule takes): same labels, posteriors compared.
* One-coin Dawid-Skene vs crowd-kit ``OneCoinDawidSkene``, default stopping rules: labels equal
  on at least 99.9% of the items.
* ``labelloop aggregate FILE --out OUT`` on a CSV of the same ratings (string ids), as a
  subprocess, against a script doing ``pandas.read_csv`` + crowd-kit ``DawidSkene`` + ``to_csv``
  on the same file: ``--method dawid-skene`` labels equal to the script's on at least 99.9% of
  the items; the default ``--method auto`` (which fits 7 models to choose one) timed beside it.
* ``labelloop agreement`` on a 6-row file, wall clock of the whole process (median of 5),
  against the 0.5 s it should start in, and a bare ``python -c pass`` for the floor.

The older ``bench/bench_qa.py`` (one size, 4 labels per item) still runs on its own.
"""

from __future__ import annotations

import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness import Measurement, measure, peak_memory_mb, row, speed, standalone
from labelloop_qa.domain import agreement
from labelloop_qa.domain.aggregation import dawid_skene, majority_vote, one_coin_dawid_skene
from labelloop_qa.domain.crowd import simulate_crew
from labelloop_qa.domain.ratings import Ratings

NAME = "qa_scale"
N_ANNOTATORS = 50
N_CLASSES = 5
TOL = 1e-9
AGREE = 0.999
"""Share of items on which two stopping rules (or two programs) must give the same label."""
STARTUP = 0.5
"""Seconds ``labelloop agreement`` may take on a small file, start to finish."""
LABELLOOP = Path(sys.executable).with_name("labelloop")
ANCHOR_SCRIPT = """
import sys
import pandas as pd
from crowdkit.aggregation import DawidSkene
frame = pd.read_csv(sys.argv[1], dtype=str, keep_default_na=False)
frame = frame.rename(columns={"item_id": "task", "annotator_id": "worker"})
labels = DawidSkene(n_iter=100, tol=1e-5).fit_predict(frame)
labels.rename("label").rename_axis("item_id").to_csv(sys.argv[2])
"""


def crew(n_annotations: int, seed: int = 0) -> Ratings:
    """A crew of 40 good annotators (accuracy 0.6-0.95), 5 confusers and 5 spammers.

    Every item gets 5 distinct annotators, then keeps the first 3, 4 or 5 (uniformly): 4 ratings
    per item on average, so ``n_annotations / 4`` items.
    """
    n_items = n_annotations // 4
    rng = np.random.default_rng(seed)
    behaviours = ["good"] * 40 + ["confuser"] * 5 + ["spammer"] * 5
    accuracies = np.r_[rng.uniform(0.6, 0.95, 40), np.full(10, 0.7)]
    full = simulate_crew(
        n_items=n_items,
        n_classes=N_CLASSES,
        behaviours=behaviours,
        accuracies=accuracies.tolist(),
        labels_per_item=5,
        random_state=seed,
    ).ratings
    keep_n = rng.integers(3, 6, size=n_items)
    position = np.tile(np.arange(5), n_items)
    return full.subset(position < keep_n[full.item])


def _sklearn_pairwise(r: Ratings) -> dict[tuple[int, int], float]:
    """Cohen's kappa of every annotator pair by scikit-learn, pairs built with pandas."""
    from sklearn.metrics import cohen_kappa_score

    frame = pd.DataFrame({"item": r.item, "who": r.annotator, "label": r.label})
    pairs = frame.merge(frame, on="item", suffixes=("_1", "_2"))
    pairs = pairs[pairs["who_1"] < pairs["who_2"]]
    labels = list(range(r.n_classes))
    out: dict[tuple[int, int], float] = {}
    for (a, b), group in pairs.groupby(["who_1", "who_2"], sort=True):
        if len(group) < 2:
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            out[(int(a), int(b))] = float(
                cohen_kappa_score(group["label_1"], group["label_2"], labels=labels)
            )
    return out


def _compare_pairwise(
    ours: agreement.PairwiseKappa, theirs: dict[tuple[int, int], float]
) -> tuple[float, int, bool]:
    """Max |difference| over pairs, number of pairs, and whether NaN patterns match."""
    mine = {
        (int(a), int(b)): float(k)
        for a, b, k, n in zip(ours.first, ours.second, ours.kappa, ours.n_common, strict=True)
        if n >= 2
    }
    if set(mine) != set(theirs):
        return float("inf"), len(theirs), False
    diffs = []
    same_nan = True
    for key, value in theirs.items():
        if np.isnan(value) or np.isnan(mine[key]):
            same_nan &= bool(np.isnan(value) and np.isnan(mine[key]))
            continue
        diffs.append(abs(value - mine[key]))
    return (max(diffs) if diffs else 0.0), len(theirs), same_nan


def one_size(n_annotations: int, *, repeat: int, ours: int) -> dict[str, Any]:
    """Every comparison at one size: anchors timed ``repeat`` times, labelloop's (each well under
    a second) ``ours`` times, so that a burst of load on a shared machine moves their median less.
    """
    import krippendorff
    from crowdkit.aggregation import DawidSkene, MajorityVote, OneCoinDawidSkene
    from statsmodels.stats.inter_rater import fleiss_kappa as sm_fleiss

    r = crew(n_annotations)
    counts = r.item_counts()
    totals = counts.sum(axis=1)
    out: dict[str, Any] = {
        "n_annotations": r.n_ratings,
        "n_items": r.n_items,
        "n_annotators": r.n_annotators,
        "n_classes": r.n_classes,
        "ratings_per_item": {str(k): int((totals == k).sum()) for k in (3, 4, 5)},
    }
    t: dict[str, Any] = {}
    checks: dict[str, Any] = {}

    # ---------------------------------------------------------------- Krippendorff
    ours_alpha, t["labelloop_alpha"] = measure(lambda: agreement.krippendorff_alpha(r), repeat=ours)

    def anchor_alpha() -> float:
        matrix = np.full((r.n_annotators, r.n_items), np.nan)
        matrix[r.annotator, r.item] = r.label
        return float(krippendorff.alpha(reliability_data=matrix, level_of_measurement="nominal"))

    kr_alpha, t["krippendorff_alpha"] = measure(anchor_alpha, repeat=repeat)
    checks["alpha"] = {
        "labelloop": ours_alpha,
        "anchor": kr_alpha,
        "abs_diff": abs(ours_alpha - kr_alpha),
    }

    # ---------------------------------------------------------------- Fleiss
    four = counts[totals == 4]
    ours_f4, t["labelloop_fleiss_4_raters"] = measure(
        lambda: agreement.fleiss_kappa(four), repeat=ours
    )
    sm_f4, t["statsmodels_fleiss_4_raters"] = measure(lambda: float(sm_fleiss(four)), repeat=repeat)
    ours_fleiss_all = agreement.fleiss_kappa(r)
    checks["fleiss_4_raters"] = {
        "n_items": len(four),
        "labelloop": ours_f4,
        "anchor": sm_f4,
        "abs_diff": abs(ours_f4 - sm_f4),
    }
    checks["fleiss_all_items_varying_raters"] = ours_fleiss_all

    # ---------------------------------------------------------------- Cohen matrix
    ours_pairs, t["labelloop_cohen_pairs"] = measure(
        lambda: agreement.cohen_kappa_pairs(r, min_common=2), repeat=ours
    )
    sk_pairs, t["sklearn_cohen_loop"] = measure(lambda: _sklearn_pairwise(r), repeat=repeat)
    diff, n_pairs, same_nan = _compare_pairwise(ours_pairs, sk_pairs)
    checks["cohen_matrix"] = {"pairs": n_pairs, "max_abs_diff": diff, "same_undefined": same_nan}

    # ---------------------------------------------------------------- consensus
    frame = pd.DataFrame({"task": r.item, "worker": r.annotator, "label": r.label})
    ours_mv, t["labelloop_majority_vote"] = measure(lambda: majority_vote(r), repeat=ours)
    ck_mv, t["crowdkit_majority_vote"] = measure(
        lambda: MajorityVote().fit_predict(frame), repeat=repeat
    )
    untied = (counts == counts.max(axis=1, keepdims=True)).sum(axis=1) == 1
    ck_mv_labels = ck_mv.sort_index().to_numpy()
    checks["majority_vote"] = {
        "untied_items": int(untied.sum()),
        "tied_items": int((~untied).sum()),
        "mismatches_on_untied": int((ck_mv_labels[untied] != ours_mv.label[untied]).sum()),
    }

    # ---------------------------------------------------------------- Dawid-Skene
    default_model = DawidSkene(n_iter=100, tol=1e-5)
    ck_default, t["crowdkit_dawid_skene_default_stop"] = measure(
        lambda: default_model.fit_predict(frame), repeat=repeat, memory=False
    )
    ours_default, t["labelloop_dawid_skene_default_stop"] = measure(
        lambda: dawid_skene(r), repeat=ours, memory=False
    )
    by_parameters, t["labelloop_dawid_skene_parameter_rule"] = measure(
        lambda: dawid_skene(r, stop="parameters"), repeat=1, memory=False
    )
    n_iter = ours_default.n_iter
    # a negative tol never stops early: exactly n_iter EM iterations on both sides
    ours_ds, ours_ds_t = measure(
        lambda: dawid_skene(r, tol=-1.0, max_iter=n_iter), repeat=ours, memory=False
    )

    def crowdkit_ds(iterations: int = n_iter) -> pd.DataFrame:
        model = DawidSkene(n_iter=iterations, tol=-np.inf)
        model.fit(frame)
        return model.probas_

    ck_post, ck_ds_t = measure(crowdkit_ds, repeat=repeat, memory=False)
    # EM's working set is the same every iteration: measure peak memory over 5 of them
    t["labelloop_dawid_skene"] = replace(
        ours_ds_t, peak_mb=peak_memory_mb(lambda: dawid_skene(r, tol=-1.0, max_iter=5))
    )
    t["crowdkit_dawid_skene"] = replace(ck_ds_t, peak_mb=peak_memory_mb(lambda: crowdkit_ds(5)))
    ck_post = ck_post.sort_index()
    ck_post = ck_post[sorted(ck_post.columns)]
    ck_labels = ck_post.to_numpy().argmax(axis=1)
    checks["dawid_skene"] = {
        "em_iterations": n_iter,
        "label_mismatches": int((ck_labels != ours_ds.label).sum()),
        "posterior_max_abs_diff": float(np.abs(ck_post.to_numpy() - ours_ds.posterior).max()),
        "labelloop_default_stop_iterations": ours_default.n_iter,
        "crowdkit_default_stop_iterations": len(default_model.loss_history_),
        "default_stop_label_agreement": float(
            (ck_default.sort_index().to_numpy() == ours_default.label).mean()
        ),
        "labelloop_parameter_rule_iterations": by_parameters.n_iter,
        "parameter_rule_vs_default_label_agreement": float(
            (by_parameters.label == ours_default.label).mean()
        ),
    }

    one_coin_model = OneCoinDawidSkene(n_iter=100, tol=1e-5)
    ck_one_coin, t["crowdkit_one_coin_default_stop"] = measure(
        lambda: one_coin_model.fit_predict(frame), repeat=repeat, memory=False
    )
    ours_one_coin, t["labelloop_one_coin_default_stop"] = measure(
        lambda: one_coin_dawid_skene(r), repeat=ours, memory=False
    )
    checks["one_coin"] = {
        "labelloop_iterations": ours_one_coin.n_iter,
        "crowdkit_iterations": len(one_coin_model.loss_history_),
        "label_agreement": float(
            (ck_one_coin.sort_index().to_numpy() == ours_one_coin.label).mean()
        ),
    }

    # ---------------------------------------------------------------- the CLI on a file
    with tempfile.TemporaryDirectory() as tmp:
        t_cli, checks["aggregate_cli"] = _aggregate_cli(r, Path(tmp), repeat=repeat)
    t.update(t_cli)
    out["timings"] = t
    out["checks"] = checks
    return out


def _wall(command: list[str], *, repeat: int, cpu: list[float] | None = None) -> Measurement:
    """Median wall time of a whole process (start, imports, work, exit); its CPU seconds (user
    and system, which load on the machine hardly moves) appended to ``cpu`` if given."""
    runs = []
    for _ in range(max(1, repeat)):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, timeout=900)
        runs.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if cpu is not None:
            cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return Measurement(statistics.median(runs), runs, None)


def _aggregate_cli(
    r: Ratings, folder: Path, *, repeat: int
) -> tuple[dict[str, Measurement], dict[str, Any]]:
    """``labelloop aggregate`` vs read_csv + crowd-kit + to_csv, on one CSV of string ids."""
    source = folder / "annotations.csv"
    pd.DataFrame(
        {
            "item_id": np.char.add("item-", r.item.astype(str)),
            "annotator_id": np.char.add("ann-", r.annotator.astype(str)),
            "label": np.char.add("c", r.label.astype(str)),
        }
    ).to_csv(source, index=False)
    out = {m: folder / f"labels-{m}.csv" for m in ("anchor", "dawid-skene", "auto")}
    cpu: dict[str, list[float]] = {m: [] for m in out}
    t = {
        "crowdkit_read_csv_dawid_skene_file": _wall(
            [sys.executable, "-c", ANCHOR_SCRIPT, str(source), str(out["anchor"])],
            repeat=repeat,
            cpu=cpu["anchor"],
        )
    }
    for method in ("dawid-skene", "auto"):
        command = [str(LABELLOOP), "aggregate", str(source), "--method", method]
        t[f"labelloop_aggregate_{method}_file"] = _wall(
            [*command, "--out", str(out[method])], repeat=repeat, cpu=cpu[method]
        )
    labels = {m: pd.read_csv(p, dtype=str).set_index("item_id")["label"] for m, p in out.items()}
    anchor = labels["anchor"].sort_index()
    agreement = {
        m: float((labels[m].sort_index() == anchor).mean())
        for m in ("dawid-skene", "auto")
        if labels[m].index.sort_values().equals(anchor.index)
    }
    return t, {
        "file_mb": round(source.stat().st_size / 2**20, 1),
        "label_agreement": agreement,
        "cpu_seconds": {m: statistics.median(c) for m, c in cpu.items()},
    }


def startup(*, repeat: int = 5) -> dict[str, Any]:
    """``labelloop agreement`` on a 6-row CSV, whole process, and a bare interpreter."""
    with tempfile.TemporaryDirectory() as tmp:
        small = Path(tmp) / "six.csv"
        small.write_text(
            "item_id,annotator_id,label\n1,ann,x\n1,bob,x\n2,ann,y\n2,bob,y\n3,ann,x\n3,bob,y\n"
        )
        cpu: list[float] = []
        ours = _wall([str(LABELLOOP), "agreement", str(small)], repeat=repeat, cpu=cpu)
    bare = _wall([sys.executable, "-c", "pass"], repeat=repeat)
    return {
        "labelloop_agreement_6_rows": ours,
        "labelloop_agreement_6_rows_cpu_seconds": statistics.median(cpu),
        "python_bare_start": bare,
    }


def _fmt_t(m: Any) -> str:
    mem = f", {m.peak_mb:.0f} MB" if m.peak_mb is not None else ""
    return f"{m.seconds:.3f} s{mem}"


def _rows(size: str, res: dict[str, Any]) -> list[dict[str, Any]]:
    t, c = res["timings"], res["checks"]
    return [
        row(
            f"{size} alpha (vs krippendorff)",
            _fmt_t(t["labelloop_alpha"]),
            _fmt_t(t["krippendorff_alpha"]),
            speed(t["labelloop_alpha"].seconds, t["krippendorff_alpha"].seconds),
            c["alpha"]["abs_diff"] <= TOL,
        ),
        row(
            f"{size} Fleiss, 4-rater items (vs statsmodels)",
            _fmt_t(t["labelloop_fleiss_4_raters"]),
            _fmt_t(t["statsmodels_fleiss_4_raters"]),
            speed(t["labelloop_fleiss_4_raters"].seconds, t["statsmodels_fleiss_4_raters"].seconds),
            c["fleiss_4_raters"]["abs_diff"] <= TOL,
        ),
        row(
            f"{size} Cohen, {c['cohen_matrix']['pairs']} pairs (vs sklearn loop)",
            _fmt_t(t["labelloop_cohen_pairs"]),
            _fmt_t(t["sklearn_cohen_loop"]),
            speed(t["labelloop_cohen_pairs"].seconds, t["sklearn_cohen_loop"].seconds),
            c["cohen_matrix"]["max_abs_diff"] <= TOL and c["cohen_matrix"]["same_undefined"],
        ),
        row(
            f"{size} majority vote (vs crowd-kit)",
            _fmt_t(t["labelloop_majority_vote"]),
            _fmt_t(t["crowdkit_majority_vote"]),
            speed(t["labelloop_majority_vote"].seconds, t["crowdkit_majority_vote"].seconds),
            c["majority_vote"]["mismatches_on_untied"] == 0,
        ),
        row(
            f"{size} Dawid-Skene, default stopping (vs crowd-kit)",
            f"{t['labelloop_dawid_skene_default_stop'].seconds:.3f} s, "
            f"{c['dawid_skene']['labelloop_default_stop_iterations']} iter",
            f"{t['crowdkit_dawid_skene_default_stop'].seconds:.3f} s, "
            f"{c['dawid_skene']['crowdkit_default_stop_iterations']} iter",
            speed(
                t["labelloop_dawid_skene_default_stop"].seconds,
                t["crowdkit_dawid_skene_default_stop"].seconds,
            )
            + f", labels {c['dawid_skene']['default_stop_label_agreement']:.5f} equal",
            c["dawid_skene"]["default_stop_label_agreement"] >= AGREE,
        ),
        row(
            f"{size} Dawid-Skene, {c['dawid_skene']['em_iterations']} EM iter (vs crowd-kit)",
            _fmt_t(t["labelloop_dawid_skene"]),
            _fmt_t(t["crowdkit_dawid_skene"]),
            speed(t["labelloop_dawid_skene"].seconds, t["crowdkit_dawid_skene"].seconds),
            c["dawid_skene"]["label_mismatches"] == 0,
        ),
        row(
            f"{size} one-coin, default stopping (vs crowd-kit)",
            f"{t['labelloop_one_coin_default_stop'].seconds:.3f} s, "
            f"{c['one_coin']['labelloop_iterations']} iter",
            f"{t['crowdkit_one_coin_default_stop'].seconds:.3f} s, "
            f"{c['one_coin']['crowdkit_iterations']} iter",
            speed(
                t["labelloop_one_coin_default_stop"].seconds,
                t["crowdkit_one_coin_default_stop"].seconds,
            )
            + f", labels {c['one_coin']['label_agreement']:.5f} equal",
            c["one_coin"]["label_agreement"] >= AGREE,
        ),
        *(
            row(
                f"{size} `labelloop aggregate --method {m}` "
                f"({c['aggregate_cli']['file_mb']} MB CSV, vs read_csv + crowd-kit)",
                _fmt_t(t[f"labelloop_aggregate_{m}_file"]),
                _fmt_t(t["crowdkit_read_csv_dawid_skene_file"]),
                speed(
                    t[f"labelloop_aggregate_{m}_file"].seconds,
                    t["crowdkit_read_csv_dawid_skene_file"].seconds,
                )
                + f", labels {c['aggregate_cli']['label_agreement'].get(m, 0.0):.5f} equal",
                c["aggregate_cli"]["label_agreement"].get(m, 0.0) >= AGREE
                if m == "dawid-skene"
                else None,
            )
            for m in ("dawid-skene", "auto")
        ),
    ]


def run(quick: bool) -> dict[str, Any]:
    sizes = [10_000] if quick else [10_000, 100_000, 1_000_000]
    results: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    for n in sizes:
        label = f"{n // 1000}k" if n < 1_000_000 else f"{n // 1_000_000}M"
        repeat = 1 if quick else 3
        results[label] = one_size(n, repeat=repeat, ours=1 if quick else 7)
        rows += _rows(label, results[label])
    start = startup(repeat=5)
    rows.append(
        row(
            "`labelloop agreement` on a 6-row file (vs `python -c pass`)",
            _fmt_t(start["labelloop_agreement_6_rows"]),
            _fmt_t(start["python_bare_start"]),
            f"target <= {STARTUP} s wall: "
            + ("met" if start["labelloop_agreement_6_rows"].seconds <= STARTUP else "NOT met")
            + f" (CPU {start['labelloop_agreement_6_rows_cpu_seconds']:.2f} s)",
            None,  # a time, not an equality: the machine's load decides as much as the code
        )
    )
    return {"sizes": results, "startup": start, "rows": rows}


if __name__ == "__main__":
    standalone(NAME, run)
