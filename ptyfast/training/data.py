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
from ptyfast.physics.objects import (AMPLITUDE_RANGE, PHASE_RANGE, object_from_images, random_object,
                                     random_sample_object)
from ptyfast.physics.probe import fresnel_probe, lit_mask, lit_pixels
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
    family_probes : size of a bank of random members of the probe family
        (:class:`ptyfast.physics.probe_family.ProbeFamily`) drawn once from the seed; each *sample* takes one
        (the given probe with chance ``given_probe_share``). 0 = the given probe only.
    sample_like : half of the procedural objects shaped like real samples (stars, lines, particles, cells;
        :func:`ptyfast.physics.objects.random_sample_object`) instead of smoothed noise.
    conditioning : the model's probe conditioning (its input channels; see
        :func:`ptyfast.models.preprocess.preprocess`).
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
    family_probes: int = 0
    sample_like: bool = False
    given_probe_share: float = 0.1
    conditioning: str = ""

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
    pool = [(random_sample_object if options.sample_like and k % 2 else random_object)(
                size, rng, amplitude_range=options.amplitude_range, phase_range=options.phase_range)
            for k in range(n_proc)]
    for _ in range(options.pool_size - n_proc):
        i, j = rng.choice(len(images), size=2, replace=False)
        pool.append(object_from_images(_augment(images[i], rng), _augment(images[j], rng), size,
                                       amplitude_range=options.amplitude_range, phase_range=options.phase_range))
    return pool


class PatternSampler:
    """Draws batches (x (B,C,H,W) float32, amplitude (B,H,W), phase (B,H,W), lit mask (B,H,W)) from an
    object pool; the mask marks where each sample's probe lights the patch (see :func:`lit_mask`).

    Probes: the given one, ``random_probes`` random Fresnel probes, and ``family_probes`` members of the probe
    family (partially coherent ones with a second mode, whose intensity adds to the first's). Each sample
    draws its own probe, so BatchNorm's batch statistics mix probes as inference's running statistics do."""

    def __init__(self, pool: list[np.ndarray], probe: np.ndarray, options: DataOptions, rng,
                 probe_seed=None) -> None:
        self.pool = pool
        self.options = options
        self.rng = np.random.default_rng(rng)
        h, w = probe.shape
        photons = float(np.sum(np.abs(probe) ** 2))
        modes = [np.stack([probe.astype(np.complex64), np.zeros((h, w), np.complex64)])]
        for _ in range(options.random_probes):
            modes.append(np.stack([fresnel_probe(
                (h, w), focus_size=self.rng.uniform(60e-9, 200e-9), defocus=self.rng.uniform(2e-6, 20e-6),
                photons=photons), np.zeros((h, w), np.complex64)]))
        if options.family_probes:
            from ptyfast.physics.probe_family import probe_bank

            bank, _ = probe_bank(options.family_probes, self.rng if probe_seed is None else probe_seed,
                                 shape=(h, w), photons=photons)
            modes += list(bank)
        self.modes = np.stack(modes)  # (K, 2, H, W): dominant mode, second mode (zero when coherent)
        self.probes = list(self.modes[:, 0])
        self.lit = np.stack([lit_pixels(np.abs(m[0]) ** 2 + np.abs(m[1]) ** 2) for m in self.modes])

    def draw(self, batch: int) -> "Draw":
        """The random choices of one batch (probe per sample, objects, window positions, photons, which are noisy)."""
        k = len(self.modes)
        if self.options.family_probes:
            given = self.rng.random(batch) < self.options.given_probe_share
            p = np.where(given, 0, self.rng.integers(1, k, size=batch))
        else:
            p = np.full(batch, int(self.rng.integers(k)))
        h, w = self.probes[0].shape
        idx = self.rng.integers(len(self.pool), size=batch)
        positions = np.empty((batch, 2))
        for j, i in enumerate(idx):
            rows, cols = self.pool[i].shape
            positions[j] = self.rng.uniform(0, [rows - h - 1, cols - w - 1], size=(1, 2))
        # Photons per frame (for |O| = 1): log-uniform in the noisy range for noisy samples, in
        # clean_photons (or the probe's own power) for clean ones.
        power = np.sum(np.abs(self.modes[p]) ** 2, axis=(1, 2, 3))
        noisy = self.rng.random(batch) < self.options.noise_fraction
        clean = self.options.clean_photons or (power, power)
        lo = np.where(noisy, self.options.photons[0], clean[0])
        hi = np.where(noisy, self.options.photons[1], clean[1])
        photons = 10 ** self.rng.uniform(np.log10(lo), np.log10(hi))
        return Draw(p, idx, positions, photons, noisy, power)

    def render(self, d: "Draw"):
        """The batch of a :class:`Draw`, in numpy (Poisson counts drawn from ``self.rng``)."""
        h, w = self.probes[0].shape
        patches = np.empty((len(d.objects), h, w), dtype=np.complex64)
        for k, i in enumerate(d.objects):  # one gather per pool object used (B is small)
            patches[k] = gather(self.pool[i], d.positions[k : k + 1], (h, w))[0]
        modes = self.modes[d.probe]
        intensity = np.abs(far_field(modes[:, 0] * patches)) ** 2
        second = np.flatnonzero(np.any(modes[:, 1] != 0, axis=(1, 2)))
        if len(second):
            intensity[second] += np.abs(far_field(modes[second, 1] * patches[second])) ** 2
        intensity *= (d.photons / d.power)[:, None, None].astype(np.float32)
        if d.noisy.any():
            intensity[d.noisy] = poisson_noise(intensity[d.noisy], self.rng)
        x = preprocess(intensity, preprocessing={"transform": self.options.transform,
                                                 "normalise": self.options.normalise}, probe_power=d.photons,
                       probe=modes[:, 0], conditioning=self.options.conditioning)
        mask = self.lit[d.probe].astype(np.float32)
        return x, np.abs(patches).astype(np.float32), np.angle(patches).astype(np.float32), mask

    def sample(self, batch: int):
        return self.render(self.draw(batch))


@dataclass
class Draw:
    """One batch's random choices: (B,) probe index per sample, pool object per sample, (B, 2) float64 (y, x)
    window corners, (B,) photons per frame, (B,) bool noisy, and (B,) each probe's Σ|P|² (over its modes)."""

    probe: np.ndarray
    objects: np.ndarray
    positions: np.ndarray
    photons: np.ndarray
    noisy: np.ndarray
    power: np.ndarray


def fixed_set(sampler: PatternSampler, n: int, batch: int = 256):
    """A fixed validation set of n samples (drawn once)."""
    parts = [sampler.sample(min(batch, n - s)) for s in range(0, n, batch)]
    return tuple(np.concatenate(p) for p in zip(*parts))


__all__ = ["DataOptions", "PatternSampler", "build_pool", "fixed_set", "lit_mask", "list_images"]
