"""numpy twins of the CUDA kernels against explicit-loop references (CPU, runs everywhere)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from ptyfast import kernels
from ptyfast.kernels import numpy_twins as tw
from ptyfast.kernels.binning import bin_positions
from ptyfast.physics import forward

CDTYPES = [np.complex64, np.complex128]


def crandn(rng, shape, dtype=np.complex64):
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)


def tol(dtype):
    # complex128 is limited by the float32 interpolation weights of the convention, not by the data
    return 2e-5 if np.dtype(dtype) in (np.complex64, np.float32) else 1e-6


# Positions: sub-pixel everywhere; inside, touching and crossing every edge, and fully outside.
def edge_positions(rng, rows, cols, h, w, n=24):
    pos = np.column_stack([rng.uniform(-h - 2, rows + 1, n), rng.uniform(-w - 2, cols + 1, n)])
    pos[:4] = [[-0.5, 3.25], [rows - h + 0.75, cols - w + 0.5], [-h - 0.5, 2.0], [2.0, cols - 0.3]]
    pos[4:6] = [[3.0, 4.0], [-2.0, -3.0]]  # integer positions, one over the top-left corner
    return pos


# ----------------------------------------------------------------------------- explicit references
def ref_gather(obj, positions, shape):
    h, w = shape
    out = np.zeros((len(positions), h, w), obj.dtype)

    def at(r, c):
        return obj[r, c] if 0 <= r < obj.shape[0] and 0 <= c < obj.shape[1] else 0

    for n, (y, x) in enumerate(np.asarray(positions, float)):
        y0, x0 = int(np.floor(y)), int(np.floor(x))
        fy, fx = float(np.float32(y - y0)), float(np.float32(x - x0))  # fractions are float32 (twin docstring)
        for i in range(h):
            for j in range(w):
                r, c = y0 + i, x0 + j
                out[n, i, j] = ((1 - fy) * (1 - fx) * at(r, c) + (1 - fy) * fx * at(r, c + 1)
                                + fy * (1 - fx) * at(r + 1, c) + fy * fx * at(r + 1, c + 1))
    return out


def ref_overlap_add(accum, patches, positions, weights=None, weight_accum=None):
    n, h, w = patches.shape
    rows, cols = accum.shape
    for k, (y, x) in enumerate(np.asarray(positions, float)):
        y0, x0 = int(np.floor(y)), int(np.floor(x))
        fy, fx = float(np.float32(y - y0)), float(np.float32(x - x0))  # fractions are float32 (twin docstring)
        for i in range(h):
            for j in range(w):
                wt = 1.0 if weights is None else (weights[i, j] if weights.ndim == 2 else weights[k, i, j])
                for di, dj, c in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx),
                                  (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
                    r, cc = y0 + i + di, x0 + j + dj
                    if 0 <= r < rows and 0 <= cc < cols:
                        accum[r, cc] += c * wt * patches[k, i, j]
                        if weight_accum is not None:
                            weight_accum[r, cc] += c * wt
    return accum


def ref_modulus(psi, intensity, mask):
    out = psi.copy()
    err = np.zeros(psi.shape[0])
    for idx in np.ndindex(*psi.shape):
        valid = True if mask is None else bool(mask[idx[1:]] if mask.ndim == 2 else mask[idx])
        if not valid:
            continue
        a, s = abs(psi[idx]), np.sqrt(max(intensity[idx], 0.0))
        out[idx] = psi[idx] * s / a if a > 0 else s
        err[idx[0]] += (a - s) ** 2
    return out, err


# ------------------------------------------------------------------------------------------ gather
@pytest.mark.parametrize("dtype", CDTYPES)
def test_gather_matches_loops_subpixel_and_edges(dtype):
    rng = np.random.default_rng(1)
    obj = crandn(rng, (23, 29), dtype)
    pos = edge_positions(rng, 23, 29, 7, 9)
    got = kernels.gather(obj, pos, (7, 9))
    assert got.dtype == dtype and got.shape == (len(pos), 7, 9)
    np.testing.assert_allclose(got, ref_gather(obj, pos, (7, 9)), rtol=tol(dtype), atol=tol(dtype))
    assert np.all(got[2] == 0) or np.abs(got[2]).max() < 1e-6  # fully above the object


@pytest.mark.parametrize("dtype", CDTYPES)
def test_exit_waves_is_probe_times_gather(dtype):
    rng = np.random.default_rng(2)
    obj, probe = crandn(rng, (30, 31), dtype), crandn(rng, (8, 6), dtype)
    pos = edge_positions(rng, 30, 31, 8, 6, n=10)
    got = kernels.exit_waves(probe, obj, pos)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, probe * ref_gather(obj, pos, probe.shape), rtol=tol(dtype), atol=tol(dtype))
    np.testing.assert_allclose(forward.exit_waves(probe, obj, pos), got, rtol=tol(dtype), atol=tol(dtype))


# ------------------------------------------------------------------------------------- overlap-add
@pytest.mark.parametrize("dtype", CDTYPES)
@pytest.mark.parametrize("wkind", ["none", "shared", "per_patch"])
def test_overlap_add_matches_loops(dtype, wkind):
    rng = np.random.default_rng(3)
    h, w, rows, cols = 6, 7, 21, 19
    pos = edge_positions(rng, rows, cols, h, w, n=16)
    patches = crandn(rng, (len(pos), h, w), dtype)
    rdt = np.float32 if dtype == np.complex64 else np.float64
    weights = {"none": None, "shared": rng.uniform(0.1, 2, (h, w)).astype(rdt),
               "per_patch": rng.uniform(0.1, 2, (len(pos), h, w)).astype(rdt)}[wkind]
    start = crandn(rng, (rows, cols), dtype)  # in place: the existing content is kept
    wstart = rng.uniform(0, 1, (rows, cols)).astype(rdt)
    acc, wacc = start.copy(), wstart.copy()
    out = kernels.overlap_add(acc, patches, pos, weights=weights, weight_accum=wacc)
    assert out is acc
    ref, wref = start.astype(np.complex128), wstart.astype(np.float64)
    ref_overlap_add(ref, patches.astype(np.complex128), pos, weights, wref)
    np.testing.assert_allclose(acc, ref, rtol=tol(dtype), atol=10 * tol(dtype))
    np.testing.assert_allclose(wacc, wref, rtol=tol(dtype), atol=10 * tol(dtype))


def test_overlap_add_matches_batched_spread():
    rng = np.random.default_rng(4)
    patches = crandn(rng, (9, 16, 16))
    pos = edge_positions(rng, 40, 40, 16, 16, n=9)
    acc = kernels.overlap_add(np.zeros((40, 40), np.complex64), patches, pos)
    ref = np.zeros((40, 40), np.complex64)
    base, _ = tw._split(pos)
    for (y0, x0), tile in zip(base, tw.spread(patches, pos)):
        tw._add_clipped(ref, tile, int(y0), int(x0))
    np.testing.assert_allclose(acc, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", CDTYPES)
def test_gather_and_overlap_add_are_adjoint(dtype):
    """<gather(O), P> == <O, overlap_add(P)> for the complex inner product (Tike-style adjoint test)."""
    rng = np.random.default_rng(5)
    obj = crandn(rng, (25, 27), dtype)
    pos = edge_positions(rng, 25, 27, 8, 8, n=12)
    pat = crandn(rng, (len(pos), 8, 8), dtype)
    lhs = np.vdot(kernels.gather(obj, pos, (8, 8)), pat)
    rhs = np.vdot(obj, kernels.overlap_add(np.zeros_like(obj), pat, pos))
    assert abs(lhs - rhs) <= 50 * tol(dtype) * abs(lhs)


def test_overlap_add_empty_and_outside_is_noop():
    rng = np.random.default_rng(6)
    acc = crandn(rng, (10, 10))
    before = acc.copy()
    kernels.overlap_add(acc, np.zeros((0, 4, 4), np.complex64), np.zeros((0, 2)))
    kernels.overlap_add(acc, crandn(rng, (2, 4, 4)), np.array([[-9.5, 0.0], [3.0, 10.0]]))
    np.testing.assert_array_equal(acc, before)


# ------------------------------------------------------------------------------------------- stitch
def test_stitch_integer_positions_recovers_object():
    rng = np.random.default_rng(7)
    obj = crandn(rng, (40, 44))
    pos = np.array([[y, x] for y in range(0, 33, 4) for x in range(0, 37, 4)], float)
    weights = rng.uniform(0.5, 2, (8, 8)).astype(np.float32)
    got, wmap = kernels.stitch(kernels.gather(obj, pos, (8, 8)), weights, pos, obj.shape)
    assert got.dtype == np.complex64 and wmap.dtype == np.float32
    np.testing.assert_allclose(got, obj, rtol=1e-5, atol=1e-5)


def test_stitch_subpixel_matches_definition_and_floor():
    rng = np.random.default_rng(8)
    pos = edge_positions(rng, 30, 30, 8, 8, n=14) * 0.5 + 5
    patches = crandn(rng, (len(pos), 8, 8))
    weights = rng.uniform(0.2, 1, (len(pos), 8, 8)).astype(np.float32)
    got, wmap = kernels.stitch(patches, weights, pos, (30, 30), floor=1e-3)
    num, wref = np.zeros((30, 30), complex), np.zeros((30, 30))
    ref_overlap_add(num, patches.astype(complex), pos, weights.astype(float), wref)
    ref = num / np.maximum(wref, 1e-3 * wref.max())
    np.testing.assert_allclose(wmap, wref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    assert np.all(np.isfinite(got)) and np.all(got[wmap == 0] == 0)


def test_normalise_in_place_equals_normalise():
    """Normalising into the numerator itself (the pipeline's way: no second object-sized array), by row blocks,
    gives what the plain division gives, the relative floor taken from the whole map."""
    rng = np.random.default_rng(18)
    num = crandn(rng, (600, 70))
    wmap = rng.uniform(0, 1, (600, 70)).astype(np.float32)
    wmap[:300] *= 1e-9  # rows below the floor in the first blocks, the maximum in a later one
    ref = kernels.normalise(num, wmap, floor=1e-3)
    np.testing.assert_allclose(ref, num / np.maximum(wmap, 1e-3 * wmap.max()), rtol=1e-6)
    out = kernels.normalise(num, wmap, floor=1e-3, out=num)
    assert out is num
    np.testing.assert_array_equal(num, ref)


def test_stitch_nothing_visible_gives_zeros_not_nan():
    got, wmap = kernels.stitch(np.ones((1, 4, 4), np.complex64), None, [[100.0, 100.0]], (8, 8))
    assert np.all(got == 0) and np.all(wmap == 0)


# ------------------------------------------------------------------------------ modulus projection
@pytest.mark.parametrize("dtype", CDTYPES)
@pytest.mark.parametrize("mkind", ["none", "shared", "per_frame"])
def test_modulus_projection_matches_loops(dtype, mkind):
    rng = np.random.default_rng(9)
    psi = crandn(rng, (3, 6, 5), dtype)
    psi[0, 1, 1] = 0  # |Ψ| = 0 → √I, zero phase
    inten = rng.uniform(0, 4, psi.shape).astype(psi.real.dtype)
    inten[1, 2, 2] = -0.5  # negative counts read as 0
    mask = {"none": None, "shared": rng.random((6, 5)) > 0.3, "per_frame": rng.random((3, 6, 5)) > 0.3}[mkind]
    if mask is not None:
        mask[..., 1, 1] = True
    got, err = kernels.modulus_projection(psi, inten, mask)
    ref, rerr = ref_modulus(psi.astype(complex), inten.astype(float), mask)
    assert got.dtype == dtype and err.dtype == psi.real.dtype and err.shape == (3,)
    np.testing.assert_allclose(got, ref, rtol=tol(dtype), atol=tol(dtype))
    np.testing.assert_allclose(err, rerr, rtol=10 * tol(dtype))


def test_modulus_projection_properties():
    rng = np.random.default_rng(10)
    psi = crandn(rng, (4, 16, 16))
    inten = rng.uniform(0.1, 9, psi.shape).astype(np.float32)
    mask = rng.random((16, 16)) > 0.2
    new, err = kernels.modulus_projection(psi, inten, mask)
    m = np.broadcast_to(mask, psi.shape)
    np.testing.assert_allclose(np.abs(new[m]), np.sqrt(inten[m]), rtol=1e-5)  # modulus replaced
    np.testing.assert_allclose(np.angle(new[m] * np.conj(psi[m])), 0, atol=1e-5)  # phase kept
    np.testing.assert_array_equal(new[~m], psi[~m])  # masked pixels keep Ψ
    again, err2 = kernels.modulus_projection(new, inten, mask)  # a projection: idempotent, zero error
    np.testing.assert_allclose(again, new, rtol=1e-5, atol=1e-6)
    assert np.all(err > 0) and np.all(err2 < 1e-6 * err)
    _, err_consistent = kernels.modulus_projection(psi, np.abs(psi) ** 2, None)
    assert np.all(err_consistent < 1e-8 * err.max())


def test_modulus_projection_rejects_bad_shapes():
    psi = np.ones((2, 4, 4), np.complex64)
    with pytest.raises(ValueError, match="intensity has shape"):
        kernels.modulus_projection(psi, np.ones((2, 4, 5), np.float32))
    with pytest.raises(ValueError, match="mask has shape"):
        kernels.modulus_projection(psi, np.ones((2, 4, 4), np.float32), np.ones((3, 3), bool))
    with pytest.raises(ValueError, match="intensity has shape"):
        kernels.project_exit_waves(psi, np.ones((1, 4, 4), np.float32))


# ------------------------------------------------------------------------------------- propagation
@pytest.fixture(params=["scipy", "fftw"])
def cpu_fft_library(request, monkeypatch):
    """Each CPU FFT library in turn (FFTW only where pyFFTW is installed)."""
    from ptyfast.kernels import cpu_fft

    if request.param == "scipy":
        monkeypatch.setattr(cpu_fft, "_fftw_module", lambda: None)
    else:
        pytest.importorskip("pyfftw", reason="pyFFTW (the fftw extra) is not installed")
        monkeypatch.delenv("PTYFAST_FFT", raising=False)
        cpu_fft._fftw_module.cache_clear()
        fftw = cpu_fft._fftw_module()
        cpu_fft._fftw_module.cache_clear()
        monkeypatch.setattr(cpu_fft, "_fftw_module", lambda: fftw)
    return request.param


@pytest.mark.parametrize("shape", [(16, 16), (15, 12)])  # odd sizes: the folded shift must still hold
def test_far_field_convention_and_fused_projection(shape, cpu_fft_library):
    rng = np.random.default_rng(11)
    psi = crandn(rng, (3, *shape))
    big = kernels.far_field(psi)
    np.testing.assert_allclose(big, np.fft.fftshift(np.fft.fft2(psi, norm="ortho"), axes=(-2, -1)), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(big, forward.far_field(psi), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(kernels.back_propagate(big), psi, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.sum(np.abs(big) ** 2), np.sum(np.abs(psi) ** 2), rtol=1e-5)  # Parseval
    inten = rng.uniform(0, 3, psi.shape).astype(np.float32)
    mask = rng.random(shape) > 0.25
    got, err = kernels.project_exit_waves(psi, inten, mask)
    ref, rerr = kernels.modulus_projection(big, inten, mask)
    np.testing.assert_allclose(got, kernels.back_propagate(ref), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(err, rerr, rtol=1e-5)
    assert got.dtype == np.complex64 and big.dtype == np.complex64


@pytest.mark.parametrize("shape", [(16, 16), (15, 12)])
def test_projection_against_fft_order_amplitudes_is_the_same_projection(shape, cpu_fft_library):
    rng = np.random.default_rng(13)
    psi = crandn(rng, (4, *shape))
    psi[1] = 0  # a zero far field: the projection gives √I with zero phase there
    inten = rng.uniform(0, 3, psi.shape).astype(np.float32)
    for mask in (None, rng.random(shape) > 0.25):
        ref, rerr = kernels.project_exit_waves(psi, inten, mask)
        amp = np.fft.ifftshift(np.sqrt(inten), axes=(-2, -1))
        m = None if mask is None else np.fft.ifftshift(mask)
        got, err = kernels.project_exit_waves_fft_order(psi, amp, m)
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(err, rerr, rtol=1e-5)
        valid = np.ones(shape, bool) if mask is None else mask
        np.testing.assert_allclose(np.abs(kernels.far_field(got[1]))[valid], np.sqrt(inten[1])[valid], rtol=1e-4,
                                   atol=1e-5)
    with pytest.raises(ValueError, match="amplitude has shape"):
        kernels.project_exit_waves_fft_order(psi, amp[:2])


def test_cpu_fft_library_follows_the_environment():
    import subprocess

    code = "from ptyfast.kernels.cpu_fft import LIBRARY; print(LIBRARY)"
    env = {**__import__("os").environ, "PTYFAST_FFT": "scipy"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "scipy"
    env.pop("PTYFAST_FFT")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    try:
        import pyfftw  # noqa: F401
        expected = "fftw"
    except ImportError:
        expected = "scipy"
    assert out.stdout.strip() == expected


# ------------------------------------------------------------------------------ binning (GPU index)
def test_bin_index_finds_every_covering_patch():
    rng = np.random.default_rng(12)
    h, w, rows, cols = 6, 5, 20, 17
    pos = edge_positions(rng, rows, cols, h, w, n=30)
    idx = bin_positions(pos, (h, w), (rows, cols))
    base = np.floor(pos).astype(int)
    for py in range(rows):
        for px in range(cols):
            cover = {k for k, (y0, x0) in enumerate(base) if y0 <= py <= y0 + h and x0 <= px <= x0 + w}
            if cover:
                assert idx.r0 <= py < idx.r0 + idx.nr and idx.c0 <= px < idx.c0 + idx.nc
            found = set()
            bylo, byhi = (py - h - idx.by0) // idx.bsy, (py - idx.by0) // idx.bsy
            bxlo, bxhi = (px - w - idx.bx0) // idx.bsx, (px - idx.bx0) // idx.bsx
            for by in range(max(bylo, 0), min(byhi, idx.nby - 1) + 1):
                for bx in range(max(bxlo, 0), min(bxhi, idx.nbx - 1) + 1):
                    b = by * idx.nbx + bx
                    found |= set(idx.bin_items[idx.bin_start[b] : idx.bin_start[b + 1]].tolist())
            assert cover <= found


def test_importing_kernels_does_not_import_cupy():
    import subprocess

    code = "import sys, ptyfast.kernels as k; k.gather; sys.exit('cupy' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# --------------------------------------------------------------------- memory helpers (CPU side)
def test_dlpack_helpers_share_memory_on_cpu():
    from ptyfast.kernels import memory

    torch = pytest.importorskip("torch", reason="torch (train extra) not installed")
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    t = memory.to_torch(x)
    t[0, 1] = 42
    assert x[0, 1] == 42 and memory.from_torch(t)[0, 1] == 42 and isinstance(t, torch.Tensor)
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed")
    if hasattr(ort.OrtValue, "from_dlpack"):
        v = memory.to_ortvalue(x)
        x[1, 2] = -3
        assert v.numpy()[1, 2] == -3


def test_bind_array_runs_onnx_without_copies():
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed")
    helper = pytest.importorskip("onnx.helper", reason="onnx not installed")
    from onnx import TensorProto

    from ptyfast.kernels import memory

    g = helper.make_graph([helper.make_node("Mul", ["x", "x"], ["y"])], "sq",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    y = np.full_like(x, np.nan)
    b = sess.io_binding()
    memory.bind_array(b, "x", x)
    memory.bind_array(b, "y", y, output=True)
    sess.run_with_iobinding(b)
    np.testing.assert_array_equal(y, x * x)  # written straight into our buffer
    with pytest.raises(ValueError, match="C-contiguous"):
        memory.bind_array(b, "x", np.ones((3, 2), np.float32).T)


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128, np.float32])
def test_gather_fast_path_inside_the_object_equals_the_general_path(dtype):
    """Windows wholly inside take a slice-based path; one window partly outside forces the fancy-indexing
    path for the batch: the shared windows must come out the same."""
    rng = np.random.default_rng(5)
    obj = (rng.standard_normal((90, 80)) + (1j * rng.standard_normal((90, 80)) if np.dtype(dtype).kind == "c" else 0))
    obj = obj.astype(dtype)
    pos = rng.uniform(0, 40, (7, 2))
    fast = tw.gather(obj, pos, (32, 24))
    general = tw.gather(obj, np.vstack([pos, [[-5.5, 70.25]]]), (32, 24))[:7]
    np.testing.assert_allclose(fast, general, rtol=1e-5, atol=1e-6)
    assert fast.dtype == obj.dtype


def test_far_field_unshifted_is_the_far_field_before_its_shift():
    rng = np.random.default_rng(2)
    psi = (rng.standard_normal((3, 16, 16)) + 1j * rng.standard_normal((3, 16, 16))).astype(np.complex64)
    np.testing.assert_allclose(kernels.far_field_unshifted(psi), np.fft.ifftshift(kernels.far_field(psi), axes=(-2, -1)),
                               rtol=1e-5, atol=1e-6)


class _FakeEvent:
    """Stands in for a CUDA event behind an asynchronous copy: it is complete once synchronized."""

    made: list = []

    def __init__(self):
        self.recorded = self.waited = False
        _FakeEvent.made.append(self)

    def record(self):
        self.recorded = True

    def synchronize(self):
        self.waited = True


def test_host_ring_reuses_a_slot_only_after_its_copy_completed():
    torch = pytest.importorskip("torch")
    from ptyfast.kernels.memory import HostRing

    _FakeEvent.made = []
    ring = HostRing(2, lambda shape: torch.empty(shape, dtype=torch.float32), _FakeEvent)
    rng = np.random.default_rng(0)
    batches = [rng.random((4, 1, 8, 8), dtype=np.float32) for _ in range(5)]
    sent = []
    for k, x in enumerate(batches):
        view, slot = ring.stage(x)
        assert slot == k % 2
        if k >= 2:  # the copy sent from this slot two batches ago was waited for before the buffer was overwritten
            assert _FakeEvent.made[k - 2].waited
        assert not any(e.waited for e in _FakeEvent.made[max(k - 1, 0):])  # the other slot's copy is still in flight
        np.testing.assert_array_equal(view.numpy(), x)  # what the device copy reads is this batch
        sent.append(view.clone())
        ring.sent(slot)
        assert _FakeEvent.made[-1].recorded
    for x, got in zip(batches, sent):
        np.testing.assert_array_equal(got.numpy(), x)
    assert ring.allocations == 2  # one buffer per slot for a steady batch shape
    view, _ = ring.stage(rng.random((6, 1, 8, 8), dtype=np.float32))  # a larger batch: that slot grows
    assert view.shape == (6, 1, 8, 8) and ring.allocations == 3
    view, _ = ring.stage(rng.random((3, 1, 8, 8), dtype=np.float32))  # a smaller one: a view of the buffer
    assert view.shape == (3, 1, 8, 8) and ring.allocations == 3
    with pytest.raises(ValueError, match="at least one slot"):
        HostRing(0, None, None)
