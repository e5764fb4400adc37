"""The campaign report: one self-contained HTML page with the plots a team looks at."""

from __future__ import annotations

import base64
import html
import io
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

__all__ = [
    "labels_to_match",
    "next_steps",
    "random_at",
    "screenshot",
    "verdict_line",
    "verdict_sentences",
    "write_report",
]


def _figure_png(draw: Any) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=100)
    draw(ax)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _learning_curve(summary: dict[str, Any]) -> Any:
    def draw(ax: Any) -> None:
        for key, label, style in (
            ("learning_curve", summary["strategy"], "o-"),
            ("random_baseline_curve", "random sampling", "s--"),
        ):
            points = summary.get(key) or []
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, style, label=label)
        match = labels_to_match(summary)
        if match is not None:
            target, labels, _ = match
            ax.axhline(
                target, color="grey", lw=0.8, ls=":", label=f"random's final accuracy {target:.3f}"
            )
            if labels is not None:
                ax.axvline(labels, color="#2ca02c", lw=0.8, ls=":")
                ax.annotate(
                    f"{summary['strategy']}: {labels} labels",
                    (labels, target),
                    textcoords="offset points",
                    xytext=(6, -14),
                    fontsize=9,
                    color="#2ca02c",
                )
        ax.axvline(summary["budget_labels"], color="black", lw=0.6, label="budget")
        ax.set_xlabel("labels (items labeled, gold excluded: what the budget counts)")
        ax.set_ylabel("held-out accuracy")
        ax.set_title("Learning curve")
        ax.legend(loc="lower right", fontsize=9)
        ax.grid(alpha=0.3)

    return draw


def _agreement(summary: dict[str, Any]) -> Any:
    def draw(ax: Any) -> None:
        rows = [b for b in summary["batches"] if b["krippendorff_alpha"] is not None]
        xs = list(range(1, len(rows) + 1))
        ax.plot(xs, [b["krippendorff_alpha"] for b in rows], "o-", label="Krippendorff's α")
        kappas = [b["cohen_kappa_mean"] for b in rows]
        if any(k is not None for k in kappas):
            ax.plot(
                xs,
                [k if k is not None else float("nan") for k in kappas],
                "s--",
                label="mean Cohen's κ",
            )
        threshold = summary.get("min_alpha", 0.6)
        ax.axhline(threshold, color="red", lw=0.8, ls=":", label=f"alert under α {threshold:g}")
        ax.set_ylim(-0.1, 1.05)
        ax.set_xticks(xs, [str(b["round"]) for b in rows])
        ax.set_xlabel("round (labeling batches)")
        ax.set_title("Agreement per batch")
        ax.legend(loc="lower right")
        ax.grid(alpha=0.3)

    return draw


def _annotators(summary: dict[str, Any]) -> Any:
    def draw(ax: Any) -> None:
        people = summary["annotators"]
        names = [a["id"] for a in people]
        est = [a["estimated_accuracy"] or 0.0 for a in people]
        colors = ["#d62728" if a["flagged"] else "#1f77b4" for a in people]
        ax.barh(names, est, color=colors)
        for i, a in enumerate(people):
            if a["gold_accuracy"] is not None:
                ax.plot(a["gold_accuracy"], i, "k|", markersize=14)
        ax.set_xlim(0, 1)
        ax.set_xlabel("estimated accuracy (bar) and gold accuracy (|); red = flagged")
        ax.set_title("Annotator quality")
        ax.invert_yaxis()

    return draw


def _confusion(summary: dict[str, Any]) -> Any:
    def draw(ax: Any) -> None:
        cm = summary["confusion_matrix"]
        matrix = cm["matrix"] or [[0]]
        # each row as a share of its class, so an error stands out beside the large diagonal
        shares = [[v / max(sum(row), 1) for v in row] for row in matrix]
        ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
        long_names = max((len(c) for c in cm["classes"]), default=0) > 3
        ax.set_xticks(
            range(len(cm["classes"])),
            cm["classes"],
            rotation=45 if long_names else 0,
            ha="right" if long_names else "center",
        )
        ax.set_yticks(range(len(cm["classes"])), cm["classes"])
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title("Confusion matrix of the final model (held-out)")
        for i, row in enumerate(matrix):
            for j, value in enumerate(row):
                if value:
                    dark = shares[i][j] > 0.5
                    ax.text(
                        j,
                        i,
                        str(value),
                        ha="center",
                        va="center",
                        fontsize=10,
                        color="white" if dark else "#222",
                        fontweight="normal" if i == j else "bold",
                    )

    return draw


