"""The main job end to end: simulate → reconstruct (shipped model, ONNX Runtime) → evaluate, and every bad input."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import h5py
import numpy as np
import pytest

from ptyfast.io.cxi import read_cxi, write_cxi
from ptyfast.export.tensorrt_engine import gpu_info
from ptyfast.metrics import evaluate_against_truth
from ptyfast.physics import default_probe, fresnel_probe, object_from_images, raster_positions
from ptyfast.io.images import held_out_object
from ptyfast.physics.simulate import simulate_scan
from cli_helpers import one_error_line

pytest.importorskip("onnxruntime")


def run(*args):
    return subprocess.run([sys.executable, "-m", "ptyfast", *map(str, args)], capture_output=True, text=True)


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def held_out_scan(tmp_path_factory):
    """36 noise-free 128² frames (75 % overlap) of a 320² object made from the two bundled held-out faces."""
    obj = held_out_object((320, 320))
    rng = np.random.default_rng(0)
    probe = default_probe()
    pos = raster_positions(obj.shape, probe.shape, overlap=0.75, jitter=2.0, rng=rng)
    scan = simulate_scan(obj, probe, pos, photons=1e6, rng=rng, meta={"source": "held-out"})
    path = write_cxi(tmp_path_factory.mktemp("scan") / "held.cxi", scan)
    return path, scan


def _read(out):
    with h5py.File(out, "r") as f:
        return f["object"][()], f["weight"][()], f["origin"][()], json.loads(f.attrs["provenance"])


def test_reconstruct_end_to_end_output_is_complete(held_out_scan, tmp_path):
    path, scan = held_out_scan
    before = sha(path)
    out = tmp_path / "recon.h5"
    res = run("reconstruct", path, "-o", out)
    assert res.returncode == 0, res.stderr
    assert "onnxruntime-cpu" in res.stdout and "patterns/s" in res.stdout
    assert sha(path) == before  # the input is never modified
    with h5py.File(out, "r") as f:
        for name in ("object", "amplitude", "phase", "weight", "positions", "origin", "probe", "consistency/per_frame"):
            assert name in f, name
        assert f["positions"].shape == (scan.n_frames, 2)
        assert f["consistency/per_frame"].shape == (scan.n_frames,)
        err = f["consistency"].attrs["error"]
    obj, weight, origin, prov = _read(out)
    assert prov["backend"]["backend"] == "onnxruntime" and len(prov["model_sha256"]) == 64
    # --precision auto (the default) says why this short scan stays on fp32 (on a CPU-only machine: bf16 is a CPU
    # choice), and records what it chose
    assert gpu_info() is not None or "fp32 because" in " ".join(res.stdout.split())
    assert prov["options"]["precision"] == "fp32"
    assert {"read", "preprocess", "infer", "stitch", "consistency", "wall"} <= set(prov["timings_s"])
    assert 0 < err < 0.008  # measured 0.0058 (noise-free scan)
    for suffix in ("amplitude", "phase", "consistency"):
        assert (tmp_path / f"recon_{suffix}.png").stat().st_size > 1000
    # The shipped network alone beats the flat (mean) guess in phase and amplitude: measured +3.25 dB phase
    # (17.68 against 14.43) and +10.96 dB amplitude (24.93 against 13.98) on this 36-frame scan
    q, base, _ = evaluate_against_truth(obj, weight, origin, scan.truth)
    flat = base["flat"]
    assert q.phase_psnr >= flat.phase_psnr + 3.0, (q.phase_psnr, flat.phase_psnr)
    assert q.amplitude_psnr >= flat.amplitude_psnr + 10.5, (q.amplitude_psnr, flat.amplitude_psnr)

    res = run("evaluate", out, "--truth", path, "--json", tmp_path / "q.json")
    assert res.returncode == 0, res.stderr
    figures = json.loads((tmp_path / "q.json").read_text())
    assert figures["reconstruction"]["phase_ssim"] == pytest.approx(q.phase_ssim, rel=1e-6)


def test_reconstruct_with_rpie_refinement_is_well_above_flat(held_out_scan, tmp_path):
    path, scan = held_out_scan
    out = tmp_path / "refined.h5"
    res = run("reconstruct", path, "-o", out, "--refine", "rpie", "--iterations", "30", "--no-png")
    assert res.returncode == 0, res.stderr
    assert "rpie: 30 iterations" in res.stdout
    obj, weight, origin, prov = _read(out)
    assert prov["refine"]["algorithm"] == "rpie" and prov["refine"]["errors"][-1] < prov["refine"]["errors"][0]
    q, base, _ = evaluate_against_truth(obj, weight, origin, scan.truth)
    flat = base["flat"]
    assert q.phase_psnr > flat.phase_psnr + 5, (q, flat)
    assert q.phase_ssim > flat.phase_ssim + 0.2, (q, flat)


def test_chunk_size_does_not_change_the_result(held_out_scan):
    from ptyfast.runtime.backends import open_backend
    from ptyfast.runtime.reconstruct import reconstruct_scan

    path, _ = held_out_scan
    backend, _ = open_backend(None, "onnxruntime", "cpu")
    try:
        a = reconstruct_scan(read_cxi(path), backend, chunk=7, batch=5, consistency=False)
        b = reconstruct_scan(read_cxi(path), backend, chunk=64, batch=64, consistency=False)
    finally:
        backend.close()
    np.testing.assert_allclose(a.object, b.object, rtol=1e-4, atol=1e-5)


def test_kept_patches_in_memory_in_a_file_or_on_workers_stitch_alike(held_out_scan, monkeypatch):
    """The three ways the patches wait for the phase-offset solve — held in memory, spilled to the temporary
    file (budget 0), combined from several workers' partials — give the same object."""
    from ptyfast.runtime.backends import open_backend
    from ptyfast.runtime.stitch import combine_partials, finish_stitch, plan_stitch, stitch_frames
    from ptyfast.runtime.reconstruct import reconstruct_scan

    path, _ = held_out_scan
    backend, _ = open_backend(None, "onnxruntime", "cpu")
    try:
        memory = reconstruct_scan(read_cxi(path), backend, consistency=False)
        monkeypatch.setenv("PTYFAST_PATCH_MEMORY_MB", "0")
        spilled = reconstruct_scan(read_cxi(path), backend, consistency=False)
        scan = read_cxi(path)
        plan = plan_stitch(scan.positions, scan.frame_shape[0], backend.manifest, scan.probe)
        assert plan.align
        half = scan.n_frames // 2
        parts = [stitch_frames(scan, backend, plan, a, b) for a, b in ((half, scan.n_frames), (0, half))]
        assert all(p.patches is not None and p.spilled is None for p in parts)
        workers, _, _ = finish_stitch(plan, combine_partials(parts))
    finally:
        backend.close()
    np.testing.assert_array_equal(spilled.object, memory.object)
    np.testing.assert_allclose(workers, memory.object, rtol=1e-5, atol=1e-6)


