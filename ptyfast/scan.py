"""The one data contract between files on disk and reconstructions: :class:`Scan`."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ptyfast.errors import InputError

PLANCK_TIMES_C = 1.98644586e-25  # h*c in J*m


def check_probe(probe: np.ndarray, source: str) -> None:
    """Refuse a probe that cannot illuminate anything: NaN/Inf values or no energy at all."""
    p = np.asarray(probe)
    if not np.all(np.isfinite(p)):
        raise InputError(f"the probe of {source} contains NaN or Inf; store a valid probe or remove it.")
    if not np.any(p):
        raise InputError(f"the probe of {source} is zero everywhere (no illumination); store a valid probe or "
                         "remove it.")


MAX_OBJECT_PIXELS = 2**28  # 16384², 2 GiB as complex64; PTYFAST_MAX_OBJECT_PIXELS overrides


def max_object_pixels() -> int:
    import os

    value = os.environ.get("PTYFAST_MAX_OBJECT_PIXELS", "")
    try:
        return int(float(value)) if value else MAX_OBJECT_PIXELS
    except ValueError:
        raise InputError(f"PTYFAST_MAX_OBJECT_PIXELS must be a number of pixels; found '{value}'.") from None


def check_object_size(positions: np.ndarray, window: tuple[int, int]) -> None:
    """Refuse positions whose object grid would not fit in memory (one stray position at 10⁷ px asks for
    tens of GiB); names the position farthest from the scan's median and the override."""
    span = positions.max(axis=0) - positions.min(axis=0) + np.asarray(window) + 1
    pixels = float(np.prod(span))
    limit = max_object_pixels()
    if pixels > limit:
        far = int(np.argmax(np.abs(positions - np.median(positions, axis=0)).max(axis=1)))
        y, x = positions[far]
        raise InputError(
            f"the positions span an object of {span[0]:.4g}×{span[1]:.4g} pixels, beyond the limit of {limit:.4g} "
            f"({limit * 8 / 2**30:.3g} GiB as complex64); position {far} at (y, x) = ({y:.4g}, {x:.4g}) px lies "
            "farthest from the others; fix the positions, or set PTYFAST_MAX_OBJECT_PIXELS to raise the limit.")


@dataclass(frozen=True)
class Geometry:
    """Far-field geometry.

    Attributes
    ----------
    wavelength : float
        X-ray wavelength in metres.
    distance : float
        Sample-to-detector distance in metres.
    pixel_size : float
        Detector pixel size in metres (square pixels).
    """

    wavelength: float = 1e-10
    distance: float = 2.0
    pixel_size: float = 75e-6

    @property
    def energy(self) -> float:
        """Photon energy in joules (E = h c / λ)."""
        return PLANCK_TIMES_C / self.wavelength

    @classmethod
    def from_energy(cls, energy_j: float, distance: float, pixel_size: float) -> "Geometry":
        return cls(PLANCK_TIMES_C / energy_j, distance, pixel_size)

    def object_pixel_size(self, n: int) -> float:
        """Object-plane pixel size in metres for an n-pixel detector window: λ·z / (n·p)."""
        return self.wavelength * self.distance / (n * self.pixel_size)


@dataclass
class Scan:
    """A ptychographic scan.

    Attributes
    ----------
    diffraction : array-like, (N, H, W)
        Measured intensities in photons, zero frequency at the array centre. May be an
        ``h5py.Dataset`` (lazy; read in chunks) or a numpy array.
    positions : ndarray, (N, 2) float64
        (y, x) of the top-left corner of the probe window, in object pixels (sub-pixel allowed).
    geometry : Geometry
    probe : complex ndarray (H, W) or None
    mask : bool ndarray (H, W) or None
        True where the detector pixel is valid.
    truth : complex ndarray or None
        Ground-truth object for simulated scans, on the same pixel grid as ``positions``.
    near_field : bool
        True for near-field (holographic) data, which the far-field models cannot reconstruct.
    meta : dict
        Free-form provenance (source file, converter, simulation settings).
    """

    diffraction: Any
    positions: np.ndarray
    geometry: Geometry = field(default_factory=Geometry)
    probe: np.ndarray | None = None
    mask: np.ndarray | None = None
    truth: np.ndarray | None = None
    near_field: bool = False
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.positions = np.asarray(self.positions, dtype=np.float64)
        shape = tuple(self.diffraction.shape)
        if len(shape) != 3:
            raise InputError(f"diffraction must be a stack of 2-D frames (N, H, W); found shape {shape}.")
        if self.positions.ndim != 2 or self.positions.shape[1] != 2:
            raise InputError(f"positions must have shape (N, 2) as (y, x); found {self.positions.shape}.")
        if self.positions.shape[0] != shape[0]:
            raise InputError(
                f"the scan has {shape[0]} diffraction frames but {self.positions.shape[0]} positions; "
                "each frame needs exactly one position."
            )
        if shape[0] == 0:
            raise InputError("the scan holds no diffraction frames.")
        if not np.all(np.isfinite(self.positions)):
            raise InputError("scan positions contain NaN or Inf.")
        check_object_size(self.positions, shape[1:])
        if self.probe is not None:
            check_probe(self.probe, str(self.meta.get("source", "the scan")))
        if self.probe is not None and tuple(self.probe.shape) != shape[1:]:
            raise InputError(
                f"the probe has shape {tuple(self.probe.shape)} but the frames are {shape[1:]}; "
                "they must match."
            )
        if self.mask is not None and tuple(self.mask.shape) != shape[1:]:
            raise InputError(f"the mask has shape {tuple(self.mask.shape)} but the frames are {shape[1:]}.")

    @property
    def n_frames(self) -> int:
        return int(self.diffraction.shape[0])

    @property
    def frame_shape(self) -> tuple[int, int]:
        return tuple(int(s) for s in self.diffraction.shape[1:])  # type: ignore[return-value]

    @property
    def object_shape(self) -> tuple[int, int]:
        """Smallest object grid (rows, cols) that holds every probe window, positions shifted to ≥ 0."""
        h, w = self.frame_shape
        lo = np.floor(self.positions.min(axis=0))
        hi = np.ceil(self.positions.max(axis=0))
        return int(hi[0] - lo[0]) + h + 1, int(hi[1] - lo[1]) + w + 1

    def frames(self, start: int, stop: int) -> np.ndarray:
        """Frames [start, stop) as a float32 numpy array (reads from disk when lazy)."""
        return np.asarray(self.diffraction[start:stop], dtype=np.float32)

    def iter_chunks(self, chunk: int = 256):
        """Yield (start, frames) in chunks of ``chunk`` frames."""
        for s in range(0, self.n_frames, chunk):
            yield s, self.frames(s, min(s + chunk, self.n_frames))

    def with_(self, **changes: Any) -> "Scan":
        return replace(self, **changes)

    def overlap_estimate(self) -> float:
        """Linear overlap fraction 1 - step/width from the median nearest-neighbour distance."""
        from scipy.spatial import cKDTree

        if self.n_frames < 2:
            return 0.0
        d, _ = cKDTree(self.positions).query(self.positions, k=2)
        step = float(np.median(d[:, 1]))
        return max(0.0, 1.0 - step / self.frame_shape[0])
