"""Throughput of the kernels: stitch (patches/s) and propagate+project (patterns/s), CPU and GPU.

Run:  pytest benchmarks/bench_kernels.py --benchmark-only -m "not gpu"     (CPU, numpy twins)
      pytest benchmarks/bench_kernels.py --benchmark-only -m gpu           (CUDA kernels; names the card)
Each case records its rate in ``extra_info`` (patches_per_s / patterns_per_s).

H100 memory-bandwidth floor for stitching 128² complex64 patches (the issue's goal: ≥ 2 M patches/s)
---------------------------------------------------------------------------------------------------
Bytes that must cross HBM per patch, with the deterministic gather formulation (overlap_add.cu):
  patch read               128 · 128 · 8 B            = 131,072 B
  shared (H, W) weights    read once per launch, in L2 ≈       0 B  (per-patch weights: +65,536 B)
  positions + bin index    16 B + 4 B                 ≈      20 B
  accumulators             object (complex64) + weight map (float32), read + written once per launch:
                           12 B · 2 per object pixel; a 75 %-overlap raster (step 32) adds 32² new
                           pixels per patch → 32² · 24 B = 24,576 B per patch
  total ≈ 155,668 B/patch  →  3.35e12 B/s ÷ 155,668 B ≈ 21.5 M patches/s   (patch read alone: 25.6 M/s)
So the goal of 2 M patches/s is ≈ 9 % of the bandwidth floor rate: in reach if the kernel stays
memory-bound with the L1/L2 re-reads of each patch pixel (4 accumulator pixels read it) hitting cache.
With per-patch weights the floor is 3.35e12 / 221,204 B ≈ 15.1 M patches/s. Not measured here (no GPU).
"""

from __future__ import annotations

import numpy as np
import pytest

from ptyfast import kernels

H = W = 128
STEP = 32  # 75 % overlap, the paper's densest raster


def raster(n_side, rng):
    yx = np.array([[y, x] for y in range(n_side) for x in range(n_side)], float) * STEP
    return yx + rng.uniform(0, 2, yx.shape)  # 0–2 px jitter, sub-pixel


def crandn(rng, shape):
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def _cupy():
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None
        return cupy
    except Exception:  # noqa: BLE001
        return None


def _sync(cp):
    if cp is not None:
        cp.cuda.get_current_stream().synchronize()


@pytest.fixture(scope="module")
def stitch_case():
    rng = np.random.default_rng(0)
    pos = raster(22, rng)  # 484 patches
    patches = crandn(rng, (len(pos), H, W))
    weights = rng.uniform(0.1, 1, (H, W)).astype(np.float32)  # e.g. |P|²
    shape = (int(pos[:, 0].max()) + H + 2, int(pos[:, 1].max()) + W + 2)
    return patches, weights, pos, shape


@pytest.fixture(scope="module")
def project_case():
    rng = np.random.default_rng(1)
    psi = crandn(rng, (256, H, W))
    inten = rng.uniform(0, 50, psi.shape).astype(np.float32)
    mask = rng.random((H, W)) > 0.01
    return psi, inten, mask


def test_stitch_cpu(benchmark, stitch_case):
    patches, weights, pos, shape = stitch_case
    benchmark.pedantic(kernels.stitch, args=(patches, weights, pos, shape), rounds=3, warmup_rounds=1)
    benchmark.extra_info["patches_per_s"] = len(pos) / benchmark.stats.stats.mean
    benchmark.extra_info["device"] = "cpu (numpy twin)"


def test_overlap_add_cpu(benchmark, stitch_case):
    patches, _, pos, shape = stitch_case
    acc = np.zeros(shape, np.complex64)
    benchmark.pedantic(kernels.overlap_add, args=(acc, patches, pos), rounds=3, warmup_rounds=1)
    benchmark.extra_info["patches_per_s"] = len(pos) / benchmark.stats.stats.mean


def test_propagate_project_cpu(benchmark, project_case):
    psi, inten, mask = project_case
    benchmark.pedantic(kernels.project_exit_waves, args=(psi, inten, mask), rounds=3, warmup_rounds=1)
    benchmark.extra_info["patterns_per_s"] = len(psi) / benchmark.stats.stats.mean


@pytest.mark.gpu
def test_stitch_gpu(benchmark, stitch_case):
    cp = _cupy()
    if cp is None:
        pytest.skip("no CUDA device visible to CuPy")
    patches, weights, pos, shape = stitch_case
    reps = 16  # 16 × 484 patches per round on the device
    dp, dw = cp.asarray(np.concatenate([patches] * reps)), cp.asarray(weights)
    dpos = np.concatenate([pos] * reps)

    def run():
        kernels.stitch(dp, dw, dpos, shape)
        _sync(cp)

    benchmark.pedantic(run, rounds=5, warmup_rounds=1)
    benchmark.extra_info["patches_per_s"] = len(dpos) / benchmark.stats.stats.mean
    benchmark.extra_info["device"] = cp.cuda.runtime.getDeviceProperties(0)["name"].decode()


@pytest.mark.gpu
def test_propagate_project_gpu(benchmark, project_case):
    cp = _cupy()
    if cp is None:
        pytest.skip("no CUDA device visible to CuPy")
    psi, inten, mask = (cp.asarray(a) for a in project_case)

    def run():
        kernels.project_exit_waves(psi, inten, mask)
        _sync(cp)

    benchmark.pedantic(run, rounds=10, warmup_rounds=2)
    benchmark.extra_info["patterns_per_s"] = len(psi) / benchmark.stats.stats.mean
    benchmark.extra_info["device"] = cp.cuda.runtime.getDeviceProperties(0)["name"].decode()
