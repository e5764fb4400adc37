"""labelloop ingester: items in, validated and deduplicated items out.

Consumes ``ItemsSubmitted`` (many items per message, from ``labelloop ingest`` or any producer).
Produces ``ItemsIngested`` (new items with stable content-hash ids, in chunks under the message
size limit, each with a ``.npz`` of feature vectors in the ``artifacts`` object store: the
producer's, or computed from the text, the image, the sound or the video) and ``ItemsRejected``
(every invalid item with its reason, an audio or video file that cannot be decoded included),
then ``SubmissionAnswered``: one answer per submitted message, each item not ingested named by
where it came from (its line in the producer's file), which ``labelloop ingest`` waits for.
Items seen before add nothing but a duplicate verdict: content hashes are claimed in a claim log
per project (``store``: one KV append per message, not per item), so replicas and redeliveries
ingest each item exactly once.
"""
