"""ePIE and rPIE: iterative refinement of an object (and optionally the probe) against measured intensities.

References
----------
- A. M. Maiden and J. M. Rodenburg, "An improved ptychographical phase retrieval algorithm for diffractive
  imaging", Ultramicroscopy 109, 1256–1262 (2009) — ePIE.
- A. Maiden, D. Johnson and P. Li, "Further improvements to the ptychographical iterative engine",
  Optica 4, 736–745 (2017) — rPIE (Table 1).

Physics is not written here: exit waves are the kernels' bilinear ``gather`` times the probe (the
patches are kept for the probe update), the far-field constraint is the kernels' ``project_exit_waves_fft_order``
(the project's forward model ``Ψ = fftshift(fft2(P·O_n, norm="ortho"))``, modulus projection, back
propagation, with the fftshifts folded into the data: the engine keeps √I in the FFT's pixel order, computed
once), and the object update is scattered with the
kernels' ``overlap_add`` (the adjoint of ``gather``). Everything is array-module generic: numpy arrays run on the CPU
(FFTW or scipy.fft, see :mod:`ptyfast.kernels.cpu_fft`), CuPy arrays on the GPU through the CUDA kernels.

Update step (one batch ``B`` of positions; the textbook sequential algorithm is ``|B| = 1``)
-------------------------------------------------------------------------------------------
For each position n in B: ψ_n = P · O_n (O_n the object patch), Ψ_n = F ψ_n, the modulus projection
Ψ'_n = √I_n · Ψ_n / |Ψ_n| on valid detector pixels (masked pixels keep Ψ_n), Δ_n = F⁻¹ Ψ'_n − ψ_n. Then, with
``S_n`` the overlap-add of a window onto the object grid (adjoint of the patch gather)::

    N_O = Σ_n S_n(P* Δ_n)         D_O = Σ_n S_n(|P|²)          (object grid)
    N_P = Σ_n O_n* Δ_n            D_P = Σ_n |O_n|²              (probe window)

    rPIE:  O += N_O / ((1 − α) D_O + α max D_O)       P += N_P / ((1 − β) D_P + β max D_P)
    ePIE:  O += α N_O / max D_O                        P += β N_P / max D_P

and the probe step is further multiplied by γ_P (``probe_step``; default 0.25 sequential, 1 batched). With
``|B| = 1`` the object and probe updates each take an (almost) full step on the same residual Δ_n, so P·O
moves by up to 2Δ_n: on the Siemens star sequential rPIE with γ_P = 1 slowly diverges (error 0.022 →
0.025 → … after 10 iterations), with γ_P = 0.25 (PtyLab's default probe step) it is stable. The
normalised batch update averages and is stable with γ_P = 1. After every iteration with probe updates the
probe is scaled back to its starting power and the object inversely (P·O unchanged), which removes the
probe/object scale drift.

Both updates use the iterate from before the batch. For ``|B| = 1`` these are exactly Maiden's ePIE and rPIE
updates (D_O = |P|² at the window). For ``|B| > 1`` (mini-batch, for GPU throughput) the sums over the
batch are *normalised* by the summed weights: where k windows of the batch overlap, the step is the
average of their k individual steps rather than their sum, so a large batch cannot overshoot. (Pty-Chi's
batched PIE sums the individual steps and averages only the probe update; the two agree at ``|B| = 1``.)
Batches are random: a fresh permutation of the positions every iteration, cut into consecutive batches.

Error metric
------------
The normalised amplitude error of one iteration is ::

    E = Σ_n Σ_k m_k (|Ψ_nk| − √I_nk)²  /  Σ_n Σ_k m_k I_nk

(k over detector pixels, m the valid-pixel mask), accumulated during the pass itself from each position's
far field just before its update: no extra forward pass. E is dimensionless; 0 means the model explains the
data exactly, and for Poisson-limited data its floor is ≈ N_pixels / (4 Σ I) per frame.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ptyfast.choices import Algorithm
from ptyfast.errors import InputError
from ptyfast.kernels import gather, overlap_add, project_exit_waves_fft_order
from ptyfast.physics.xp import get_array_module
from ptyfast.scan import object_grid

ALGORITHMS = Algorithm.values()
#: Default (alpha, beta) per algorithm. ePIE: step sizes (Maiden & Rodenburg 2009 use 1). rPIE: the
#: regularisation weights of Maiden et al. 2017, Table 1 (0.05–0.25 recommended; Pty-Chi's default 0.1).
DEFAULT_PARAMETERS = {"epie": (1.0, 1.0), "rpie": (0.1, 0.1)}
DIVERGENCE_FACTOR = 10.0  # an error this many times its best so far ends the run as diverged (best iterate kept)

ProgressFn = Callable[[int, int, float], Any]


@dataclass
class RefineResult:
    """What :func:`refine` returns.

    Attributes
    ----------
    object : complex64 array (rows, cols)
        Refined object on the grid of ``positions`` (numpy or CuPy, like the computation).
    probe : complex64 array (H, W)
        Refined (or, with probe updates off, the possibly rescaled input) probe.
    positions : ndarray (N, 2) float64
        (y, x) top-left window corners in object pixels, as used.
    errors : ndarray (iterations_run,) float64
        Normalised amplitude error E of each completed iteration (see the module docstring).
    timings : ndarray (iterations_run,) float64
        Wall-clock seconds of each completed iteration.
    cpu_timings : ndarray (iterations_run,) float64
        CPU seconds of this thread in each completed iteration (``time.thread_time``; with one thread, what a
        shared machine disturbs least).
    algorithm : str
        ``"epie"`` or ``"rpie"``.
    options : dict
        The settings used (alpha, beta, batch, probe updates, seed, …), for provenance.
    diverged : bool
        True when an iteration produced NaN/Inf; ``object``/``probe`` are then the last good iterate.
    message : str
        Why the run stopped early (divergence, target reached) or "".
    meta : dict
        Extra facts (e.g. the probe rescaling factor applied).
    """

    object: Any
    probe: Any
    positions: np.ndarray
    errors: np.ndarray
    timings: np.ndarray
    algorithm: str
    options: dict = field(default_factory=dict)
    cpu_timings: np.ndarray = field(default_factory=lambda: np.zeros(0))
    diverged: bool = False
    message: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def iterations(self) -> int:
        """Number of completed (kept) iterations."""
        return int(len(self.errors))

    @property
    def seconds_per_iteration(self) -> float:
        """Median wall-clock seconds per iteration (NaN when none ran)."""
        return float(np.median(self.timings)) if len(self.timings) else float("nan")


# ----------------------------------------------------------------------------------------------- helpers


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


# ----------------------------------------------------------------------------------------------- engine


def _fft_order_amplitude(intensity, xp):
    """√I of every frame in the FFT's pixel order (``ifftshift``), computed in place: ``intensity`` (N, H, W)
    float32, non-negative, becomes that amplitude (a refinement holds its frames once, not twice)."""
    xp.sqrt(intensity, out=intensity)
    for k in range(len(intensity)):  # frame by frame: one frame of scratch, not a second copy of the scan
        intensity[k] = xp.fft.ifftshift(intensity[k])
    return intensity


class _Engine:
    """Holds the iterate and does one batch update in place (module-private; use :func:`refine`).

    ``intensity`` (N, H, W) is taken over: it is turned in place into √I in the FFT's pixel order."""

    def __init__(self, algorithm, obj, probe, positions, intensity, mask, alpha, beta, xp):
        self.algorithm = algorithm
        self.obj = obj
        self.probe = probe
        self.positions = positions
        self.amplitude = _fft_order_amplitude(intensity, xp)
        self.mask = None if mask is None else xp.fft.ifftshift(mask, axes=(-2, -1))
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.xp = xp
        self.window = tuple(int(s) for s in probe.shape[-2:])
        self.probe_step = 1.0  # γ_P, set by refine()

    def step(self, idx: np.ndarray, update_probe: bool):
        """Update with the positions ``idx``; returns Σ m(|Ψ| − √I)² over the batch (device scalar)."""
        if self.probe.ndim == 3:
            return self.step_modes(idx, update_probe)
        xp = self.xp
        h, w = self.window
        region, lpos_dev = self._region(idx)  # view: updates land in self.obj
        lpos = lpos_dev if xp is np else xp.asnumpy(lpos_dev)

        patches = gather(region, lpos_dev, (h, w))
        psi = self.probe[None] * patches
        meas = self.amplitude[idx] if xp is np else self.amplitude[xp.asarray(idx)]
        dpsi, err = project_exit_waves_fft_order(psi, meas, self.mask)  # F⁻¹ Π_I F ψ, Σ m(|Ψ| − √I)² per frame
        dpsi -= psi

        p2 = (self.probe.real**2 + self.probe.imag**2).astype(xp.float32)
        xp.multiply(xp.conj(self.probe)[None], dpsi, out=psi)  # P̄·Δψ (psi's buffer is free now)
        num = xp.zeros(region.shape, dtype=xp.complex64)
        overlap_add(num, psi, lpos_dev)
        den = xp.zeros(region.shape, dtype=xp.float32)
        if len(idx) == 1 and np.all(lpos == np.floor(lpos)):
            den[int(lpos[0, 0]) : int(lpos[0, 0]) + h, int(lpos[0, 1]) : int(lpos[0, 1]) + w] = p2
        else:
            overlap_add(den, xp.broadcast_to(p2, (len(idx), h, w)), lpos_dev)
        num *= self._weights(den, self.alpha)  # complex × real: ≈ 5× cheaper than the complex ÷ real it replaces
        region += num

        if update_probe:
            d_p = xp.einsum("nij,nij->ij", patches.real, patches.real) + xp.einsum("nij,nij->ij", patches.imag,
                                                                                      patches.imag)
            xp.conj(patches, out=patches)
            patches *= dpsi
            n_p = patches.sum(axis=0)
            self.probe += np.float32(self.probe_step) * n_p * self._weights(d_p.astype(xp.float32), self.beta)
        return err.sum(dtype=xp.float64)


    def _region(self, idx: np.ndarray):
        """The object region the windows ``idx`` touch (a view) and their positions relative to it."""
        h, w = self.window
        rows, cols = self.obj.shape
        pos = self.positions[idx]
        base = np.floor(pos).astype(np.int64)
        y0, x0 = base.min(axis=0)
        y1 = min(int(base[:, 0].max()) + h + 1, rows)
        x1 = min(int(base[:, 1].max()) + w + 1, cols)
        lpos = pos - np.array([y0, x0], dtype=np.float64)
        return self.obj[y0:y1, x0:x1], (lpos if self.xp is np else self.xp.asarray(lpos))

    def _weights(self, den, mix: float):
        """rPIE's 1 / ((1 − a)·D + a·max D), ePIE's a / max D (``mix`` = a), in place (a zero weight, e.g. rPIE
        with a = 0 where D = 0, gives no update there)."""
        xp = self.xp
        dmax = den.max()
        if self.algorithm == "rpie":
            den *= xp.float32(1 - mix)
            den += xp.float32(mix) * dmax
        else:
            den[...] = dmax / mix
        xp.maximum(den, xp.float32(1e-30), out=den)
        return xp.reciprocal(den, out=den)

    def step_modes(self, idx: np.ndarray, update_probe: bool):
        """:meth:`step` for a mixed-state probe (M, H, W) of incoherent modes (Thibault & Menzel, Nature 494,
        68 (2013)): I = Σ_m |F(P_m·O_n)|²; each mode's far field is scaled by √I / √(Σ_m |Ψ_m|²) on valid
        pixels; the object step sums P_m*·Δ_m over the modes with weights from Σ_m |P_m|², each mode's step
        is the single-mode one with its own Δ_m."""
        xp = self.xp
        h, w = self.window
        region, lpos = self._region(idx)
        patches = gather(region, lpos, (h, w))
        psi = self.probe[None] * patches[:, None]  # (n, M, H, W)
        meas = self.amplitude[idx] if xp is np else self.amplitude[xp.asarray(idx)]
        big = xp.fft.fft2(psi, axes=(-2, -1), norm="ortho")
        total = xp.sqrt(xp.sum(big.real**2 + big.imag**2, axis=1))
        diff = total - meas
        scale = meas / xp.maximum(total, xp.float32(1e-12))
        if self.mask is not None:
            diff = diff * self.mask
            scale = xp.where(self.mask, scale, xp.float32(1.0))
        err = xp.sum(diff * diff, axis=(-2, -1))
        big *= scale[:, None].astype(xp.float32)
        dpsi = xp.fft.ifft2(big, axes=(-2, -1), norm="ortho").astype(xp.complex64) - psi
        p2 = xp.sum(self.probe.real**2 + self.probe.imag**2, axis=0).astype(xp.float32)
        num = xp.zeros(region.shape, dtype=xp.complex64)
        overlap_add(num, xp.sum(xp.conj(self.probe)[None] * dpsi, axis=1).astype(xp.complex64), lpos)
        den = xp.zeros(region.shape, dtype=xp.float32)
        overlap_add(den, xp.broadcast_to(p2, (len(idx), h, w)), lpos)
        region += num * self._weights(den, self.alpha)
        if update_probe:
            d_p = xp.sum(patches.real**2 + patches.imag**2, axis=0).astype(xp.float32)
            n_p = xp.sum(xp.conj(patches)[:, None] * dpsi, axis=0)
            self.probe += np.float32(self.probe_step) * n_p * self._weights(d_p, self.beta)[None]
        return err.sum(dtype=xp.float64)

    def fix_probe_power(self, power: float) -> None:
        """Rescale the probe back to ``power`` = Σ|P|² and the object inversely (P·O unchanged).

        Object and probe are only determined up to P·O: the probe update, whose step grows as |O| shrinks
        (rPIE's ``(1 − β)|O|²`` term), lets the pair drift to a huge probe and a vanishing object. Holding
        the probe's power at its starting value (the data's photons per frame) removes that drift without
        changing the exit waves (the probe-power constraint of Pty-Chi and PtyLab).
        """
        now = float(self.xp.sum(self.probe.real**2 + self.probe.imag**2))
        if now > 0 and math.isfinite(now):
            s = math.sqrt(power / now)
            self.probe *= np.float32(s)
            self.obj /= np.float32(s)


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
class RefineSettings:
    """How :func:`refine` iterates; :meth:`resolve` checks every value (one sentence each) and fills the
    defaults: α/β from :data:`DEFAULT_PARAMETERS`, batch 1 (sequential), probe step 0.25 sequential / 1 batched."""

    algorithm: str = "rpie"
    iterations: int = 50
    alpha: float | None = None
    beta: float | None = None
    batch: int | None = None
    probe_step: float | None = None
    probe_start: int = 0

    def resolve(self, n_frames: int) -> "RefineSettings":
        algorithm = Algorithm.check(self.algorithm, "algorithm")
        if int(self.iterations) < 1:
            raise InputError(f"iterations must be ≥ 1; found {self.iterations}.")
        a_def, b_def = DEFAULT_PARAMETERS[algorithm]
        alpha = a_def if self.alpha is None else float(self.alpha)
        beta = b_def if self.beta is None else float(self.beta)
        for name, v in (("alpha", alpha), ("beta", beta)):
            if algorithm == "rpie" and not 0.0 <= v <= 1.0:
                raise InputError(f"rPIE {name} is a regularisation weight in [0, 1]; found {v}.")
            if algorithm == "epie" and not (v > 0 and math.isfinite(v)):
                raise InputError(f"ePIE {name} is a step size > 0; found {v}.")
        batch = 1 if self.batch is None else int(self.batch)
        if batch < 1:
            raise InputError(f"batch must be ≥ 1 positions; found {batch}.")
        batch = min(batch, n_frames)
        probe_step = (0.25 if batch == 1 else 1.0) if self.probe_step is None else float(self.probe_step)
        if not 0.0 < probe_step <= 1.0:
            raise InputError(f"probe_step must be in (0, 1]; found {probe_step}.")
        if self.probe_start < 0:
            raise InputError(f"probe_start must be ≥ 0; found {self.probe_start}.")
        return RefineSettings(algorithm, int(self.iterations), alpha, beta, batch, probe_step, int(self.probe_start))


