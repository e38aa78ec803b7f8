"""Complex objects O = A · exp(iφ) for simulation and training.

Ranges (documented defaults, the seed paper's code): amplitude A in [1/3, 1] (transmission),
phase φ in [π/6, π/2] radians. Amplitude and phase come from two *different* images.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

AMPLITUDE_RANGE = (1.0 / 3.0, 1.0)
PHASE_RANGE = (np.pi / 6, np.pi / 2)


def _rescale(img: np.ndarray, lo: float, hi: float) -> np.ndarray:
    img = np.asarray(img, dtype=np.float64)
    span = img.max() - img.min()
    unit = (img - img.min()) / span if span > 0 else np.zeros_like(img)
    return lo + (hi - lo) * unit


def _resize(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    from skimage.transform import resize

    if img.shape == tuple(shape):
        return np.asarray(img, dtype=np.float64)
    return resize(np.asarray(img, dtype=np.float64), shape, order=1, anti_aliasing=True, mode="reflect")


def object_from_images(
    amplitude_image: np.ndarray,
    phase_image: np.ndarray,
    shape: tuple[int, int] | None = None,
    *,
    amplitude_range: tuple[float, float] = AMPLITUDE_RANGE,
    phase_range: tuple[float, float] = PHASE_RANGE,
) -> np.ndarray:
    """complex64 object whose amplitude and phase are two grey images rescaled to the given ranges.

    Images are resized (bilinear, anti-aliased) to ``shape`` when given.
    """
    shape = tuple(shape) if shape is not None else amplitude_image.shape
    a = _rescale(_resize(amplitude_image, shape), *amplitude_range)
    p = _rescale(_resize(phase_image, shape), *phase_range)
    return (a * np.exp(1j * p)).astype(np.complex64)


def random_field(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A procedural grey image in [0, 1]: multi-scale smoothed noise plus random ellipses and edges."""
    h, w = shape
    img = np.zeros(shape)
    for sigma in rng.choice([1.0, 2.0, 4.0, 8.0, 16.0], size=3, replace=False):
        img += rng.uniform(0.2, 1.0) * ndimage.gaussian_filter(rng.standard_normal(shape), sigma) * sigma
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(rng.integers(2, 10)):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(4, h / 3), rng.uniform(4, w / 3)
        t = rng.uniform(0, np.pi)
        u = ((yy - cy) * np.cos(t) + (xx - cx) * np.sin(t)) / ry
        v = (-(yy - cy) * np.sin(t) + (xx - cx) * np.cos(t)) / rx
        img += rng.uniform(-1.5, 1.5) * img.std() * ((u**2 + v**2) <= 1)
    img = ndimage.gaussian_filter(img, rng.uniform(0.3, 1.2))
    return _rescale(img, 0.0, 1.0)


def structure_field(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A grey image in [0, 1] like a real sample: a Siemens star, lithographic lines, particles or cells,
    blurred by up to a pixel and with a weak smooth background."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    kind = rng.integers(4)
    if kind == 0:  # Siemens star, centred anywhere
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        img = (np.sin(rng.integers(8, 40) * np.arctan2(yy - cy, xx - cx) + rng.uniform(0, 2 * np.pi)) > 0) * 1.0
    elif kind == 1:  # line gratings of several pitches and orientations
        img = np.zeros(shape)
        for _ in range(rng.integers(1, 4)):
            t, pitch = rng.uniform(0, np.pi), rng.uniform(4, 24)
            u = (yy * np.cos(t) + xx * np.sin(t)) / pitch
            img = np.maximum(img, ((u % 1.0) < rng.uniform(0.3, 0.7)) * rng.uniform(0.4, 1.0))
    elif kind == 2:  # particles: discs of many sizes
        img = np.zeros(shape)
        for _ in range(rng.integers(20, 200)):
            cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(2, 18)
            img += ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) * rng.uniform(0.3, 1.0)
    else:  # cells: smooth blobs with membranes and nuclei
        img = np.zeros(shape)
        for _ in range(rng.integers(5, 40)):
            cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(10, 45)
            d = np.hypot(yy - cy, xx - cx) / r
            img += (d <= 1) * rng.uniform(0.2, 0.6) + (np.abs(d - 1) < 0.08) * 0.5 + (d < 0.3) * rng.uniform(0, 0.6)
    img = ndimage.gaussian_filter(img, rng.uniform(0.0, 1.0))
    img += 0.3 * rng.uniform() * ndimage.gaussian_filter(rng.standard_normal(shape), 16) * 16 * img.std()
    return _rescale(img, 0.0, 1.0)


def random_object(
    shape: tuple[int, int],
    rng: np.random.Generator | int | None = None,
    *,
    amplitude_range: tuple[float, float] = AMPLITUDE_RANGE,
    phase_range: tuple[float, float] = PHASE_RANGE,
) -> np.ndarray:
    """A procedural complex64 object (independent amplitude and phase fields) for unlimited training data."""
    rng = np.random.default_rng(rng)
    return object_from_images(
        random_field(shape, rng), random_field(shape, rng), amplitude_range=amplitude_range, phase_range=phase_range
    )


def random_sample_object(
    shape: tuple[int, int],
    rng: np.random.Generator | int | None = None,
    *,
    amplitude_range: tuple[float, float] = AMPLITUDE_RANGE,
    phase_range: tuple[float, float] = PHASE_RANGE,
) -> np.ndarray:
    """A procedural complex64 object shaped like a real sample (:func:`structure_field`): the same structure
    in amplitude and phase (one material: phase-dominated or amplitude-dominated at random), or two."""
    rng = np.random.default_rng(rng)
    a = structure_field(shape, rng)
    p = a if rng.random() < 0.6 else structure_field(shape, rng)
    lo_a, hi_a = amplitude_range
    lo_p, hi_p = phase_range
    if rng.random() < 0.5:  # phase-dominated: weak absorption
        lo_a = hi_a - (hi_a - lo_a) * rng.uniform(0.05, 0.4)
    else:  # amplitude-dominated: weak phase
        lo_p = hi_p - (hi_p - lo_p) * rng.uniform(0.05, 0.4)
    return object_from_images(1.0 - a, p, amplitude_range=(lo_a, hi_a), phase_range=(lo_p, hi_p))
