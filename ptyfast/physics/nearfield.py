"""Near-field (holographic) data told from far-field data by how detector features follow the scan.

ptyfast's networks reconstruct far-field ptychography only; readers flag near-field files so that every command
can refuse them with one sentence (:func:`detect_near_field`).
"""

from __future__ import annotations

import numpy as np

from ptyfast.scan import Scan


NEAR_FIELD_THRESHOLD = 0.8  #: translation-tracking R² at or above which data are called near-field


def near_field_score(frames, positions: np.ndarray, *, pairs: int = 32, exclude: int = 2) -> tuple[float, float]:
    """How well the detector-plane features follow the scan: the translation-tracking R² in [0, 1].

    Physics: a near-field (Fresnel) hologram is a real-space image of the sample, so when the sample moves,
    its features move across the detector by (magnification × step). A far-field pattern is the sample's
    Fourier transform: a translation only changes the phase, so its features stay put. (The geometry alone
    cannot tell the two apart: cone-beam near-field set-ups have λz/p² like far-field ones, and both show a
    bright illuminated disc.)

    Method: frames are read for up to ``pairs`` scan points spread over the scan and one of the 8 nearest
    scan neighbours of each. Each frame is turned into its relative modulation ``I / M − 1`` on the
    illuminated area (``M`` the smoothed mean frame of the sample, illuminated where ``M > 5 %`` of its max),
    high-passed (minus a σ = 4 px Gaussian blur) so that the fixed illumination envelope drops out. For each
    pair the cross-correlation peak, searched outside |shift| ≤ ``exclude`` px (fixed-pattern features such
    as detector defects pin a peak at zero), gives a detector shift ``s``. A linear map ``s ≈ A · Δposition``
    (2×2, any magnification, rotation or axis flip) is fitted by least squares and the score is its
    R² = 1 − Σ|s − AΔ|² / Σ|s|². Near-field holograms track the scan (R² → 1); far-field shifts are random
    (R² ≈ 0-0.4; a strongly defocused probe shows a partial shadow image in its bright field).

    Values measured (pairs = 32): PETRA III P25 near-field CXI 0.99; Tike Siemens star (far-field) 0.40;
    ptyfast simulations 0.03-0.14 (bundled probe raster/Fermat, Fresnel probes 5 µm and 500 µm out of focus,
    Poisson noise). The threshold 0.8 sits between them.

    Parameters
    ----------
    frames : array-like, (N, H, W)
        Intensities (lazy datasets are fine: only ~2 × ``pairs`` frames are read).
    positions : ndarray, (N, 2)
        Scan positions in any consistent unit.

    Returns
    -------
    score : float
        R² in [0, 1], or NaN when it cannot be measured (fewer than 6 frames, degenerate positions, no
        illuminated area).
    median_shift : float
        Median detected detector shift in pixels.
    """
    from scipy import ndimage
    from scipy.spatial import cKDTree

    positions = np.asarray(positions, np.float64)
    n = len(positions)
    if n < 6 or np.ptp(positions, axis=0).max() <= 0:
        return float("nan"), float("nan")
    idx = np.unique(np.linspace(0, n - 1, min(n, pairs)).astype(int))
    k = min(n, 9)
    _, nb = cKDTree(positions).query(positions[idx], k=k)
    pair_list = [(int(a), int(row[1 + q % (k - 1)])) for q, (a, row) in enumerate(zip(idx, nb))]
    sel = np.unique(np.array(pair_list).ravel())
    stack = np.asarray(frames[sel], dtype=np.float64)
    stack = np.where(np.isfinite(stack), np.maximum(stack, 0), 0)
    rows = {int(i): stack[q] for q, i in enumerate(sel)}
    mean = ndimage.gaussian_filter(stack.mean(axis=0), 2)
    if mean.max() <= 0:
        return float("nan"), float("nan")
    lit = mean > 0.05 * mean.max()

    def modulation(i: int) -> np.ndarray:
        r = np.where(lit, rows[i] / np.maximum(mean, 1e-12) - 1, 0)
        return np.where(lit, r - ndimage.gaussian_filter(r, 4), 0)

    h, w = mean.shape
    fy, fx = np.fft.fftfreq(h) * h, np.fft.fftfreq(w) * w
    near_zero = (np.abs(fy)[:, None] <= exclude) & (np.abs(fx)[None, :] <= exclude)
    shifts, steps = [], []
    for a, b in pair_list:
        ra, rb = modulation(a), modulation(b)
        c = np.real(np.fft.ifft2(np.fft.fft2(rb) * np.conj(np.fft.fft2(ra))))
        c[near_zero] = -np.inf
        iy, ix = np.unravel_index(int(np.argmax(c)), c.shape)
        shifts.append((fy[iy], fx[ix]))
        steps.append(positions[b] - positions[a])
    s, d = np.array(shifts), np.array(steps)
    a_map = np.linalg.lstsq(d, s, rcond=None)[0]
    r2 = 1.0 - float(((s - d @ a_map) ** 2).sum()) / max(float((s**2).sum()), 1e-12)
    return float(np.clip(r2, 0.0, 1.0)), float(np.median(np.hypot(s[:, 0], s[:, 1])))


def detect_near_field(scan: Scan, *, threshold: float = NEAR_FIELD_THRESHOLD) -> tuple[bool, str, float]:
    """Decide near- vs far-field from the data (:func:`near_field_score`).

    Returns
    -------
    near_field : bool
    reason : str
        One sentence for ``scan.meta["near_field_reason"]`` and ``ptyfast info``.
    score : float
        The translation-tracking R² (NaN when not measurable; then far-field is assumed).
    """
    score, shift = near_field_score(scan.diffraction, scan.positions)
    if not np.isfinite(score):
        return False, "far-field assumed: too few frames or positions to test how features move", score
    if score >= threshold:
        return True, (f"detector features follow the scan like a near-field hologram (translation-tracking "
                      f"R² {score:.2f} ≥ {threshold}, median shift {shift:.0f} px)"), score
    return False, (f"far-field: detector features do not follow the scan (translation-tracking R² "
                   f"{score:.2f} < {threshold})"), score
