"""The qa-scorer's round records: a process keeps a bounded number of them decoded."""

from __future__ import annotations

from labelloop.events import QAReport
from labelloop.stores import MemoryStores
from labelloop_qa.store import HistoryRecord, QAStore, RoundRecord


def _record(number: int) -> RoundRecord:
    report = QAReport(
        project="p",
        batch_id=f"b{number}",
        round=number,
        n_items=0,
        n_annotations=0,
        consensus_method="majority",
    )
    history = HistoryRecord(tallies={"ann": {"n": number}})
    return RoundRecord(
        round=number, batch_id=f"b{number}", labels=[], report=report, history=history
    )


async def test_a_process_keeps_the_last_rounds_records_and_reads_older_ones_again() -> None:
    stores = MemoryStores()
    store = QAStore(lambda: stores.artifacts, lambda: stores.state, round_cache=16)
    for number in range(1, 201):
        await store.save_round("p", _record(number))
        assert (await store.history("p", number)).tallies["ann"].n_annotations == number
        assert store.cached_rounds() <= 16
    old = await store.round("p", 3)  # long out of memory: read back from the object store
    assert old is not None
    assert old.batch_id == "b3"
    assert (await store.history("p", 3)).tallies["ann"].n_annotations == 3
    assert store.cached_rounds() == 16
