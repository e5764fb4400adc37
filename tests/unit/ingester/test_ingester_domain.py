"""Ingest domain: item identity, validation reasons, in-message dedup, size chunking, features."""

# ruff: noqa: N806  (X is scikit-learn's name for a feature matrix)

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from labelloop.events import ItemIn, Prediction
from labelloop.project import ProjectConfig, parse_project
from labelloop_ingester.domain.featurize import decode_data_uri, featurize, text_vectors
from labelloop_ingester.domain.identity import canonical_json, item_id
from labelloop_ingester.domain.intake import chunk_by_size, take_in
from labelloop_ingester.domain.validation import (
    ItemRules,
    Limits,
    RejectReason,
    Valid,
    finite_features,
    validate_item,
)


def _project(**over: object) -> ProjectConfig:
    raw: dict[str, object] = {
        "name": "reviews",
        "task_type": "text_classification",
        "labels": {"classes": ["pos", "neg"]},
        "data_fields": [
            {"name": "text", "kind": "text", "max_length": 50},
            {"name": "stars", "kind": "number", "required": False},
        ],
    }
    raw.update(over)
    return parse_project(raw)


def _image_project() -> ProjectConfig:
    return _project(
        task_type="image_classification",
        data_fields=[{"name": "image", "kind": "image"}],
    )


def test_item_id_is_stable_and_ignores_key_order_and_metadata() -> None:
    a = item_id({"text": "hello", "n": 1})
    assert a == item_id({"n": 1, "text": "hello"})
    assert len(a) == 32
    assert a != item_id({"text": "hello!", "n": 1})
    assert canonical_json({"b": 1, "a": "é"}) == '{"a":"é","b":1}'.encode()


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        (ItemIn(data={"other": "x"}), RejectReason.MISSING_FIELD),
        (ItemIn(data={"text": ""}), RejectReason.MISSING_FIELD),
        (ItemIn(data={"text": 42}), RejectReason.WRONG_TYPE),
        (ItemIn(data={"text": "ok", "stars": "five"}), RejectReason.WRONG_TYPE),
        (ItemIn(data={"text": "ok", "stars": True}), RejectReason.WRONG_TYPE),
        (ItemIn(data={"text": "x" * 51}), RejectReason.TOO_LONG),
        (ItemIn(data={"text": "ok"}, features=[]), RejectReason.BAD_FEATURES),
        (ItemIn(data={"text": "ok"}, features=[1.0, float("nan")]), RejectReason.BAD_FEATURES),
        (ItemIn(data={"text": "ok"}, known_label="meh"), RejectReason.BAD_LABEL),
        (ItemIn(data={"text": "ok"}, known_label=["pos"]), RejectReason.BAD_LABEL),
        (ItemIn(data={"text": "ok"}, prediction=Prediction(label="zzz")), RejectReason.BAD_LABEL),
        (ItemIn(data={"text": "ok"}, metadata={"blob": "y" * 1000}), RejectReason.TOO_LARGE),
    ],
)
def test_invalid_items_get_a_reason(item: ItemIn, reason: RejectReason) -> None:
    verdict = validate_item(item, _project(), Limits(max_item_bytes=500))
    assert verdict is not None
    assert verdict.reason is reason
    assert verdict.message.startswith(reason.value + ": ")


def test_valid_items_pass() -> None:
    project = _project()
    ok = ItemIn(data={"text": "fine", "stars": 4.5}, known_label="pos", features=[0.1, 0.2])
    assert validate_item(ok, project, Limits()) is None
    assert validate_item(ItemIn(data={"text": "no stars"}), project, Limits()) is None


def test_multilabel_and_region_labels() -> None:
    multi = _project(task_type="text_multilabel")
    assert (
        validate_item(ItemIn(data={"text": "a"}, known_label=["pos", "neg"]), multi, Limits())
        is None
    )
    ner = _project(task_type="ner")
    bad = validate_item(ItemIn(data={"text": "a"}, known_label="pos"), ner, Limits())
    assert bad is not None
    assert bad.reason is RejectReason.BAD_LABEL
    span = [{"start": 0, "end": 1, "label": "pos"}]
    assert validate_item(ItemIn(data={"text": "a"}, known_label=span), ner, Limits()) is None


