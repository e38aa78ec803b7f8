"""Per-patch phase offsets solved from the scan's overlaps (phase synchronisation) before blending.

One far-field pattern cannot determine its patch's mean phase (|F(P·O·e^{iθ})|² = |F(P·O)|²), so a network
trained with ptyfast's ``lit`` loss outputs each patch with its own offset θ_n (manifest
``phase_offsets = "free"``). Where two windows overlap, the object is the same, so the offsets follow from the
overlaps: with unit factors z_n = e^{iθ_n}, minimise

    Σ_{m<n} Σ_overlap w_m w_n |z_m p_m − z_n p_n|²   ⇔   maximise  z^H H z,   H_mn = Σ_overlap w_m w_n p̄_m p_n,

(``reconstruct`` passes w = 1 on the lit pixels, |P|² ≥ 10 % of its maximum, where the network was trained,
0 elsewhere: :attr:`~ptyfast.runtime.stitch.StitchPlan.solve_weight`; overlaps on integer-rounded relative
shifts). H is sparse (each window
overlaps a few dozen neighbours). The spectral relaxation (leading eigenvector of the degree-normalised H)
gives the start; a few generalised power steps z ← H z / |H z| refine it (each step can only increase z^H H z).
The common offset is free: it is fixed so the mean rotation is zero (the network's average phase is kept).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.sparse.linalg import eigsh
from scipy.spatial import cKDTree

from ptyfast import threads
from ptyfast.kernels import asnumpy, overlap_products

#: Pairs whose overlap Σ w_m w_n is below this fraction of a window's own Σ w² are ignored.
MIN_OVERLAP = 0.02


def support_box(weight: np.ndarray, fraction: float = 1e-2) -> tuple[slice, slice]:
    """Bounding box of the pixels whose weight is ≥ ``fraction`` of the maximum (where patches matter).

    For the default probe: 89 × 89 of 128 × 128 pixels holding 99.2 % of Σ|P|², i.e. 63 kB per kept patch.
    """
    ys, xs = np.nonzero(weight >= fraction * float(weight.max()))
    return slice(int(ys.min()), int(ys.max()) + 1), slice(int(xs.min()), int(xs.max()) + 1)


@dataclass
class OverlapPairs:
    """The overlapping window pairs of a scan, each with where they overlap and the weight products there.

    ``pairs`` (P, 2) int, m < k; ``shift_of`` (P,) indexes ``shifts``, one entry per rounded relative shift:
    (window m's overlap slices, window k's, w_m·w_k on the overlap). Computed from the positions alone, so
    they are known before any patch exists."""

    n: int
    pairs: np.ndarray
    shift_of: np.ndarray
    shifts: list

    def product(self, j: int, pm: np.ndarray, pk: np.ndarray) -> complex:
        """H_mk = Σ w_m w_k conj(p_m) p_k over the overlap of pair ``j`` (patches ``pm``, ``pk``)."""
        in_m, in_k, both = self.shifts[self.shift_of[j]]
        return np.vdot(pm[in_m], pk[in_k] * both)

    def rects(self) -> np.ndarray:
        """(P, 8) int32 per pair: m, k, the overlap's top-left corner (y, x) in window m, in window k, and its
        size (rows, cols), in pixels of the whole window: the ``rects`` of :func:`ptyfast.kernels.overlap_products`."""
        per_shift = np.array([[in_m[0].start, in_m[1].start, in_k[0].start, in_k[1].start,
                               in_m[0].stop - in_m[0].start, in_m[1].stop - in_m[1].start]
                              for in_m, in_k, _ in self.shifts], np.int64).reshape(-1, 6)
        return np.column_stack([self.pairs, per_shift[self.shift_of]]).astype(np.int32).reshape(-1, 8)

    def last_partner(self) -> np.ndarray:
        """For each window, the largest index of a window it overlaps (itself when none): in a scan read in
        index order, a patch is needed until that window has arrived."""
        last = np.arange(self.n)
        if len(self.pairs):
            np.maximum.at(last, self.pairs[:, 0], self.pairs[:, 1])
        return last

    def matrix(self, values: np.ndarray) -> sparse.csr_matrix:
        """The Hermitian sparse H (N × N) from one value H_mk per pair."""
        m, k = self.pairs[:, 0], self.pairs[:, 1]
        v = np.asarray(values, np.complex128)
        return sparse.csr_matrix((np.concatenate([v, np.conj(v)]), (np.concatenate([m, k]), np.concatenate([k, m]))),
                                 shape=(self.n, self.n))


def overlap_pairs(positions: np.ndarray, weight: np.ndarray) -> OverlapPairs:
    """The pairs of windows (top-left corners ``positions`` (N, 2), (y, x)) of weight ``weight`` (h, w) that
    overlap; pairs whose overlap Σ w_m w_n is below ``MIN_OVERLAP`` of a window's own Σ w² are left out (they
    barely overlap where the probe is bright). Overlaps are taken on integer-rounded relative shifts; the
    weight products depend only on that shift, so they are computed once per shift. Only the bounding box of
    the nonzero weights counts (the solve's lit pixels: 47² of the default probe's 89² box), so the overlaps,
    and the products taken over them, are no larger than it; their slices index the whole window."""
    weight = np.asarray(weight, np.float32)
    ys, xs = np.nonzero(weight)
    if len(ys) == 0:
        return OverlapPairs(len(positions), np.zeros((0, 2), np.int64), np.zeros(0, np.int64), [])
    y0, x0 = int(ys.min()), int(xs.min())
    weight = weight[y0 : int(ys.max()) + 1, x0 : int(xs.max()) + 1]
    h, w = weight.shape
    pos = np.round(np.asarray(positions, float)).astype(np.int64)
    self_power = float(np.sum(weight * weight))
    found = cKDTree(pos).query_pairs(r=max(h, w) - 1, p=np.inf, output_type="ndarray") if len(pos) > 1 else \
        np.zeros((0, 2), np.int64)
    found = found.astype(np.int64).reshape(-1, 2)  # query_pairs gives m < k
    d = pos[found[:, 1]] - pos[found[:, 0]]
    inside = (np.abs(d[:, 0]) < h) & (np.abs(d[:, 1]) < w)
    found, d = found[inside], d[inside]
    unique, which = np.unique(d, axis=0, return_inverse=True)  # the weight products depend on the shift alone
    index = np.full(len(unique), -1, np.int64)
    shifts = []
    for u, (dy, dx) in enumerate(unique.tolist()):
        # window m's pixels [ym0:ym1, xm0:xm1] are window k's [ym0-dy:ym1-dy, xm0-dx:xm1-dx] (in the box)
        ym0, ym1, xm0, xm1 = max(0, dy), min(h, h + dy), max(0, dx), min(w, w + dx)
        both = weight[ym0:ym1, xm0:xm1] * weight[ym0 - dy : ym1 - dy, xm0 - dx : xm1 - dx]
        if float(both.sum()) >= MIN_OVERLAP * self_power:
            index[u] = len(shifts)
            in_m = (slice(y0 + ym0, y0 + ym1), slice(x0 + xm0, x0 + xm1))
            in_k = (slice(y0 + ym0 - dy, y0 + ym1 - dy), slice(x0 + xm0 - dx, x0 + xm1 - dx))
            shifts.append((in_m, in_k, both.astype(np.complex64)))  # complex: no per-pair cast in product()
    shift_of = index[np.asarray(which).ravel()] if len(found) else np.zeros(0, np.int64)
    keep = shift_of >= 0
    pairs, shift_of = found[keep], shift_of[keep]
    return OverlapPairs(len(pos), pairs, shift_of, shifts)


def overlap_matrix(patches, positions: np.ndarray, weight: np.ndarray) -> sparse.csr_matrix:
    """Sparse Hermitian H (N × N) on the host, H_mn = Σ w_m w_n conj(p_m) p_n over the overlap of windows m ≠ n.

    ``patches`` (N, h, w) complex64, numpy or CuPy: the products are taken where the patches are
    (:func:`ptyfast.kernels.overlap_products`) and only they, one per pair, come to the host; ``positions``
    (N, 2) (y, x) of each window's top-left corner, ``weight`` (h, w) the stitching weight (see
    :func:`overlap_pairs` for which pairs count). No weighted copy of the patches is made (1.3 GB at 20,000
    frames)."""
    op = overlap_pairs(positions, weight)
    return op.matrix(asnumpy(overlap_products(patches, op.rects(), weight)))


def solve_phase_offsets(patches, positions: np.ndarray, weight: np.ndarray, *, iterations: int = 30) -> np.ndarray:
    """Unit factors z (N,) complex64 on the host such that z_n · patch_n agree on the overlaps (least squares,
    see module); ``patches`` numpy or CuPy (see :func:`overlap_matrix`)."""
    if len(patches) < 2:
        return np.ones(len(patches), np.complex64)
    return offsets_from_overlaps(overlap_matrix(patches, positions, weight), iterations=iterations)


def offsets_from_overlaps(H: sparse.csr_matrix, *, iterations: int = 30) -> np.ndarray:
    """Unit factors z (N,) maximising z^H H z (see the module docstring) from the overlap matrix H."""
    n = H.shape[0]
    if n < 2:
        return np.ones(n, np.complex64)
    with threads.serial_blas():
        return _leading_offsets(H, n, iterations)


def _leading_offsets(H: sparse.csr_matrix, n: int, iterations: int) -> np.ndarray:
    degree = np.asarray(np.abs(H).sum(axis=1)).ravel()
    linked = degree > 0
    z = np.ones(n, np.complex128)
    if linked.sum() >= 3:
        d = 1.0 / np.sqrt(np.where(linked, degree, 1.0))
        Hn = sparse.diags(d) @ H @ sparse.diags(d)
        try:
            _, v = eigsh(Hn, k=1, which="LA", v0=np.where(linked, 1.0, 0.0).astype(np.complex128), tol=1e-6,
                         maxiter=max(1000, 20 * n))
            v = d * v[:, 0]
            z = np.where(linked & (np.abs(v) > 0), v / np.maximum(np.abs(v), 1e-300), 1.0)
        except Exception:  # ARPACK did not converge: the power steps below still improve on z = 1
            pass
    for _ in range(iterations):
        hz = H @ z
        z = np.where(np.abs(hz) > 0, hz / np.maximum(np.abs(hz), 1e-300), z)
    total = z.sum()
    if abs(total) > 0:
        z *= np.conj(total) / abs(total)
    return z.astype(np.complex64)