def test_offsets_fitted_to_the_data_fit_it_better_and_beat_the_overlap_solve():
    """--fit-offsets: starting from the overlap solve, the offsets fitted to the measured patterns lower the
    data misfit and raise the phase PSNR against the truth; the amplitude is the overlap solution's."""
    from ptyfast.metrics import evaluate_against_truth
    from ptyfast.runtime.backends import open_backend
    from ptyfast.runtime.offset_fit import fit_offsets
    from ptyfast.runtime.reconstruct import reconstruct_scan

    # 81 frames of a 400² object: the fit corrects the phase drift the overlap solve leaves across the scan, so it
    # gains more on larger scans (shipped stage-5 model: 36 frames of 320² −0.004 dB, these 81 +0.55 dB, the
    # 600² release scans +1.8 dB)
    obj = held_out_object((400, 400))
    rng = np.random.default_rng(0)
    pos = raster_positions(obj.shape, default_probe().shape, overlap=0.75, jitter=2.0, rng=rng)
    truth_scan = simulate_scan(obj, default_probe(), pos, photons=1e6, rng=rng, meta={"source": "held-out"})
    backend, _ = open_backend(None, "onnxruntime", "cpu")
    try:
        solved = reconstruct_scan(truth_scan, backend)
        fitted = reconstruct_scan(truth_scan, backend, offset_fitter=fit_offsets)
    finally:
        backend.close()
    q0 = evaluate_against_truth(solved.object, solved.weight, solved.origin, truth_scan.truth)[0]
    q1 = evaluate_against_truth(fitted.object, fitted.weight, fitted.origin, truth_scan.truth)[0]
    assert fitted.consistency.error < solved.consistency.error
    assert q1.phase_psnr > q0.phase_psnr + 0.3, (q0.phase_psnr, q1.phase_psnr)
    np.testing.assert_allclose(np.abs(fitted.object), np.abs(solved.object), rtol=1e-4, atol=1e-5)
    assert fitted.timings["fit_offsets"] > 0 and not fitted.notes


