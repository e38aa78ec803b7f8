"""What a refinement starts from: the object grid and initial object, the checked probe and positions, the
measured intensities, and the scale that ties the probe's power to the data's photons."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ptyfast.errors import InputError
from ptyfast.kernels import gather
from ptyfast.physics.xp import get_array_module
from ptyfast.scan import object_grid


def _to_numpy(a) -> np.ndarray:
    return a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else np.asarray(a)


def check_positions(positions: np.ndarray, object_shape: tuple[int, int], window: tuple[int, int]) -> None:
    """Raise :class:`InputError` unless every (y, x) window of ``window`` lies inside ``object_shape``."""
    pos = np.asarray(positions, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 2 or not np.all(np.isfinite(pos)):
        raise InputError(f"positions must be a finite (N, 2) array of (y, x); found shape {pos.shape}.")
    rows, cols = object_shape
    h, w = window
    tol = 1e-6
    bad = (pos[:, 0] < -tol) | (pos[:, 1] < -tol) | (pos[:, 0] + h > rows + tol) | (pos[:, 1] + w > cols + tol)
    if np.any(bad):
        i = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"{int(bad.sum())} of {len(pos)} probe positions fall outside the {rows}×{cols} object grid "
            f"(first: #{i} at (y, x) = ({pos[i, 0]:.1f}, {pos[i, 1]:.1f}) with a {h}×{w} window); "
            "shift the positions to ≥ 0 or give a larger initial object."
        )


def initial_object(init, shape: tuple[int, int], *, seed: int | None = 0, xp=np):
    """The starting object.

    Parameters
    ----------
    init : {"flat", "random"} or complex array (rows, cols)
        ``"flat"``: ones. ``"random"``: amplitude uniform in [0.95, 1.05], phase uniform in [−0.1, 0.1] rad
        (seeded). An array (e.g. a network reconstruction) is used as given (copied to complex64).
    shape : (rows, cols)
        Grid for ``"flat"``/``"random"``.
    seed : int or None
        Seed for ``"random"``.
    xp : module
        numpy or cupy.

    Returns
    -------
    complex64 array (rows, cols) of module ``xp``.
    """
    if isinstance(init, str):
        if init == "flat":
            return xp.ones(shape, dtype=xp.complex64)
        if init == "random":
            rng = np.random.default_rng(seed)
            amp = rng.uniform(0.95, 1.05, shape)
            ph = rng.uniform(-0.1, 0.1, shape)
            return xp.asarray((amp * np.exp(1j * ph)).astype(np.complex64))
        raise InputError(f"init must be 'flat', 'random', a complex array or an HDF5 file; found {init!r}.")
    if init is None:
        return xp.ones(shape, dtype=xp.complex64)
    arr = init if get_array_module(init) is xp else xp.asarray(_to_numpy(init))
    if arr.ndim != 2:
        raise InputError(f"the initial object must be a 2-D complex array; found shape {tuple(arr.shape)}.")
    arr = arr.astype(xp.complex64, copy=True)
    if not bool(xp.all(xp.isfinite(arr))):
        raise InputError("the initial object contains NaN or Inf.")
    return arr


def _measured_intensity(scan, xp, chunk: int = 256):
    """All frames as one float32 array of module ``xp`` (read in chunks when lazy); negative counts → 0."""
    n, h, w = scan.n_frames, *scan.frame_shape
    out = np.empty((n, h, w), dtype=np.float32)
    for s, frames in scan.iter_chunks(chunk):
        out[s : s + len(frames)] = frames
    if not np.all(np.isfinite(out)):
        raise InputError("the diffraction data contain NaN or Inf; fix or mask those frames before refinement.")
    np.maximum(out, 0, out=out)
    return xp.asarray(out)



def _probe_power_ratio(probe, obj, positions, intensity, xp) -> float:
    """mean_n Σ I_n  /  mean_n Σ |P · O_n|² for the initial object (a subset of ≤ 64 positions)."""
    n = len(positions)
    sel = np.linspace(0, n - 1, min(n, 64)).astype(int)
    pd = positions[sel] if xp is np else xp.asarray(positions[sel])
    patches = gather(obj, pd, probe.shape[-2:])
    modes = probe.reshape(-1, *probe.shape[-2:])
    model = float(sum(xp.mean(xp.sum(xp.abs(m[None] * patches) ** 2, axis=(-2, -1))) for m in modes))
    measured = float(xp.mean(xp.sum(intensity, axis=(-2, -1))))
    return measured / model if model > 0 else float("inf")



@dataclass
class RefineStart:
    """What a refinement starts from, checked: the object on its grid, the probe, the positions on that grid
    (N, 2), the measured intensities and mask on the array module, and the data's total photons."""

    object: object
    probe: object
    positions: np.ndarray
    intensity: object
    mask: object
    photons: float


def prepare_refinement(scan, *, init="flat", probe=None, positions=None, seed: int | None = 0, xp=np
                       ) -> RefineStart:
    """Check the probe, positions and data of ``scan`` and build the starting object (see :func:`refine`).

    Raises
    ------
    InputError
        A missing or non-finite probe, one of another size than the frames, positions of the wrong shape,
        negative positions with a flat/random start, windows outside the object grid, or data without photons.
    """
    n = scan.n_frames
    probe0 = scan.probe if probe is None else probe
    if probe0 is None:
        raise InputError("the scan has no probe; give one (probe=... or --probe) to refine.")
    probe_d = xp.asarray(_to_numpy(probe0).astype(np.complex64))
    if probe_d.ndim == 3 and probe_d.shape[0] == 1:
        probe_d = probe_d[0]
    if probe_d.ndim not in (2, 3):
        raise InputError(f"the probe must be (H, W) or (modes, H, W); found shape {tuple(probe_d.shape)}.")
    window = tuple(int(s) for s in probe_d.shape[-2:])
    if window != scan.frame_shape:
        raise InputError(f"the probe is {window} but the frames are {scan.frame_shape}; they must match.")
    if not bool(xp.all(xp.isfinite(probe_d))):
        raise InputError("the probe contains NaN or Inf.")

    pos = np.asarray(scan.positions if positions is None else positions, dtype=np.float64)
    if pos.shape != (n, 2):
        raise InputError(f"positions must have shape ({n}, 2) for {n} frames; found {pos.shape}.")
    if isinstance(init, str) or init is None:
        if np.any(pos < -1e-6):
            raise InputError(
                f"positions reach {pos.min(axis=0).round(1).tolist()} (y, x) but must be ≥ 0 for a "
                f"{init or 'flat'} initial object; shift them (the converters do) or give an initial object."
            )
        shape = object_grid(np.maximum(pos, 0), window, origin=(0.0, 0.0))[1]  # the scan's own origin
    else:
        shape = tuple(int(s) for s in init.shape[-2:])
    obj = initial_object(init, shape, seed=seed, xp=xp)
    check_positions(pos, tuple(obj.shape), window)

    intensity = _measured_intensity(scan, xp)
    mask = None if scan.mask is None else xp.asarray(np.asarray(scan.mask, dtype=bool))
    total = float(xp.sum(intensity if mask is None else intensity * mask))
    if total <= 0:
        raise InputError("the diffraction data hold no photons (all frames are zero).")
    return RefineStart(object=obj, probe=probe_d, positions=pos, intensity=intensity, mask=mask, photons=total)

