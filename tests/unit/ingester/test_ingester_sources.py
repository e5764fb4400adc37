"""Reading items from JSONL, CSV, JSON lists, Label Studio tasks and media folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from labelloop.events import ItemIn
from labelloop_ingester.sources import BadRow, read_items


def test_jsonl_flat_and_item_shaped_rows(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    path.write_text(
        "\n".join(
            [
                json.dumps({"text": "flat", "label": "pos", "id": 7, "metadata": {"src": "a"}}),
                json.dumps({"data": {"text": "shaped"}, "features": [1, 2], "known_label": "neg"}),
                "{not json",
                "",
                json.dumps([1, 2]),
            ]
        )
    )
    rows = list(read_items(path))
    assert isinstance(rows[0], ItemIn)
    assert rows[0].data == {"text": "flat"}
    assert (rows[0].known_label, rows[0].external_id, rows[0].metadata) == (
        "pos",
        "7",
        {"src": "a"},
    )
    assert isinstance(rows[1], ItemIn)
    assert rows[1].features == [1.0, 2.0]
    assert isinstance(rows[2], BadRow)
    assert rows[2].describe().startswith("line 3: not valid JSON")  # lines count from 1
    assert isinstance(rows[3], BadRow)
    assert rows[3].index == 5


def test_a_line_that_is_not_utf8_is_one_bad_row_and_the_rest_is_read(tmp_path: Path) -> None:
    """2026-12-01: one invalid UTF-8 line made the whole file a traceback, nothing submitted."""
    path = tmp_path / "items.jsonl"
    path.write_bytes(b'{"text": "one"}\n{"text": "t\xffo"}\n{"text": "three"}\n')
    rows = list(read_items(path))
    assert [r.data["text"] for r in rows if isinstance(r, ItemIn)] == ["one", "three"]
    (bad,) = [r for r in rows if isinstance(r, BadRow)]
    assert bad.describe() == "line 2: not valid UTF-8 (byte 12 of the line)"


def test_csv_rows_report_their_file_line_and_extra_fields(tmp_path: Path) -> None:
    path = tmp_path / "items.csv"
    path.write_bytes(
        b'text,label\nfine,pos\n"two\nlines",neg\nextra,pos,oops\nbad \xff,pos\nok,neg\n'
    )
    rows = list(read_items(path))
    assert [r.data["text"] for r in rows if isinstance(r, ItemIn)] == ["fine", "two\nlines", "ok"]
    assert [r.describe() for r in rows if isinstance(r, BadRow)] == [
        "line 5: 1 more fields than the header has",
        "line 6: not valid UTF-8",
    ]


def test_csv_with_metadata_columns(tmp_path: Path) -> None:
    path = tmp_path / "items.csv"
    path.write_text('text,meta.lang,features,label\nhello,en,"[0.5, 1]",pos\nbonjour,fr,,\n')
    rows = list(read_items(path))
    assert rows == [
        ItemIn(
            data={"text": "hello"}, metadata={"lang": "en"}, features=[0.5, 1.0], known_label="pos"
        ),
        ItemIn(data={"text": "bonjour"}, metadata={"lang": "fr"}),
    ]


def test_label_studio_tasks(tmp_path: Path) -> None:
    tasks = [
        {
            "id": 12,
            "data": {"text": "great"},
            "meta": {"batch": "x"},
            "predictions": [
                {
                    "model_version": "v1",
                    "score": 0.8,
                    "result": [{"type": "choices", "value": {"choices": ["pos"]}}],
                }
            ],
        }
    ]
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps(tasks))
    (item,) = list(read_items(path))
    assert isinstance(item, ItemIn)
    assert item.external_id == "12"
    assert item.metadata == {"batch": "x"}
    assert item.prediction is not None
    assert (item.prediction.label, item.prediction.score, item.prediction.model_version) == (
        "pos",
        0.8,
        "v1",
    )


def test_media_folder_becomes_file_references(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.png").write_bytes(b"png")
    (tmp_path / "sub" / "a.wav").write_bytes(b"wav")
    (tmp_path / "notes.txt").write_text("ignored")
    rows = list(read_items(tmp_path))
    assert [r.data for r in rows if isinstance(r, ItemIn)] == [
        {"image": str((tmp_path / "b.png").resolve())},
        {"audio": str((tmp_path / "sub" / "a.wav").resolve())},
    ]
    assert all(isinstance(r, ItemIn) for r in rows)


def test_unknown_file_type(tmp_path: Path) -> None:
    path = tmp_path / "x.xml"
    path.write_text("<x/>")
    with pytest.raises(ValueError, match="unknown file type"):
        list(read_items(path))


def test_a_csv_without_its_header_line_is_refused_not_misread(tmp_path: Path) -> None:
    """2026-12-01: a CSV without a header silently took its first row as the header (that row
    was lost, every other one rejected later for a missing field)."""
    from labelloop_ingester.sources import read_positioned

    headless = tmp_path / "reviews.csv"
    headless.write_text("great product,pos\nbroken on arrival,neg\n", encoding="utf-8")
    with pytest.raises(ValueError, match="names none of the project's data fields \\(text\\)"):
        list(read_positioned(headless, data_fields=["text"]))
    headed = tmp_path / "ok.csv"
    headed.write_text("text,label\ngreat product,pos\n", encoding="utf-8")
    [(_, item)] = list(read_positioned(headed, data_fields=["text"]))
    assert isinstance(item, ItemIn)
    assert item.data == {"text": "great product"}
    twice = tmp_path / "twice.csv"
    twice.write_text("text,text\na,b\n", encoding="utf-8")
    with pytest.raises(ValueError, match="names text more than once"):
        list(read_positioned(twice, data_fields=["text"]))
