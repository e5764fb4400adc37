"""Fitted models as data, never code: skops files with a fixed list of trusted types.

The format of the trainer's model artefacts, shared like :mod:`labelloop.catalog`'s: a model in
the object store is read by the trainer (the serving model a candidate is compared with) and by
whoever evaluates it (the demo). A pickle there would run whatever its author put
in it as soon as it is loaded, and the object store is writable by more than the trainer. A
skops file (``skops.io``) is a zip of a JSON schema and numpy arrays: loading it builds only the
types it is allowed to build (scikit-learn's estimators, numpy and scipy containers, and the
types listed in :data:`TRUSTED_TYPES`); any other type, or bytes that are not such a file,
refuses to load with :class:`UntrustedModel`. Each model's sha256 travels with it
(``ModelTrained.model_digest``, the trainer's own state) and is checked before loading, so a
replaced file is refused even when it holds only trusted types.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

__all__ = ["TRUSTED_TYPES", "UntrustedModel", "digest_of", "dump_model", "load_model"]

TRUSTED_TYPES: tuple[str, ...] = ("scipy.sparse._csr.csr_matrix", "sklearn.tree._tree.Tree")
"""What the trainer's pipelines hold beyond skops' own defaults: the random forest's trees, and
the kernel estimator's landmarks on text (TF-IDF rows, a sparse matrix that skops stores as
arrays, never a pickle)."""


class UntrustedModel(ValueError):
    """The bytes are not a model this trainer wrote: wrong digest, not a skops file, or a type
    outside the trusted list."""


def digest_of(raw: bytes) -> str:
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def dump_model(model: Any) -> bytes:
    import skops.io as sio

    return bytes(sio.dumps(model))


def load_model(raw: bytes, *, digest: str | None) -> Any:
    """The model in ``raw``, if its digest is ``digest`` and it holds only trusted types.

    ``digest=None`` skips the integrity check (a model whose digest was never recorded); the
    type check always runs."""
    import skops.io as sio

    if digest is not None and not hmac.compare_digest(digest_of(raw), digest):
        raise UntrustedModel(f"the model's digest is {digest_of(raw)}, expected {digest}")
    try:
        untrusted = set(sio.get_untrusted_types(data=raw)) - set(TRUSTED_TYPES)
    except Exception as exc:  # not a zip, not a skops schema: any parser error
        raise UntrustedModel(f"not a skops model file: {type(exc).__name__}: {exc}") from None
    if untrusted:
        raise UntrustedModel(f"the model holds untrusted types: {sorted(untrusted)}")
    try:
        return sio.loads(raw, trusted=list(TRUSTED_TYPES))
    except Exception as exc:
        raise UntrustedModel(f"the model did not load: {type(exc).__name__}: {exc}") from None
