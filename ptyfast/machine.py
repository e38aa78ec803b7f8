"""Facts about the machine a figure was measured on: CPU and GPU names, CPU flags, the thread count in force,
peak and current resident memory, and the matmul FLOP/s it can reach now (benchmarks and the paper protocol's
reports quote them beside every speed or memory figure)."""

from __future__ import annotations

import platform
import resource
import time
from pathlib import Path

import numpy as np


# -- device facts --------------------------------------------------------------------------------------------


def cpu_name() -> str:
    """CPU model name from /proc/cpuinfo (``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    """The CPU feature flags (Linux), e.g. ``avx512_bf16``, ``avx512_vnni``, ``amx_bf16``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def gpu_name() -> str | None:
    """Name of GPU 0, or None without a usable NVIDIA GPU (torch-free: nvidia-smi / CuPy)."""
    from ptyfast.export.tensorrt_engine import gpu_info

    info = gpu_info()
    return info[0] if info else None


def device_facts(threads: int) -> dict:
    """CPU name, cores usable, threads used, ISA flags of interest, GPU name, the refinement's CPU FFT library."""
    from ptyfast import threads as thread_setting
    from ptyfast.kernels.cpu_fft import LIBRARY

    flags = cpu_flags()
    return {
        "cpu": cpu_name(), "cores_usable": thread_setting.available(), "threads": threads,
        "isa": sorted(f for f in flags if f in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16",
                                                 "amx_int8", "avx_vnni")),
        "gpu": gpu_name(), "platform": platform.platform(), "refine_fft": LIBRARY,
    }


# -- memory ---------------------------------------------------------------------------------------------------


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter of this process (``/proc/self/clear_refs`` ← 5, Linux ≥ 4.0).

    Returns False where that is impossible; :func:`peak_rss_bytes` is then the process-lifetime peak.
    """
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _proc_status_bytes(key: str) -> int | None:
    """A memory line of /proc/self/status (``VmRSS``, ``VmHWM``) in bytes, or None where /proc is absent."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def current_rss_bytes() -> int:
    """Resident set size of this process now, in bytes (0 where /proc is absent)."""
    return _proc_status_bytes("VmRSS") or 0


def peak_rss_bytes() -> int:
    """Peak resident set size of this process in bytes (since the last :func:`reset_peak_rss`)."""
    peak = _proc_status_bytes("VmHWM")
    return peak if peak is not None else int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # KiB


# -- peak FLOP/s ---------------------------------------------------------------------------------------------


def measure_peak_flops(*, threads: int, n: int = 2048, rounds: int = 5, device: str = "cpu") -> dict[str, float]:
    """Peak matmul FLOP/s of this device: best of ``rounds`` n×n×n products (2n³ FLOPs each).

    fp32 always (torch, else numpy); bf16 (and fp16 on CUDA) where torch runs them. On a shared machine the
    figure is what this process could get now, not the data-sheet peak. A CPU without bf16 hardware (no
    AVX-512 BF16 or AMX) emulates bf16 ~30× slower than fp32: its bf16 peak is timed on n/4 products, which
    reach the same emulated rate in 1/64 of the time.
    """
    out: dict[str, float] = {}
    flops = 2.0 * n**3
    try:
        import torch
    except ModuleNotFoundError:
        a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
        a @ a
        best = min(_timed(lambda: a @ a) for _ in range(rounds))
        return {"fp32": flops / best}
    if device == "cpu" and threads:
        torch.set_num_threads(threads)
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    if device == "cuda":
        dtypes["fp16"] = torch.float16
        n = max(n, 8192)
        flops = 2.0 * n**3
    emulated = device == "cpu" and not ({"avx512_bf16", "amx_bf16"} & cpu_flags())
    size = n
    for name, dt in dtypes.items():
        n = size // 4 if emulated and name == "bf16" else size
        flops = 2.0 * n**3
        try:
            a = torch.randn(n, n, device=device).to(dt)
            b = torch.randn(n, n, device=device).to(dt)

            def run():
                a @ b
                if device == "cuda":
                    torch.cuda.synchronize()

            run()
            out[name] = flops / min(_timed(run) for _ in range(rounds))
        except (RuntimeError, TypeError):  # dtype not supported on this device
            continue
    return out


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t
