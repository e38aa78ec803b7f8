"""Detector pixel sanity: find the pixels whose values are not photon counts, so they can be masked on read.

Real detectors put values in their frames that are not measurements: Eiger/Jungfrau-type counters write the
dtype's maximum (2¹⁶−1, 2³²−1) in dead, hot or gap pixels; Pilatus-type ones write −1 or −2 there; a pixel
may be dead (zero in every frame while its neighbours count) or hot (far above its neighbours in every
frame); a beam stop blocks a disk around the direct beam; a counter saturates at a fixed count. None of
these is signal, and one pinned pixel at 2³²−1 outweighs every photon of a frame.

:func:`find_bad_pixels` looks at an evenly spaced sample of frames (:func:`sample_indices`, at most
:data:`SAMPLE_FRAMES`) and returns a :class:`PixelReport`: the (H, W) mask of pixels to drop and why. Each
test is built so that clean photon-counting data (Poisson statistics, any probe, any sample) triggers none:

* **pinned** — the integer dtype's maximum in any sampled frame, a negative value of a signed integer
  dtype (Pilatus-type gap and bad-pixel markers) in any sampled frame, or (float data converted from a
  detector) a finite value ≥ 2³¹ in any frame, or the same value ≥ 2¹⁶−1 in every frame. Negative, NaN
  and Inf floats are not masked here: validation refuses them by name (a file must flag them itself).
* **saturated** — the sample's maximum count (≥ :data:`MIN_SATURATION`) reached at least
  :data:`MIN_SATURATED_HITS` times across two or more pixels, and more than twice as often as all values
  within one count below it: a clipped counter piles its counts up at the clip level, a natural (Poisson)
  tail thins out towards its maximum. ``share`` in the report: the fraction of the sample's photons that
  the saturated pixels hold (the information the mask removes).
* **dead / blocked** — connected groups of pixels that are zero in every sampled frame while nearly all the
  pixels around the group (the 10th percentile of the ring) receive, summed over the sample, ≥
  :data:`DEAD_EVIDENCE` photons (the chance that a pixel counting like its neighbours stays at zero is then
  below e⁻³⁰; a physical dark fringe or the edge of the probe's pupil has dim pixels beside it). One or a few pixels
  are *dead*; a group of more than four within two pixels of the zero frequency is a *beam stop*.
* **hot** — pixels above the brightest of their four edge neighbours by more than ten standard deviations
  (Poisson) and by a factor of four in every sampled frame, more than four pixels from the zero frequency and from the pattern's brightest spot (a
  low-NA direct beam can be a one-pixel spike). An
  oversampled pattern (probe within half the window) is band-limited: a real peak's edge neighbours hold at
  least sinc²(½) ≈ 0.4 of it, so no physical feature is four times its brightest neighbour.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

SAMPLE_FRAMES = 64  #: frames read to judge the pixels
MIN_SATURATION = 10.0  #: a clipped plateau below this many counts is indistinguishable from low-count noise
MIN_SATURATED_HITS = 4  #: (pixel, frame) pairs at the sample's maximum that reveal a clipped counter
DEAD_EVIDENCE = 30.0  #: mean photons (over the sample) around a zero pixel group that make it dead, not dark
HOT_SIGMA = 10.0  #: Poisson standard deviations above the brightest edge neighbour, in every frame
HOT_FACTOR = 4.0  #: and this many times the brightest edge neighbour
CENTRE_GUARD = 4  #: pixels around the brightest point of the mean pattern never called hot


@dataclass
class PixelReport:
    """Pixels found not to hold photon counts.

    ``bad``: (H, W) bool, True where the pixel should be masked. ``counts``: number of pixels per reason
    (``pinned``, ``saturated``, ``dead``, ``beam stop``, ``hot``; a pixel counts under its first reason).
    ``frames``: frames sampled. ``detail``: per-reason text for the message (the value found, …)."""

    bad: np.ndarray
    counts: dict = field(default_factory=dict)
    detail: dict = field(default_factory=dict)
    frames: int = 0
    saturated_share: float = 0.0  #: fraction of the sampled photons in the saturated pixels
    saturation: float | None = None  #: the clip level found, counts

    @property
    def n_bad(self) -> int:
        return int(self.bad.sum())

    def summary(self) -> str:
        """One line: how many pixels were masked and why (empty when none)."""
        if not self.n_bad:
            return ""
        parts = [f"{n} {reason}" + (f" ({self.detail[reason]})" if reason in self.detail else "")
                 for reason, n in self.counts.items() if n]
        return (f"masked {self.n_bad} detector pixel{'s' if self.n_bad != 1 else ''} that do not hold photon "
                f"counts: {', '.join(parts)} (judged on {self.frames} sampled frames; --no-auto-mask keeps them)")

    def as_dict(self) -> dict:
        """JSON-serialisable provenance."""
        return {"masked": self.n_bad, "reasons": {k: int(v) for k, v in self.counts.items() if v},
                "detail": dict(self.detail), "frames_sampled": self.frames,
                "saturated_share": self.saturated_share, "saturation_counts": self.saturation}


def sample_indices(n_frames: int, limit: int = SAMPLE_FRAMES) -> np.ndarray:
    """At most ``limit`` evenly spaced frame indices (first and last included)."""
    if n_frames <= limit:
        return np.arange(n_frames)
    return np.unique(np.linspace(0, n_frames - 1, limit).round().astype(np.int64))


def read_sample(diffraction, limit: int = SAMPLE_FRAMES) -> np.ndarray:
    """The sampled frames of a (possibly lazy) (N, H, W) stack, in their stored dtype."""
    n = int(diffraction.shape[0])
    idx = sample_indices(n, limit)
    if len(idx) == n:
        return np.asarray(diffraction[:])
    return np.stack([np.asarray(diffraction[int(i)]) for i in idx])


def _pinned(sample: np.ndarray) -> tuple[np.ndarray, str]:
    dtype = sample.dtype
    if dtype.kind in "ui":
        top = np.iinfo(dtype).max
        bad = (sample == top).any(axis=0)
        what = f"at {top}, the {dtype} maximum"
        if dtype.kind == "i":
            bad |= (sample < 0).any(axis=0)
            what += ", or negative"
        return bad, what
    if dtype.kind == "f":  # NaN, Inf and negative floats are left to validation, which names them
        with np.errstate(invalid="ignore"):
            finite = np.isfinite(sample)
            huge = (finite & (sample >= 2.0**31)).any(axis=0)
            stuck = (finite & (sample >= 2.0**16 - 1)).all(axis=0) & (sample == sample[0]).all(axis=0)
        return huge | stuck, "≥ 2³¹ or stuck at one value ≥ 65535"
    return np.zeros(sample.shape[1:], bool), ""


def _saturated(sample: np.ndarray, bad: np.ndarray) -> tuple[np.ndarray, float]:
    good = np.where(bad, 0, sample).astype(np.float64, copy=False)
    top = float(good.max()) if good.size else 0.0
    if top < MIN_SATURATION:
        return np.zeros(bad.shape, bool), top
    hits = good == top
    below = int(np.count_nonzero((good >= top - 1) & (good < top)))
    per_pixel = hits.any(axis=0)
    # a clipped counter piles its counts up at the clip level; a natural tail thins out towards its maximum
    if hits.sum() >= MIN_SATURATED_HITS and per_pixel.sum() >= 2 and hits.sum() > 2 * below:
        return per_pixel, top
    return np.zeros(bad.shape, bool), top


def _dead(total: np.ndarray, bad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Zero groups with bright surroundings → (dead, beam stop) masks."""
    zero = (total == 0) & ~bad
    labels, count = ndimage.label(zero)
    dead = np.zeros_like(zero)
    stop = np.zeros_like(zero)
    if not count:
        return dead, stop
    h, w = zero.shape
    centre = (h // 2, w // 2)  # the zero frequency (the Scan contract)
    for k, sl in enumerate(ndimage.find_objects(labels), start=1):
        y0, y1 = max(sl[0].start - 1, 0), min(sl[0].stop + 1, h)
        x0, x1 = max(sl[1].start - 1, 0), min(sl[1].stop + 1, w)
        group = labels[y0:y1, x0:x1] == k
        ring = ndimage.binary_dilation(group) & ~group & ~bad[y0:y1, x0:x1]
        if not ring.any():
            continue
        if float(np.percentile(total[y0:y1, x0:x1][ring], 10)) < DEAD_EVIDENCE:
            continue
        near_centre = y0 - 2 <= centre[0] < y1 + 2 and x0 - 2 <= centre[1] < x1 + 2
        target = stop if near_centre and group.sum() > 4 else dead
        target[y0:y1, x0:x1] |= group
    return dead, stop


def _hot(sample: np.ndarray, mean: np.ndarray, bad: np.ndarray) -> np.ndarray:
    hot = np.ones(bad.shape, bool)
    cross = np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], bool)
    for frame in sample:
        f = frame.astype(np.float32)
        f[bad] = np.inf  # a pixel beside a bad one cannot be judged against it
        top = ndimage.maximum_filter(f, footprint=cross, mode="nearest")
        f[bad] = 0.0
        hot &= (f > top + HOT_SIGMA * np.sqrt(top + 1.0)) & (f > HOT_FACTOR * top)
        if not hot.any():
            return hot
    h, w = bad.shape
    bright = np.unravel_index(int(np.argmax(ndimage.uniform_filter(mean, 3))), mean.shape)
    for cy, cx in (bright, (h // 2, w // 2)):  # the brightest spot and the zero frequency (the direct beam)
        hot[max(cy - CENTRE_GUARD, 0) : cy + CENTRE_GUARD + 1, max(cx - CENTRE_GUARD, 0) : cx + CENTRE_GUARD + 1] = False
    return hot & ~bad


def find_bad_pixels(sample: np.ndarray, valid: np.ndarray | None = None) -> PixelReport:
    """Judge the detector pixels from ``sample`` (k, H, W), a few frames in their stored dtype.

    ``valid`` (bool (H, W), True = good; the file's own mask) excludes pixels already masked: they are
    neither reported nor used as evidence. Returns the pixels to mask beyond ``valid``'s (see the module
    docstring for the tests)."""
    sample = np.asarray(sample)
    shape = sample.shape[1:]
    known = np.zeros(shape, bool) if valid is None else ~np.asarray(valid, bool)
    counts: dict = {}
    detail: dict = {}
    pinned, what = _pinned(sample)
    pinned &= ~known
    counts["pinned"] = int(pinned.sum())
    if counts["pinned"]:
        detail["pinned"] = what
    bad = known | pinned
    if sample.dtype.kind == "f":  # NaN/Inf are validation's to refuse; here they must not look like signal
        sample = np.where(np.isfinite(sample), sample, 0)
    saturated, top = _saturated(sample, bad)
    saturated &= ~bad
    counts["saturated"] = int(saturated.sum())
    share = 0.0
    if counts["saturated"]:
        photons = np.where(bad, 0, sample).astype(np.float64, copy=False).sum(axis=0)
        share = float(photons[saturated].sum() / max(photons.sum(), 1e-30))
        detail["saturated"] = f"at {top:g} counts, holding {share:.1%} of the photons"
    bad |= saturated
    clean = np.where(bad, 0, sample).astype(np.float64, copy=False)
    total = clean.sum(axis=0)
    mean = total / max(len(sample), 1)
    dead, stop = _dead(total, bad)
    counts["dead"], counts["beam stop"] = int(dead.sum()), int(stop.sum())
    if counts["beam stop"]:
        detail["beam stop"] = "zero in every sampled frame around the bright centre"
    bad |= dead | stop
    hot = _hot(sample, mean, bad)
    counts["hot"] = int(hot.sum())
    bad |= hot
    return PixelReport(bad=bad & ~known, counts=counts, detail=detail, frames=len(sample),
                       saturated_share=share, saturation=top if counts["saturated"] else None)


def mask_bad_pixels(diffraction, mask: np.ndarray | None, meta: dict) -> np.ndarray | None:
    """The scan's mask (True = valid) with the pixels :func:`find_bad_pixels` finds removed; records the
    :class:`PixelReport` in ``meta["auto_mask"]`` (and its one-line summary in ``meta["auto_mask_note"]``)."""
    report = find_bad_pixels(read_sample(diffraction), mask)
    meta["auto_mask"] = report.as_dict()
    if not report.n_bad:
        return mask
    meta["auto_mask_note"] = report.summary()
    return ~report.bad if mask is None else np.asarray(mask, bool) & ~report.bad
