"""Image-quality metrics for complex objects: MSE, PSNR, SSIM (scikit-image), Fourier ring correlation.

Ptychography determines the object only up to a global phase offset (and, with per-pattern max
normalisation, the amplitude only up to a scale). Phase comparisons therefore first remove the global
offset δ = arg Σ conj(truth)·recon over the compared region, and unwrap the phase relative to the truth:
φ_r = φ_t + wrap(arg(recon) − φ_t − δ). PSNR uses the truth's span inside the region as data range.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ptyfast.errors import InputError


def remove_phase_offset(recon: np.ndarray, truth: np.ndarray, region: np.ndarray | None = None) -> np.ndarray:
    """``recon`` multiplied by exp(−iδ), δ the global phase offset to ``truth`` within ``region``."""
    sel = np.ones(truth.shape, bool) if region is None else region
    delta = np.angle(np.sum(np.conj(truth[sel]) * recon[sel]))
    return recon * np.exp(-1j * delta)


def aligned_phase(recon: np.ndarray, truth: np.ndarray, region: np.ndarray | None = None) -> np.ndarray:
    """Phase of ``recon`` after offset removal, unwrapped to lie within π of the truth's phase."""
    r = remove_phase_offset(recon, truth, region)
    pt = np.angle(truth)
    return pt + np.angle(r * np.exp(-1j * pt))


def mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((np.asarray(a, float) - np.asarray(b, float)) ** 2))