def test_offset_misfit_gradient_matches_finite_differences(held_out_scan):
    """The fit's analytic ∂L/∂θ (adjoint gather/overlap-add, unitary far field, phase-only blend) equals central
    differences of L for a few offsets."""
    from ptyfast.runtime.backends import open_backend
    from ptyfast.runtime.offset_fit import OffsetMisfit
    from ptyfast.runtime.phase_align import solve_phase_offsets
    from ptyfast.runtime.stitch import plan_stitch, stitch_frames

    path, _ = held_out_scan
    scan = read_cxi(path)
    backend, _ = open_backend(None, "onnxruntime", "cpu")
    try:
        plan = plan_stitch(scan.positions, scan.frame_shape[0], backend.manifest, scan.probe)
        part = stitch_frames(scan, backend, plan, 0, scan.n_frames)
    finally:
        backend.close()
    z0 = solve_phase_offsets(part.patches, plan.grid_pos + plan.box_offset, plan.box_weight)
    misfit = OffsetMisfit(scan, plan, part.patches, z0)
    theta = np.angle(z0) + np.random.default_rng(1).normal(0, 0.1, len(z0))
    _, grad = misfit(theta)
    # a step of 1e-2 rad: the misfit is summed in float32, and 1e-3 left the central difference at the mercy of
    # rounding (4 % off on an AVX2 CPU); the O(h²) truncation error at 1e-2 is far below the tolerance
    for k in (0, 7, 24):
        e = np.zeros_like(theta)
        e[k] = 1e-2
        numeric = (misfit(theta + e)[0] - misfit(theta - e)[0]) / 2e-2
        assert grad[k] == pytest.approx(numeric, rel=0.02, abs=1e-7), k


def test_offset_fit_that_ramps_the_phase_is_refused_with_a_warning(held_out_scan, monkeypatch):
    """A fit whose offsets step between neighbouring windows by more than the guard allows (on real data, with
    the scan's unrefined probe, they built a phase ramp) is refused: the overlap solution is kept and a warning
    says why."""
    from ptyfast.runtime import offset_fit
    from ptyfast.runtime.backends import open_backend
    from ptyfast.runtime.reconstruct import reconstruct_scan

    monkeypatch.setattr(offset_fit, "MAX_NEIGHBOUR_STEP", -1.0)  # every fit steps by at least 0
    monkeypatch.setattr(offset_fit, "ITERATIONS", 3)
    path, _ = held_out_scan
    backend, _ = open_backend(None, "onnxruntime", "cpu")
    try:
        solved = reconstruct_scan(read_cxi(path), backend, consistency=False)
        refused = reconstruct_scan(read_cxi(path), backend, consistency=False, offset_fitter=offset_fit.fit_offsets)
    finally:
        backend.close()
    np.testing.assert_array_equal(refused.object, solved.object)
    assert len(refused.notes) == 1 and "overlap solution is kept" in refused.notes[0] and not solved.notes


def test_fit_offsets_without_the_overlap_solve_is_refused(held_out_scan, tmp_path):
    path, _ = held_out_scan
    line = one_error_line(run("reconstruct", path, "-o", tmp_path / "o.h5", "--fit-offsets", "--no-align-phase"))
    assert "--no-align-phase" in line and not (tmp_path / "o.h5").exists()


