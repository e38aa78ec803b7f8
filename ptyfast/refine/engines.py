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

import numpy as np

from ptyfast.kernels import gather, overlap_add, project_exit_waves_fft_order


def _fft_order_amplitude(intensity, xp):
    """√I of every frame in the FFT's pixel order (``ifftshift``), computed in place: ``intensity`` (N, H, W)
    float32, non-negative, becomes that amplitude (a refinement holds its frames once, not twice)."""
    xp.sqrt(intensity, out=intensity)
    for k in range(len(intensity)):  # frame by frame: one frame of scratch, not a second copy of the scan
        intensity[k] = xp.fft.ifftshift(intensity[k])
    return intensity


class Engine:
    """Holds the iterate and does one batch update in place (use :func:`ptyfast.refine.refine`). The algorithms
    differ only in how the summed update is weighted (:meth:`weights`); subclasses override that alone.

    ``intensity`` (N, H, W) is taken over: it is turned in place into √I in the FFT's pixel order."""

    algorithm = ""

    def __init__(self, obj, probe, positions, intensity, mask, alpha, beta, xp):
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
        self.disjoint = False  # batches of windows that do not overlap (refine's batching="disjoint")
        self.apart_ratio = 2.0  # ...stepped window by window once their bounding region is this much larger

    def step(self, idx: np.ndarray, update_probe: bool):
        """Update with the positions ``idx``; returns Σ m(|Ψ| − √I)² over the batch (device scalar)."""
        if self.probe.ndim == 3:
            return self.step_modes(idx, update_probe)
        xp = self.xp
        h, w = self.window
        region, lpos_dev = self._region(idx)  # view: updates land in self.obj
        # windows that do not overlap (disjoint batches) spread over the object: step each on its own footprint
        # rather than on a bounding region that is mostly empty
        apart = self.disjoint and region.size > self.apart_ratio * len(idx) * (h + 2) * (w + 1)
        if apart:
            region = self.obj
            lpos = np.asarray(self.positions[idx], np.float64)
            lpos_dev = lpos if xp is np else xp.asarray(lpos)
        else:
            lpos = lpos_dev if xp is np else xp.asnumpy(lpos_dev)

        patches = gather(region, lpos_dev, (h, w))
        psi = self.probe[None] * patches
        meas = self.amplitude[idx] if xp is np else self.amplitude[xp.asarray(idx)]
        dpsi, err = project_exit_waves_fft_order(psi, meas, self.mask)  # F⁻¹ Π_I F ψ, Σ m(|Ψ| − √I)² per frame
        dpsi -= psi

        p2 = (self.probe.real**2 + self.probe.imag**2).astype(xp.float32)
        xp.multiply(xp.conj(self.probe)[None], dpsi, out=psi)  # P̄·Δψ (psi's buffer is free now)
        if apart:
            self._apart_object_step(psi, p2, lpos)
        else:
            self._region_object_step(region, psi, p2, lpos, lpos_dev, len(idx))

        if update_probe:
            d_p = xp.einsum("nij,nij->ij", patches.real, patches.real) + xp.einsum("nij,nij->ij", patches.imag,
                                                                                      patches.imag)
            xp.conj(patches, out=patches)
            patches *= dpsi
            n_p = patches.sum(axis=0)
            self.probe += np.float32(self.probe_step) * n_p * self.weights(d_p.astype(xp.float32), self.beta)
        return err.sum(dtype=xp.float64)

    def _region_object_step(self, region, pdpsi, p2, lpos, lpos_dev, n: int) -> None:
        """The object step on the bounding ``region`` (a view of the object) of the batch's windows."""
        xp = self.xp
        h, w = self.window
        num = xp.zeros(region.shape, dtype=xp.complex64)
        overlap_add(num, pdpsi, lpos_dev)
        den = xp.zeros(region.shape, dtype=xp.float32)
        if n == 1 and np.all(lpos == np.floor(lpos)):
            den[int(lpos[0, 0]) : int(lpos[0, 0]) + h, int(lpos[0, 1]) : int(lpos[0, 1]) + w] = p2
        else:
            overlap_add(den, xp.broadcast_to(p2, (n, h, w)), lpos_dev)
        num *= self.weights(den, self.alpha)  # complex × real: ≈ 5× cheaper than the complex ÷ real it replaces
        region += num

    def _apart_object_step(self, pdpsi, p2, lpos) -> None:
        """The object step of windows that do not overlap (``disjoint`` batches), each as if alone: every
        window's sub-pixel footprint (H + 1, W + 1) is spread into its own block of a stacked scratch array
        (blocks H + 2 rows apart, so footprints cannot meet), weighted there exactly as a single-window step
        weights it, and added to the object at the window's integer corner — O(batch × window), not O(object)."""
        xp = self.xp
        h, w = self.window
        n = len(lpos)
        base = np.floor(lpos)
        stacked = np.stack([np.arange(n) * (h + 2) + (lpos[:, 0] - base[:, 0]), lpos[:, 1] - base[:, 1]], axis=1)
        stacked_dev = stacked if xp is np else xp.asarray(stacked)
        num = xp.zeros((n * (h + 2), w + 1), dtype=xp.complex64)
        den = xp.zeros((n * (h + 2), w + 1), dtype=xp.float32)
        overlap_add(num, pdpsi, stacked_dev)
        overlap_add(den, xp.broadcast_to(p2, (n, h, w)), stacked_dev)
        num *= self.weights(den, self.alpha)
        blocks = xp.ascontiguousarray(num.reshape(n, h + 2, w + 1)[:, : h + 1])  # the CUDA kernel reads C order
        overlap_add(self.obj, blocks, base if xp is np else xp.asarray(base))

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

    def weights(self, den, mix: float):
        """The per-pixel weight of the summed update from its normaliser ``den`` (D of the module docstring),
        computed in place in ``den``; ``mix`` is α for the object, β for the probe."""
        raise NotImplementedError

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
        region += num * self.weights(den, self.alpha)
        if update_probe:
            d_p = xp.sum(patches.real**2 + patches.imag**2, axis=0).astype(xp.float32)
            n_p = xp.sum(xp.conj(patches)[:, None] * dpsi, axis=0)
            self.probe += np.float32(self.probe_step) * n_p * self.weights(d_p, self.beta)[None]
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


def _reciprocal(den, xp):
    xp.maximum(den, xp.float32(1e-30), out=den)
    return xp.reciprocal(den, out=den)


class RPIE(Engine):
    """rPIE (Maiden, Johnson & Li 2017): 1 / ((1 − a)·D + a·max D); with a = 0 a zero D gives no update."""

    algorithm = "rpie"

    def weights(self, den, mix: float):
        dmax = den.max()
        den *= self.xp.float32(1 - mix)
        den += self.xp.float32(mix) * dmax
        return _reciprocal(den, self.xp)


class EPIE(Engine):
    """ePIE (Maiden & Rodenburg 2009): a / max D."""

    algorithm = "epie"

    def weights(self, den, mix: float):
        den[...] = den.max() / mix
        return _reciprocal(den, self.xp)


ENGINES = {"rpie": RPIE, "epie": EPIE}


def make_engine(algorithm: str, *args, **kwargs) -> Engine:
    """The engine of ``algorithm`` ("rpie" or "epie"), constructed with :class:`Engine`'s arguments."""
    return ENGINES[algorithm](*args, **kwargs)