def write_report(summary: dict[str, Any], path: Path) -> None:
    """Write ``report.html`` for a campaign summary (plots are inline PNGs)."""
    figures = [_learning_curve(summary), _agreement(summary), _annotators(summary)]
    if summary.get("confusion_matrix", {}).get("matrix"):
        figures.append(_confusion(summary))
    images = "".join(f'<img src="data:image/png;base64,{_figure_png(f)}">' for f in figures)
    acc = summary.get("final_test_accuracy")
    rnd = random_at(summary, int(summary["labels_used"]))
    facts = [
        ("run", summary["run_id"]),
        ("annotations from", "a SIMULATED crew" if summary["simulation"] else "Label Studio"),
        ("labels used", f"{summary['labels_used']} of {summary['budget_labels']}"),
        ("annotations", summary["annotations_used"]),
        ("annotations per label", summary.get("labels_per_item", "-")),
        ("share of annotations by flagged annotators", _pct(summary.get("spam_share"))),
        ("items sent to expert review", summary.get("review_items", 0)),
        ("quality alerts", summary.get("quality_alerts", 0)),
        ("dead letters", summary.get("dead_letters", 0)),
        ("held-out accuracy", f"{acc:.3f}" if acc is not None else "-"),
        ("random sampling, same labels", f"{rnd[0]:.3f}" if rnd is not None else "-"),
        ("dataset", f"{summary['dataset_version']} at {summary['dataset_path']}"),
        ("cost", f"{summary['cost']['simulated_cost']} {summary['cost']['currency']}"),
        ("wall time", f"{summary['wall_seconds']} s"),
    ]
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in facts
    )
    people = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(cell)}</td>"
            for cell in (
                a["id"],
                _fmt(a["n_annotations"]),
                _fmt(a["estimated_accuracy"]),
                _gold(a),
                _trend(a.get("trend") or []),
                _confusions(a.get("confusions") or []),
                "flagged: no new tasks" if a["flagged"] else "",
            )
        )
        + "</tr>"
        for a in summary["annotators"]
    )
    findings = "".join(f"<li>{html.escape(line)}</li>" for line in verdict_sentences(summary))
    advice = "".join(f"<li>{_code(line)}</li>" for line in next_steps(summary))
    title = f"labelloop campaign {html.escape(summary['run_id'])}"
    crew = (
        '<p class="sim">Annotations came from a <strong>SIMULATED</strong> crew (the simulated '
        "backend of the annotation bridge), not from people.</p>"
        if summary["simulation"]
        else ""
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 70rem; color: #222; }}
table {{ border-collapse: collapse; margin: 1rem 0; }}
th, td {{ padding: .25rem .75rem; border-bottom: 1px solid #ddd; text-align: left; }}
img {{ max-width: 48%; margin: .5%; border: 1px solid #eee; }}
.verdict {{ background: #f4f8fb; border-left: 4px solid #1f77b4; padding: .5rem 1.5rem; }}
.verdict li {{ margin: .35rem 0; line-height: 1.4; }}
.sim {{ color: #8a4b00; }}
code {{ background: #eef; padding: 0 .25rem; }}
</style></head><body>
<h1>labelloop campaign {html.escape(summary["run_id"])}: {html.escape(summary["project"])}</h1>
{crew}
<section class="verdict"><h2>What happened</h2><ul>{findings}</ul>
<h2>What to do next</h2><ul>{advice}</ul></section>
{images}
<h2>Facts</h2>
<table>{rows}</table>
<h2>Annotators</h2>
<table><tr><th>annotator</th><th>annotations</th><th>estimated accuracy</th><th>gold</th>
<th>estimated accuracy over the last rounds</th><th>most frequent confusions (truth → given)</th>
<th>status</th></tr>{people}</table>
</body></html>
"""
    path.write_text(page, encoding="utf-8")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    if value is None:
        return "-"
    if value is True:
        return "yes"
    if value is False:
        return ""
    return str(value)


def random_at(summary: dict[str, Any], labels: int) -> tuple[float, int] | None:
    """The random arm's held-out accuracy once it had spent ``labels`` (the last point of its
    curve at or before), with the labels that point stands for; its final accuracy when it has
    no curve. ``None`` without a random arm."""
    curve = summary.get("random_baseline_curve") or []
    before = [(float(acc), int(n)) for n, acc in curve if n <= labels]
    if before:
        return before[-1]
    final = summary.get("random_baseline_final_accuracy")
    return None if final is None else (float(final), int(labels))


def verdict_line(summary: dict[str, Any]) -> str:
    """One sentence: did the chosen strategy beat random sampling with the same labels?

    A campaign that converged stops short of its budget while its random arm goes on: the arms
    are compared at the labels the campaign used, and the random arm's final figure is added."""
    acc = summary.get("final_test_accuracy")
    strategy = summary["strategy"]
    labels = int(summary["labels_used"])
    if acc is None:
        return "no model was trained"
    at = random_at(summary, labels)
    if at is None:
        return f"{strategy}: held-out accuracy {acc:.3f} at {labels} labels"
    rnd, _ = at
    gap = acc - rnd
    if abs(gap) < 0.005:
        how = "as good as"
    elif gap > 0:
        how = f"{gap * 100:.1f} points better than"
    else:
        how = f"{-gap * 100:.1f} points worse than"
    line = (
        f"{strategy} is {how} random sampling at {labels} labels ({acc:.3f} vs {rnd:.3f}, one seed)"
    )
    curve = summary.get("random_baseline_curve") or []
    final = summary.get("random_baseline_final_accuracy")
    if curve and final is not None and int(curve[-1][0]) > labels:
        line += f"; random sampling ends at {float(final):.3f} with {int(curve[-1][0])} labels"
    return line


def _pct(value: Any) -> str:
    return f"{value * 100:.1f} %" if isinstance(value, float | int) else "-"


def _gold(a: dict[str, Any]) -> str:
    if a.get("gold_accuracy") is None:
        return "-"
    return f"{a['gold_accuracy']:.2f} of {a.get('gold_n', 0)}"


def _trend(points: list[Any]) -> str:
    if not points:
        return "-"
    shown = points[-5:]
    return " → ".join(f"{acc:.2f}" for _, acc in shown)


def _confusions(cells: list[Any]) -> str:
    return ", ".join(f"{t} → {g} ({w:.1f})" for t, g, w in cells) or "-"


def _first_at(curve: list[Any], target: float) -> int | None:
    """The labels of the first point of ``curve`` at or above ``target``."""
    return next((int(n) for n, acc in curve if float(acc) >= target - 1e-9), None)


def labels_to_match(summary: dict[str, Any]) -> tuple[float, int | None, int] | None:
    """(random sampling's final accuracy, the labels the strategy needed to reach it or ``None``,
    the labels random sampling spent for it); ``None`` without a random arm's curve.

    The figure an ML lead asks for: how many labels active learning saves for the same model."""
    curve = summary.get("random_baseline_curve") or []
    final = summary.get("random_baseline_final_accuracy")
    if not curve or final is None:
        return None
    return (
        float(final),
        _first_at(summary.get("learning_curve") or [], float(final)),
        int(curve[-1][0]),
    )


def _stop_reason(summary: dict[str, Any]) -> str:
    used, budget = summary["labels_used"], summary["budget_labels"]
    if summary.get("failure"):
        return f"The campaign failed at {used} labels: {summary['failure'].splitlines()[0]}."
    if not summary.get("finished", True):
        return f"The campaign did not finish: it stopped at {used} of {budget} labels."
    if summary.get("converged"):
        return (
            f"Labeling stopped at {used} of {budget} labels because the model converged "
            f"({summary['converged']}): more labels would hardly change it."
        )
    if summary.get("budget_exhausted"):
        return f"Labeling stopped when the budget of {budget} labels was spent."
    return f"Labeling stopped at {used} of {budget} labels."


def _flagged_sentence(a: dict[str, Any], total: int) -> str:
    why = []
    if a.get("estimated_accuracy") is not None:
        why.append(f"estimated accuracy {a['estimated_accuracy']:.2f}")
    if a.get("gold_accuracy") is not None:
        why.append(f"{round(a['gold_accuracy'] * a.get('gold_n', 0))} of {a.get('gold_n', 0)} gold")
    if a.get("spammer_score") is not None:
        why.append(f"spammer score {a['spammer_score']:.2f}")
    when = f" after round {a['flagged_after_round']}" if a.get("flagged_after_round") else ""
    share = f" ({a['n_annotations'] / total * 100:.1f}% of all)" if total else ""
    return (
        f"{a['id']} was flagged by QA{when} ({', '.join(why)}) and got no new task since; "
        f"{a['n_annotations']} annotations{share} were spent on them."
    )


def verdict_sentences(summary: dict[str, Any]) -> list[str]:
    """The first screen of the report, in sentences: the result, why labeling stopped, the crew,
    the experts, what failed."""
    out = [verdict_line(summary) + "."]
    match = labels_to_match(summary)
    strategy = summary["strategy"]
    if match is not None:
        target, labels, spent = match
        if labels is not None and labels < spent:
            saved = spent - labels
            out.append(
                f"{strategy} reached random sampling's final accuracy ({target:.3f} with {spent} "
                f"labels) with {labels} labels: {saved} labels ({saved / spent * 100:.0f}%) "
                "fewer for the same model."
            )
        elif labels is None:
            out.append(
                f"{strategy} never reached random sampling's final accuracy ({target:.3f} with "
                f"{spent} labels)."
            )
    out.append(_stop_reason(summary))
    total = int(summary.get("annotations_used") or 0)
    flagged = [a for a in summary.get("annotators", []) if a.get("flagged")]
    if flagged:
        out.extend(_flagged_sentence(a, total) for a in flagged)
    else:
        out.append("QA flagged no annotator.")
    reviews = int(summary.get("review_items") or 0)
    if reviews:
        reasons = ", ".join(
            f"{n} {reason.replace('_', ' ')}"
            for reason, n in summary.get("review_reasons", {}).items()
        )
        out.append(
            f"{_n(reviews, 'item')} went to expert review" + (f" ({reasons})." if reasons else ".")
        )
    alerts = summary.get("alerts") or []
    if alerts:
        rounds = ", ".join(str(a["round"]) for a in alerts)
        out.append(
            f"{_n(len(alerts), 'quality alert')}: agreement under the project's threshold in "
            f"{'round' if len(alerts) == 1 else 'rounds'} {rounds}."
        )
    elif summary.get("quality_alerts"):
        out.append(f"{_n(int(summary['quality_alerts']), 'quality alert')}.")
    letters = int(summary.get("dead_letters") or 0)
    if letters:
        first = next(iter(summary.get("dead_letter_reasons") or {}), "")
        out.append(
            f"{_n(letters, 'message')} could not be processed and "
            f"{'was kept as a dead letter' if letters == 1 else 'were kept as dead letters'}"
            + (f", e.g. {first}." if first else ".")
        )
    else:
        out.append("Every message was processed: no dead letters.")
    return out


def next_steps(summary: dict[str, Any]) -> list[str]:
    """What the numbers suggest doing, each with the command that does it (in `backticks`)."""
    project = summary["project"]
    out = []
    if summary.get("failure") or not summary.get("finished", True):
        out.append("Read the services' logs in the run's `logs/` directory and rerun the campaign.")
    if summary.get("dead_letters"):
        out.append(
            f"Inspect the dead letters with `labelloop dlq list --project {project}` and re-drive "
            f"the fixed ones with `labelloop dlq replay`."
        )
    for a in summary.get("annotators", []):
        if a.get("flagged"):
            out.append(
                f"Check {a['id']}'s work; to let them label again: "
                f"`labelloop annotators readmit {a['id']} --project {project}`."
            )
    confused = [
        f"{t} → {g}"
        for a in summary.get("annotators", [])
        if not a.get("flagged")
        for t, g, w in (a.get("confusions") or [])
        if w >= 2
    ]
    if confused:
        out.append(
            "Annotators in good standing confuse "
            + ", ".join(sorted(set(confused))[:5])
            + ": add examples of these to the guidelines."
        )
    match = labels_to_match(summary)
    if match is not None and match[1] is None:
        out.append(
            "Active learning did not beat random sampling here: try `sampling.strategy: random` "
            "or a larger first batch, and compare the arms again."
        )
    if summary.get("converged"):
        out.append(
            f"The model converged with {summary['labels_used']} labels: the rest of the budget "
            "can go to new data, or stay unspent."
        )
    elif summary.get("budget_exhausted"):
        out.append("The budget ran out before the model converged: more labels would still help.")
    out.append(
        f"Train on the dataset: `{summary.get('dataset_path') or 'the export directory'}` "
        "(splits and manifest inside)."
    )
    return out


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _code(text: str) -> str:
    """Escape ``text``; spans between backticks become ``<code>``."""
    parts = text.split("`")
    return "".join(
        f"<code>{html.escape(p)}</code>" if i % 2 else html.escape(p) for i, p in enumerate(parts)
    )


def screenshot(report: Path, png: Path, *, width: int = 1280, height: int = 900) -> None:
    """The report's first screen as a person sees it, rendered by headless Chromium.

    Raises ``FileNotFoundError`` without a ``chromium`` (Debian's package) on the PATH."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise FileNotFoundError("no chromium on the PATH (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",  # root in a container has no user namespace for the sandbox
                "--disable-gpu",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                f"--screenshot={png.resolve()}",
                report.resolve().as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