def test_probe_weighting_and_paper_stitching_on_the_same_predictions(held_out_scan):
    """The same predictions stitched three ways on the 36-frame fixture (phase / amplitude PSNR in dB, flat guess
    14.43 / 13.98): reconstruct's default, |P|² weights at sub-pixel positions with the phase offsets solved
    (the shipped manifest says ``phase_offsets: free``), 17.68 / 24.93; the same blended unsolved 18.04 / 24.80;
    the paper's uniform average at rounded positions 14.18 / 8.25, which takes in the network's output outside
    the lit disc, where a pattern says nothing. The probe weighting is worth 3.5 dB of phase and 16.7 dB of
    amplitude here; whether the solve gains depends on the scan's size (``test_quality.py``)."""
    from ptyfast.runtime.backends import open_backend
    from ptyfast.runtime.stitch import plan_stitch
    from ptyfast.runtime.reconstruct import reconstruct_scan

    path, scan = held_out_scan
    backend, _ = open_backend(None, "onnxruntime", "cpu")
    try:
        assert plan_stitch(scan.positions, 128, backend.manifest, scan.probe).align  # the manifest turns it on
        default = reconstruct_scan(read_cxi(path), backend, consistency=False)
        unsolved = reconstruct_scan(read_cxi(path), backend, align_phase=False, consistency=False)
        uniform = reconstruct_scan(read_cxi(path), backend, weighting="uniform", consistency=False)
    finally:
        backend.close()
    q, u = (evaluate_against_truth(r.object, r.weight, r.origin, scan.truth)[0] for r in (default, uniform))
    assert q.phase_psnr >= u.phase_psnr + 3.0 and q.amplitude_psnr >= u.amplitude_psnr + 15.0, (q, u)
    assert np.all(np.isfinite(uniform.object)) and uniform.object.shape == default.object.shape
    # the default run did solve the offsets: the patches were rotated before blending (median |Δφ| 0.038 rad on
    # the covered pixels), which moves the amplitude only where rotated patches interfere (median 0.0014)
    covered = default.weight >= 0.1 * default.weight.max()
    dphi = np.abs(np.angle(default.object * np.conj(unsolved.object)))[covered]
    assert np.median(dphi) > 0.02, np.median(dphi)
    np.testing.assert_allclose(np.abs(default.object)[covered], np.abs(unsolved.object)[covered], atol=0.05)


def test_inference_path_imports_no_torch(held_out_scan, tmp_path):
    path, _ = held_out_scan
    code = (
        "import sys\nfrom ptyfast.io.cxi import read_cxi\nfrom ptyfast.runtime.reconstruct import ReconstructJob, "
        f"run_reconstruct\nrec, prov = run_reconstruct(read_cxi({str(path)!r}), ReconstructJob())\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\nprint(prov['backend']['backend'])\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "onnxruntime"


def _scan_cxi(tmp_path, name, *, probe=None, size=128, n=4, frames=None):
    probe = default_probe() if probe is None else probe
    rng = np.random.default_rng(1)
    obj = object_from_images(rng.random((64, 64)), rng.random((64, 64)), (size + 40, size + 40))
    pos = raster_positions(obj.shape, probe.shape, overlap=0.75)[:n]
    scan = simulate_scan(obj, probe, pos, photons=1e5)
    return write_cxi(tmp_path / name, scan)


def test_pattern_size_mismatch_says_what_to_do(tmp_path):
    path = _scan_cxi(tmp_path, "small.cxi", probe=fresnel_probe((64, 64), pixel_size=1e-6 / 64), size=64)
    line = one_error_line(run("reconstruct", path, "-o", tmp_path / "o.h5"))
    assert "64×64" in line and "--fit" in line and "fine-tune" in line
    assert not (tmp_path / "o.h5").exists()


def test_fit_crop_adapts_larger_frames(tmp_path):
    from ptyfast.models.preprocess import fit_probe

    # The same probe seen on a detector with twice the pixels (finer object pixel): its far field padded.
    probe = fit_probe(default_probe(), (256, 256), "pad")
    path = _scan_cxi(tmp_path, "big.cxi", probe=probe, size=256, n=2)
    res = run("reconstruct", path, "-o", tmp_path / "o.h5", "--fit", "crop", "--no-png")
    assert res.returncode == 0, res.stderr
    with h5py.File(tmp_path / "o.h5") as f:
        assert np.all(np.isfinite(f["object"][()]))


def test_the_single_probe_model_refuses_another_probe(tmp_path):
    path = _scan_cxi(tmp_path, "otherprobe.cxi", probe=fresnel_probe((128, 128), defocus=300e-6, focus_size=300e-9))
    line = one_error_line(run("reconstruct", path, "--model", "ptynet-s", "-o", tmp_path / "o.h5"))
    assert "differs from the probe" in line and "ptyfast finetune" in line
    assert not (tmp_path / "o.h5").exists()


def test_by_default_a_probe_outside_every_model_is_refused(tmp_path):
    """No --model: a probe that is not the bundled one goes to the probe-conditioned model, which refuses a probe
    too wide for one pattern to determine its patch, in one sentence, writing nothing."""
    path = _scan_cxi(tmp_path, "wide.cxi", probe=fresnel_probe((128, 128), defocus=300e-6, focus_size=300e-9))
    line = one_error_line(run("reconstruct", path, "-o", tmp_path / "o.h5"))
    assert "not confined" in line and "ptynet-s-probe-est" in line
    assert not (tmp_path / "o.h5").exists()


def test_by_default_another_confined_probe_gets_the_probe_conditioned_model(tmp_path):
    from ptyfast.physics.probe_family import held_out_probe

    path = _scan_cxi(tmp_path, "stop.cxi", probe=held_out_probe("central-stop", 0))
    res = run("reconstruct", path, "-o", tmp_path / "o.h5", "--no-png")
    assert res.returncode == 0, res.stderr
    assert "model ptynet-s-probe-est: the probe is not the bundled one" in res.stdout
    assert "inside the model's probe family" in res.stdout
    with h5py.File(tmp_path / "o.h5") as f:
        assert json.loads(f.attrs["provenance"])["model_manifest"].count("probe+estimate") == 1


@pytest.mark.parametrize("case", ["corrupt", "nan", "empty", "missing"])
def test_bad_scans_exit_2_without_output(tmp_path, make_cxi, case):
    if case == "corrupt":
        path = tmp_path / "corrupt.cxi"
        path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 100)
    elif case == "nan":
        data = np.ones((6, 128, 128), np.float32)
        data[4, 10, 10] = np.nan
        path = make_cxi("nan.cxi", data=data, translation=np.c_[np.linspace(0, 1e-6, 6), np.zeros(6), np.zeros(6)])
    elif case == "empty":
        path = make_cxi("empty.cxi", data=np.ones((0, 128, 128), np.float32), translation=np.zeros((0, 3)))
    else:
        path = tmp_path / "nope.cxi"
    before = sha(path) if path.exists() else None
    out = tmp_path / "o.h5"
    one_error_line(run("reconstruct", path, "-o", out))
    assert not out.exists() and not list(tmp_path.glob(".o.h5.tmp-*"))
    if before:
        assert sha(path) == before


