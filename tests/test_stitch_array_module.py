"""The stitching pipeline on an array module: numpy here against straightforward loop references (and today's
per-pair products), the new overlap-products kernel in host emulation, CuPy against numpy where a GPU is."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from ptyfast import kernels
from ptyfast.kernels import numpy_twins as tw
from ptyfast.kernels.loader import KERNEL_DIR
from ptyfast.runtime.phase_align import MIN_OVERLAP, offsets_from_overlaps, overlap_matrix, overlap_pairs

from cuda_helpers import host_library

pytest.importorskip("onnxruntime")


def crandn(rng, shape):
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def _cupy():
    try:
        import cupy

        return cupy if cupy.cuda.runtime.getDeviceCount() > 0 else None
    except Exception:  # noqa: BLE001 - not installed, or no usable device
        return None


cp = _cupy()
needs_gpu = pytest.mark.skipif(cp is None, reason="CuPy with a CUDA device is not available")


# ----------------------------------------------------------------------------------- loop references
def _reference_overlap_matrix(patches, positions, weight):
    """Dense H (N × N) complex128 by a double loop over every pair of windows (rounded shifts, the pair kept when
    Σ w_m w_k ≥ MIN_OVERLAP · Σ w² over the weight's nonzero bounding box)."""
    ys, xs = np.nonzero(weight)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    wc = weight[y0:y1, x0:x1].astype(np.float64)
    pc = patches[:, y0:y1, x0:x1].astype(np.complex128)
    h, w = wc.shape
    pos = np.round(positions).astype(int)
    n = len(pos)
    H = np.zeros((n, n), np.complex128)
    for m in range(n):
        for k in range(m + 1, n):
            dy, dx = pos[k] - pos[m]
            if abs(dy) >= h or abs(dx) >= w:
                continue
            rm = (slice(max(0, dy), min(h, h + dy)), slice(max(0, dx), min(w, w + dx)))
            rk = (slice(rm[0].start - dy, rm[0].stop - dy), slice(rm[1].start - dx, rm[1].stop - dx))
            both = wc[rm] * wc[rk]
            if both.sum() < MIN_OVERLAP * np.sum(wc * wc):
                continue
            H[m, k] = np.sum(np.conj(pc[m][rm]) * pc[k][rk] * both)
            H[k, m] = np.conj(H[m, k])
    return H


def _add_clipped(grid, tile, y, x):
    r0, c0 = max(y, 0), max(x, 0)
    r1, c1 = min(y + tile.shape[0], grid.shape[0]), min(x + tile.shape[1], grid.shape[1])
    if r1 > r0 and c1 > c0:
        grid[r0:r1, c0:c1] += tile[r0 - y : r1 - y, c0 - x : c1 - x]


def _reference_blend(patches, z, positions, weight, shape):
    """(Σ_k z_k w p_k, Σ_k w) on the grid, one patch at a time, each spread bilinearly to its four integer
    corners (fractions in float32, as the kernels' convention), in complex128 / float64."""
    num, wsum = np.zeros(shape, np.complex128), np.zeros(shape, np.float64)
    wt = weight.astype(np.float64)
    for p, zk, (y, x) in zip(patches, z, np.asarray(positions, np.float64)):
        y0, x0 = int(np.floor(y)), int(np.floor(x))
        fy, fx = float(np.float32(y - y0)), float(np.float32(x - x0))
        q = complex(zk) * wt * p.astype(np.complex128)
        for dy, dx, c in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
            _add_clipped(num, c * q, y0 + dy, x0 + dx)
            _add_clipped(wsum, c * wt, y0 + dy, x0 + dx)
    return num, wsum


def _reference_normalise(num, wsum):
    return num / np.maximum(wsum, max(kernels.STITCH_FLOOR * wsum.max(), np.finfo(np.float32).tiny))


def _reference_object(plan, patches):
    """The stitched object from the kept (box-cropped) patches of every frame, by the loop references: offsets
    from the reference H (the host solver, unchanged), blend, normalise."""
    from scipy import sparse

    pos = plan.grid_pos + plan.box_offset
    z = np.ones(len(pos), np.complex128)
    if plan.align:
        z = offsets_from_overlaps(sparse.csr_matrix(_reference_overlap_matrix(patches, pos, plan.solve_weight)))
    return _reference_normalise(*_reference_blend(patches, z, pos, plan.box_weight, plan.shape))


def _assert_close(got, ref, rel=1e-5):
    np.testing.assert_allclose(got, ref, rtol=rel, atol=rel * float(np.abs(ref).max()))


# ------------------------------------------------------------------------------------ a simulated scan
@pytest.fixture(scope="module")
def sim():
    """64 noise-free frames of the benchmark raster and the shipped ptynet-s on ONNX Runtime (CPU, fp32)."""
    from ptyfast.bench_cases import simulate_benchmark_scan
    from ptyfast.runtime.backends import open_backend

    scan, _ = simulate_benchmark_scan(64, seed=3)
    backend, _ = open_backend(None, "onnxruntime", "cpu", "fp32")
    yield scan, backend
    backend.close()


class _Converting:
    """A backend whose batch outputs are handed on converted by ``convert`` (e.g. to CuPy or torch)."""

    def __init__(self, backend, convert):
        self._backend, self._convert = backend, convert
        self.manifest, self.default_batch = backend.manifest, backend.default_batch

    def map(self, batches):
        for amp, pha in self._backend.map(batches):
            yield self._convert(amp), self._convert(pha)


def _plan(scan, backend, **kw):
    from ptyfast.runtime.stitch import plan_stitch

    return plan_stitch(scan.positions, scan.frame_shape[0], backend.manifest, scan.probe, **kw)


def _explicit_patches(scan, backend, plan):
    """Every frame's complex patches (N, h, w) of the plan's box, by the explicit numpy steps: fit, preprocess,
    the backend's batches, A·exp(iφ) in complex128 rounded to complex64."""
    from ptyfast.models.preprocess import fit_frames, preprocess

    x = preprocess(fit_frames(scan.frames(0, scan.n_frames), plan.size, plan.fit), backend.manifest,
                   probe_power=plan.probe_power, mask=plan.mask, probe=plan.probe)
    batch = backend.default_batch
    outs = list(backend.map(x[b : b + batch] for b in range(0, len(x), batch)))
    amp, pha = np.concatenate([a for a, _ in outs]), np.concatenate([p for _, p in outs])
    return (amp * np.exp(1j * pha.astype(np.float64)))[:, plan.box[0], plan.box[1]].astype(np.complex64)


# ------------------------------------------------------------------------------------------------ tests
def test_overlap_products_twin_matches_loops():
    rng = np.random.default_rng(0)
    n, h, w = 6, 11, 9
    patches, weight = crandn(rng, (n, h, w)), rng.uniform(0, 2, (h, w)).astype(np.float32)
    rects = []
    for _ in range(25):
        m, k = rng.choice(n, 2, replace=False)
        oh, ow = rng.integers(1, h + 1), rng.integers(1, w + 1)
        rects.append([m, k, rng.integers(0, h - oh + 1), rng.integers(0, w - ow + 1), rng.integers(0, h - oh + 1),
                      rng.integers(0, w - ow + 1), oh, ow])
    rects = np.array(rects, np.int32)
    got = kernels.overlap_products(patches, rects, weight)
    assert got.dtype == np.complex128 and got.shape == (25,)
    for j, (m, k, am, bm, ak, bk, oh, ow) in enumerate(rects.tolist()):
        ref = 0j
        for i in range(oh):
            for l in range(ow):
                ref += (np.conj(complex(patches[m, am + i, bm + l])) * complex(patches[k, ak + i, bk + l])
                        * float(weight[am + i, bm + l]) * float(weight[ak + i, bk + l]))
        assert abs(got[j] - ref) <= 1e-5 * max(abs(ref), 1.0)
    assert kernels.overlap_products(patches, np.zeros((0, 8), np.int32), weight).shape == (0,)


def test_overlap_matrix_equals_per_pair_products_and_loop_reference():
    """H through the overlap-products kernel is bit for bit the per-pair products it replaced (still those of
    the spilled store), and the double-loop reference to 1e-5."""
    rng = np.random.default_rng(1)
    n, h, w = 30, 16, 16
    grid = np.column_stack([np.repeat(np.arange(6) * 5.3, 5), np.tile(np.arange(5) * 4.7, 6)])
    pos = grid + rng.uniform(0, 1, (n, 2))
    weight = np.zeros((h, w), np.float32)
    weight[2:14, 3:13] = rng.uniform(0.5, 1, (12, 10))
    patches = crandn(rng, (n, h, w))
    got = overlap_matrix(patches, pos, weight)
    op = overlap_pairs(pos, weight)
    assert len(op.pairs) > n
    per_pair = op.matrix([op.product(j, patches[m], patches[k]) for j, (m, k) in enumerate(op.pairs.tolist())])
    assert (got != per_pair).nnz == 0
    ref = _reference_overlap_matrix(patches, pos, weight)
    np.testing.assert_allclose(got.toarray(), ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


HARNESS = r"""
#include "overlap_products.cu"

extern "C" void h_overlap_products(const float2* patches, int h, int w, const float* weight, const int* rects,
                                   int npairs, int stride, double* partial) {
    for (long long j = 0; j < npairs; ++j) for (int t = 0; t < stride; ++t) {
        double re = 0.0, im = 0.0;
        ptf_overlap_product_partial(patches, h, w, weight, rects, j, t, stride, &re, &im);
        partial[2 * (j * stride + t)] = re;
        partial[2 * (j * stride + t) + 1] = im;
    }
}
"""


@pytest.fixture(scope="module")
def host_lib(tmp_path_factory):
    return host_library(tmp_path_factory.mktemp("cuda_host_products"), HARNESS, "ptf_products", KERNEL_DIR)


@pytest.mark.parametrize("stride", [1, 256])
def test_host_overlap_products(host_lib, stride):
    """The kernel's per-thread partial sums, reduced in its fixed tree order (256 threads), equal the twin."""
    rng = np.random.default_rng(2)
    n, h, w = 12, 21, 17
    patches, weight = crandn(rng, (n, h, w)), rng.uniform(0, 1, (h, w)).astype(np.float32)
    pos = rng.uniform(0, 12, (n, 2))
    rects = overlap_pairs(pos, weight).rects()
    assert len(rects) > 10
    partial = np.full((len(rects), stride, 2), np.nan)
    p = lambda a: a.ctypes.data_as(ctypes.c_void_p)  # noqa: E731
    host_lib.h_overlap_products(p(patches), ctypes.c_int(h), ctypes.c_int(w), p(weight), p(np.ascontiguousarray(rects)),
                                ctypes.c_int(len(rects)), ctypes.c_int(stride), p(partial))
    while partial.shape[1] > 1:  # for (s = 128; s > 0; s >>= 1) partial[t] += partial[t + s]
        half = partial.shape[1] // 2
        partial = partial[:, :half] + partial[:, half:]
    got = partial[:, 0, 0] + 1j * partial[:, 0, 1]
    ref = tw.overlap_products(patches, rects, weight)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("mode", ["keep", "spill", "sum"])
def test_stitching_equals_loop_reference(sim, mode):
    """stitch_frames + finish_stitch (kept in memory, spilled, or summed without offsets) equal the object from
    the explicit numpy steps and the loop references (pair products, blend, normalise) to 1e-5."""
    from ptyfast.runtime.stitch import finish_stitch, stitch_frames

    scan, backend = sim
    plan = _plan(scan, backend, align_phase=mode != "sum")
    part = stitch_frames(scan, backend, plan, spill=mode == "spill")
    assert (part.patches is not None) == (mode == "keep") and (part.spilled is not None) == (mode == "spill")
    obj, wsum, _ = finish_stitch(plan, part)
    assert type(obj) is np.ndarray and obj.dtype == np.complex64 and wsum.dtype == np.float32
    ref = _reference_object(plan, _explicit_patches(scan, backend, plan))
    _assert_close(obj, ref)
    if mode == "keep":
        _assert_close(finish_stitch(plan, part)[0], ref)  # the kept patches are not consumed


def test_run_reconstruct_equals_explicit_numpy_steps(sim):
    from ptyfast.runtime.reconstruct import ReconstructJob, plan_for, run_reconstruct

    scan, backend = sim
    job = ReconstructJob(backend="onnxruntime", device="cpu", precision="fp32", consistency=False)
    rec, _ = run_reconstruct(scan, job, backend=backend)
    plan, _ = plan_for(scan, job, backend)
    assert plan.align
    _assert_close(rec.object, _reference_object(plan, _explicit_patches(scan, backend, plan)))


def test_torch_outputs_stitch_as_numpy(sim):
    """Batch outputs handed over as torch tensors (DLPack) stitch to the same object, kept and summed."""
    torch = pytest.importorskip("torch")
    from ptyfast.runtime.stitch import combine_partials, finish_stitch, stitch_frames

    scan, backend = sim
    as_torch = _Converting(backend, torch.from_numpy)
    for align in (True, False):
        plan = _plan(scan, backend, align_phase=align)
        for b in (backend, as_torch):  # partials of two frame ranges, combined
            parts = [stitch_frames(scan, b, plan, lo, hi) for lo, hi in ((0, 40), (40, scan.n_frames))]
            got = finish_stitch(plan, combine_partials(parts))[0]
            if b is backend:
                want = got
        np.testing.assert_array_equal(got, want)


def test_an_empty_frame_range_leaves_an_empty_host_store(sim):
    from ptyfast.runtime.stitch import stitch_frames

    scan, backend = sim
    plan = _plan(scan, backend)
    kept = stitch_frames(scan, backend, plan, 5, 5)
    assert type(kept.patches) is np.ndarray and kept.patches.shape == (0, *plan.box_weight.shape)
    summed = stitch_frames(scan, backend, plan, 5, 5, keep_patches=False)
    assert summed.num.shape == plan.shape and not summed.num.any() and not summed.wsum.any()


# ----------------------------------------------------------------------------------------------- GPU
@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("align", [True, False])
@pytest.mark.parametrize("to", ["cupy", "torch"])
def test_device_stitching_matches_numpy(sim, align, to):
    """Device batch outputs (CuPy, or torch CUDA tensors through DLPack) stay on the device — store, sums,
    overlap products, blend — and the object comes back within 1e-4 of the numpy pipeline's."""
    from ptyfast.runtime.stitch import finish_stitch, stitch_frames

    convert = cp.asarray
    if to == "torch":
        torch = pytest.importorskip("torch")
        if not torch.cuda.is_available():
            pytest.skip("torch sees no CUDA device")
        convert = lambda a: torch.from_numpy(a).cuda()  # noqa: E731
    scan, backend = sim
    plan = _plan(scan, backend, align_phase=align)
    want, wwant, _ = finish_stitch(plan, stitch_frames(scan, backend, plan))
    part = stitch_frames(scan, _Converting(backend, convert), plan)
    assert isinstance(part.patches if align else part.num, cp.ndarray)
    obj, wsum, _ = finish_stitch(plan, part)
    assert type(obj) is np.ndarray and type(wsum) is np.ndarray
    _assert_close(obj, want, 1e-4)
    _assert_close(wsum, wwant, 1e-4)


@pytest.mark.gpu
@needs_gpu
def test_device_overlap_products_match_the_twin():
    rng = np.random.default_rng(3)
    n, h, w = 40, 24, 24
    patches, weight = crandn(rng, (n, h, w)), rng.uniform(0, 1, (h, w)).astype(np.float32)
    rects = overlap_pairs(rng.uniform(0, 30, (n, 2)), weight).rects()
    got = kernels.overlap_products(cp.asarray(patches), rects, weight)
    assert isinstance(got, cp.ndarray)
    ref = tw.overlap_products(patches, rects, weight)
    np.testing.assert_allclose(got.get(), ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_reconstruct_stitches_on_the_host_for_a_cpu_backend(sim):
    from ptyfast.runtime.reconstruct import ReconstructJob, device_stitching, plan_for

    scan, backend = sim
    plan, _ = plan_for(scan, ReconstructJob(consistency=False), backend)
    assert not device_stitching(backend, plan, scan.n_frames) and not backend.device_outputs


def _torch_cuda():
    try:
        import torch
    except ModuleNotFoundError:
        return False
    return torch.cuda.is_available()


@pytest.mark.gpu
@needs_gpu
@pytest.mark.skipif(not _torch_cuda(), reason="needs a CUDA device visible to torch")
def test_reconstruct_on_a_cuda_backend_stitches_on_the_device_like_the_host(sim):
    """The device-resident path (torch CUDA outputs kept on the device, CuPy stitching, one copy back) gives
    the host pipeline's object from the same weights."""
    from ptyfast.runtime.backends import open_backend
    from ptyfast.runtime.reconstruct import ReconstructJob, device_stitching, plan_for, run_reconstruct

    scan, host = sim
    gpu, _ = open_backend(None, "torch", "cuda", "fp32")
    job = ReconstructJob(consistency=False)
    plan, _ = plan_for(scan, job, gpu)
    assert device_stitching(gpu, plan, scan.n_frames)
    on_device, _ = run_reconstruct(scan, job, backend=gpu)
    on_host, _ = run_reconstruct(scan, job, backend=host)
    assert isinstance(on_device.object, np.ndarray) and not gpu.device_outputs
    _assert_close(on_device.object, on_host.object, rel=1e-3)
    gpu.close()


def test_a_batch_larger_than_the_read_chunk_reaches_the_backend_whole(sim):
    """``--batch`` above the read chunk (128 frames) is what the backend runs, not cut to the chunk."""
    from ptyfast.runtime.stitch import stitch_frames

    scan, backend = sim
    sizes = []

    class Recorded:
        manifest, default_batch = backend.manifest, backend.default_batch

        def map(self, batches):
            def seen():
                for x in batches:
                    sizes.append(len(x))
                    yield x
            return backend.map(seen())

    stitch_frames(scan, Recorded(), _plan(scan, backend), batch=48, chunk=16, spill=False)
    assert sizes == [48, 16], sizes
