"""Open-addressing hash table from a binary series key to its row, probed in batches with numpy.

Why this shape: the ingest path has to map thousands of `(k0, k1, org)` keys per batch to rows. A
linear-probing table of int32 rows (load <= 1/3) resolves almost every key on its first probe, so a
batch costs a handful of vectorised gathers, against ~20 dependent cache misses per key for a binary
search over a sorted column. The keys themselves live in row-indexed columns (the table holds only
rows), which is also where the index reads them back to print ids.

Concurrency: one writer at a time (the caller holds its lock). `lookup` takes no lock: it reads a
snapshot tuple published after every resize, and slot writes are single int32 stores, so a reader
racing a writer sees either the old or the new state of a key (a miss, or a row about to be freed).
"""

from __future__ import annotations

import numpy as np

from metrictank.index import _keytable
from metrictank.index.keys import M32, hash_key, hash_keys

EMPTY = -1
TOMB = -2
_MIN_CAP = 1024


def _pow2_at_least(n: int) -> int:
    return max(_MIN_CAP, 1 << max(0, int(n) - 1).bit_length())


class KeyTable:
    """Rows keyed by `(k0, k1, org)`; owns the key columns and the live-row mask."""

    def __init__(self, capacity: int = _MIN_CAP) -> None:
        cap = _pow2_at_least(capacity)
        self.k0 = np.zeros(cap // 2, np.uint64)
        self.k1 = np.zeros(cap // 2, np.uint64)
        self.org = np.zeros(cap // 2, np.uint32)
        self.live = np.zeros(cap // 2, bool)
        self._table = np.full(cap, EMPTY, np.int32)
        self._used = 0  # slots holding a row
        self._tombs = 0
        self._publish()

    # -- internals -------------------------------------------------------------------------------------

    def _publish(self) -> None:
        cap = len(self._table)
        shift = np.uint64(64 - (cap.bit_length() - 1))
        self._snap = (self._table, shift, cap - 1, self.k0, self.k1, self.org)
        self._shift_int = 64 - (cap.bit_length() - 1)

    def _slot_of(self, k0: int, k1: int, org: int) -> int:
        return hash_key(k0, k1, org) >> self._shift_int

    def ensure_rows(self, nrows: int) -> None:
        """Grow the key columns so rows `< nrows` exist (amortised doubling)."""
        if nrows <= len(self.k0):
            return
        new = max(nrows, 2 * len(self.k0))
        for name in ("k0", "k1", "org", "live"):
            old = getattr(self, name)
            arr = np.zeros(new, old.dtype)
            arr[: len(old)] = old
            setattr(self, name, arr)
        self._publish()

    def _rebuild(self, cap: int) -> None:
        """Re-insert every live row into a fresh table; vectorised: each round, every pending key tries
        its current slot, one claimant per free slot wins, the rest move one slot on."""
        table = np.full(cap, EMPTY, np.int32)
        mask = cap - 1
        rows = np.flatnonzero(self.live).astype(np.int32)
        shift = np.uint64(64 - (cap.bit_length() - 1))
        slots = (hash_keys(self.k0[rows], self.k1[rows], self.org[rows]) >> shift).astype(np.int64)
        while rows.size:
            free = table[slots] == EMPTY
            table[slots[free]] = rows[free]  # duplicate slots: one write wins
            won = free & (table[slots] == rows)
            rows, slots = rows[~won], (slots[~won] + 1) & mask
        self._table = table
        self._used = int(self.live.sum())
        self._tombs = 0
        self._publish()

    # -- scalar operations (writer side) ---------------------------------------------------------------

    def _probe(self, k0: int, k1: int, org: int) -> tuple[int, int]:
        """(row or -1, slot of the row or of the first reusable slot on the probe path)."""
        table, mask = self._table, len(self._table) - 1
        s = self._slot_of(k0, k1, org)
        first_tomb = -1
        K0, K1, KO = self.k0, self.k1, self.org
        while True:
            r = int(table[s])
            if r == EMPTY:
                return -1, (first_tomb if first_tomb >= 0 else s)
            if r == TOMB:
                if first_tomb < 0:
                    first_tomb = s
            elif int(K0[r]) == k0 and int(K1[r]) == k1 and int(KO[r]) == org:
                return r, s
            s = (s + 1) & mask

    def get(self, k0: int, k1: int, org: int) -> int:
        """Row of one key, -1 when unknown."""
        return self._probe(k0, k1, org & M32)[0]

    def get_slot(self, k0: int, k1: int, org: int) -> tuple[int, int]:
        """(row or -1, slot) - pass the slot to `insert` to save a second probe."""
        return self._probe(k0, k1, org & M32)

    def insert(self, k0: int, k1: int, org: int, row: int, slot: int = -1) -> None:
        """Map a key that is not in the table to `row` (the caller checked with `get_slot`, whose
        slot stays valid as long as the table was not written to in between)."""
        org &= M32
        if (self._used + self._tombs + 1) * 3 > len(self._table):
            # load stays in (1/8, 1/3]: at 1/2 linear-probe clusters make a batch need ~20 rounds of
            # numpy calls to resolve its last keys, at 1/4 about 7 (measured: half the batch time)
            live = int(self.live.sum()) + 1
            self._rebuild(_pow2_at_least(live * 4))
            slot = -1
        self.ensure_rows(row + 1)
        self.k0[row], self.k1[row], self.org[row] = k0, k1, org
        self.live[row] = True
        if slot < 0:
            found, slot = self._probe(k0, k1, org)
            if found >= 0:
                raise KeyError("key already present")
        if self._table[slot] == TOMB:
            self._tombs -= 1
        self._table[slot] = row
        self._used += 1

    def insert_many(self, k0: np.ndarray, k1: np.ndarray, org: np.ndarray, rows: np.ndarray) -> None:
        """Map a batch of keys, none of them in the table and no two equal (the caller checked), to `rows`.

        The vectorised twin of `insert` for a batch of new series: the key columns are written first (so a
        lock-free reader that finds a row sees its key), then every key claims the first empty or
        tombstoned slot on its probe path; when several claim one slot, one wins and the others move on,
        as in `_rebuild`."""
        rows = np.asarray(rows, np.int64)
        m = len(rows)
        if m == 0:
            return
        org = np.asarray(org)
        if org.dtype != np.uint32:
            org = org.astype(np.int64).astype(np.uint32)  # -1 (public org) wraps like `org & M32`
        k0 = np.asarray(k0, np.uint64)
        k1 = np.asarray(k1, np.uint64)
        self.ensure_rows(int(rows.max()) + 1)
        self.k0[rows], self.k1[rows], self.org[rows] = k0, k1, org
        self.live[rows] = True
        if (self._used + self._tombs + m) * 3 > len(self._table):
            self._rebuild(_pow2_at_least((int(self.live.sum())) * 4))  # places the new rows too
            return
        table, mask = self._table, len(self._table) - 1
        shift = np.uint64(64 - (len(table).bit_length() - 1))
        slots = (hash_keys(k0, k1, org) >> shift).astype(np.int64)
        pend = rows.astype(np.int32)
        reused = 0
        while pend.size:
            cur = table[slots]
            free = (cur == EMPTY) | (cur == TOMB)
            table[slots[free]] = pend[free]  # duplicate slots: one write wins
            won = free & (table[slots] == pend)
            reused += int(np.count_nonzero(won & (cur == TOMB)))
            lost = ~won
            pend, slots = pend[lost], (slots[lost] + 1) & mask
        self._used += m
        self._tombs -= reused

    def delete(self, row: int) -> None:
        """Forget a row's key (tombstone its slot; the table is compacted on the next resize)."""
        if not self.live[row]:
            return
        found, s = self._probe(int(self.k0[row]), int(self.k1[row]), int(self.org[row]))
        if found == row:
            self._table[s] = TOMB
            self._used -= 1
            self._tombs += 1
        self.live[row] = False

    def key(self, row: int) -> tuple[int, int, int]:
        return int(self.k0[row]), int(self.k1[row]), int(self.org[row])

    # -- batch lookup (reader side, lock-free) ---------------------------------------------------------

    def lookup(self, k0: np.ndarray, k1: np.ndarray, org: np.ndarray) -> np.ndarray:
        """Rows of a batch of keys as int64, -1 for unknown keys.

        One pass in C (`_keytable.lookup`), the GIL released: the ingest path passes strided fields of the
        decoder's point records as they are, and render threads get the interpreter meanwhile."""
        table, shift, _mask, K0, K1, KO = self._snap
        org = np.asarray(org)
        if org.dtype != np.uint32:
            org = org.astype(np.int64).astype(np.uint32)  # -1 (public org) wraps like the key column
        k0 = np.asarray(k0, np.uint64)
        k1 = np.asarray(k1, np.uint64)
        out = np.empty(k0.shape[0], np.int64)
        _keytable.lookup(table, int(shift), K0, K1, KO, k0, k1, org, out)
        return out

    def lookup_numpy(self, k0: np.ndarray, k1: np.ndarray, org: np.ndarray) -> np.ndarray:
        """`lookup` with numpy only: the reference the C probe is tested against (same table, same answers)."""
        table, shift, mask, K0, K1, KO = self._snap
        # Contiguous copies: the ingest path passes fields of the decoder's 40-byte point records, and every
        # round below (hash, compares, gathers of the pending keys) is faster on packed arrays than on
        # strided views; the copies cost less than one round of strided reads.
        k0 = np.ascontiguousarray(k0, np.uint64)
        k1 = np.ascontiguousarray(k1, np.uint64)
        org = np.asarray(org)
        if org.dtype != np.uint32:
            org = org.astype(np.int64).astype(np.uint32)  # -1 (public org) wraps like the key column
        else:
            org = np.ascontiguousarray(org)
        n = k0.shape[0]
        out = np.full(n, -1, np.int64)
        if n == 0:
            return out
        nk = K0.shape[0]
        slots = (hash_keys(k0, k1, org) >> shift).astype(np.int64)
        pend = None  # indices into the batch still probing; None = all of them
        while True:
            r = table[slots].astype(np.int64)
            valid = (r >= 0) & (r < nk)
            rc = np.where(valid, r, 0)
            if pend is None:
                hit = valid & (K0[rc] == k0) & (K1[rc] == k1) & (KO[rc] == org)
                out[hit] = r[hit]
                cont = (r != EMPTY) & ~hit
                pend = np.flatnonzero(cont)
            else:
                hit = valid & (K0[rc] == k0[pend]) & (K1[rc] == k1[pend]) & (KO[rc] == org[pend])
                out[pend[hit]] = r[hit]
                cont = (r != EMPTY) & ~hit
                pend = pend[cont]
            if pend.size == 0:
                return out
            slots = (slots[cont] + 1) & mask
