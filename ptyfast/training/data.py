"""Training data generated on the fly: (network input, amplitude, phase) from objects × probe.

Objects come from a pool built once: pairs of *different* images (amplitude from one, phase from another,
random flips / quarter turns) and procedural random objects (unlimited diversity, see
:func:`ptyfast.physics.objects.random_object`). Each sample is a probe window at a random sub-pixel
position of a random pool object, propagated with the project's forward model; optionally Poisson noise at a
random photon budget and a random probe (defocus, focus size) per batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ptyfast.errors import InputError
from ptyfast.kernels import gather
from ptyfast.physics.forward import far_field
from ptyfast.physics.objects import AMPLITUDE_RANGE, PHASE_RANGE, object_from_images, random_object
from ptyfast.physics.probe import fresnel_probe, lit_mask
from ptyfast.physics.simulate import poisson_noise
from ptyfast.models.preprocess import preprocess

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}


@dataclass
class DataOptions:
    """Options of the simulated training data.

    Attributes
    ----------
    object_size : side of each pool object in pixels (must exceed the window).
    procedural_fraction : fraction of pool objects that are procedural instead of image pairs.
    noise_fraction : fraction of samples with Poisson noise.
    photons : (lo, hi) photons per frame for noisy samples, drawn log-uniformly.
    random_probes : number of random Fresnel probes to mix in (0 = the given probe only).
    transform : network-input transform (see :func:`ptyfast.models.preprocess.preprocess`).
    clean_photons : (lo, hi) photons per frame for noise-free samples (log-uniform); None keeps the probe's
        own power. Matters for the photon-aware ``log1p`` transform.
    """

    object_size: int = 320
    pool_size: int = 160
    procedural_fraction: float = 0.25
    noise_fraction: float = 0.0
    photons: tuple[float, float] = (1e5, 1e8)
    random_probes: int = 0
    amplitude_range: tuple[float, float] = AMPLITUDE_RANGE
    phase_range: tuple[float, float] = PHASE_RANGE
    transform: str = "sqrt"
    normalise: str = "photons"
    clean_photons: tuple[float, float] | None = None

    def validate(self) -> "DataOptions":
        """Raise :class:`InputError` (one sentence, named as the CLI option) on an unusable setting."""
        from ptyfast.choices import Normalisation, Transform

        self.normalise = Normalisation.check(self.normalise, "input normalisation (--normalise)")
        self.transform = Transform.check(self.transform, "input transform (--transform)")
        for name, rng in (("--photons", self.photons), ("--clean-photons", self.clean_photons)):
            if rng is not None and not (len(rng) == 2 and 0 < rng[0] <= rng[1] and np.all(np.isfinite(rng))):
                raise InputError(f"{name} must be LO:HI with 0 < LO ≤ HI; found {rng[0]:g}:{rng[-1]:g}.")
        return self


def list_images(paths: list[Path]) -> list[Path]:
    """Image files from files and folders (sorted, so splits are reproducible)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            out.append(p)
        else:
            raise InputError(f"training image path {p} does not exist.")
    return out