def test_take_in_rejects_with_indices_and_drops_repeats_inside_the_message() -> None:
    items = [
        ItemIn(data={"text": "one"}),
        ItemIn(data={"text": 1}, external_id="bad-1"),
        ItemIn(data={"text": "one"}, metadata={"again": True}),
        ItemIn(data={"text": "two"}, known_label="neg"),
    ]
    out = take_in(items, _project(), Limits())
    assert [a.index for a in out.accepted] == [0, 3]
    assert out.accepted[1].item().known_label == "neg"
    assert out.accepted[0].item_id == item_id({"text": "one"})
    assert out.accepted[0].item().item_id == out.accepted[0].item_id
    assert [(r.index, r.external_id) for r in out.rejections] == [(1, "bad-1")]
    assert out.reasons == {RejectReason.WRONG_TYPE: 1}
    assert out.duplicates == 1


def test_chunk_by_size() -> None:
    assert chunk_by_size([], 10) == []
    assert chunk_by_size([4, 4, 4, 20, 1], 10) == [
        range(2),
        range(2, 3),
        range(3, 4),
        range(4, 5),
    ]
    assert chunk_by_size([1] * 7, 100, max_items=3) == [range(3), range(3, 6), range(6, 7)]


def test_text_vectors_are_stateless_and_similar_texts_are_close() -> None:
    texts = ["the cat sat on the mat", "the cat sat on a mat", "stock prices fell sharply today"]
    X = text_vectors(texts)
    assert X.shape == (3, 64)
    assert X.dtype == np.float32
    assert np.allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-5)
    assert X[0] @ X[1] > X[0] @ X[2]
    # one by one (another replica, another chunk) gives the same vectors
    assert np.allclose(text_vectors(texts[2:]), X[2:])


def _png_data_uri(value: int, size: int = 32) -> str:
    buf = io.BytesIO()
    Image.new("L", (size, size), color=value).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def test_featurize_prefers_producer_vectors_and_groups_spaces() -> None:
    items = [
        ItemIn(data={"text": "alpha"}, features=[1.0, 2.0, 3.0]),
        ItemIn(data={"text": "beta"}),
        ItemIn(data={"text": "gamma"}, features=[0.0, 0.0, 1.0]),
    ]
    blocks = {b.space: b for b in featurize(items, _project())}
    assert set(blocks) == {"producer-3", "text-hash-64"}
    assert blocks["producer-3"].rows == [0, 2]
    assert blocks["producer-3"].X.tolist() == [[1.0, 2.0, 3.0], [0.0, 0.0, 1.0]]
    assert blocks["text-hash-64"].rows == [1]


def test_featurize_images_from_data_uris_and_a_loader() -> None:
    items = [
        ItemIn(data={"image": _png_data_uri(255)}),
        ItemIn(data={"image": "https://example.org/cat.png"}),
        ItemIn(data={"image": "/data/dark.png"}),
    ]
    dark = decode_data_uri(_png_data_uri(0))

    def loader(ref: str) -> bytes | None:
        return dark if ref == "/data/dark.png" else decode_data_uri(ref)

    (block,) = featurize(items, _image_project(), load_image=loader, image_side=8)
    assert block.space == "image-px-8"
    assert block.rows == [0, 2]
    assert block.X.shape == (2, 64)
    assert np.allclose(block.X[0], 1.0)
    assert np.allclose(block.X[1], 0.0)
    assert decode_data_uri("data:text/plain,hello") is None
    assert (
        featurize(
            [ItemIn(data={"image": "data:image/png;base64,bm90IGFuIGltYWdl"})], _image_project()
        )
        == []
    )


