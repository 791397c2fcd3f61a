"""The within-run record-Id dedupe set, in memory that stays small for millions of records.

A run drops a record whose ``Id`` it already published (Microsoft repeats some records in later
blobs). It remembers a 64-bit digest per Id -- the same ``hash(Id)`` it always used -- so what
counts as a duplicate is unchanged; only the storage differs. Up to ``SMALL`` digests live in a
plain ``set`` (fastest; about 60 bytes per digest). Past that they move to an open-addressing
table of unsigned 64-bit slots in an ``array`` (8 bytes per slot, at most half full: 16-32 bytes
per digest), so a backlog of 1,000,000 records costs about 16-32 MB instead of about 70 MB.

A digest is not the Id: two different Ids with the same digest would make the second look like a
repeat. ``hash`` of a str is SipHash keyed at random per process, so that happens with probability
about n^2 / 2^65 for n Ids in one run: 3e-8 for a run of 1,000,000 records. Storing whole Ids (or
128-bit digests) would remove it at 2-4 times the memory; the memory bound was preferred.
"""

from __future__ import annotations

from array import array

_MASK = (1 << 64) - 1
_EMPTY = 0


class RecordIds:
    """Digests of the record Ids seen in one run; ``add`` says whether an Id is new."""

    SMALL = 1 << 16

    __slots__ = ("_count", "_limit", "_mask", "_set", "_table")

    def __init__(self) -> None:
        self._set: set[int] | None = set()
        self._table = array("Q")
        self._mask = 0
        self._count = 0
        self._limit = 0

    def __len__(self) -> int:
        return len(self._set) if self._set is not None else self._count

    def __contains__(self, record_id: str) -> bool:
        digest = hash(record_id) & _MASK or 1
        if self._set is not None:
            return digest in self._set
        table, mask = self._table, self._mask
        slot = digest & mask
        while True:
            value = table[slot]
            if value == digest:
                return True
            if value == _EMPTY:
                return False
            slot = (slot + 1) & mask

    def add(self, record_id: str) -> bool:
        """Remember ``record_id``; False when it was already there (a duplicate)."""
        digest = hash(record_id) & _MASK or 1  # 0 marks an empty slot
        small = self._set
        if small is not None:
            if digest in small:
                return False
            small.add(digest)
            if len(small) > self.SMALL:
                self._to_table(small)
            return True
        table, mask = self._table, self._mask
        slot = digest & mask  # str hashes are SipHash output: the low bits are already well mixed
        while True:
            value = table[slot]
            if value == digest:
                return False
            if value == _EMPTY:
                table[slot] = digest
                self._count += 1
                if self._count > self._limit:
                    self._grow()
                return True
            slot = (slot + 1) & mask

    def _to_table(self, small: set[int]) -> None:
        self._set = None
        self._count = 0
        self._resize(2 * len(small))
        for digest in small:
            self._insert(digest)

    def _grow(self) -> None:
        old = self._table
        self._resize(2 * len(old))
        self._count = 0
        for digest in old:
            if digest != _EMPTY:
                self._insert(digest)

    def _resize(self, slots: int) -> None:
        size = 1
        while size < slots:
            size <<= 1
        self._table = array("Q", [_EMPTY]) * size
        self._mask = size - 1
        self._limit = size // 2

    def _insert(self, digest: int) -> None:
        table, mask = self._table, self._mask
        slot = digest & mask
        while table[slot] != _EMPTY:
            slot = (slot + 1) & mask
        table[slot] = digest
        self._count += 1