def _augment(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    img = np.rot90(img, rng.integers(4))
    return img[:, ::-1] if rng.random() < 0.5 else img


def build_pool(images: list[np.ndarray], options: DataOptions, rng: np.random.Generator) -> list[np.ndarray]:
    """Complex objects: image pairs (two different images per object) and procedural objects."""
    size = (options.object_size, options.object_size)
    n_proc = options.pool_size if len(images) < 2 else int(round(options.procedural_fraction * options.pool_size))
    pool = [random_object(size, rng, amplitude_range=options.amplitude_range, phase_range=options.phase_range)
            for _ in range(n_proc)]
    for _ in range(options.pool_size - n_proc):
        i, j = rng.choice(len(images), size=2, replace=False)
        pool.append(object_from_images(_augment(images[i], rng), _augment(images[j], rng), size,
                                       amplitude_range=options.amplitude_range, phase_range=options.phase_range))
    return pool


class PatternSampler:
    """Draws batches (x (B,1,H,W) float32, amplitude (B,H,W), phase (B,H,W), lit mask (B,H,W)) from an
    object pool; the mask marks where the batch's probe lights the patch (see :func:`lit_mask`)."""

    def __init__(self, pool: list[np.ndarray], probe: np.ndarray, options: DataOptions, rng) -> None:
        self.pool = pool
        self.options = options
        self.rng = np.random.default_rng(rng)
        self.probes = [probe.astype(np.complex64)]
        h, w = probe.shape
        photons = float(np.sum(np.abs(probe) ** 2))
        for _ in range(options.random_probes):
            self.probes.append(fresnel_probe(
                (h, w), focus_size=self.rng.uniform(60e-9, 200e-9), defocus=self.rng.uniform(2e-6, 20e-6),
                photons=photons))

    def draw(self, batch: int) -> "Draw":
        """The random choices of one batch (probe, objects, window positions, photons, which are noisy)."""
        p = int(self.rng.integers(len(self.probes)))
        h, w = self.probes[p].shape
        idx = self.rng.integers(len(self.pool), size=batch)
        positions = np.empty((batch, 2))
        for k, i in enumerate(idx):
            rows, cols = self.pool[i].shape
            positions[k] = self.rng.uniform(0, [rows - h - 1, cols - w - 1], size=(1, 2))
        # Photons per frame (for |O| = 1): log-uniform in the noisy range for noisy samples, in
        # clean_photons (or the probe's own power) for clean ones.
        power = float(np.sum(np.abs(self.probes[p]) ** 2))
        noisy = self.rng.random(batch) < self.options.noise_fraction
        clean = self.options.clean_photons or (power, power)
        lo = np.where(noisy, self.options.photons[0], clean[0])
        hi = np.where(noisy, self.options.photons[1], clean[1])
        photons = 10 ** self.rng.uniform(np.log10(lo), np.log10(hi))
        return Draw(p, idx, positions, photons, noisy, power)

    def render(self, d: "Draw"):
        """The batch of a :class:`Draw`, in numpy (Poisson counts drawn from ``self.rng``)."""
        probe = self.probes[d.probe]
        h, w = probe.shape
        patches = np.empty((len(d.objects), h, w), dtype=np.complex64)
        for k, i in enumerate(d.objects):  # one gather per pool object used (B is small)
            patches[k] = gather(self.pool[i], d.positions[k : k + 1], (h, w))[0]
        intensity = np.abs(far_field(probe[None] * patches)) ** 2
        intensity *= (d.photons / d.power)[:, None, None].astype(np.float32)
        if d.noisy.any():
            intensity[d.noisy] = poisson_noise(intensity[d.noisy], self.rng)
        x = preprocess(intensity, preprocessing={"transform": self.options.transform,
                                                 "normalise": self.options.normalise}, probe_power=d.photons)
        mask = np.broadcast_to(lit_mask(probe), patches.shape).astype(np.float32)
        return x, np.abs(patches).astype(np.float32), np.angle(patches).astype(np.float32), mask

    def sample(self, batch: int):
        return self.render(self.draw(batch))


@dataclass
class Draw:
    """One batch's random choices: probe index, pool object per sample, (B, 2) float64 (y, x) window corners,
    (B,) photons per frame, (B,) bool noisy, and the probe's Σ|P|²."""

    probe: int
    objects: np.ndarray
    positions: np.ndarray
    photons: np.ndarray
    noisy: np.ndarray
    power: float


def fixed_set(sampler: PatternSampler, n: int, batch: int = 256):
    """A fixed validation set of n samples (drawn once)."""
    parts = [sampler.sample(min(batch, n - s)) for s in range(0, n, batch)]
    return tuple(np.concatenate(p) for p in zip(*parts))


__all__ = ["DataOptions", "PatternSampler", "build_pool", "fixed_set", "lit_mask", "list_images"]