def test_unwritable_output_is_refused(held_out_scan, tmp_path):
    path, _ = held_out_scan
    line = one_error_line(run("reconstruct", path, "-o", tmp_path / "no" / "such" / "dir" / "o.h5"))
    assert "cannot write" in line


def test_near_field_data_is_refused(shared_file, tmp_path):
    p25 = shared_file("cdtools-p25-nearfield/PETRAIII_P25_Near_Field_Ptycho.cxi")
    line = one_error_line(run("reconstruct", p25, "-o", tmp_path / "o.h5", "--fit", "pad"))
    assert "near-field" in line


def test_demo_runs_and_writes_pictures(tmp_path):
    res = run("demo", "-o", tmp_path / "demo", "--size", "300", "--overlap", "0.75", "--refine", "5")
    assert res.returncode == 0, res.stderr
    assert "patterns/s" in res.stdout and "rPIE" in res.stdout
    assert "phase offsets fitted to the data" in " ".join(res.stdout.split())  # the demo runs --fit-offsets
    assert _read(tmp_path / "demo" / "demo_recon.h5")[3]["options"]["fit_offsets"] is True
    for name in ("demo_scan.cxi", "demo_recon.h5", "demo_recon_phase.png", "demo_truth_vs_recon.png"):
        assert (tmp_path / "demo" / name).stat().st_size > 1000, name


@pytest.mark.parametrize("args", [
    ("demo", "-o", "{file}/sub"),
    ("evaluate", "{tmp}/missing.h5", "--truth", "{tmp}/missing.cxi"),
    ("evaluate", "{file}", "--truth", "{file}"),
])
def test_demo_and_evaluate_bad_paths(tmp_path, args):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    line = one_error_line(run(*(a.format(file=blocker, tmp=tmp_path) for a in args)))
    assert str(tmp_path) in line


def test_phase_alignment_removes_per_patch_offsets():
    """Exact patches with a random constant phase each (what a network cannot know) stitch back to the truth,
    up to one global offset, once the offsets are solved from the overlaps; unaligned they blur."""
    from ptyfast.kernels import gather, normalise, overlap_add
    from ptyfast.metrics import compare
    from ptyfast.runtime.phase_align import solve_phase_offsets

    rng = np.random.default_rng(5)
    obj = object_from_images(rng.random((40, 40)), rng.random((40, 40)), (160, 160))
    pos = raster_positions(obj.shape, (32, 32), overlap=0.75, jitter=1.5, rng=rng)
    patches = gather(obj, pos, (32, 32)) * np.exp(1j * rng.uniform(-np.pi, np.pi, len(pos)))[:, None, None]
    patches = patches.astype(np.complex64)
    yy, xx = np.mgrid[:32, :32] - 15.5
    w = np.exp(-(yy**2 + xx**2) / (2 * 7.0**2)).astype(np.float32)  # a confined probe's |P|²
    results = {}
    for align in (False, True):
        p = patches * solve_phase_offsets(patches, pos, w)[:, None, None] if align else patches
        num, wsum = np.zeros(obj.shape, np.complex64), np.zeros(obj.shape, np.float32)
        overlap_add(num, p, pos, weights=w, weight_accum=wsum)
        region = wsum > 0.1 * wsum.max()
        results[align] = compare(normalise(num, wsum), obj, region)
    assert results[True].phase_psnr > 35 and results[True].phase_psnr > results[False].phase_psnr + 15, results


