"""``labelloop agreement``/``aggregate`` on untidy files: repeats, orders, numbers, bad rows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner, Result

from labelloop_console.commands.quality import register
from labelloop_qa.domain import agreement as ag
from labelloop_qa.domain.ratings import Ratings

HEADER = "item_id,annotator_id,label\n"


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def _run(cli: typer.Typer, *args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def _json(cli: typer.Typer, *args: str) -> tuple[dict[str, Any], str]:
    res = _run(cli, "agreement", *args, "--json", "--n-boot", "0")
    assert res.exit_code == 0, res.output
    out: dict[str, Any] = json.loads(res.stdout)
    return out, res.stderr


def _write(tmp_path: Path, text: str, name: str = "answers.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- a. --duplicates


@pytest.fixture
def resubmitted(tmp_path: Path) -> Path:
    # ann answers item 1 twice (lines 2 and 6): x, then y; bob says x, cid y
    return _write(
        tmp_path,
        HEADER + "1,ann,x\n1,bob,x\n1,cid,y\n2,ann,y\n1,ann,y\n2,bob,y\n",
    )


def test_duplicates_last_is_the_default_and_is_counted(cli: typer.Typer, resubmitted: Path) -> None:
    out, err = _json(cli, str(resubmitted))
    assert out["n_duplicates"] == 1
    assert out["duplicates_rule"] == "last"
    assert out["n_annotations"] == 5
    # item 1 is y, x, y (ann's later answer): 1 agreeing pair of 3; item 2 y, y
    assert out["percent_agreement"] == pytest.approx((1 / 3 + 1) / 2)
    assert "1 repeated (item, annotator) rows: the last answer counts" in err
    assert "item '1' by 'ann': lines 2 and 6" in err


def test_duplicates_first_keeps_the_first_answer(cli: typer.Typer, resubmitted: Path) -> None:
    out, err = _json(cli, str(resubmitted), "--duplicates", "first")
    assert out["n_duplicates"] == 1
    assert out["percent_agreement"] == pytest.approx((1 / 3 + 1) / 2)  # x, x, y: also 1 of 3
    assert "1 repeated (item, annotator) rows: the first answer counts" in err
    # the rule decides the consensus: x by majority with the first answer, y with the last
    labels = {}
    for rule in ("first", "last"):
        target = resubmitted.parent / f"labels-{rule}.csv"
        res = _run(
            cli,
            "aggregate",
            str(resubmitted),
            "--method",
            "majority",
            "--duplicates",
            rule,
            "--out",
            str(target),
        )
        assert res.exit_code == 0, res.output
        assert "1 repeated (item, annotator) rows" in res.stderr
        labels[rule] = pd.read_csv(target, dtype=str).set_index("item_id")["label"].to_dict()
    assert labels == {"first": {"1": "x", "2": "y"}, "last": {"1": "y", "2": "y"}}


def test_duplicates_error_names_the_lines(cli: typer.Typer, resubmitted: Path) -> None:
    res = _run(cli, "agreement", str(resubmitted), "--duplicates", "error")
    assert res.exit_code == 2
    assert res.stdout == ""
    assert "1 repeated (item, annotator) rows" in res.stderr
    assert "item '1' by 'ann' at lines 2 and 6" in res.stderr
    clean = _write(resubmitted.parent, HEADER + "1,ann,x\n1,bob,x\n", "clean.csv")
    out, err = _json(cli, str(clean), "--duplicates", "error")
    assert out["n_duplicates"] == 0
    assert "repeated" not in err
    bad = _run(cli, "agreement", str(clean), "--duplicates", "sometimes")
    assert bad.exit_code == 2
    assert "--duplicates must be one of last, first, error" in bad.stderr


# --------------------------------------------------------------------------- b. --order

# disagreements are between neighbours on low < mid < high; alphabetically (high < low < mid)
# the low/high ones would be neighbours and the mid/high ones two steps apart
PAIRS = [
    ("low", "low"),
    ("low", "mid"),
    ("mid", "high"),
    ("high", "high"),
    ("mid", "high"),
    ("mid", "mid"),
    ("low", "mid"),
    ("high", "high"),
]
ORDINAL = HEADER + "".join(
    f"{i},{a},{v}\n"
    for i, pair in enumerate(PAIRS)
    for a, v in zip(("ann", "bob"), pair, strict=True)
)


def test_ordinal_strings_need_an_order(cli: typer.Typer, tmp_path: Path) -> None:
    path = _write(tmp_path, ORDINAL)
    res = _run(cli, "agreement", str(path), "--level", "ordinal")
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "--level ordinal needs --order" in lines[0]
    assert "'low', 'mid', 'high'" in lines[0]  # the labels seen, in order of appearance


def test_ordinal_with_an_order_uses_it(cli: typer.Typer, tmp_path: Path) -> None:
    path = _write(tmp_path, ORDINAL)
    out, _ = _json(cli, str(path), "--level", "ordinal", "--order", "low, mid, high")
    assert list(out["per_class_agreement"]) == ["low", "mid", "high"]
    frame = pd.read_csv(path, dtype=str)

    def alpha(order: list[str]) -> float:
        r = Ratings.from_records(frame.item_id, frame.annotator_id, frame.label, classes=order)
        return ag.krippendorff_alpha(r, "ordinal")

    assert out["krippendorff_alpha"] == pytest.approx(alpha(["low", "mid", "high"]), abs=1e-12)
    assert out["krippendorff_alpha"] != pytest.approx(alpha(["high", "low", "mid"]), abs=1e-3)
    assert out["weights"] == "linear"


def test_a_label_outside_the_order_is_refused_with_its_line(
    cli: typer.Typer, tmp_path: Path
) -> None:
    path = _write(tmp_path, ORDINAL + "9,ann,Mid\n")
    res = _run(cli, "agreement", str(path), "--level", "ordinal", "--order", "low,mid,high")
    assert res.exit_code == 2
    assert "labels outside --order low,mid,high (1 rows): line 18 'Mid'" in res.stderr
    twice = _run(cli, "agreement", str(path), "--level", "ordinal", "--order", "low,mid,low")
    assert twice.exit_code == 2
    assert "'low' more than once" in twice.stderr


def test_ordinal_numbers_need_no_order(cli: typer.Typer, tmp_path: Path) -> None:
    path = _write(tmp_path, HEADER + "1,a,2\n1,b,10\n2,a,1\n2,b,2\n3,a,10\n3,b,10\n")
    out, _ = _json(cli, str(path), "--level", "ordinal")
    assert list(out["per_class_agreement"]) == ["1", "2", "10"]


# --------------------------------------------------------------------------- c. numbers


@pytest.fixture
def spelled(tmp_path: Path) -> Path:
    # each item: the same number, spelled two ways
    return _write(tmp_path, HEADER + "1,a,01\n1,b,1\n2,a,2.0\n2,b,2\n3,a,3\n3,b,3\n")


@pytest.mark.parametrize("level", ["interval", "ratio"])
def test_numeric_levels_compare_numbers(cli: typer.Typer, spelled: Path, level: str) -> None:
    out, err = _json(cli, str(spelled), "--level", level)
    assert out["percent_agreement"] == pytest.approx(1.0)
    assert out["krippendorff_alpha"] == pytest.approx(1.0)
    assert list(out["per_class_agreement"]) == ["1", "2", "3"]
    assert "different categories" not in err
    assert "'01' (line 2) and '1' (line 3) are the same number" in err


def test_nominal_keeps_labels_as_written_and_says_so(cli: typer.Typer, spelled: Path) -> None:
    out, err = _json(cli, str(spelled))
    assert out["percent_agreement"] == pytest.approx(1 / 3)
    assert set(out["per_class_agreement"]) == {"01", "1", "2.0", "2", "3"}
    assert (
        "labels '01' (line 2) and '1' (line 3) are different categories at level nominal,"
        " though equal as numbers"
    ) in err
    assert "'2.0' (line 4) and '2' (line 5)" in err
    assert "'3'" not in err


def test_numeric_levels_refuse_words_with_their_lines(cli: typer.Typer, tmp_path: Path) -> None:
    path = _write(tmp_path, HEADER + "1,a,1\n1,b,one\n2,a,nan\n2,b,2\n")
    res = _run(cli, "agreement", str(path), "--level", "interval")
    assert res.exit_code == 2
    assert "level interval needs numeric labels: line 3 'one', line 4 'nan'" in res.stderr
    res = _run(cli, "agreement", str(path), "--level", "interval", "--order", "1,2")
    assert res.exit_code == 2
    assert "--order is for the nominal and ordinal levels" in res.stderr


# --------------------------------------------------------------------------- d. malformed rows


def test_malformed_rows_are_listed_with_lines_and_counted_in_the_table(
    cli: typer.Typer, tmp_path: Path
) -> None:
    path = _write(
        tmp_path,
        HEADER
        + "1,ann,a\n"
        + '1,bob,"a\nb"\n'  # a quoted newline: one row on lines 3-4
        + "2,ann,b,extra\n"  # line 5
        + "\n"  # line 6: blank, not a row
        + "2,bob,\n"  # line 7
        + "3,  ,a\n"  # line 8
        + "3\n"  # line 9
        + "3,ann,a\n3,bob,a\n",
    )
    res = _run(cli, "agreement", str(path), "--n-boot", "0")
    assert res.exit_code == 0, res.output
    assert "4 rows skipped:" in res.stderr
    for expected in (
        "  line 5: expected 3 fields, found 4",
        "  line 7: empty label",
        "  line 8: empty annotator_id",
        "  line 9: expected 3 fields, found 1",
    ):
        assert expected in res.stderr
    assert "line 6" not in res.stderr
    rows = {
        cells[0]: cells[1]
        for line in res.stdout.splitlines()
        if len(cells := [c.strip() for c in line.strip("│┃ ").split("│")]) == 2
    }
    assert rows["n_skipped"] == "4"
    assert rows["n_duplicates"] == "0"
    assert rows["n_annotations"] == "4"
    assert rows["weights"] == "none"
    for key in ("gwet_ac2", "brennan_prediger", "conger_kappa"):
        assert key in rows
    out, _ = _json(cli, str(path))
    assert out["n_skipped"] == 4


def test_malformed_jsonl_lines_and_label_studio_annotations(
    cli: typer.Typer, tmp_path: Path
) -> None:
    lines = [
        json.dumps({"item_id": 1, "annotator_id": "a", "label": "x"}),
        "{not json",
        json.dumps(["a", "list"]),
        json.dumps({"item_id": 1, "annotator_id": "b", "label": ["x", "y"]}),
        json.dumps({"item_id": 1, "annotator_id": "c", "label": None}),
        json.dumps({"item_id": 1, "annotator_id": "d", "label": "x"}),
    ]
    path = _write(tmp_path, "\n".join(lines) + "\n", "answers.jsonl")
    out, err = _json(cli, str(path))
    assert out["n_skipped"] == 4
    assert out["n_annotations"] == 2
    for expected in (
        "line 2: not valid JSON",
        "line 3: not a JSON object",
        "line 4: label not a single value",
        "line 5: empty label",
    ):
        assert expected in err

    def ann(pk: int, who: int, choices: list[str], cancelled: bool = False) -> dict[str, Any]:
        return {
            "id": pk,
            "completed_by": who,
            "was_cancelled": cancelled,
            "result": [{"type": "choices", "value": {"choices": choices}}],
        }

    export = [
        {"id": 1, "annotations": [ann(10, 1, ["cat"]), ann(11, 2, ["cat"])]},
        {"id": 2, "annotations": [ann(12, 1, ["dog"]), ann(13, 2, ["dog", "cat"])]},
        {"id": 3, "annotations": [ann(14, 1, ["dog"]), ann(15, 2, ["dog"], cancelled=True)]},
    ]
    ls = _write(tmp_path, json.dumps(export), "export.json")
    out, err = _json(cli, str(ls))
    assert out["n_skipped"] == 2
    assert "task 2, annotation 13: 2 choices, not one" in err
    assert "task 3, annotation 15: cancelled" in err


def test_no_anchor_library_or_pandas_at_import() -> None:
    # `labelloop agreement` on a small file stays fast: the command module imports nothing heavy
    code = (
        "import sys, labelloop_console.commands.quality, labelloop_qa.domain.agreement;"
        "print(sorted(m for m in ('pandas', 'scipy', 'sklearn', 'irrCAC') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"


def test_a_small_file_is_read_and_scored_without_pandas_or_scipy(tmp_path: Path) -> None:
    # 2026-12-07: pandas (and pyarrow) took half of the command's 0.75 s on a 6-row file
    path = _write(tmp_path, HEADER + "1,ann,x\n1,bob,x\n2,ann,y\n2,bob,y\n3,ann,x\n3,bob,y\n")
    code = (
        "import sys\n"
        "from labelloop_console.cli import main\n"
        f"sys.argv = ['labelloop', 'agreement', {str(path)!r}, '--json']\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
        "print(sorted(m for m in ('pandas', 'pyarrow', 'scipy') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    *output, loaded = done.stdout.strip().splitlines()
    assert json.loads("".join(output))["n_annotations"] == 6
    assert loaded == "[]"


def test_the_coded_file_is_what_ratings_from_records_makes_of_its_rows(tmp_path: Path) -> None:
    # ids sort as strings ("10" before "9"), a pair answered three times, a blank row, a label
    # only on a repeated row that does not count
    from labelloop_qa.annotation_files import label_scale, read_annotations

    path = _write(
        tmp_path,
        HEADER
        + "9,bob,b\n10,ann,a\n10,bob,z\n9,ann,a\n10,bob,b\n"
        + "2,cid, \n10,bob,c\n2,ann,a\n2,cid,b\n",
    )
    common = {2: ("9", "bob", "b"), 3: ("10", "ann", "a"), 5: ("9", "ann", "a")}
    common |= {9: ("2", "ann", "a"), 10: ("2", "cid", "b")}
    for rule, line, answer in (("last", 8, "c"), ("first", 4, "z")):
        table = read_annotations(path, duplicates=rule)  # type: ignore[arg-type]
        rows = dict(sorted((common | {line: ("10", "bob", answer)}).items()))
        assert table.where.tolist() == list(rows)
        assert [(r.item_id, r.annotator_id, r.where) for r in table.repeated] == [
            ("10", "bob", ("line 4", "line 6", "line 8"))
        ]
        assert [(s.where, s.reason) for s in table.skipped_rows] == [("line 7", "empty label")]
        scale = label_scale(table, "nominal")
        expected = Ratings.from_records(*zip(*rows.values(), strict=True))
        assert table.items == expected.item_ids.tolist() == ["10", "2", "9"]
        assert table.annotators == expected.annotator_ids.tolist()
        assert scale.classes == expected.classes.tolist()  # "z" only where its row counts
        assert table.item.tolist() == expected.item.tolist()
        assert table.annotator.tolist() == expected.annotator.tolist()
        assert scale.codes.tolist() == expected.label.tolist()


def test_a_file_with_nothing_usable_says_which_rows_and_why(
    cli: typer.Typer, tmp_path: Path
) -> None:
    path = _write(tmp_path, HEADER + "1,a\n2,b,\n")
    res = _run(cli, "agreement", str(path))
    assert res.exit_code == 2
    assert (
        "no usable annotations (2 rows skipped: line 2: expected 3 fields, found 2;"
        " line 3: empty label)"
    ) in res.stderr
    unclosed = _write(tmp_path, HEADER + '1,a,x\n1,b,"x\n2,a,y\n', "unclosed.csv")
    res = _run(cli, "agreement", str(unclosed))
    assert res.exit_code == 2
    assert "line 3: unexpected end of data" in res.stderr


def test_gold_answers_from_jsonl_and_a_malformed_gold_file(
    cli: typer.Typer, resubmitted: Path
) -> None:
    folder = resubmitted.parent
    gold = _write(
        folder, '{"item_id": 1, "label": "x"}\n\n{"item_id": "2", "label": "q"}\n', "g.jsonl"
    )
    out = folder / "labels.csv"
    res = _run(cli, "aggregate", str(resubmitted), "--gold", str(gold), "--out", str(out))
    assert res.exit_code == 0, res.output
    assert "1 gold labels outside the annotated classes ignored" in res.stderr  # "q"
    assert out.read_text().splitlines()[:2] == ["item_id,label,confidence", "1,x,1.0"]
    ragged = _write(folder, "item_id,label\n1,x\n2,y,extra\n", "ragged.csv")
    res = _run(cli, "aggregate", str(resubmitted), "--gold", str(ragged), "--out", str(out))
    assert res.exit_code == 2
    assert "ragged.csv: cannot read: line 3: expected 2 fields, found 3" in res.stderr
    wrong = _write(folder, "item,answer\n1,x\n", "wrong.csv")
    res = _run(cli, "aggregate", str(resubmitted), "--gold", str(wrong), "--out", str(out))
    assert res.exit_code == 2
    assert "a gold file needs item_id and label columns" in res.stderr
