"""Every CUDA kernel against its numpy twin (fp32, relative error ≤ 1e-5). Needs a CUDA GPU.

Outputs are poisoned (NaN-filled device memory) before each launch so an element a kernel fails
to write shows up as NaN. Skipped, with the reason, where CuPy is missing or sees no device.
"""

from __future__ import annotations

import numpy as np
import pytest

from ptyfast import kernels
from ptyfast.kernels import numpy_twins as tw


def _cupy_or_reason():
    try:
        import cupy
    except ImportError as exc:
        return None, f"CuPy not installed ({exc})"
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None, "CuPy sees no CUDA device"
    except Exception as exc:  # noqa: BLE001 - any CUDA runtime failure means "no usable GPU"
        return None, f"CuPy cannot reach a CUDA device ({type(exc).__name__}: {exc})"
    return cupy, ""


cp, _reason = _cupy_or_reason()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(cp is None, reason=_reason or "no GPU")]

RTOL = 1e-5


def rel_err(got, ref):
    got = cp.asnumpy(got) if cp is not None and isinstance(got, cp.ndarray) else np.asarray(got)
    assert np.all(np.isfinite(got)), "unwritten (NaN-poisoned) or non-finite elements"
    return float(np.linalg.norm((got - ref).ravel()) / max(np.linalg.norm(np.ravel(ref)), 1e-30))


@pytest.fixture(autouse=True)
def poison_pool():
    """Fill every fresh device allocation with NaN bytes (0xFF..): unwritten outputs read as NaN."""
    pool = cp.cuda.MemoryPool()
    real_malloc = pool.malloc

    def malloc(size):
        mem = real_malloc(size)
        cp.cuda.runtime.memset(mem.ptr, 0xFF, size)  # 0xFFFFFFFF is a NaN in float32
        return mem

    cp.cuda.set_allocator(malloc)
    yield
    cp.cuda.set_allocator(cp.get_default_memory_pool().malloc)
    pool.free_all_blocks()


def crandn(rng, shape):
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def positions(rng, rows, cols, h, w, n):
    pos = np.column_stack([rng.uniform(-h - 2, rows + 1, n), rng.uniform(-w - 2, cols + 1, n)])
    pos[:4] = [[-0.5, 3.25], [rows - h + 0.75, cols - w + 0.5], [3.0, -2.0], [10.0, 11.0]]
    return pos


@pytest.mark.parametrize("shape", [(64, 64), (37, 50)])
def test_gather_and_exit_waves(shape):
    rng = np.random.default_rng(0)
    h, w = shape
    obj, probe = crandn(rng, (150, 170)), crandn(rng, shape)
    pos = positions(rng, 150, 170, h, w, 64)
    got = kernels.gather(cp.asarray(obj), pos, shape)
    assert got.dtype == cp.complex64
    assert rel_err(got, tw.gather(obj, pos, shape)) <= RTOL
    got = kernels.exit_waves(cp.asarray(probe), cp.asarray(obj), cp.asarray(pos))
    assert rel_err(got, tw.exit_waves(probe, obj, pos)) <= RTOL


@pytest.mark.parametrize("mask_kind", ["none", "shared", "per_frame"])
@pytest.mark.parametrize("shape", [(64, 64), (33, 40)])
def test_modulus_projection(mask_kind, shape):
    rng = np.random.default_rng(1)
    psi = crandn(rng, (20, *shape))
    psi[0, 0, 0] = 0
    inten = rng.uniform(-0.1, 5, psi.shape).astype(np.float32)
    mask = {"none": None, "shared": rng.random(shape) > 0.2, "per_frame": rng.random(psi.shape) > 0.2}[mask_kind]
    got, err = kernels.modulus_projection(cp.asarray(psi), cp.asarray(inten), None if mask is None else cp.asarray(mask))
    ref, rerr = tw.modulus_projection(psi, inten, mask)
    assert rel_err(got, ref) <= RTOL and rel_err(err, rerr) <= RTOL


@pytest.mark.parametrize("shape", [(64, 64), (33, 40)])
def test_far_field_and_project_exit_waves(shape):
    rng = np.random.default_rng(2)
    psi = crandn(rng, (16, *shape))
    inten = rng.uniform(0, 5, psi.shape).astype(np.float32)
    mask = rng.random(shape) > 0.2
    assert rel_err(kernels.far_field(cp.asarray(psi)), tw.far_field(psi)) <= RTOL
    got, err = kernels.project_exit_waves(cp.asarray(psi), cp.asarray(inten), cp.asarray(mask))
    ref, rerr = tw.project_exit_waves(psi, inten, mask)
    assert rel_err(got, ref) <= RTOL and rel_err(err, rerr) <= RTOL
    amp, m = np.fft.ifftshift(np.sqrt(inten), axes=(-2, -1)), np.fft.ifftshift(mask)
    got, err = kernels.project_exit_waves_fft_order(cp.asarray(psi), cp.asarray(amp), cp.asarray(m))
    ref, rerr = tw.project_exit_waves_fft_order(psi, amp, m)
    assert rel_err(got, ref) <= RTOL and rel_err(err, rerr) <= RTOL