def test_phase_alignment_keeps_isolated_patches_and_is_invariant_to_order():
    """Windows without overlap keep their own phase; permuting the patches permutes the solution."""
    from ptyfast.runtime.phase_align import solve_phase_offsets

    rng = np.random.default_rng(2)
    p = (rng.random((3, 16, 16)) * np.exp(1j * rng.uniform(0, 1, (3, 16, 16)))).astype(np.complex64)
    far = np.array([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0]])
    z = solve_phase_offsets(p, far, np.ones((16, 16), np.float32))
    np.testing.assert_allclose(np.angle(z), np.angle(z[0]), atol=1e-6)  # only the common rotation
    near = np.array([[0.0, 0.0], [4.0, 3.0], [8.0, 1.0]])
    z1 = solve_phase_offsets(p, near, np.ones((16, 16), np.float32))
    order = [2, 0, 1]
    z2 = solve_phase_offsets(p[order], near[order], np.ones((16, 16), np.float32))
    np.testing.assert_allclose(z1[order] / z1[order][0], z2 / z2[0], atol=1e-4)


def test_overlap_products_equal_whole_windows_on_the_object_grid():
    """H_mk = Σ w_m w_k conj(p_m) p_k of every pair, against the windows placed whole on the object grid (the
    products are taken on the bounding box of the nonzero weights only: the lit pixels of a bigger box)."""
    from ptyfast.runtime.phase_align import MIN_OVERLAP, overlap_matrix

    rng = np.random.default_rng(3)
    pos = np.round(raster_positions((140, 140), (40, 40), overlap=0.8, jitter=2.0, rng=rng))
    patches = (rng.random((len(pos), 40, 40)) * np.exp(1j * rng.uniform(-3, 3, (len(pos), 40, 40)))).astype(np.complex64)
    yy, xx = np.mgrid[:40, :40] - 19.5
    w = (np.hypot(yy - 3, xx + 2) < 9).astype(np.float32)  # lit disc off the box's centre, zeros around it
    got = overlap_matrix(patches, pos, w).toarray()
    shape = (int(pos[:, 0].max()) + 40, int(pos[:, 1].max()) + 40)
    placed, weights = [], []
    for p, (y, x) in zip(patches, pos.astype(int)):
        a, b = np.zeros(shape, np.complex128), np.zeros(shape)
        a[y : y + 40, x : x + 40], b[y : y + 40, x : x + 40] = p, w
        placed.append(a)
        weights.append(b)
    for m in range(len(pos)):
        for k in range(m + 1, len(pos)):
            both = weights[m] * weights[k]
            want = np.vdot(placed[m] * both, placed[k]) if both.sum() >= MIN_OVERLAP * float(np.sum(w * w)) else 0
            assert abs(got[m, k] - want) <= 1e-4 * max(abs(want), 1.0), (m, k)
            assert got[k, m] == np.conj(got[m, k])
    assert np.count_nonzero(got) > 4 * len(pos)


