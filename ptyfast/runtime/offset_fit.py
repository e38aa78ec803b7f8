"""Per-patch phase offsets fitted to the measured patterns (``reconstruct --fit-offsets``; numpy + scipy).

The overlap solve (:mod:`ptyfast.runtime.phase_align`) makes neighbouring patches agree where they overlap, but
each pairwise difference carries the network's own shape errors, and over the scan they add up to a
low-frequency phase drift that no overlap can see. The measured patterns can: window n's far field depends on
the relative phases of the patches blended under it. Here the N offsets θ (the network's patches unchanged)
minimise the relative data misfit

    L(θ) = Σ_n Σ_q m_q (s·|F(P · O_n(θ))|_q − √I_n,q)² / Σ_n Σ_q m_q I_n,q,
    O(θ) = A · S(θ) / |S(θ)|,   S(θ) = Σ_k e^{iθ_k} w·p_k,

with the same windows, weights w = |P|² and bilinear sub-pixel placement as ``reconstruct`` (F the project's
unitary far field, m the detector mask, s the one amplitude scale between the network's object and the
counts, solved once at the start). Only the blend's *phase* depends on θ: the amplitude A is the overlap
solution's blended amplitude, held fixed. A fit of the ordinary blend Σ e^{iθ_k} w·p_k / Σ w can also lower the
misfit by de-phasing overlapping patches until they cancel, which lowers the blended amplitude and spoils the
phase; here it cannot.

The gradient is exact (the kernels' gather and overlap-add are each other's adjoints): with G = ∂L/∂O* the
back-propagated misfit (the same residual as an rPIE step's, spread onto the object) and g = −2 Im(G*·O) its
phase component, ∂L/∂θ_k = Re(e^{iθ_k} Σ_window w·p_k · gather_k(g / S)). L-BFGS (scipy.optimize) takes
``ITERATIONS`` steps from the overlap solution; each costs one forward and one backward FFT of every frame, as
one rPIE epoch does. Memory: √I of every frame (4 B per detector pixel) besides the patches the solve keeps.

A fit can only be as right as the probe it propagates with. When the patterns are displaced from what the
probe predicts (a file that holds only the initial guess of its probe, whose far field is centred away from the
data's), the misfit is lowered by a phase ramp across the object, built from offsets that step by about a
radian from one patch to the next, and the object's phase gets worse, not better. Fits that correct a drift
change neighbouring offsets by a few hundredths to a few tenths of a radian. A fit whose neighbouring offsets
change by more than ``MAX_NEIGHBOUR_STEP`` (median) is therefore refused, with a warning, and the overlap
solution kept.
"""

from __future__ import annotations

import numpy as np
import scipy.optimize
import scipy.spatial

from ptyfast.kernels import cpu_fft, exit_waves, gather, normalise, overlap_add
from ptyfast.models.preprocess import fit_frames, fit_mask
from ptyfast.scan import Scan

#: L-BFGS iterations (the misfit settles well within them on the release scans).
ITERATIONS = 40
#: Frames propagated at a time.
CHUNK = 256
#: Largest accepted median change (rad) of the fitted offsets between neighbouring windows (see above).
MAX_NEIGHBOUR_STEP = 0.5


