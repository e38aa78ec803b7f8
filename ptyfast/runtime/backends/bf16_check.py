"""bf16 on the CPU: when ``--precision auto`` takes it (:func:`auto_precision`), and the check that a bf16
model's outputs agree with its fp32 ones before it is used (:func:`bf16_agreement`)."""

from __future__ import annotations

import numpy as np

from ptyfast.models.pretrained import ModelSource
from ptyfast.models.preprocess import preprocess
from ptyfast.models.probe_choice import model_probe
from ptyfast.physics.probe import default_probe, lit_pixels
from ptyfast.runtime.backends.interface import has_module
from ptyfast.runtime.backends.torch_backend import TorchBackend
from ptyfast.runtime.backends.torch_cache import cached_agreement

#: Frames from which ``--precision auto`` runs torch bf16 rather than ONNX Runtime fp32 on a CPU with AVX-512 BF16
#: or AMX: torch takes ≈ 2 s longer to start (import, checkpoint, tracing), which its faster inference repays only
#: on a long enough scan (the measured crossing is in docs/benchmarks.md).
AUTO_BF16_FRAMES = 1500

#: The largest relative RMS difference ‖c_bf16 − c_fp32‖ / ‖c_fp32‖ of the complex patches A·e^{iφ} on the lit
#: pixels that ``--precision auto`` accepts (the shipped PtyNet-S is well inside it).
BF16_TOLERANCE = 0.02


def auto_precision(source: ModelSource, backend: str, on_gpu: bool, frames: int | None, threads: int | None
                   ) -> tuple["TorchBackend | None", str]:
    """``--precision auto``: (an opened torch bf16 :class:`TorchBackend`, why) where that is the faster path and
    agrees with fp32, else (None, why not bf16; empty when bf16 was never a candidate: a GPU, ONNX Runtime asked)."""
    from ptyfast.machine import cpu_flags

    if on_gpu or backend not in ("auto", "torch"):
        return None, ""
    flags = sorted(cpu_flags() & {"avx512_bf16", "amx_bf16"})
    if not flags:
        return None, "this CPU has neither AVX-512 BF16 nor AMX"
    if source.checkpoint is None or not has_module("torch"):
        return None, "bf16 needs PyTorch and a .pt checkpoint"
    if backend == "auto" and (frames or 0) < AUTO_BF16_FRAMES:
        count = "the number of frames is unknown" if frames is None else f"{frames:,} frames are too few"
        return None, f"{count} to repay torch's start-up (bf16 from {AUTO_BF16_FRAMES:,} frames)"
    b = TorchBackend(source.checkpoint, device="cpu", precision="bf16", threads=threads)
    error, checked_before = cached_agreement(b, bf16_agreement)
    if error is None or error > BF16_TOLERANCE:
        b.close()
        return None, ("bf16 cannot be checked (no probe of the model's input size)" if error is None else
                      f"bf16 differs from fp32 by {error:.3f} (tolerance {BF16_TOLERANCE})")
    size = f"{frames:,} frames, " if frames else ""
    return b, b.noted(f"torch-cpu bf16: {'requested backend, ' if backend == 'torch' else ''}{size}"
                      f"{'/'.join(flags)} on this CPU, outputs within {error:.3f} of fp32"
                      + (" (checked on an earlier run)" if checked_before else ""))


def bf16_agreement(backend: "TorchBackend", n: int = 16) -> float | None:
    """Relative RMS difference of ``backend``'s bf16 outputs from fp32 (the same weights, autocast off) as complex
    patches A·e^{iφ} on the lit pixels (|P|² ≥ 10 % of its maximum), on ``n`` noise-free patterns of the bundled
    held-out cat faces under the model's probe (the bundled default probe when the model's is unknown); None
    when neither fits the model's input."""
    probe = model_probe(backend.manifest, backend.model_path)
    probe = default_probe() if probe is None else probe
    if probe.shape != tuple(backend.manifest.input_size):
        return None
    photons = float(backend.manifest.probe_photons) or float(np.sum(np.abs(probe) ** 2))
    x = preprocess(check_patterns(probe, n, photons), backend.manifest, probe_power=photons, probe=probe)
    a16, p16 = backend(x)
    a32, p32 = backend.run_fp32(x)
    lit = lit_pixels(np.abs(probe) ** 2)
    c16, c32 = (a * np.exp(1j * p) for a, p in ((a16, p16), (a32, p32)))
    return float(np.linalg.norm((c16 - c32)[:, lit]) / max(np.linalg.norm(c32[:, lit]), 1e-30))


def check_patterns(probe: np.ndarray, n: int, photons: float) -> np.ndarray:
    """``n`` noise-free far-field patterns (n, H, W) of an object made from the bundled held-out cat faces, a
    raster at 75 % overlap under ``probe`` scaled to ``photons``."""
    from ptyfast.io.images import held_out_object
    from ptyfast.physics.scanpath import overlap_to_step
    from ptyfast.physics.simulate import simulate_scan

    h, w = probe.shape
    side = int(np.ceil(np.sqrt(n)))
    step = overlap_to_step(0.75, h)
    obj = held_out_object((h + step * side, w + step * side))
    pos = np.array([(i // side * step, i % side * step) for i in range(n)], float)
    return simulate_scan(obj, probe, pos, photons=photons).diffraction