def psnr(truth: np.ndarray, test: np.ndarray, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB of real ``test`` against ``truth`` (scikit-image's argument order and
    formula); ``data_range`` defaults to the truth's span (scikit-image's default would be the dtype's)."""
    from skimage.metrics import peak_signal_noise_ratio

    truth, test = np.asarray(truth, np.float64), np.asarray(test, np.float64)
    rng = float(np.ptp(truth)) if data_range is None else float(data_range)
    if mse(test, truth) == 0:
        return float("inf")
    return float(peak_signal_noise_ratio(truth, test, data_range=rng))


def ssim(test: np.ndarray, ref: np.ndarray, data_range: float | None = None, region: np.ndarray | None = None
         ) -> float:
    """Structural similarity (scikit-image, Gaussian-free 7×7 window), averaged over ``region`` (default all)."""
    from skimage.metrics import structural_similarity

    rng = float(np.ptp(ref if region is None else ref[region])) if data_range is None else data_range
    value, local = structural_similarity(np.asarray(test, float), np.asarray(ref, float), data_range=rng, full=True)
    return float(value) if region is None else float(np.mean(local[region]))


def frc(a: np.ndarray, b: np.ndarray, *, apodize: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Fourier ring correlation of two same-size images (real or complex).

    Returns (spatial frequency in cycles/pixel, 0 … 0.5; FRC per ring). A Hann window suppresses edge
    artefacts when ``apodize``.
    """
    if a.shape != b.shape or a.ndim != 2:
        raise InputError(f"FRC needs two 2-D images of one shape; found {a.shape} and {b.shape}.")
    if apodize:
        win = np.outer(np.hanning(a.shape[0]), np.hanning(a.shape[1]))
        a, b = (a - a.mean()) * win, (b - b.mean()) * win
    fa, fb = np.fft.fftshift(np.fft.fft2(a)), np.fft.fftshift(np.fft.fft2(b))
    h, w = a.shape
    yy, xx = np.indices((h, w))
    r = np.hypot((yy - h // 2) / h, (xx - w // 2) / w)
    nbins = min(h, w) // 2
    ring = np.minimum((r * 2 * nbins).astype(int), nbins)
    num = ndimage.sum_labels(np.real(fa * np.conj(fb)), ring, index=np.arange(nbins))
    den = np.sqrt(ndimage.sum_labels(np.abs(fa) ** 2, ring, index=np.arange(nbins))
                  * ndimage.sum_labels(np.abs(fb) ** 2, ring, index=np.arange(nbins)))
    freq = (np.arange(nbins) + 0.5) / (2 * nbins)
    return freq, num / np.maximum(den, 1e-30)


def frc_resolution(freq: np.ndarray, curve: np.ndarray, threshold: float = 1 / 7) -> float:
    """First spatial frequency (cycles/pixel) where the FRC drops below ``threshold`` (0.5 if never)."""
    below = np.nonzero(curve[1:] < threshold)[0]
    return float(freq[below[0] + 1]) if below.size else 0.5


@dataclass
class Quality:
    """Quality of a complex reconstruction against ground truth, inside a region."""

    phase_mse: float
    phase_psnr: float
    phase_ssim: float
    amplitude_mse: float
    amplitude_psnr: float
    amplitude_ssim: float
    frc_resolution: float  # cycles/pixel at the 1/7 threshold (complex object)
    pixels: int

    def as_dict(self) -> dict:
        return {k: float(v) for k, v in self.__dict__.items()}


def object_error(recon: np.ndarray, truth: np.ndarray, region: np.ndarray | None = None) -> float:
    """Normalised object error of the ePIE paper (Maiden & Rodenburg 2009), E = Σ|O − γ·Ô|² / Σ|O|² over
    ``region``, with γ = Σ O·Ô* / Σ|Ô|² the complex factor (global phase and scale, the ambiguities of
    ptychography) that makes it smallest. 0 = exact; a zero reconstruction scores 1."""
    sel = np.ones(truth.shape, bool) if region is None else region
    o, r = truth[sel].astype(np.complex128), recon[sel].astype(np.complex128)
    rr = float(np.vdot(r, r).real)
    gamma = np.vdot(r, o) / rr if rr > 0 else 0.0
    return float(np.sum(np.abs(o - gamma * r) ** 2) / max(float(np.vdot(o, o).real), 1e-300))


def bounding_box(region: np.ndarray) -> tuple[slice, slice]:
    ys, xs = np.nonzero(region)
    if ys.size == 0:
        raise InputError("the compared region is empty: no object pixel is covered by the scan.")
    return slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1)


def compare(recon: np.ndarray, truth: np.ndarray, region: np.ndarray | None = None) -> Quality:
    """MSE/PSNR/SSIM of phase (offset removed) and amplitude on the pixels of ``region`` only (default:
    everything; PSNR's data range is the truth's span there, SSIM's local map is averaged there), and the FRC
    resolution on its bounding box. Amplitude is compared as is (no scale fit)."""
    if recon.shape != truth.shape:
        raise InputError(f"reconstruction {recon.shape} and truth {truth.shape} are on different grids.")
    region = np.ones(truth.shape, bool) if region is None else region
    box = bounding_box(region)
    r, t = recon[box], truth[box]
    sel = region[box]
    pr, pt = aligned_phase(r, t, sel), np.angle(t)
    ar, at = np.abs(r), np.abs(t)
    freq, curve = frc(remove_phase_offset(r, t, sel), t)
    return Quality(
        phase_mse=mse(pr[sel], pt[sel]), phase_psnr=psnr(pt[sel], pr[sel]), phase_ssim=ssim(pr, pt, region=sel),
        amplitude_mse=mse(ar[sel], at[sel]), amplitude_psnr=psnr(at[sel], ar[sel]),
        amplitude_ssim=ssim(ar, at, region=sel),
        frc_resolution=frc_resolution(freq, curve), pixels=int(sel.sum()),
    )


def baselines(truth: np.ndarray, region: np.ndarray | None = None, *, blur_sigma: float = 4.0) -> dict[str, Quality]:
    """Reference scores every table should print beside its numbers: a flat guess (mean amplitude and mean
    phase everywhere) and the truth blurred by a Gaussian of ``blur_sigma`` pixels."""
    region = np.ones(truth.shape, bool) if region is None else region
    box = bounding_box(region)
    t = truth[box]
    sel = region[box]
    flat = np.full_like(t, np.mean(np.abs(t[sel])) * np.exp(1j * np.mean(np.angle(t[sel]))))
    blurred = ndimage.gaussian_filter(t.real, blur_sigma) + 1j * ndimage.gaussian_filter(t.imag, blur_sigma)
    out = {}
    for name, guess in (("flat", flat), (f"blurred σ={blur_sigma:g}px", blurred)):
        full = truth.copy()
        full[box] = guess
        out[name] = compare(full, truth, region)
    return out


def truth_on_grid(truth: np.ndarray, origin, shape) -> np.ndarray:
    """The ground-truth object cut to a reconstruction grid whose pixel (0, 0) is scan position ``origin``
    (zero outside the truth)."""
    oy, ox = (int(round(v)) for v in origin)
    out = np.zeros(shape, dtype=np.complex64)
    ys, xs = max(oy, 0), max(ox, 0)
    ye, xe = min(oy + shape[0], truth.shape[0]), min(ox + shape[1], truth.shape[1])
    if ye > ys and xe > xs:
        out[ys - oy : ye - oy, xs - ox : xe - ox] = truth[ys:ye, xs:xe]
    return out


def evaluate_against_truth(obj: np.ndarray, weight: np.ndarray, origin, truth: np.ndarray, *,
                           coverage: float = 0.1) -> tuple[Quality, dict[str, Quality], np.ndarray]:
    """Quality of a stitched object on its well-covered region (weight ≥ ``coverage`` × max), with the flat and
    blurred baselines on the same region. Returns (quality, baselines, region)."""
    t = truth_on_grid(truth, origin, obj.shape)
    region = (weight >= coverage * float(weight.max())) & (np.abs(t) > 0)
    return compare(obj, t, region), baselines(t, region), region


def evaluate_against_reference(obj: np.ndarray, weight: np.ndarray, origin, reference: np.ndarray,
                               reference_weight: np.ndarray, *, coverage: float = 0.1
                               ) -> tuple[Quality, dict[str, Quality], np.ndarray]:
    """:func:`evaluate_against_truth` against another reconstruction of the same scan (real data have no truth):
    on the pixels both cover well (each weight ≥ ``coverage`` × its max). ``origin``: the reference grid's pixel
    (0, 0) on ``obj``'s grid, (y, x)."""
    w = np.asarray(reference_weight)
    target = np.where(w >= coverage * float(w.max()), reference, 0).astype(np.complex64)
    return evaluate_against_truth(obj, weight, origin, target, coverage=coverage)
