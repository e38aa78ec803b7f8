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


def object_grid(positions: np.ndarray, window: tuple[int, int], origin=None) -> tuple[np.ndarray, tuple[int, int]]:
    """(origin (y, x), object shape) of the smallest grid holding every window at ``positions`` (top-left corners):
    the grid's pixel (0, 0) is scan position ``origin`` — by default the floor of the smallest position, or the
    one given (refinement keeps the scan's own origin (0, 0)); +1 px for bilinear."""
    positions = np.asarray(positions, dtype=np.float64)
    origin = np.floor(positions.min(axis=0)) if origin is None else np.asarray(origin, dtype=np.float64)
    span = np.ceil(positions.max(axis=0) - origin)
    return origin, (int(span[0]) + window[0] + 1, int(span[1]) + window[1] + 1)


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
        return object_grid(self.positions, self.frame_shape)[1]

    def frames(self, start: int, stop: int) -> np.ndarray:
        """Frames [start, stop) as a float32 numpy array (reads from disk when lazy)."""
        return np.asarray(self.diffraction[start:stop], dtype=np.float32)

    def iter_chunks(self, chunk: int = 256):
        """Yield (start, frames) in chunks of ``chunk`` frames."""
        for s in range(0, self.n_frames, chunk):
            yield s, self.frames(s, min(s + chunk, self.n_frames))

    def close(self) -> None:
        """Close the HDF5 file a lazy scan reads from (``meta["h5file"]``); its frames are unreadable after."""
        f = self.meta.pop("h5file", None)
        if f is not None:
            f.close()

    def __enter__(self) -> "Scan":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def with_(self, **changes: Any) -> "Scan":
        """A copy with ``changes`` applied (dataclass ``replace``; the contract is checked again)."""
        return replace(self, **changes)

    def select(self, indices: np.ndarray) -> "Scan":
        """The scan restricted to frames ``indices`` (increasing); positions keep their coordinates, so
        reconstructions of different selections share one object frame. Lazy frames stay on disk."""
        indices = np.asarray(indices, dtype=np.int64)
        if len(indices) == self.n_frames and np.array_equal(indices, np.arange(self.n_frames)):
            return self
        frames = SelectedFrames(self.diffraction, indices)
        meta = {**self.meta, "frame_indices": [int(i) for i in indices], "frames_in_file": self.n_frames}
        return replace(self, diffraction=frames, positions=self.positions[indices], meta=meta)


    def object_pixel_size(self, size: int | None = None, fit: str = "none") -> float:
        """Object pixel in metres, λz/(N·p), for frames brought to ``size`` with ``fit`` (crop/pad change N at
        the same p; binning changes both); NaN when the file gives no geometry."""
        if self.meta.get("geometry_defaulted"):
            return float("nan")
        n = self.frame_shape[0]
        pixel = self.geometry.object_pixel_size(n)
        return pixel * n / size if size and fit in ("crop", "pad") else pixel

    def overlap_estimate(self) -> float:
        """Linear overlap fraction 1 - step/width from the median nearest-neighbour distance."""
        from scipy.spatial import cKDTree

        if self.n_frames < 2:
            return 0.0
        d, _ = cKDTree(self.positions).query(self.positions, k=2)
        step = float(np.median(d[:, 1]))
        return max(0.0, 1.0 - step / self.frame_shape[0])


class FrameView:
    """Base of the read-only (N, H, W) frame views (:class:`SelectedFrames`, :class:`LazyFrames`): they
    set ``shape`` and ``dtype`` and index along the first axis; reading happens only on indexing."""

    ndim = 3
    shape: tuple[int, int, int]
    dtype: Any

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):  # pragma: no cover - every view defines it
        raise NotImplementedError

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self[:], dtype=dtype)


class SelectedFrames(FrameView):
    """(n, H, W) read-only view of frames ``indices`` of a larger (N, H, W) array or HDF5 dataset; indexing
    along the first axis reads only those frames (h5py: one increasing index list per read)."""

    def __init__(self, base, indices: np.ndarray):
        self.base, self.indices = base, np.asarray(indices, dtype=np.int64)
        self.shape = (len(self.indices),) + tuple(base.shape[1:])
        self.dtype = base.dtype

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        idx = self.indices[key[0]]
        if np.ndim(idx) == 0:
            return np.asarray(self.base[(int(idx),) + key[1:]])
        if len(idx) and np.all(np.diff(idx) == 1):  # a contiguous run: one slice read
            return np.asarray(self.base[(slice(int(idx[0]), int(idx[-1]) + 1),) + key[1:]])
        return np.asarray(self.base[(idx,) + key[1:]])