@pytest.mark.parametrize("wkind", ["none", "shared", "per_patch"])
def test_overlap_add(wkind):
    rng = np.random.default_rng(3)
    rows, cols, h, w, n = 150, 170, 32, 40, 80
    pos = positions(rng, rows, cols, h, w, n)
    patches = crandn(rng, (n, h, w))
    weights = {"none": None, "shared": rng.uniform(0.1, 2, (h, w)).astype(np.float32),
               "per_patch": rng.uniform(0.1, 2, (n, h, w)).astype(np.float32)}[wkind]
    start, wstart = crandn(rng, (rows, cols)), rng.uniform(0, 1, (rows, cols)).astype(np.float32)
    acc, wacc = cp.asarray(start), cp.asarray(wstart)
    kernels.overlap_add(acc, cp.asarray(patches), pos, weights=None if weights is None else cp.asarray(weights),
                        weight_accum=wacc)
    ref, wref = start.copy(), wstart.copy()
    tw.overlap_add(ref, patches, pos, weights=weights, weight_accum=wref)
    assert rel_err(acc, ref) <= RTOL and rel_err(wacc, wref) <= RTOL
    again = cp.asarray(start)  # deterministic: bit-identical on a second run
    kernels.overlap_add(again, cp.asarray(patches), pos, weights=None if weights is None else cp.asarray(weights))
    again2 = cp.asarray(start)
    kernels.overlap_add(again2, cp.asarray(patches), pos, weights=None if weights is None else cp.asarray(weights))
    assert bool((again == again2).all())


def test_overlap_add_into_a_real_map():
    """rPIE's Σ|P|² map: a float32 accumulator fed one real map broadcast over the batch (a stride-0 view)."""
    rng = np.random.default_rng(6)
    rows, cols, h, w, n = 120, 140, 32, 40, 24
    pos = positions(rng, rows, cols, h, w, n)
    p2 = rng.uniform(0, 3, (h, w)).astype(np.float32)
    start = rng.uniform(0, 1, (rows, cols)).astype(np.float32)
    acc = cp.asarray(start)
    kernels.overlap_add(acc, cp.broadcast_to(cp.asarray(p2), (n, h, w)), pos)
    ref = start.copy()
    tw.overlap_add(ref, np.broadcast_to(p2, (n, h, w)), pos)
    assert acc.dtype == cp.float32 and rel_err(acc, ref) <= RTOL
    with pytest.raises(TypeError, match="real patches"):
        kernels.overlap_add(cp.zeros((rows, cols), cp.float32), cp.asarray(crandn(rng, (n, h, w))), pos)


def test_rpie_with_cupy_follows_numpy():
    """The same batched rPIE run (probe updates on) on CuPy arrays and on numpy: the error curves agree to
    float32 rounding (cuFFT and the CPU FFT round differently), so every kernel the engine calls is right."""
    from ptyfast.physics import paper_probe, random_object, raster_positions
    from ptyfast.physics.simulate import simulate_scan
    from ptyfast.refine import refine

    probe = paper_probe()[32:96, 32:96]  # test_refine's scan: 81 frames of 64², a 200² object, sub-pixel positions
    obj = random_object((200, 200), 1)
    scan = simulate_scan(obj, probe, raster_positions(obj.shape, probe.shape, overlap=0.75, jitter=1.0, rng=2), rng=3)
    runs = [refine(scan, iterations=6, batch=8, alpha=0.5, update_probe=True, seed=0, xp=xp) for xp in (cp, np)]
    gpu, cpu = (np.asarray(r.errors) for r in runs)
    assert len(gpu) == len(cpu) == 6 and gpu[-1] < gpu[0]
    # scipy.fft against FFTW on the CPU: errors within 4e-4, objects within 1.4e-3 of each other
    np.testing.assert_allclose(gpu, cpu, rtol=2e-3)
    assert rel_err(runs[0].object, runs[1].object) < 1e-2


def test_stitch():
    rng = np.random.default_rng(4)
    pos = np.array([[y + 0.3, x + 0.7] for y in range(0, 200, 32) for x in range(0, 200, 32)])
    patches = crandn(rng, (len(pos), 128, 128))
    weights = rng.uniform(0.1, 1, (128, 128)).astype(np.float32)
    obj, wmap = kernels.stitch(cp.asarray(patches), cp.asarray(weights), pos, (360, 360))
    robj, rwmap = tw.stitch(patches, weights, pos, (360, 360))
    assert obj.dtype == cp.complex64 and wmap.dtype == cp.float32
    assert rel_err(obj, robj) <= RTOL and rel_err(wmap, rwmap) <= RTOL


def test_non_complex64_is_refused_with_remedy():
    with pytest.raises(TypeError, match="astype"):
        kernels.gather(cp.ones((8, 8), cp.complex128), [[0.0, 0.0]], (4, 4))


def test_pinned_stager_roundtrip():
    from ptyfast.kernels.memory import PinnedStager

    st = PinnedStager((8, 16, 16), np.float32)
    x = np.random.default_rng(5).random((5, 16, 16)).astype(np.float32)
    dev = st.upload(x)
    st.synchronize()
    np.testing.assert_array_equal(cp.asnumpy(dev), x)
