"""Patches kept for the phase-offset solve, at a memory that does not grow with the number of frames.

Solving the per-patch phase offsets needs every overlap product H_mk = Σ w_m w_k conj(p_m) p_k, and the blend
needs every patch once the offsets are known — so, held in memory, the patches grow with the scan (63 kB per
frame for the default probe: 1.3 GB at 20,000 frames). Here, as frames arrive in index order:

- each pair's H_mk is taken as soon as its later window k arrives (the pairs are known from the positions
  before any frame is read), so only the patches whose overlapping windows are still to come stay in memory
  — the few scan rows a window overlaps, in a raster or a spiral, since neighbours arrive close together; at worst
  (frames in random order) every patch, as before;
- the patches themselves wait for the blend in memory up to a budget (128 MiB: ≈ 2,000 frames of
  the default probe, where writing and reading them back would cost more than it saves), beyond that in an
  unlinked temporary file (``TMPDIR``; the operating system removes it however the process ends), which the
  blend reads back in order, a chunk at a time.
"""

from __future__ import annotations

import errno
import os
import tempfile

import numpy as np
from scipy import sparse

from ptyfast.errors import InputError, OutputError
from ptyfast.io.atomic import is_disk_full
from ptyfast.runtime.phase_align import overlap_pairs

#: Patches held in memory for the blend before they go to the temporary file (MiB; ``PTYFAST_PATCH_MEMORY_MB``
#: overrides it, e.g. on a machine with little memory).
MEMORY_BUDGET_MB = 128


def memory_budget() -> int:
    """The budget in bytes (the environment's ``PTYFAST_PATCH_MEMORY_MB`` or :data:`MEMORY_BUDGET_MB`)."""
    value = os.environ.get("PTYFAST_PATCH_MEMORY_MB", "")
    try:
        return int(float(value) * 2**20) if value.strip() else MEMORY_BUDGET_MB * 2**20
    except ValueError:
        raise InputError(f"PTYFAST_PATCH_MEMORY_MB must be a number of MiB; found '{value}'.") from None


class SpilledPatches:
    """Patches (complex64, ``shape``) of windows at ``positions`` (N, 2), added in index order with
    :meth:`add`; :meth:`matrix` is the overlap matrix H of :func:`ptyfast.runtime.phase_align.overlap_matrix`,
    :meth:`chunks` reads the patches back in order."""

    def __init__(self, positions: np.ndarray, weight: np.ndarray, *, budget: int | None = None) -> None:
        self.shape = tuple(weight.shape)
        self.pairs = overlap_pairs(positions, weight)
        self._needed_until = self.pairs.last_partner()
        order = np.argsort(self.pairs.pairs[:, 1], kind="stable")  # pairs grouped by their later window
        self._by_later, self._later = order, self.pairs.pairs[order, 1]
        self.values = np.zeros(len(self.pairs.pairs), np.complex128)
        self._held: dict[int, np.ndarray] = {}  # patches still needed for an overlap product
        self._pending: list[np.ndarray] = []  # batches waiting for the blend in memory (not yet in the file)
        self._pending_bytes = 0
        self._budget = memory_budget() if budget is None else budget  # bytes
        self._file = None  # created when the budget is first exceeded
        self.count = 0
        self.most_held = 0  # the largest number of patches held for overlap products at once

    @property
    def spilled(self) -> bool:
        """Whether the patches went to the temporary file (the budget was exceeded)."""
        return self._file is not None

    def add(self, patches: np.ndarray) -> None:
        """Append the next ``len(patches)`` windows' patches."""
        patches = np.ascontiguousarray(patches, np.complex64)
        first, n = self.count, len(patches)
        if n == 0:
            return
        if first + n > self.pairs.n:
            raise ValueError(f"{first + n} patches added to a store of {self.pairs.n} windows")
        self._pending.append(patches)
        self._pending_bytes += patches.nbytes
        if self._file is not None or self._pending_bytes > self._budget:
            self._flush()
        for i in range(n):
            self._held[first + i] = patches[i]
        lo, hi = np.searchsorted(self._later, [first, first + n])
        for j in self._by_later[lo:hi].tolist():
            m, k = self.pairs.pairs[j]
            self.values[j] = self.pairs.product(j, self._held[int(m)], self._held[int(k)])
        self.count += n
        self.most_held = max(self.most_held, len(self._held))
        for i in [i for i in self._held if self._needed_until[i] < self.count]:
            del self._held[i]

    def _flush(self) -> None:
        """Write the pending batches to the temporary file (made on first use)."""
        if self._file is None:
            self._file = tempfile.TemporaryFile(prefix="ptyfast-patches-")
        try:
            for batch in self._pending:
                self._file.write(batch.data)
        except OSError as exc:
            if is_disk_full(exc):
                what = {errno.EFBIG: "the file-size limit (ulimit -f) was reached",
                        errno.EDQUOT: "quota exceeded"}.get(exc.errno, "no space left")
                raise OutputError(
                    f"{what} on {tempfile.gettempdir()} while keeping the patches for the phase-offset solve "
                    f"({self._pending[0][0].nbytes / 1e3:.0f} kB per frame); nothing was written; set TMPDIR to a "
                    "larger disk or pass --no-align-phase.") from exc
            raise
        self._pending, self._pending_bytes = [], 0

    def matrix(self) -> sparse.csr_matrix:
        """H (N × N); every pair must have arrived."""
        if self.count != self.pairs.n:
            raise ValueError(f"only {self.count} of {self.pairs.n} patches were added")
        return self.pairs.matrix(self.values)

    def chunks(self, size: int):
        """(first index, patches (≤ size, h, w)) in order: the batches held in memory, or read back from the
        file ``size`` patches at a time."""
        if self._file is None:
            s = 0
            for batch in self._pending:
                yield s, batch
                s += len(batch)
            return
        self._flush()
        self._file.seek(0)
        for s in range(0, self.count, size):
            buf = np.empty((min(size, self.count - s), *self.shape), np.complex64)
            if self._file.readinto(buf.data) != buf.nbytes:
                raise OSError(f"the temporary patch file ended early at patch {s}")
            yield s, buf

    def close(self) -> None:
        self._held.clear()
        self._pending = []
        if self._file is not None:
            self._file.close()