class LazyFrames(FrameView):
    """Read-only (N, H, W) view of a larger HDF5 dataset, e.g. frames ``ds[0]`` of a (1, N, H, W) stack.

    Indexing along the first axis reads only the requested frames from disk (int, slice or index array).

    Parameters
    ----------
    dataset : h5py.Dataset
        The stored array, ``len(lead) + 3`` dimensional.
    lead : tuple of int
        Fixed leading indices selecting the (N, H, W) block.
    """

    def __init__(self, dataset, *, lead: tuple[int, ...] = ()):
        self.dataset = dataset
        self.lead = tuple(lead)
        self.shape = tuple(dataset.shape[len(self.lead):])
        self.dtype = dataset.dtype

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        first, rest = key[0], key[1:]
        if isinstance(first, (int, np.integer, slice)):
            out = self.dataset[self.lead + (first,)]
        else:  # index array: h5py wants increasing unique indices
            idx = np.asarray(first)
            if idx.dtype == bool:
                idx = np.flatnonzero(idx)
            idx = np.where(idx < 0, idx + self.shape[0], idx)
            uniq, inverse = np.unique(idx, return_inverse=True)
            out = self.dataset[self.lead + (uniq,)][inverse]
        if not rest:
            return out
        return out[rest] if out.ndim == 2 else out[(slice(None),) + rest]


def validate_frames(frames, *, start: int = 0, mask: np.ndarray | None = None, source: str = "the scan") -> None:
    """Check a chunk of frames for NaN/Inf and negative counts (on valid detector pixels only).

    Call it on each chunk while streaming (``for s, f in scan.iter_chunks(): validate_frames(f, start=s)``).

    Parameters
    ----------
    frames : array-like, (n, H, W)
        Intensities in photons.
    start : int
        Index of the first frame of the chunk in the whole scan (for the message).
    mask : bool ndarray (H, W), optional
        True where the detector pixel is valid; invalid pixels may hold anything.
    source : str
        Name of the input for the message (a file name).

    Raises
    ------
    InputError
        Naming the first offending frame and the remedy.
    """
    a = np.asarray(frames)
    if a.dtype.kind in "ub":
        return
    if a.size and a.min() >= 0 and np.isfinite(a.max()):  # the usual chunk: two plain passes, no masks
        return  # (a NaN anywhere makes both NaN and fails here; then the masked checks below decide)
    valid = np.ones(a.shape[-2:], bool) if mask is None else np.asarray(mask, bool)
    bad = ~np.isfinite(a) & valid
    if bad.any():
        k = int(np.argmax(bad.reshape(len(a), -1).any(axis=1)))
        raise InputError(
            f"{source}: frame {start + k} contains NaN or Inf counts; mark those detector pixels bad in the "
            "mask (CXI detector_1/mask) or remove the frame."
        )
    neg = (a < 0) & valid
    if neg.any():
        k = int(np.argmax(neg.reshape(len(a), -1).any(axis=1)))
        raise InputError(
            f"{source}: frame {start + k} has negative counts (minimum {float(a[k][valid].min()):g}); photon counts "
            "must be ≥ 0 - flag detector pixels that use negative values as markers in the mask (CXI "
            "detector_1/mask), and clip small background-subtraction offsets to 0."
        )


def validate_scan_frames(diffraction, *, mask=None, chunk: int = 64, source: str = "the scan") -> None:
    """Run :func:`validate_frames` over a (possibly lazy) (N, H, W) stack, ``chunk`` frames at a time."""
    n = int(diffraction.shape[0])
    for s in range(0, n, chunk):
        validate_frames(diffraction[s : min(n, s + chunk)], start=s, mask=mask, source=source)


def parse_frames(spec: str | None, n: int, *, option: str = "--frames") -> np.ndarray:
    """Frame indices of ``START:STOP[:STEP]`` (Python slice rules, negative values count from the end; a
    single index ``K`` is frame K alone) over a scan of ``n`` frames; ``None`` or ``""`` is every frame.

    Raises InputError for text that is not a slice, a zero or negative step, or an empty selection."""
    if spec is None or str(spec).strip() in ("", ":"):
        return np.arange(n)
    text = str(spec).strip()
    parts = text.split(":")
    try:
        values = [int(p) if p.strip() else None for p in parts]
    except ValueError:
        raise InputError(f"{option} must be START:STOP[:STEP] frame indices (e.g. 0:258); found '{text}'.") from None
    if len(values) == 1:
        if values[0] is None or not -n <= values[0] < n:
            raise InputError(f"{option} {text}: the scan has frames 0 to {n - 1}.")
        return np.array([values[0] % n])
    if len(values) > 3:
        raise InputError(f"{option} must be START:STOP[:STEP] frame indices (e.g. 0:258); found '{text}'.")
    if len(values) == 3 and values[2] is not None and values[2] <= 0:
        raise InputError(f"{option} {text}: the step must be a positive number of frames.")
    indices = np.arange(n)[slice(*values)]
    if len(indices) == 0:
        raise InputError(f"{option} {text} selects no frames of the {n} in the scan.")
    return indices