NEW_MODE_SHARE = 0.05  #: each added probe mode starts with this share of the probe's power


def mixed_state(probe, modes: int) -> np.ndarray:
    """A probe of ``modes`` incoherent modes (modes, H, W) from ``probe`` (H, W) or (k, H, W): the strongest
    ``modes`` of those given, and for each one missing the first mode times a phase ramp of k cycles across
    the window (its far field shifted by k pixels, alternating axes and signs: orthogonal to the first and
    to each other) with :data:`NEW_MODE_SHARE` of the power; the total power is that of the given probe."""
    if int(modes) < 1:
        raise InputError(f"probe modes must be ≥ 1; found {modes}.")
    p = np.asarray(_to_numpy(probe), np.complex64)
    p = p.reshape(-1, *p.shape[-2:])
    power = np.sum(np.abs(p) ** 2, axis=(1, 2))
    p = p[np.argsort(power)[::-1][: int(modes)]]
    total = float(power.sum())
    h, w = p.shape[-2:]
    yy, xx = np.mgrid[:h, :w]
    extra = []
    for k in range(len(p), int(modes)):
        cycles = (k + 1) // 2 * (1 if k % 2 else -1)
        ramp = np.exp(2j * np.pi * cycles * (xx / w if (k // 2) % 2 == 0 else yy / h))
        extra.append(p[0] * ramp * np.sqrt(NEW_MODE_SHARE))
    out = np.concatenate([p, np.asarray(extra, np.complex64).reshape(-1, h, w)]) if extra else p
    out *= np.sqrt(total / float(np.sum(np.abs(out) ** 2)))
    return out[0] if len(out) == 1 else out.astype(np.complex64)


#: Iterations of the probe trial (:func:`refine`'s ``probe_trial``): from the first probe-update iteration the
#: same iterations run twice, probe updated and probe held, and the run goes on with the lower error.
PROBE_TRIAL = 10


def _probe_trial(engine, rng, n: int, batch: int, k: int, total: float, power: float):
    """``k`` iterations from the engine's current state twice — probe updated, probe held — with the same
    position orders; the engine is left in the state of the branch whose last error is lower (held on a
    tie or a non-finite update). Returns (kept, its errors, its seconds per iteration, last error updated,
    last error held)."""
    start_obj, start_probe = engine.obj.copy(), engine.probe.copy()
    state = rng.bit_generator.state
    runs = {}
    for branch in ("updated", "held"):
        rng.bit_generator.state = state
        engine.obj[...], engine.probe[...] = start_obj, start_probe
        errs, secs = [], []
        for _ in range(k):
            t0 = time.perf_counter()
            order = rng.permutation(n)
            err = 0.0
            for s in range(0, n, batch):
                err = err + engine.step(order[s : s + batch], branch == "updated")
            if branch == "updated":
                engine.fix_probe_power(power)
            errs.append(float(err) / total)
            secs.append(time.perf_counter() - t0)
        runs[branch] = (errs, secs, engine.obj.copy(), engine.probe.copy())
    e_up, e_held = runs["updated"][0][-1], runs["held"][0][-1]
    kept = "updated" if math.isfinite(e_up) and e_up < e_held else "held"
    errs, secs, obj, probe = runs[kept]
    engine.obj[...], engine.probe[...] = obj, probe
    return kept, errs, secs, e_up, e_held


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


def refine(
    scan,
    *,
    init="flat",
    algorithm: str = "rpie",
    iterations: int = 50,
    alpha: float | None = None,
    beta: float | None = None,
    batch: int | None = None,
    update_probe: bool = True,
    probe_start: int = 0,
    probe_step: float | None = None,
    probe=None,
    probe_modes: int | None = None,
    positions=None,
    rescale_probe: str | bool = "auto",
    probe_trial: int = PROBE_TRIAL,
    seed: int | None = 0,
    target_error: float | None = None,
    xp=None,
    progress: ProgressFn | None = None,
    watch=None,
) -> RefineResult:
    """Refine an object (and probe) with ePIE or rPIE.

    Parameters
    ----------
    scan : ptyfast.scan.Scan
        Diffraction (N, H, W) photons (zero frequency at the centre), positions (N, 2) (y, x) top-left window
        corners in object pixels (sub-pixel allowed, all ≥ 0), probe (H, W), optional mask (H, W).
    init : {"flat", "random"} or complex array (rows, cols)
        Initial object (see :func:`initial_object`); an array sets the object grid, e.g. a network
        reconstruction on the scan's pixel grid.
    algorithm : {"rpie", "epie"}
    iterations : int
        Passes over all positions (≥ 1).
    alpha, beta : float, optional
        Object and probe parameters: rPIE regularisation weights in [0, 1] (default 0.1 each), ePIE step sizes
        > 0 (default 1 each). See the module docstring for the update formulas.
    batch : int, optional
        None or 1: sequential (textbook; random order each iteration). > 1: mini-batches of this many
        positions, their updates accumulated with overlap_add and normalised (module docstring).
    update_probe : bool
        Update the probe as well as the object.
    probe_start : int
        First iteration (0-based) with probe updates, when ``update_probe`` is on.
    probe_step : float, optional
        γ_P, a multiplier of the probe step in (0, 1]; default 0.25 sequential, 1 batched (module docstring).
    probe : complex array (H, W) or (modes, H, W), optional
        Starting probe; default ``scan.probe``. Several modes: a mixed-state (partially coherent) probe,
        refined mode by mode (:meth:`_Engine.step_modes`).
    probe_modes : int, optional
        Refine this many incoherent probe modes: the strongest of the given ones, and new ones made by
        :func:`mixed_state` when more are asked for than given.
    positions : ndarray (N, 2), optional
        Positions to use instead of ``scan.positions`` (e.g. those of a stitched reconstruction's grid).
    rescale_probe : {"auto", True, False}
        Scale the probe so that the modelled photons per frame with the initial object match the data's
        mean exactly. ``"auto"``: when the two differ by more than 10× (a normalisation-convention mismatch,
        e.g. an unnormalised-FFT probe) the probe is scaled; otherwise a flat or random start is scaled instead
        (its unit transmission is not the sample's, while a given probe's power may be a measurement), and a
        given starting object (a network's, in absolute units) keeps its amplitude while a refined probe is
        scaled to it. The factor is reported in ``result.meta`` (``probe_rescaled_by`` or
        ``object_scaled_by``). A probe that is refined from a flat or random start is then held at the data's
        mean photons per frame (as for a weak object, |O| ≈ 1), moved there with the object inversely (P·O
        unchanged) once its update is kept: held, it keeps its given power and the object its amplitude.
    probe_trial : int
        With probe updates: from ``probe_start`` on, run this many iterations twice from the same state —
        probe updated and probe held, the same position orders — and go on with the branch of lower data
        error (``result.meta["probe_trial"]``, ``result.message`` say which), so updating the probe cannot end
        a run with a higher error than holding it would have at that point (a known probe on a regular
        raster, e.g., absorbs the grid's periodicity when updated). 0 turns it off; it is skipped when the run
        has no iterations left after it.
    seed : int or None
        Seeds the random initial object and the position order.
    target_error : float, optional
        Stop as soon as an iteration's error is ≤ this value.
    xp : module, optional
        numpy or cupy; default: the module of ``init`` when it is an array, else numpy.
    progress : callable(iteration, iterations, error), optional
        Called after every completed iteration (1-based ``iteration``).
    watch : callable(iteration, object), optional
        Called after every completed iteration with the current object (a view: copy to keep it), e.g. to
        follow its error against a known truth.

    Returns
    -------
    RefineResult
        Object, probe, errors and timings per iteration. On divergence (NaN/Inf in the error, object or
        probe) the run stops, ``diverged`` is True, ``message`` says so and object/probe are the last good
        iterate.

    Raises
    ------
    InputError
        Bad options, a missing probe, non-finite data, or positions outside the object grid.
    """
    st = RefineSettings(algorithm, iterations, alpha, beta, batch, probe_step, probe_start).resolve(scan.n_frames)
    algorithm, iterations, alpha, beta = st.algorithm, st.iterations, st.alpha, st.beta
    batch, probe_step, probe_start = st.batch, st.probe_step, st.probe_start
    n = scan.n_frames
    if xp is None:
        xp = get_array_module(init) if not isinstance(init, str) and init is not None else np
    if probe_modes is not None:
        probe = mixed_state(scan.probe if probe is None else probe, probe_modes)
    start = prepare_refinement(scan, init=init, probe=probe, positions=positions, seed=seed, xp=xp)
    obj, probe_d, pos, intensity, mask, total = (start.object, start.probe, start.positions, start.intensity,
                                                 start.mask, start.photons)
    meta: dict = {"object_shape": tuple(obj.shape)}
    ratio = _probe_power_ratio(probe_d, obj, pos, intensity, xp)
    meta["probe_power_ratio"] = ratio
    arbitrary = isinstance(init, str) or init is None  # a flat/random start's unit transmission means nothing
    if not math.isfinite(ratio) or ratio <= 0:
        raise InputError("the probe and initial object model no photons; check the probe and the init.")
    if rescale_probe is True or (rescale_probe == "auto" and (not 0.1 <= ratio <= 10.0
                                                              or (update_probe and not arbitrary))):
        probe_d *= np.float32(math.sqrt(ratio))
        meta["probe_rescaled_by"] = math.sqrt(ratio)
    elif arbitrary and rescale_probe == "auto":
        obj *= np.float32(math.sqrt(ratio))  # the object, not the probe's measured power, absorbs the scale
        meta["object_scaled_by"] = math.sqrt(ratio)

    engine = _Engine(algorithm, obj, probe_d, pos, intensity, mask, alpha, beta, xp)
    engine.probe_step = probe_step
    # the power a refined probe is held at: with a flat/random start, the data's mean photons per frame (the
    # probe is only moved there once its update is kept, P·O unchanged); else the starting probe's
    probe_power = total / n if arbitrary else float(xp.sum(xp.abs(probe_d) ** 2))
    rng = np.random.default_rng(seed)
    errors: list[float] = []
    timings: list[float] = []
    cpu_timings: list[float] = []
    diverged, message = False, ""
    best: tuple = (math.inf, -1, None, None)  # lowest error so far: (error, iteration, object, probe)
    requested = bool(update_probe)
    trial = probe_trial if update_probe and probe_start + probe_trial < iterations else 0
    it = 0
    while it < iterations:
        if trial and it == probe_start:
            # the same iterations twice from here, probe updated and probe held: keep the better of the two
            kept, errs, secs, e_updated, e_held = _probe_trial(engine, rng, n, batch, trial, total, probe_power)
            update_probe = kept == "updated"
            meta["probe_trial"] = {"from_iteration": it, "iterations": trial, "kept": kept,
                                   "error_updated": e_updated, "error_held": e_held}
            message = (f"probe {kept}: over a {trial}-iteration trial from iteration {it + 1} updating it ended at "
                       f"data error {e_updated:.4g}, holding it at {e_held:.4g}.")
            for k, (e, dt) in enumerate(zip(errs, secs)):
                errors.append(e)
                timings.append(dt)
                cpu_timings.append(dt)
                if progress is not None:
                    progress(it + k + 1, iterations, e)
            if errs[-1] < best[0]:
                best = (errs[-1], it + trial - 1, engine.obj.copy(), engine.probe.copy())
            it += trial
            continue
        t0, c0 = time.perf_counter(), time.thread_time()
        good_obj, good_probe = (best[2], best[3]) if best[2] is not None else (engine.obj.copy(), engine.probe.copy())
        order = rng.permutation(n)
        do_probe = update_probe and it >= probe_start
        err = 0.0
        for s in range(0, n, batch):
            err = err + engine.step(order[s : s + batch], do_probe)
        if do_probe:
            engine.fix_probe_power(probe_power)
        e = float(err) / total
        finite = math.isfinite(e) and bool(xp.isfinite(engine.obj.sum())) and bool(xp.isfinite(engine.probe.sum()))
        if not finite:
            engine.obj[...] = good_obj
            engine.probe[...] = good_probe
            diverged = True
            message = (
                f"{algorithm} diverged at iteration {it + 1} (NaN/Inf in the error, object or probe); "
                f"kept the iterate of iteration {it} — lower alpha/beta or the batch size."
            )
            break
        timings.append(time.perf_counter() - t0)
        cpu_timings.append(time.thread_time() - c0)
        errors.append(e)
        if progress is not None:
            progress(it + 1, iterations, e)
        if watch is not None:
            watch(it + 1, engine.obj)
        if e < best[0]:
            best = (e, it, engine.obj.copy(), engine.probe.copy())
        elif e > DIVERGENCE_FACTOR * best[0]:  # finite but runaway (seen with probe updates on real data)
            engine.obj[...], engine.probe[...] = best[2], best[3]
            diverged = True
            message = (f"{algorithm} diverged: the error grew from {best[0]:.4g} (iteration {best[1] + 1}) to "
                       f"{e:.4g} (iteration {it + 1}); kept the iterate of iteration {best[1] + 1} — lower "
                       "alpha/beta, start probe updates later or use fewer iterations.")
            break
        if target_error is not None and e <= target_error:
            message = f"reached the target error {target_error:.4g} at iteration {it + 1}."
            break
        it += 1

    options = dict(
        algorithm=algorithm, iterations=iterations, alpha=alpha, beta=beta, batch=batch,
        update_probe=requested, probe_start=int(probe_start), probe_step=probe_step, seed=seed,
        probe_trial=int(trial),
        init=init if isinstance(init, str) else "array", rescale_probe=str(rescale_probe),
    )
    return RefineResult(
        object=engine.obj, probe=engine.probe, positions=pos, errors=np.asarray(errors, dtype=np.float64),
        timings=np.asarray(timings, dtype=np.float64), algorithm=algorithm, options=options,
        diverged=diverged, message=message, meta=meta, cpu_timings=np.asarray(cpu_timings, dtype=np.float64),
    )


def iterations_to_reach(
    scan,
    init,
    *,
    reference_init="random",
    reference_iterations: int = 50,
    max_iterations: int | None = None,
    algorithm: str = "rpie",
    **kwargs,
) -> dict:
    """The paper's Figure-9 measure: iterations the ``init``-started run needs to reach the error that the
    ``reference_init``-started run reaches after ``reference_iterations``.

    Parameters
    ----------
    scan : Scan
    init : complex array (rows, cols) or str
        The initial guess under test (the network's reconstruction).
    reference_init : str or array
        The baseline start (the paper: random).
    reference_iterations : int
        Iterations of the baseline (the paper: 50).
    max_iterations : int, optional
        Give up after this many iterations of the tested run (default ``reference_iterations``).
    algorithm : str
    **kwargs
        Passed to both :func:`refine` (alpha, beta, batch, update_probe, seed, …).

    Returns
    -------
    dict
        ``target_error`` (baseline error after ``reference_iterations``), ``iterations`` (int, or None when
        not reached within ``max_iterations``), ``speedup`` (reference_iterations / iterations),
        ``errors`` and ``reference_errors`` (the two curves), ``initial_error`` of each run.
    """
    max_iterations = int(max_iterations or reference_iterations)
    ref = refine(scan, init=reference_init, algorithm=algorithm, iterations=reference_iterations, **kwargs)
    if ref.diverged or ref.iterations < reference_iterations:
        raise InputError(f"the reference run stopped early: {ref.message}")
    target = float(ref.errors[-1])
    run = refine(scan, init=init, algorithm=algorithm, iterations=max_iterations, target_error=target, **kwargs)
    hit = np.flatnonzero(run.errors <= target)
    its = int(hit[0]) + 1 if len(hit) else None
    return {
        "target_error": target,
        "iterations": its,
        "speedup": (reference_iterations / its) if its else None,
        "errors": run.errors,
        "reference_errors": ref.errors,
        "initial_error": float(run.errors[0]),
        "reference_initial_error": float(ref.errors[0]),
    }
