"""labelloop ingester: items in, validated and deduplicated items out.

Consumes ``ItemsSubmitted`` (many items per message, from ``labelloop ingest`` or any producer).
Produces ``ItemsIngested`` (new items with stable content-hash ids, in chunks under the message
size limit, each with a ``.npz`` of feature vectors in the ``artifacts`` object store) and
``ItemsRejected`` (every invalid item with its reason). Items seen before add nothing.
"""