@pytest.mark.parametrize("order", ["raster", "random"])
def test_spilled_patches_give_the_in_memory_overlaps_and_hold_few_patches(order):
    """Overlap products taken as frames arrive equal those of all patches at once; the patches read back from
    the spill file are the ones added; a raster scan holds a few rows in memory, frames in random order
    may need them all."""
    from ptyfast.runtime.phase_align import overlap_matrix
    from ptyfast.runtime.spilled_patches import SpilledPatches

    rng = np.random.default_rng(8)
    pos = raster_positions((12 * 16 + 32, 12 * 16 + 32), (32, 32), overlap=0.75, jitter=1.0, rng=rng)
    if order == "random":
        pos = pos[rng.permutation(len(pos))]
    patches = (rng.random((len(pos), 32, 32)) * np.exp(1j * rng.uniform(-3, 3, (len(pos), 32, 32)))).astype(np.complex64)
    yy, xx = np.mgrid[:32, :32] - 15.5
    w = np.exp(-(yy**2 + xx**2) / (2 * 7.0**2)).astype(np.float32)
    want = overlap_matrix(patches, pos, w)
    assert want.nnz > 4 * len(pos)
    for budget in (None, 200 * patches[0].nbytes):  # all in memory; to the file after 200 patches
        store = SpilledPatches(pos, w, budget=budget)
        for s in range(0, len(pos), 10):  # batches of 10, as inference hands them over
            store.add(patches[s : s + 10])
        assert store.spilled == (budget is not None)
        np.testing.assert_allclose(store.matrix().toarray(), want.toarray(), rtol=1e-6, atol=1e-6)
        back = np.concatenate([c for _, c in store.chunks(64)])
        np.testing.assert_array_equal(back, patches)
    side = int(np.sqrt(len(pos)))
    if order == "raster":
        assert store.most_held <= 4 * side + 10, (store.most_held, len(pos))  # 75 % overlap: 3 rows ahead overlap
    else:
        assert store.most_held > len(pos) // 2
    store.close()


def test_outputs_store_the_pixel_size_and_previews_share_one_style(held_out_scan, tmp_path):
    """reconstruct and refine store the object pixel (m) and draw previews alike: cropped to the scanned area,
    a scale bar, the pixel size in the label."""
    from PIL import Image

    from ptyfast.runtime.output import scale_bar

    path, scan = held_out_scan
    dx = read_cxi(path).object_pixel_size()
    assert np.isfinite(dx) and dx > 0
    for out, cmd in ((tmp_path / "nn.h5", ("reconstruct", path)), (tmp_path / "rpie.h5", ("refine", path, "-n", "2"))):
        res = run(*cmd, "-o", out)
        assert res.returncode == 0, res.stderr
        with h5py.File(out, "r") as f:
            assert f.attrs["object_pixel_size_m"] == pytest.approx(dx)
            weight = f["weight"][()]
        covered = weight >= 0.05 * weight.max()
        rows, cols = (int(np.ptp(ix)) + 1 for ix in np.nonzero(covered))
        image = np.asarray(Image.open(out.with_name(out.stem + "_phase.png")).convert("L"))
        assert image.shape[0] == rows + 14 + 30  # the covered rows, the scale-bar strip, the colour bar
        length, label = scale_bar(cols, dx)
        assert label.endswith(("um", "nm"))
        strip = image[rows + 4: rows + 8, :]
        assert (strip[:, 2: 2 + length] < 10).all()  # the black bar


def test_scale_bar_is_a_round_length_near_a_fifth_of_the_width():
    from ptyfast.runtime.output import scale_bar

    assert scale_bar(300, 10e-9) == (50, "0.5 um")  # 20 % of 3 µm → 0.5 µm = 50 px
    assert scale_bar(100, 1e-9) == (20, "20 nm")
    assert scale_bar(1000, 1e-6) == (200, "200 um")


def test_stitch_stage_runs_in_order_and_surfaces_its_error():
    """The background stitching stage keeps batch order, and an error in it reaches the caller (no hang)."""
    from ptyfast.runtime.stream import BackgroundStage as _StitchStage

    seen = []
    stage = _StitchStage(lambda i, a, b: seen.append(i))
    for i in range(20):
        stage.put(i, None, None)
    stage.close()
    assert seen == list(range(20))

    def fail(i, a, b):
        if i == 3:
            raise ValueError("bad batch")

    stage = _StitchStage(fail)
    with pytest.raises(ValueError, match="bad batch"):
        for i in range(50):  # put() raises once the stage has failed; close() would too
            stage.put(i, None, None)
        stage.close()


def test_unknown_refine_engine_is_refused_before_any_work(held_out_scan, tmp_path):
    path, _ = held_out_scan
    out = tmp_path / "o.h5"
    one_error_line(run("reconstruct", path, "-o", out, "--refine", "dm"), "unknown --refine algorithm 'dm'")
    assert not out.exists() and not list(tmp_path.iterdir())


