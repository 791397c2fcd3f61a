import random
import sys
import uuid

from o365ingest.recordids import RecordIds


class TinyIds(RecordIds):
    SMALL = 64  # switch to the compact table early, so growth is exercised on a few thousand Ids


def test_add_reports_new_and_repeated_ids_like_a_set_across_every_growth_step():
    rng = random.Random(7)
    ids = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(5000)]
    stream = ids + rng.sample(ids, 1500) + [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(500)]
    rng.shuffle(stream)
    for cls in (RecordIds, TinyIds):
        seen = cls()
        reference: set[str] = set()
        for record_id in stream:
            assert seen.add(record_id) == (record_id not in reference)
            reference.add(record_id)
        assert len(seen) == len(reference)
        assert all(record_id in seen for record_id in reference)
        assert "not-an-id-that-was-added" not in seen


def test_a_digest_of_zero_is_kept_apart_from_empty_slots():
    class Zero(str):
        def __hash__(self) -> int:
            return 0

    seen = TinyIds()
    for i in range(200):
        seen.add(f"id-{i}")
    assert seen.add(Zero("zero")) is True
    assert seen.add(Zero("zero")) is False


def test_past_the_small_set_ids_take_a_fraction_of_a_python_set():
    seen = RecordIds()
    for i in range(RecordIds.SMALL + 10):
        seen.add(f"record-{i}")
    table = seen._table
    assert seen._set is None
    # 8 bytes per slot, at most half full: tens of bytes per Id instead of a set's ~60-100
    assert table.itemsize == 8 and len(table) <= 8 * len(seen)
    assert sys.getsizeof(table) < 40 * len(seen)
