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