@pytest.mark.parametrize("size", [64, 63], ids=["even", "odd"])
@pytest.mark.parametrize("masked", [False, True], ids=["no-mask", "mask"])
def test_consistency_matches_the_forward_model_written_out(size, masked):
    """The consistency pass (which compares in the FFT's corner order) equals ε and s computed directly from the
    project's centred far field, for even and odd frames, with and without a detector mask: 0 for the true
    object, the same per-frame values for a perturbed one."""
    from ptyfast.kernels import exit_waves, far_field
    from ptyfast.physics.objects import random_object
    from ptyfast.runtime.consistency import data_consistency

    rng = np.random.default_rng(3)
    probe = fresnel_probe((size, size))
    obj = random_object((160, 160), 2)
    pos = raster_positions(obj.shape, probe.shape, overlap=0.7, jitter=1.0, rng=rng)
    mask = None
    if masked:
        mask = np.ones((size, size), bool)
        mask[size // 2 - 3 : size // 2 + 2, :] = False  # a dead band through the centre
    scan = simulate_scan(obj, probe, pos, photons=1e6, mask=mask)
    exact = data_consistency(scan, obj, scan.probe, pos, chunk=7)
    assert exact.error < 1e-6 and exact.scale == pytest.approx(1, rel=1e-4)
    wrong = obj * np.exp(0.3j * rng.random(obj.shape))
    got = data_consistency(scan, wrong, scan.probe, pos, chunk=7)
    pred = np.abs(far_field(exit_waves(scan.probe, wrong.astype(np.complex64), pos)))
    meas = np.sqrt(np.maximum(np.asarray(scan.diffraction, np.float64), 0))
    m = np.ones((size, size)) if mask is None else mask.astype(float)
    saa, sab, sbb = ((pred * pred * m).sum((1, 2)), (pred * meas * m).sum((1, 2)), (meas * meas * m).sum((1, 2)))
    s = sab.sum() / saa.sum()
    assert got.scale == pytest.approx(s, rel=1e-4)
    np.testing.assert_allclose(got.per_frame, (s * s * saa - 2 * s * sab + sbb) / sbb, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("masked", [False, True], ids=["no-mask", "mask"])
def test_consistency_on_a_sample_kept_from_the_one_read(held_out_scan, tmp_path, masked):
    """ε on an evenly spaced sample (measured amplitudes kept while the file is read for inference) is exactly
    the figure of the full pass restricted to those frames, and the output file says which frames they are."""
    from ptyfast.runtime.backends import open_backend
    from ptyfast.runtime.output import read_reconstruction, write_reconstruction
    from ptyfast.runtime.consistency import consistency_from_sums, consistency_sample, consistency_sums
    from ptyfast.runtime.reconstruct import ReconstructJob, run_reconstruct

    path, scan = held_out_scan
    if masked:
        scan.mask = np.ones(scan.frame_shape, bool)
        scan.mask[60:66, :] = False
        path = write_cxi(tmp_path / "masked.cxi", scan)
    sample = consistency_sample(scan.n_frames, 10)
    assert len(sample) == 10 and sample[0] == 0 and sample[-1] == scan.n_frames - 1
    assert np.array_equal(consistency_sample(scan.n_frames, 0), np.arange(scan.n_frames))
    backend, reason = open_backend(None, "onnxruntime", "cpu", "fp32", threads=2)
    with backend:
        lazy = read_cxi(path)
        rec, prov = run_reconstruct(lazy, ReconstructJob(consistency_frames=10), backend=backend, reason=reason)
        full = consistency_sums(lazy, rec.object, rec.probe, rec.positions, chunk=16)
        lazy.close()
    assert np.array_equal(rec.consistency.frames, sample)
    want = consistency_from_sums(full[:, sample])
    assert rec.consistency.error == pytest.approx(want.error, rel=1e-5)
    np.testing.assert_allclose(rec.consistency.per_frame, want.per_frame, rtol=1e-4, atol=1e-7)
    out = write_reconstruction(tmp_path / "r.h5", rec, prov)
    back = read_reconstruction(out)["consistency"]
    assert np.array_equal(back["frames"], sample) and back["per_frame"].shape == (10,)


def test_measured_amplitudes_zero_masked_pixels_whatever_they_hold():
    from ptyfast.runtime.consistency import measured_amplitudes

    frames = np.full((2, 4, 4), 9.0, np.float32)
    frames[:, 1, 2] = np.nan  # a dead pixel's fill value
    frames[:, 3, 0] = -5.0  # a detector offset
    mask = np.ones((4, 4), bool)
    mask[1, 2] = False
    got = measured_amplitudes(frames, np.fft.ifftshift(mask))
    want = np.fft.ifftshift(np.where(mask, np.sqrt(np.maximum(np.nan_to_num(frames), 0)), 0), axes=(-2, -1))
    assert np.all(np.isfinite(got)) and np.array_equal(got, want.astype(np.float32))