class OffsetMisfit:
    """L(θ) and ∂L/∂θ of the module docstring for one scan's kept patches (callable: θ → (L, grad))."""

    def __init__(self, scan: Scan, plan, patches: np.ndarray, z0: np.ndarray, *, chunk: int = CHUNK) -> None:
        self.patches = patches
        self.weight = plan.box_weight
        self.box_pos = plan.grid_pos + plan.box_offset
        self.window_pos = plan.grid_pos
        self.probe = np.ascontiguousarray(plan.probe, np.complex64)
        self.shape = plan.shape
        self.chunk = chunk
        self.wsum = np.zeros(plan.shape, np.float32)
        s0 = self.blend(z0, weight_accum=self.wsum)
        self.amplitude = np.abs(normalise(s0, self.wsum))
        size = tuple(plan.size)
        self.measured = np.empty((len(patches), *size), np.float32)  # √I, zero frequency at the corner
        for s, frames in scan.iter_chunks(chunk):
            a = np.sqrt(np.maximum(fit_frames(frames, size, plan.fit), 0, dtype=np.float32))
            self.measured[s : s + len(frames)] = np.fft.ifftshift(a, axes=(-2, -1))
        self.mask = None if scan.mask is None else \
            np.fft.ifftshift(fit_mask(scan.mask, size, plan.fit)).astype(np.float32)
        power = self.measured**2 if self.mask is None else self.measured**2 * self.mask
        self.norm = max(float(power.sum(dtype=np.float64)), 1e-30)
        self.scale = self._scale(self.object_of(s0))

    def blend(self, z: np.ndarray, weight_accum: np.ndarray | None = None) -> np.ndarray:
        """S = Σ_k z_k w·p_k on the object grid."""
        out = np.zeros(self.shape, np.complex64)
        for s in range(0, len(self.patches), 1024):
            e = s + 1024
            overlap_add(out, self.patches[s:e] * z[s:e, None, None], self.box_pos[s:e], weights=self.weight,
                        weight_accum=weight_accum)
        return out

    def object_of(self, s: np.ndarray) -> np.ndarray:
        """O = A·S/|S| (0 where S is 0)."""
        mag = np.abs(s)
        return np.where(mag > 0, self.amplitude * s / np.where(mag > 0, mag, 1), 0).astype(np.complex64)

    def _scale(self, obj: np.ndarray) -> float:
        """The least-squares s between |F(P·O_n)| and √I over all frames."""
        num = den = 0.0
        for s in range(0, len(self.measured), self.chunk):
            amp = np.abs(cpu_fft.fft2(exit_waves(self.probe, obj, self.window_pos[s : s + self.chunk])))
            m = self.measured[s : s + self.chunk]
            if self.mask is not None:
                amp *= self.mask
            num += float(np.vdot(amp, m).real)
            den += float(np.vdot(amp, amp).real)
        return num / den if den > 0 else 1.0

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        z = np.exp(1j * theta).astype(np.complex64)
        s_map = self.blend(z)
        obj = self.object_of(s_map)
        g_obj = np.zeros(self.shape, np.complex64)  # G = ∂L/∂O*, unnormalised
        loss = 0.0
        sc = np.float32(self.scale)
        for s in range(0, len(self.measured), self.chunk):
            pos = self.window_pos[s : s + self.chunk]
            big = cpu_fft.fft2(exit_waves(self.probe, obj, pos))
            amp = np.abs(big)
            r = sc * amp - self.measured[s : s + self.chunk]
            if self.mask is not None:
                r *= self.mask
            loss += float(np.vdot(r, r).real)
            # ∂L/∂Ψ* = s·r·Ψ/|Ψ|, back through the unitary F and the probe, spread onto the grid
            big *= np.divide(sc * r, amp, out=np.zeros_like(amp), where=amp > 0)
            overlap_add(g_obj, np.conj(self.probe) * cpu_fft.ifft2(big, overwrite=True), pos)
        g_phase = -2 * (np.conj(g_obj) * obj).imag
        mag = np.abs(s_map)
        t = np.divide(g_phase * np.conj(s_map), mag * mag, out=np.zeros_like(s_map), where=mag > 0)
        grad = np.empty(len(theta))
        for s in range(0, len(self.patches), 1024):
            e = s + 1024
            under = gather(t, self.box_pos[s:e], self.weight.shape) * self.weight
            grad[s:e] = (z[s:e] * np.einsum("kij,kij->k", self.patches[s:e], under)).real
        return loss / self.norm, grad / self.norm


def neighbour_step(change: np.ndarray, positions: np.ndarray) -> float:
    """Median |Δ change| (rad, wrapped) between neighbouring windows: pairs closer than 1.5× the median
    nearest-neighbour distance."""
    tree = scipy.spatial.cKDTree(positions)
    nearest = float(np.median(tree.query(positions, k=2)[0][:, 1]))
    pairs = tree.query_pairs(1.5 * max(nearest, 1e-9), output_type="ndarray")
    if not len(pairs):
        return 0.0
    return float(np.median(np.abs(np.angle(np.exp(1j * (change[pairs[:, 0]] - change[pairs[:, 1]]))))))


def fit_offsets(scan: Scan, plan, patches: np.ndarray, z0: np.ndarray, *, iterations: int | None = None
                ) -> tuple[np.ndarray, str | None]:
    """(z, note): unit factors z (N,) for the kept ``patches`` (N, h, w) (cropped to ``plan.box``) that fit the
    data, starting from ``z0`` (the overlap solution), and None (the pipeline then blends the phase with z and
    keeps the amplitude of z0's blend, as fitted); ``z0`` itself when there is nothing to fit, or with a
    one-sentence warning when the fit is refused (see the module docstring)."""
    n = len(patches)
    if n < 2 or plan.probe is None:
        return z0, None
    problem = OffsetMisfit(scan, plan, patches, z0)
    theta0 = np.angle(z0).astype(np.float64)
    res = scipy.optimize.minimize(problem, theta0, jac=True, method="L-BFGS-B",
                                  options={"maxiter": ITERATIONS if iterations is None else iterations,
                                           "gtol": 0.0, "ftol": 1e-9})
    z = np.exp(1j * res.x)
    step = neighbour_step(np.angle(z * np.conj(z0)), plan.grid_pos)
    if step > MAX_NEIGHBOUR_STEP:
        return z0, (f"--fit-offsets was refused: the offsets fitted to the data change by {step:.2f} rad (median) "
                    "from one window to the next, a phase ramp across the object, which means the patterns are "
                    "displaced from what the probe predicts (is it the scan's initial probe rather than a refined "
                    "one?); the overlap solution is kept.")
    total = z.sum()
    if abs(total) > 0:  # the common offset is free: keep the network's mean phase, as the overlap solve does
        z *= np.conj(total) / abs(total)
    return z.astype(np.complex64), None
