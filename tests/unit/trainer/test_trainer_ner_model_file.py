"""A NER model is stored as crfsuite's own file, never a pickle, and a tampered file is refused."""

from __future__ import annotations

import io
import pickle
import zipfile

import pytest
from ner_support import TYPES, corpus

from labelloop.model_format import UntrustedModel, digest_of
from labelloop.stores import MemoryBlobs, MemoryKeyValue
from labelloop_trainer.crf_format import dump_crf, is_crf_ref, load_crf
from labelloop_trainer.domain.ner import CrfTagger, predict_spans
from labelloop_trainer.domain.spans import spans_to_bio
from labelloop_trainer.store import TrainerStore


def _model() -> CrfTagger:
    texts, spans = corpus(60)
    tagged = [spans_to_bio(t, s, TYPES) for t, s in zip(texts, spans, strict=True)]
    return CrfTagger(TYPES).fit([t.tokens for t in tagged], [t.tags for t in tagged])


def _rezip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _members(raw: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(raw)) as z:
        return {name: z.read(name) for name in z.namelist()}


def test_a_stored_model_loads_and_tags_as_before() -> None:
    model = _model()
    raw = dump_crf(model)
    assert raw == dump_crf(model)  # the same model, the same bytes, the same digest
    members = _members(raw)
    assert set(members) == {"header.json", "model.crfsuite"}
    assert members["model.crfsuite"] == model.model_  # crfsuite's own file, as it wrote it
    loaded = load_crf(raw, digest=digest_of(raw))
    texts = ["Alice flew to Oslo today", "nothing much happened here today", "Farid met Grace"]
    assert predict_spans(loaded, texts) == predict_spans(model, texts)
    assert list(loaded.labels) == TYPES


def test_a_tampered_file_is_refused_before_it_is_read() -> None:
    raw = dump_crf(_model())
    digest = digest_of(raw)
    tampered = bytearray(raw)
    tampered[len(raw) // 2] ^= 0xFF
    with pytest.raises(UntrustedModel, match="digest"):
        load_crf(bytes(tampered), digest=digest)
    # another valid model in its place: the digest still tells
    other = dump_crf(CrfTagger(TYPES).fit(*_tagged_pair()))
    with pytest.raises(UntrustedModel, match="digest"):
        load_crf(other, digest=digest)


def _tagged_pair() -> tuple[list[list[object]], list[list[str]]]:
    tagged = spans_to_bio("Oslo is cold", [{"start": 0, "end": 4, "label": "place"}])
    return [tagged.tokens], [tagged.tags]  # type: ignore[list-item]


class _Boom:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("a pickle ran code",))


@pytest.mark.parametrize(
    "bad",
    [
        pickle.dumps(_Boom()),  # a pickle, where a model was
        b"not a zip at all",
        _rezip({"header.json": b'{"format": "labelloop.crf", "version": 1, "labels": []}'}),
        _rezip(
            {
                "header.json": b'{"format": "labelloop.crf", "version": 1, "labels": []}',
                "model.crfsuite": b"lCRF",
                "payload.pkl": pickle.dumps(_Boom()),
            }
        ),
        _rezip({"header.json": b'{"format": "skops"}', "model.crfsuite": b"lCRF...."}),
        _rezip(
            {
                "header.json": b'{"format": "labelloop.crf", "version": 1, "labels": ["x"]}',
                "model.crfsuite": pickle.dumps(_Boom()),
            }
        ),
    ],
    ids=["pickle", "garbage", "no-model", "extra-member", "wrong-header", "pickle-as-model"],
)
def test_files_that_are_not_crf_models_are_refused(
    bad: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(UntrustedModel):
        load_crf(bad, digest=digest_of(bad))  # its own digest: the structure still tells
    assert "ran code" not in capsys.readouterr().out


def test_a_model_without_a_recorded_digest_is_not_loaded() -> None:
    raw = dump_crf(_model())
    with pytest.raises(UntrustedModel, match="without a recorded digest"):
        load_crf(raw, digest=None)


async def test_the_store_keeps_a_ner_model_as_a_crf_file_and_refuses_a_replaced_one() -> None:
    blobs = MemoryBlobs()
    store = TrainerStore(lambda: MemoryKeyValue(), lambda: blobs)
    model = _model()
    ref, digest = await store.save_model("tweets", "m0001", model)
    assert is_crf_ref(ref)
    assert ref == "trainer/tweets/models/m0001.crf.zip"
    loaded = await store.load_model(ref, digest)
    assert isinstance(loaded, CrfTagger)
    assert loaded.model_ == model.model_
    # someone with write access to the object store puts another model there
    await blobs.put(ref, dump_crf(CrfTagger(TYPES).fit(*_tagged_pair())))
    with pytest.raises(UntrustedModel):
        await store.load_model(ref, digest)
