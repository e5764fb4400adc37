"""The campaign's verdict compares the arms with the same labels spent."""

from __future__ import annotations

from typing import Any

from labelloop_console.demo import demo_problems
from labelloop_console.report import random_at, verdict_line


def _summary(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "strategy": "hybrid",
        "labels_used": 324,
        "final_test_accuracy": 0.954,
        "random_baseline_curve": [[216, 0.907], [324, 0.935], [360, 0.935], [400, 0.930]],
        "random_baseline_final_accuracy": 0.930,
    }
    return {**base, **over}


def test_a_converged_campaign_is_compared_with_random_at_its_own_labels() -> None:
    """The demo of 2026-12-02 converged at 324 labels while its random arm went on to 400: the
    verdict said "2.4 points better at 324 labels (0.954 vs 0.930)", 0.930 being random's figure
    at 400 labels. At 324 labels random had 0.935."""
    line = verdict_line(_summary())
    assert "1.9 points better than random sampling at 324 labels (0.954 vs 0.935" in line
    assert "random sampling ends at 0.930 with 400 labels" in line


def test_equal_budgets_need_no_footnote_and_a_missing_point_takes_the_last_before() -> None:
    line = verdict_line(_summary(labels_used=400, final_test_accuracy=0.96))
    assert "3.0 points better than random sampling at 400 labels (0.960 vs 0.930" in line
    assert "ends at" not in line
    assert random_at(_summary(), 300) == (0.907, 216)
    assert random_at(_summary(random_baseline_curve=[]), 300) == (0.930, 300)
    assert (
        random_at(_summary(random_baseline_curve=[], random_baseline_final_accuracy=None), 1)
        is None
    )


def test_worse_and_equal_say_so() -> None:
    assert "points worse than" in verdict_line(_summary(final_test_accuracy=0.90))
    assert "as good as" in verdict_line(_summary(final_test_accuracy=0.937))
    assert verdict_line(_summary(final_test_accuracy=None)) == "no model was trained"


def test_the_demo_fails_loudly_when_its_last_dataset_is_not_qas_last_word() -> None:
    done = {"finished": True, "final_test_accuracy": 0.95, "failure": None}
    complete = {"version": "v0009", "released": 324, "complete": True}
    assert demo_problems({**done, "final_dataset": complete}) == []
    short = {**complete, "complete": False, "missing": 3, "different": 0, "unreleased": 0}
    problems = demo_problems({**done, "final_dataset": short})
    assert len(problems) == 1
    assert "v0009" in problems[0]
    assert "3 released labels missing" in problems[0]
    crashed = {**done, "finished": False, "failure": "trainer-0 exited 4 times\nlog..."}
    assert demo_problems({**crashed, "final_dataset": complete}) == [
        "failed: trainer-0 exited 4 times"
    ]
    assert demo_problems({**done, "finished": False, "final_dataset": complete})


def _campaign(**over: Any) -> dict[str, Any]:
    """A whole summary, shaped as the demo writes it."""
    eve = {
        "id": "ann-eve",
        "n_annotations": 61,
        "estimated_accuracy": 0.097,
        "gold_accuracy": 0.0,
        "gold_n": 5,
        "spammer_score": 0.28,
        "flagged": True,
        "flagged_after_round": 5,
        "confusions": [["1", "5", 3.0]],
    }
    dee = {**eve, "id": "ann-dee", "flagged": False, "flagged_after_round": None}
    dee["confusions"] = [["6", "7", 2.0], ["5", "6", 1.0]]
    base = _summary(
        project="digits",
        labels_used=252,
        final_test_accuracy=0.983,
        budget_labels=400,
        learning_curve=[[36, 0.885], [108, 0.961], [252, 0.983]],
        random_baseline_curve=[[36, 0.82], [252, 0.948], [400, 0.961]],
        random_baseline_final_accuracy=0.961,
        converged="stabilising predictions",
        budget_exhausted=False,
        finished=True,
        failure=None,
        annotations_used=467,
        annotators=[dee, eve],
        review_items=47,
        review_reasons={"model_recheck": 30, "low_confidence": 17},
        alerts=[{"round": r, "metric": "krippendorff_alpha"} for r in (2, 3)],
        quality_alerts=2,
        dead_letters=0,
        dataset_path="/runs/x/exports/digits/v0007",
    )
    return {**base, **over}


def test_the_first_screen_says_what_happened_in_sentences() -> None:
    from labelloop_console.report import labels_to_match, verdict_sentences

    assert labels_to_match(_campaign()) == (0.961, 108, 400)
    text = " ".join(verdict_sentences(_campaign()))
    assert "with 108 labels: 292 labels (73%) fewer for the same model" in text
    assert "stopped at 252 of 400 labels because the model converged" in text
    assert "ann-eve was flagged by QA after round 5" in text
    assert "61 annotations (13.1% of all)" in text
    assert "47 items went to expert review (30 model recheck, 17 low confidence)" in text
    assert "2 quality alerts: agreement under the project's threshold in rounds 2, 3" in text
    assert "no dead letters" in text
    never = verdict_sentences(_campaign(learning_curve=[[252, 0.95]], final_test_accuracy=0.95))
    assert any("never reached random sampling's final accuracy" in line for line in never)


def test_next_steps_name_the_commands_that_take_them() -> None:
    from labelloop_console.report import next_steps

    steps = next_steps(_campaign(dead_letters=3))
    assert any("`labelloop dlq list --project digits`" in s for s in steps)
    assert any("`labelloop annotators readmit ann-eve --project digits`" in s for s in steps)
    # the confuser in good standing: their confusions go to the guidelines; the spammer's do not
    assert any("confuse 6 → 7: add examples" in s for s in steps)
    assert not any("1 → 5" in s for s in steps)
    assert any("converged with 252 labels" in s for s in steps)
    clean = next_steps(_campaign(annotators=[], converged=None, budget_exhausted=True))
    assert not any("dlq" in s or "readmit" in s for s in clean)
    assert any("budget ran out before the model converged" in s for s in clean)


def test_the_page_puts_the_verdict_first_and_escapes_what_it_quotes(tmp_path: Any) -> None:
    from labelloop_console.report import write_report

    summary = _campaign(
        run_id="r1",
        simulation=True,
        strategy="hybrid",
        annotators=[],
        labels_per_item=1.85,
        spam_share=0.0,
        batches=[],
        dataset_version="v0007",
        cost={"simulated_cost": 1.0, "currency": "USD"},
        wall_seconds=3.0,
        confusion_matrix={"classes": ["0", "1"], "matrix": [[5, 1], [0, 6]]},
        dead_letters=1,
        dead_letter_reasons={"items.submitted: <script>": 1},
    )
    path = tmp_path / "report.html"
    write_report(summary, path)
    page = path.read_text()
    assert page.index("What happened") < page.index("<img") < page.index("Facts")
    assert "SIMULATED" in page
    assert "<script>" not in page
    assert "&lt;script&gt;" in page
    assert "<code>labelloop dlq list --project digits</code>" in page
