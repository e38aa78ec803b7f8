"""Preprocessing from measured intensities to network input, exactly as the model manifest says.

Used by training, inference, fine-tuning and export parity checks (one place).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from ptyfast.choices import Normalisation, Transform
from ptyfast.errors import InputError
from ptyfast.physics.forward import back_propagate, far_field
from ptyfast.scan import object_grid

EPS = 1e-12


def fit_frames(frames: np.ndarray, size: tuple[int, int], mode: str = "none") -> np.ndarray:
    """Bring (N, H, W) frames (zero frequency at the centre) to ``size``.

    ``mode``: ``none`` (shapes must already match), ``crop`` (keep the central window: cuts high
    frequencies, i.e. a coarser object pixel), ``bin`` (sum k×k pixels: a larger field of view with the same
    resolution), ``pad`` (zero-pad around the centre).
    """
    n, h, w = frames.shape
    th, tw = size
    if (h, w) == (th, tw):
        return frames
    if mode == "crop":
        if h < th or w < tw:
            raise InputError(f"cannot crop {h}×{w} frames to {th}×{tw}; use --fit pad.")
        y0, x0 = h // 2 - th // 2, w // 2 - tw // 2
        return frames[:, y0 : y0 + th, x0 : x0 + tw]
    if mode == "pad":
        if h > th or w > tw:
            raise InputError(f"cannot pad {h}×{w} frames to {th}×{tw}; use --fit crop or --fit bin.")
        out = np.zeros((n, th, tw), dtype=frames.dtype)
        y0, x0 = th // 2 - h // 2, tw // 2 - w // 2
        out[:, y0 : y0 + h, x0 : x0 + w] = frames
        return out
    if mode == "bin":
        if h % th or w % tw or h // th != w // tw:
            raise InputError(f"cannot bin {h}×{w} frames to {th}×{tw}: the sizes must be an integer multiple.")
        k = h // th
        return frames.reshape(n, th, k, tw, k).sum(axis=(2, 4))
    raise InputError(
        f"the frames are {h}×{w} but the model expects {th}×{tw}; pass --fit crop|bin|pad to adapt them, "
        "or fine-tune / train a model for this pattern size."
    )


def fit_positions(positions: np.ndarray, frame_size: int, size: tuple[int, int], mode: str = "none") -> np.ndarray:
    """Positions (object pixels) after :func:`fit_frames`: the object pixel is λz/(N·p), so crop/pad (N
    changes, p does not) scale positions by size/N; binning changes N and p together and keeps them."""
    positions = np.asarray(positions, np.float64)
    if mode in ("crop", "pad") and frame_size != size[0]:
        return positions * (size[0] / frame_size)
    return positions


def fit_probe(probe: np.ndarray, size: tuple[int, int], mode: str = "none") -> np.ndarray:
    """Bring a real-space probe (H, W) to the model's ``size`` consistently with :func:`fit_frames`.

    ``bin`` keeps the object pixel (λz/(N·p) is unchanged when N/k pixels of k·p are used), so the window
    shrinks: centre crop in real space. ``crop``/``pad`` change the object pixel, so the probe is resampled:
    crop/pad its far field and propagate back.
    """
    probe = np.asarray(probe)
    if probe.shape == tuple(size):
        return probe.astype(np.complex64)
    if mode == "bin":
        return fit_frames(probe[None], size, "crop")[0].astype(np.complex64)

    return back_propagate(fit_frames(far_field(probe)[None], size, mode))[0].astype(np.complex64)


def fit_mask(mask: np.ndarray, size: tuple[int, int], mode: str = "none") -> np.ndarray:
    """Detector mask (True = valid) fitted like the frames: a binned pixel is valid only if all its pixels
    are; padded pixels are invalid."""
    mask = np.asarray(mask, bool)
    if mode == "bin" and mask.shape != tuple(size):
        fit_frames(mask[None].astype(np.float32), size, "bin")  # validates the factor
        k = mask.shape[0] // size[0]
        return mask.reshape(size[0], k, size[1], k).all(axis=(1, 3))
    return fit_frames(mask[None].astype(np.float32), size, mode)[0] > 0.5


@dataclass(frozen=True)
class ModelGrid:
    """A scan's geometry as a model of input ``size`` sees it, after ``fit`` (the one preparation step of
    reconstruct, the consistency pass and fine-tuning).

    Attributes
    ----------
    size : (H, W) the model's pattern size; fit : how frames were brought to it (:func:`fit_frames`).
    positions : (N, 2) float64 (y, x) top-left window corners on the object grid, in fitted object pixels.
    origin : (2,) the scan position (fitted object pixels) of the grid's pixel (0, 0).
    shape : (rows, cols) of the smallest grid holding every window plus the one-pixel bilinear margin.
    mask : the detector mask fitted like the frames (True = valid), or None.
    """

    size: tuple[int, int]
    fit: str
    positions: np.ndarray
    origin: np.ndarray
    shape: tuple[int, int]
    mask: np.ndarray | None

    def frames(self, scan, indices: np.ndarray | None = None, chunk: int = 256) -> np.ndarray:
        """The frames ``indices`` (all when None) of ``scan``, float32, fitted to ``size`` (read in chunks)."""
        part = scan if indices is None else scan.select(np.asarray(indices))
        return np.concatenate([fit_frames(fr, self.size, self.fit) for _, fr in part.iter_chunks(chunk)])


def model_grid(positions: np.ndarray, frame_size: int, size: tuple[int, int], fit: str = "none",
               mask: np.ndarray | None = None) -> ModelGrid:
    """The :class:`ModelGrid` of a scan with these positions (scan pixels), frame size and detector mask."""
    positions = fit_positions(positions, frame_size, size, fit)
    origin, shape = object_grid(positions, size)
    return ModelGrid(size=tuple(size), fit=fit, positions=positions - origin, origin=origin, shape=shape,
                     mask=None if mask is None else fit_mask(mask, size, fit))


def preprocess_tensor(intensity, preprocessing: dict, probe_power):
    """:func:`preprocess` of a torch tensor (N, H, W) of intensities, on its own device (the torch training
    simulator's twin; no detector mask). ``probe_power``: a tensor (N,) or a float. Returns (N, 1, H, W) float32.
    """
    import torch

    x = intensity.float().clamp(min=0.0)
    norm = preprocessing.get("normalise", "max")
    if norm == "photons":
        power = torch.as_tensor(probe_power, dtype=torch.float64, device=x.device).reshape(-1, 1, 1)
        x = (x / (power / (x.shape[-2] * x.shape[-1]))).float()
    transform = preprocessing.get("transform", "sqrt")
    if transform not in TRANSFORMS:
        raise InputError(f"unknown preprocessing transform '{transform}'; known: {', '.join(TRANSFORMS)}.")
    x = {"sqrt": torch.sqrt, "log1p": torch.log1p, "quarter": lambda v: torch.sqrt(torch.sqrt(v))}[transform](x)
    flat = x.reshape(len(x), -1)
    if norm == "max":
        x = x / flat.amax(dim=1).clamp(min=EPS)[:, None, None]
    elif norm == "std":
        x = (x - flat.mean(dim=1)[:, None, None]) / flat.std(dim=1, correction=0).clamp(min=EPS)[:, None, None]
    elif norm not in ("photons", "none"):
        raise InputError(f"unknown preprocessing normalisation '{norm}'; known: {', '.join(NORMALISATIONS)}.")
    return x[:, None]


TRANSFORMS = Transform.values()


NORMALISATIONS = Normalisation.values()


#: Probe conditioning of a model's input (manifest ``conditioning``) → channels added after the pattern's.
CONDITIONING_CHANNELS = {"": 0, "probe": 2, "probe+estimate": 4}


def input_channels(manifest) -> int:
    """Channels of a model's input: the preprocessed pattern plus its probe conditioning's."""
    kind = getattr(manifest, "conditioning", "") or ""
    if kind not in CONDITIONING_CHANNELS:
        raise InputError(f"the model's manifest asks for probe conditioning '{kind}', which this ptyfast does not "
                         f"know ({', '.join(k for k in CONDITIONING_CHANNELS if k)}); upgrade ptyfast.")
    return 1 + CONDITIONING_CHANNELS[kind]


def probe_channels(probe: np.ndarray) -> np.ndarray:
    """(…, 2, H, W) float32: real and imaginary part of a real-space probe (…, H, W) scaled to max |P| = 1 —
    how a probe-conditioned network is told which probe lit the pattern (its scale is in the photons
    normalisation; its global phase is set so the brightest pixel is real, since a global phase is arbitrary)."""
    probe = np.asarray(probe, np.complex64)
    flat = probe.reshape(*probe.shape[:-2], -1)
    peak = np.take_along_axis(flat, np.abs(flat).argmax(axis=-1)[..., None], axis=-1)[..., None]
    unit = probe * (np.conj(peak) / np.maximum(np.abs(peak), EPS) ** 2)
    return np.stack([unit.real, unit.imag], axis=-3).astype(np.float32)


def estimate_channels(intensity: np.ndarray, probe: np.ndarray, photons) -> np.ndarray:
    """(N, 2, H, W) float32: one physics step from a flat object — the measured amplitude √I given the phase of
    the probe's own far field (faded out where that far field is < 10⁻³ of its peak: outside the pupil its
    angle is round-off, so light the object scatters there is dropped rather than given a random phase),
    propagated back and divided by the probe scaled to ``photons`` per frame, Wiener-regularised with 1 % of
    max |P|² (it fades smoothly to zero where the probe is dark: no threshold that a small error in the
    probe's power could move). ``probe`` (H, W) for every frame, or (N, H, W) one per frame.

    Both filters depend on the probe's shape only, so a scan's probe costs two FFTs once; each frame costs one.
    """
    probe = np.asarray(probe, np.complex64)
    field = far_field(probe)
    magnitude = np.abs(field)
    phase = field / (magnitude + 1e-3 * magnitude.max(axis=(-2, -1), keepdims=True))
    inten = np.abs(probe) ** 2
    inverse = np.conj(probe) / (inten + 0.01 * inten.max(axis=(-2, -1), keepdims=True))
    # a probe P scaled by c = √(photons / Σ|P|²) divides the estimate by c
    power = np.sum(inten, axis=(-2, -1), dtype=np.float64).reshape(-1, 1, 1)
    inverse = inverse / np.sqrt(np.asarray(photons, np.float64).reshape(-1, 1, 1) / power).astype(np.float32)
    est = back_propagate(np.sqrt(intensity, dtype=np.float32) * phase) * inverse
    return np.stack([est.real, est.imag], axis=1).astype(np.float32)


@functools.lru_cache(maxsize=8)
def _fill_operator(mask_bytes: bytes, shape: tuple[int, int]):
    """(masked pixel indices, the valid pixels they are filled from, weights (n_sources, n_masked)) of
    :func:`fill_masked` for one mask: the fill is linear in the valid pixels, so it is built once per mask
    and applied to every batch as one small product."""
    from scipy import ndimage, sparse

    valid = np.frombuffer(mask_bytes, dtype=bool).reshape(shape).copy()
    h, w = shape
    rows: dict[int, sparse.csr_matrix] = {}
    offsets = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]
    while not valid.all():
        weight = ndimage.convolve(valid.astype(np.float32), np.ones((3, 3), np.float32), mode="constant") - valid
        ring = np.argwhere(~valid & (weight > 0))
        new = {}
        for y, x in ring:
            parts = []
            for dy, dx in offsets:
                yy, xx = y + dy, x + dx
                if 0 <= yy < h and 0 <= xx < w and valid[yy, xx]:
                    k = yy * w + xx
                    parts.append(rows[k] if k in rows else sparse.csr_matrix(([1.0], ([0], [k])), shape=(1, h * w)))
            new[y * w + x] = sum(parts[1:], parts[0]) / len(parts)
        rows.update(new)
        valid[ring[:, 0], ring[:, 1]] = True
    index = np.array(sorted(rows), dtype=np.int64)
    op = sparse.vstack([rows[k] for k in index]).tocsc()
    sources = np.flatnonzero(op.getnnz(axis=0))
    return index, sources, np.ascontiguousarray(op[:, sources].toarray().T, dtype=np.float32)


def fill_masked(frames: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Frames (N, H, W) float32 with the pixels ``mask`` (bool (H, W), True = valid) marks invalid replaced,
    in place, by the mean of their valid 8-neighbours, ring by ring from the edge of each masked region
    inwards: an isolated dead or hot pixel takes its neighbours' level and a beam stop's disk the level of
    its rim, so the network sees a pattern like those it was trained on instead of a hole of zeros (which it
    reads as real darkness). Returns ``frames``."""
    valid = np.ascontiguousarray(mask, dtype=bool)
    if valid.all():
        return frames
    if not valid.any():
        frames[...] = 0.0
        return frames
    index, sources, weights = _fill_operator(valid.tobytes(), valid.shape)
    flat = frames.reshape(len(frames), -1)
    flat[:, index] = flat[:, sources] @ weights  # reads valid pixels only: a NaN or fill value cannot leak
    return frames


def preprocess(frames: np.ndarray, manifest=None, *, preprocessing: dict | None = None,
               probe_power=None, mask: np.ndarray | None = None, probe: np.ndarray | None = None,
               conditioning: str | None = None) -> np.ndarray:
    """(N, H, W) intensities → (N, 1, H, W) float32 network input, as ``manifest.preprocessing`` says.

    ``transform``: ``sqrt`` (√I, the seed paper), ``log1p`` (log(1 + I), I in photons: compresses the
    ~10⁴ dynamic range of far-field patterns so the speckle away from the central peak is visible to the
    network; one photon maps to 0.69), ``quarter`` (I^¼).

    ``normalise``: ``photons`` (ptyfast's default: I is divided by the probe's mean intensity
    Σ|P|²/(H·W) before the transform, ``probe_power`` = Σ|P|² of the scan's probe, scalar or one per frame,
    falling back to the manifest's ``probe_photons``; with the ortho forward model the input then depends on
    the object only, not on the flux, and keeps the amplitude scale), ``max`` (the paper: divide by the
    per-pattern maximum, so the input is in [0, 1] and the amplitude scale is lost), ``std`` (zero mean, unit
    variance per pattern) or ``none``. Negative counts (detector offsets) are clipped to zero, and pixels that
    ``mask`` (bool (H, W), True = valid) marks invalid are filled from their valid neighbours
    (:func:`fill_masked`), so hot or dead pixels never reach the network and a masked region does not read as
    darkness.

    A probe-conditioned model (``conditioning``, default the manifest's) gets more channels after the
    pattern's: ``probe`` (:func:`probe_channels` of ``probe``, (H, W) for the whole batch or (N, H, W)) and
    ``probe+estimate`` (also :func:`estimate_channels`). Returns (N, C, H, W).
    """
    kind = getattr(manifest, "conditioning", "") if conditioning is None else conditioning
    if kind and probe is None:
        raise InputError("this model is probe-conditioned: it needs the scan's probe (give --probe FILE, or a "
                         "scan file that holds one).")
    prep = preprocessing or getattr(manifest, "preprocessing", None) or {"transform": "sqrt", "normalise": "max"}
    # one new float32 array, then in place (reconstruct's reader thread runs this beside inference)
    x = np.maximum(np.asarray(frames), 0, dtype=np.float32)
    if mask is not None:
        fill_masked(x, mask)
    counts = x.copy() if kind == "probe+estimate" else None
    norm = prep.get("normalise", "max")
    if norm == "photons":
        power = probe_power if probe_power is not None else getattr(manifest, "probe_photons", 0.0)
        power = np.asarray(power, dtype=np.float64)
        if not np.all(np.isfinite(power)) or np.any(power <= 0):
            raise InputError("the input normalisation 'photons' needs the probe's total intensity Σ|P|², "
                             "but no probe with a positive, finite intensity is known.")
        mean_intensity = power.reshape(-1, 1, 1) / (x.shape[-2] * x.shape[-1])  # scalar or one per frame
        np.multiply(x, (1.0 / mean_intensity).astype(np.float32), out=x)
    transform = prep.get("transform", "sqrt")
    if transform == "sqrt":
        np.sqrt(x, out=x)
    elif transform == "log1p":
        np.log1p(x, out=x)
    elif transform == "quarter":
        np.sqrt(x, out=x)
        np.sqrt(x, out=x)
    else:
        raise InputError(f"unknown preprocessing transform '{transform}'; known: {', '.join(TRANSFORMS)}.")
    if norm == "max":
        m = x.reshape(len(x), -1).max(axis=1)
        x = x / np.maximum(m, EPS)[:, None, None]
    elif norm == "std":  # zero mean, unit variance per pattern: O(1) activations even for a sharp central peak
        flat = x.reshape(len(x), -1)
        x = (x - flat.mean(axis=1)[:, None, None]) / np.maximum(flat.std(axis=1), EPS)[:, None, None]
    elif norm not in ("photons", "none"):
        raise InputError(f"unknown preprocessing normalisation '{norm}'; known: {', '.join(NORMALISATIONS)}.")
    if not kind:
        return x[:, None]
    if kind not in CONDITIONING_CHANNELS:
        input_channels(type("M", (), {"conditioning": kind}))  # raises the one-sentence error
    probe = np.asarray(probe, np.complex64)
    parts = [x[:, None], np.broadcast_to(probe_channels(probe), (len(x), 2, *x.shape[-2:]))]
    if kind == "probe+estimate":
        power = probe_power if probe_power is not None else float(np.sum(np.abs(probe) ** 2))
        parts.append(estimate_channels(counts, probe, np.broadcast_to(np.asarray(power, np.float64), (len(x),))))
    return np.concatenate(parts, axis=1)