@pytest.mark.parametrize(
    "item",
    [
        ItemIn(data={"text": "plain"}),
        ItemIn(data={"text": 'é — 😀 \n\t"quoted"', "n": 3, "x": None}, metadata={"b": [1, 2.5]}),
        ItemIn(data={"text": "f"}, features=[0.1, 1e-05, 1e16, -2.5e-308, 3.0]),
        ItemIn(
            data={"text": "all"},
            metadata={"z": {"y": None}},
            known_label="pos",
            prediction=Prediction(label="neg", score=0.25),
            external_id="ext-1",
        ),
        ItemIn(data={"text": "p"}, prediction=Prediction(label="pos", model_version="m1")),
    ],
)
def test_the_size_check_measures_the_canonical_json_of_the_whole_item(item: ItemIn) -> None:
    exact = len(canonical_json(item.model_dump(mode="json", exclude_none=True)))
    project = _project(
        data_fields=[
            {"name": "text", "kind": "text"},
            {"name": "n", "kind": "number", "required": False},
        ]
    )
    # at the limit: accepted, and the size it reports is never under the exact one
    valid = ItemRules(project, Limits(max_item_bytes=exact)).check(item)
    assert isinstance(valid, Valid)
    assert valid.data == canonical_json(item.data)
    assert valid.size >= exact
    if item.features is None:
        assert valid.size == exact
    # a byte under: rejected with the exact size
    verdict = validate_item(item, project, Limits(max_item_bytes=exact - 1))
    assert verdict is not None
    assert verdict.reason is RejectReason.TOO_LARGE
    assert verdict.detail == f"the item is {exact} bytes, the limit is {exact - 1}"


def test_features_are_checked_finite_for_a_whole_message_at_once() -> None:
    items = [
        ItemIn(data={"text": "a"}, features=[1.0, 2.0]),
        ItemIn(data={"text": "b"}, features=[1.0, float("inf")]),
        ItemIn(data={"text": "c"}),
        ItemIn(data={"text": "d"}, features=[float("nan"), 0.0, 1.0]),
        ItemIn(data={"text": "e"}, features=[0.0, 0.0, 1.0]),
    ]
    assert finite_features(items) == [True, False, True, False, True]
    out = take_in(items, _project(), Limits())
    assert [a.index for a in out.accepted] == [0, 2, 4]
    assert [r.reason for r in out.rejections] == [
        "bad_features: features must be finite numbers"
    ] * 2


def test_text_vectors_are_scikit_learns_to_the_bit() -> None:
    from scipy import sparse
    from sklearn.feature_extraction.text import HashingVectorizer
    from sklearn.random_projection import SparseRandomProjection

    rng = np.random.default_rng(0)
    alphabet = [*"abcdefghijklmnopqrstuvwxyz ÉéàüßİıΣσς日本語 \t\n.,;!?-_'0123456789", "😀", "ﬁ"]
    texts = ["".join(rng.choice(alphabet, size=rng.integers(0, 80))) for _ in range(300)]
    texts += ["", "a", "ab", "AB ab ab", "one two one two", "x y z", "\u212a is k"]
    ascii_only = [t for t in texts if t.lower().isascii()]  # the ASCII pattern's messages
    projector = SparseRandomProjection(n_components=16, dense_output=True, random_state=0)
    projector.fit(sparse.csr_matrix((1, 2**18), dtype=np.float32))
    for batch in (texts, ascii_only):
        hashed = HashingVectorizer(
            n_features=2**18, ngram_range=(1, 2), alternate_sign=False, norm="l2", dtype=np.float32
        ).transform(batch)
        X = np.asarray(projector.transform(hashed), dtype=np.float32)
        norms = np.linalg.norm(X, axis=1, keepdims=True)
        expected = np.divide(X, norms, out=np.zeros_like(X), where=norms > 0)
        # twice: the second time every word and pair is known already
        for _ in range(2):
            assert np.array_equal(text_vectors(batch, 16), expected)
