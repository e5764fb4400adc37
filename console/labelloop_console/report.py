"""The campaign report: one self-contained HTML page with the plots a team looks at."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

__all__ = ["random_at", "verdict_line", "write_report"]


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
        ax.axhline(0.9, color="grey", lw=0.8, ls=":", label="0.90 accuracy")  # said, so read
        ax.set_xlabel("labels")
        ax.set_ylabel("held-out accuracy")
        ax.set_title("Learning curve")
        ax.legend(loc="lower right")
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
        ax.axhline(0.6, color="red", lw=0.8, ls=":", label="alert threshold")
        ax.set_ylim(-0.1, 1.05)
        ax.set_xlabel("batch")
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
        ax.imshow(matrix, cmap="Blues")
        ax.set_xticks(range(len(cm["classes"])), cm["classes"])
        ax.set_yticks(range(len(cm["classes"])), cm["classes"])
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title("Confusion matrix of the final model (held-out)")
        for i, row in enumerate(matrix):
            for j, value in enumerate(row):
                if value:
                    ax.text(j, i, str(value), ha="center", va="center", fontsize=7)

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
    verdict = html.escape(verdict_line(summary))
    title = f"labelloop campaign {html.escape(summary['run_id'])}"
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 70rem; color: #222; }}
table {{ border-collapse: collapse; margin: 1rem 0; }}
th, td {{ padding: .25rem .75rem; border-bottom: 1px solid #ddd; text-align: left; }}
img {{ max-width: 48%; margin: .5%; border: 1px solid #eee; }}
</style></head><body>
<h1>labelloop campaign {html.escape(summary["run_id"])}</h1>
<p><strong>{verdict}</strong></p>
<table>{rows}</table>
{images}
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
