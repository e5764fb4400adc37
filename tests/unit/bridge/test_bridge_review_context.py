"""The lines above a review task: why it is in review, every crowd vote, the current label."""

from __future__ import annotations

import pytest

from labelloop_bridge.domain.review_context import REASONS, CrowdVote, reason_line, votes_line


@pytest.mark.parametrize("reason", sorted(REASONS))
def test_every_reason_qa_gives_reads_as_a_sentence(reason: str) -> None:
    line = reason_line(reason, None)
    assert line.startswith("Why review: ")
    assert reason not in line  # words, not QA's code
    assert line.endswith(".")


def test_an_unknown_reason_is_named_and_the_confidence_given() -> None:
    assert reason_line("new_rule", 0.256) == (
        "Why review: QA held this label back (new_rule) (confidence 0.26)."
    )


def test_votes_are_listed_by_annotator_with_skips_and_the_current_label_unselected() -> None:
    votes = [
        CrowdVote("ls-user-9", "7"),
        CrowdVote("ann-ada", "6"),
        CrowdVote("ls-user-3", None),
    ]
    assert votes_line(votes, "6") == (
        "Crowd votes: ann-ada → 6 · ls-user-3 → skipped · ls-user-9 → 7."
        " Current label: 6 (not pre-selected: choose for yourself)."
    )


def test_several_classes_and_regions_are_summed_up() -> None:
    spans = [{"start": 0, "end": 3, "text": "Bob", "label": "PER"}]
    line = votes_line([CrowdVote("a", ["x", "y"]), CrowdVote("b", spans)], None)
    assert line == "Crowd votes: a → x + y · b → 1 region."
    assert votes_line([], None) == "Crowd votes: none recorded."
