"""NER models as data, never code: crfsuite's own model file in a small zip, with its digest.

A NER model is a linear-chain CRF (:class:`~labelloop_trainer.domain.ner.CrfTagger`).
``sklearn_crfsuite`` pickles it, and a pickle runs whatever its author put in it as soon as it is
loaded; the object store is writable by more than the trainer (:mod:`labelloop.model_format`
says the same of the other models, which are skops files). So a NER model is stored as the file
crfsuite itself writes and reads (weights, tag and attribute dictionaries: numbers and strings),
beside a JSON header, in a zip of exactly two members:

* ``header.json``: ``{"format": "labelloop.crf", "version": 1, "labels": [...]}``, the
  project's entity types the model was trained for;
* ``model.crfsuite``: crfsuite's binary model (it starts with crfsuite's magic ``lCRF``).

Loading checks the sha256 the trainer recorded (``ModelTrained.model_digest``) *before* parsing
anything, then the zip's members, the header and the magic, and only then hands the model bytes
to crfsuite's C reader (``Tagger.open_inmemory``), which builds a tagger and nothing else. That
reader checks little (it opens ``lCRF`` followed by zeros without complaint), so the digest is
what guards it, and a CRF model is never loaded without one: every CRF model the trainer wrote
has its digest recorded. Any failure is :class:`~labelloop.model_format.UntrustedModel`, as for
skops files.
"""

from __future__ import annotations

import hmac
import io
import json
import zipfile
from typing import Any

from labelloop.model_format import UntrustedModel, digest_of
from labelloop_trainer.domain.ner import CrfTagger

__all__ = ["EXTENSION", "dump_crf", "is_crf_ref", "load_crf"]

EXTENSION = "crf.zip"
"""The model file's extension in the object store (``trainer/<project>/models/<mv>.crf.zip``)."""
_FORMAT = "labelloop.crf"
_VERSION = 1
_HEADER = "header.json"
_MODEL = "model.crfsuite"
_MAGIC = b"lCRF"
_MAX_BYTES = 512 * 1024 * 1024
"""A model member larger than this is refused before it is read (a zip bomb)."""


def is_crf_ref(ref: str) -> bool:
    return ref.endswith("." + EXTENSION)


def dump_crf(model: CrfTagger) -> bytes:
    header = {"format": _FORMAT, "version": _VERSION, "labels": list(model.labels)}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as z:
        # fixed timestamps: the same model gives the same bytes, so the same digest
        for name, data in ((_HEADER, json.dumps(header).encode()), (_MODEL, model.model_)):
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, data)
    return buf.getvalue()


def load_crf(raw: bytes, *, digest: str | None) -> CrfTagger:
    """The tagger in ``raw``, if its digest is ``digest`` and it is a file :func:`dump_crf`
    wrote (``digest=None``, no digest recorded, is refused: the module docstring says why)."""
    if digest is None:
        raise UntrustedModel("a CRF model without a recorded digest is not loaded")
    if not hmac.compare_digest(digest_of(raw), digest):
        raise UntrustedModel(f"the model's digest is {digest_of(raw)}, expected {digest}")
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as z:
            infos = {i.filename: i for i in z.infolist()}
            if set(infos) != {_HEADER, _MODEL}:
                raise UntrustedModel(f"a CRF model file holds {sorted(infos)}")
            if any(i.file_size > _MAX_BYTES for i in infos.values()):
                raise UntrustedModel("a CRF model file member is too large")
            header: Any = json.loads(z.read(_HEADER))
            model = z.read(_MODEL)
    except UntrustedModel:
        raise
    except Exception as exc:  # not a zip, bad JSON: any parser error
        raise UntrustedModel(f"not a CRF model file: {type(exc).__name__}: {exc}") from None
    if (
        not isinstance(header, dict)
        or header.get("format") != _FORMAT
        or header.get("version") != _VERSION
        or not isinstance(header.get("labels"), list)
        or not all(isinstance(v, str) for v in header["labels"])
    ):
        raise UntrustedModel(f"not a {_FORMAT} header: {header!r}"[:300])
    if not model.startswith(_MAGIC):
        raise UntrustedModel("the model member is not a crfsuite model")
    try:
        return CrfTagger.from_model(header["labels"], model)
    except Exception as exc:
        raise UntrustedModel(f"crfsuite refused the model: {type(exc).__name__}: {exc}") from None
