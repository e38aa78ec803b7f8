"""The README's quality claims, held on small held-out scans made here (``pytest -m quality``).

The scans are of the bundled held-out pair (``held_out_object``: cat faces never trained on), simulated with the
bundled probe as the release check simulates (75 % raster, ±1 px jitter, 10⁶ photons, Poisson noise unless said),
at 480² (121 frames): on smaller scans of this pair the offset solve gains little or loses (400², 81 frames: +0.24
dB; 320², 36 frames: −0.36 dB) and N rPIE iterations from the network lose to 5N from flat from N = 5 on (352², 49
frames, noise-free). Every margin sits a little below the value measured on a 2-core CPU (ONNX Runtime fp32),
stated beside it. The claims a small scan cannot measure (speed, the 600² release check) are held by the benchmark
JSON in the repository, checked here to be the shipped model's.

The rest of the quality suite lives beside the code it guards, marked ``quality``: live (``reconstruct
--follow``) and Dask outputs equal the offline ones in phase as well as amplitude (``test_live.py``,
``test_distributed.py``), and SIGTERM during reconstruct's write leaves nothing (``test_reliability.py``).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

from ptyfast.io.images import held_out_object
from ptyfast.metrics import evaluate_against_truth, object_error, truth_on_grid
from ptyfast.physics import default_probe, raster_positions
from ptyfast.physics.simulate import simulate_scan

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.quality

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_CHECKPOINT = ROOT / "ptyfast" / "data" / "ptynet-s.pt"
RESULTS = ROOT / "benchmarks" / "results"


def held_out_scan(size: int, *, noise: bool, jitter: float = 1.0, seed: int = 0):
    """A scan of the held-out pair at ``size``², the release check's protocol (positions fixed by ``seed``)."""
    obj = held_out_object((size, size))
    pos = raster_positions(obj.shape, default_probe().shape, overlap=0.75, jitter=jitter,
                           rng=np.random.default_rng(seed))
    return simulate_scan(obj, default_probe(), pos, photons=1e6, noise=noise, rng=np.random.default_rng(seed + 1),
                         meta={"source": f"held-out {size}²"})


@pytest.fixture(scope="module")
def backend():
    from ptyfast.runtime.backends import open_backend

    be, _ = open_backend(None, "onnxruntime", "cpu")
    yield be
    be.close()


@pytest.fixture(scope="module")
def noisy():
    return held_out_scan(480, noise=True)


@pytest.fixture(scope="module")
def clean():
    return held_out_scan(480, noise=False)


@pytest.fixture(scope="module")
def default_rec(noisy, backend):
    """reconstruct's default on the noisy 480² scan (the manifest's phase offsets solved from the overlaps)."""
    from ptyfast.runtime.reconstruct import reconstruct_scan

    return reconstruct_scan(noisy, backend, consistency=False)


def scores(rec, scan):
    q, base, _ = evaluate_against_truth(rec.object, rec.weight, rec.origin, scan.truth)
    return q, base["flat"]


def test_shipped_model_beats_a_flat_guess_in_phase_and_amplitude(noisy, default_rec):
    """README, Shipped model: the stitched phase and amplitude well above a flat guess's, SSIM above it too.
    Measured on this 121-frame scan: phase +5.43 dB, amplitude +12.81 dB, SSIM 0.53 / 0.72 against the flat
    guess's 0.16 / 0.61 (the 600² release scans: +6.3 / +10.5 dB)."""
    assert noisy.n_frames == 121
    q, flat = scores(default_rec, noisy)
    assert q.phase_psnr >= flat.phase_psnr + 5.0, (q.phase_psnr, flat.phase_psnr)
    assert q.amplitude_psnr >= flat.amplitude_psnr + 12.0, (q.amplitude_psnr, flat.amplitude_psnr)
    assert q.phase_ssim > flat.phase_ssim and q.amplitude_ssim > flat.amplitude_ssim, (q, flat)


def test_offset_solve_raises_the_phase_on_a_scan_large_enough(noisy, backend, default_rec):
    """README: reconstruct solves the patches' phase offsets from the overlaps (on for the shipped model); on 121
    frames that raises the phase by 1.19 dB over the same predictions blended unsolved (the amplitude
    +0.24 dB)."""
    from ptyfast.runtime.reconstruct import reconstruct_scan

    unsolved = reconstruct_scan(noisy, backend, consistency=False, align_phase=False)
    q, _ = scores(default_rec, noisy)
    q0, _ = scores(unsolved, noisy)
    assert q.phase_psnr >= q0.phase_psnr + 0.9, (q0.phase_psnr, q.phase_psnr)
    assert q.amplitude_psnr >= q0.amplitude_psnr + 0.1, (q0.amplitude_psnr, q.amplitude_psnr)


@pytest.mark.xfail(strict=True, reason="on 36 frames the default offset solve lowers the phase (18.04 → 17.68 dB, "
                                       "noise-free); reconstruct should leave it out there and say so")
def test_offset_solve_does_not_lower_the_phase_on_36_frames(backend):
    """The suite's small fixture (320², 36 frames, noise-free, ±2 px jitter): the solve must not cost phase.
    It does today (−0.36 dB): strict xfail, so the day reconstruct skips the solve where it cannot help, this
    passes and asks for the mark to go."""
    from ptyfast.runtime.reconstruct import reconstruct_scan

    scan = held_out_scan(320, noise=False, jitter=2.0)
    assert scan.n_frames == 36
    solved = scores(reconstruct_scan(scan, backend, consistency=False), scan)[0]
    unsolved = scores(reconstruct_scan(scan, backend, consistency=False, align_phase=False), scan)[0]
    assert solved.phase_psnr >= unsolved.phase_psnr, (unsolved.phase_psnr, solved.phase_psnr)


@pytest.mark.parametrize("data", ["noise-free", "noisy"])
def test_network_and_n_rpie_iterations_beat_flat_and_5n(data, clean, noisy, backend):
    """README: started from the network's object (offsets fitted to the data, as ``--fit-offsets`` writes it),
    N rPIE iterations reach a lower object error against the truth than 5N from a flat start (probe known).
    N = 10 on 121 frames: object error ratio network+10 / flat+50 measured 0.62 noise-free, 0.73 noisy; the ten
    iterations take the network's error (0.0113, 0.0126) down to 0.25× (noise-free) and 0.47× (noisy) of it.

    Where it does not hold: with N = 20 on this scan (1.28 noise-free, 0.89 noisy), and on 352² scans (49 frames)
    from N = 5 noise-free; the README's N = 20 is measured on the 600² release scans (its JSON is checked below)."""
    from ptyfast.refine import refine
    from ptyfast.runtime.offset_fit import fit_offsets
    from ptyfast.runtime.reconstruct import reconstruct_scan

    scan = clean if data == "noise-free" else noisy
    rec = reconstruct_scan(scan, backend, consistency=False, offset_fitter=fit_offsets)
    assert not rec.notes
    _, _, region = evaluate_against_truth(rec.object, rec.weight, rec.origin, scan.truth)
    truth = truth_on_grid(scan.truth, rec.origin, rec.object.shape)
    n = 10
    runs = {}
    for start, iterations in ((rec.object, n), ("flat", 5 * n)):
        runs[iterations] = refine(scan, init=start, positions=rec.positions, probe=scan.probe, algorithm="rpie",
                                  iterations=iterations, update_probe=False)
        assert runs[iterations].iterations == iterations and not runs[iterations].diverged
    start_error = object_error(rec.object, truth, region)
    network = object_error(np.asarray(runs[n].object), truth, region)
    flat = object_error(np.asarray(runs[5 * n].object), truth, region)
    bound = {"noise-free": 0.7, "noisy": 0.8}[data]
    assert network < bound * flat, (data, network, flat, network / flat)
    assert network < {"noise-free": 0.3, "noisy": 0.55}[data] * start_error, (data, start_error, network)


@pytest.mark.slow
def test_finetune_does_not_lower_the_phase():
    """README: ``finetune`` on a scan; its guard keeps the starting weights unless the held-out frames' data error
    falls by 5 % (``MIN_GAIN``). The shipped model, fine-tuned at a learning rate of 1e-3 for 3 epochs on a
    noise-free held-out 224² scan (9 frames, 3 of them held out); the phase of the object reconstruct makes with
    the written weights, against the truth: 15.50 → 15.50 dB with the guard; without it (``--val-fraction 0``,
    or a guard that takes any epoch) the same run writes 14.55 dB, amplitude 22.1 → 19.7 dB."""
    pytest.importorskip("torch")
    from ptyfast.finetune import FinetuneOptions, finetune
    from ptyfast.models.checkpoint import load_checkpoint

    scan = held_out_scan(224, noise=False, seed=0)
    net, manifest = load_checkpoint(SHIPPED_CHECKPOINT)
    r = finetune(scan, net, manifest, scan.probe, FinetuneOptions(epochs=3, lr=1e-3, val_every=1, threads=2),
                 stitch=True)
    before = evaluate_against_truth(r.before, r.weight_before, r.origin, scan.truth)[0]
    after = evaluate_against_truth(r.after, r.weight_after, r.origin, scan.truth)[0]
    # 0.1 dB: above the spread between two stitchings of the same weights (bf16 inference), far below the 0.95 dB
    # the unguarded run loses
    assert after.phase_psnr >= before.phase_psnr - 0.1, (before.phase_psnr, after.phase_psnr, r.verdict)
    assert after.amplitude_psnr >= before.amplitude_psnr - 0.1, (before.amplitude_psnr, after.amplitude_psnr)


# -- claims measured by benchmarks: their JSON is the shipped model's ---------------------------------------------


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def recorded_hash(result: dict) -> str:
    found = re.findall(r"sha256 ([0-9a-f]{64})", result["model"])
    assert len(found) == 1, result["model"]
    return found[0]


@pytest.mark.parametrize("folder", ["release-600", "release"])
def test_release_check_json_is_of_the_shipped_model(folder):
    """The README's release-check figures come from ``benchmarks/results/<folder>/release.json``, run on the
    shipped checkpoint: its recorded sha256 is the shipped file's, and the shipped ONNX says it was exported from
    that checkpoint."""
    onnx = pytest.importorskip("onnx")
    result = json.loads((RESULTS / folder / "release.json").read_text())
    shipped = sha256(SHIPPED_CHECKPOINT)
    assert recorded_hash(result) == shipped, f"{folder}/release.json is of another model: rerun the release check"
    meta = {p.key: p.value for p in onnx.load(str(SHIPPED_CHECKPOINT.with_suffix(".onnx")),
                                              load_external_data=False).metadata_props}
    assert meta["ptyfast.checkpoint_sha256"] == shipped


def test_readme_figures_are_the_release_jsons():
    """Each release-check figure the README's results table states is the JSON's, rounded as printed, the README
    links the JSON files and the section of docs/benchmarks.md with the command, and that section quotes the same
    figures to two decimals."""
    readme = (ROOT / "README.md").read_text()
    text = " ".join(readme.split())
    big = json.loads((RESULTS / "release-600" / "release.json").read_text())
    small = json.loads((RESULTS / "release" / "release.json").read_text())
    s6, s3 = big["summary"], small["summary"]
    assert big["options"]["size"] == 600 and small["options"]["size"] == 352
    figures = {}
    for size, s in ((600, s6), (352, s3)):
        figures[size] = (s["phase_psnr_gain_over_flat_db"], s["phase_psnr_gain_over_flat_db_offsets_fitted"],
                         s["amplitude_psnr_gain_over_flat_db"])
    phase, fitted, amplitude = figures[600]
    assert (f"[phase **+{phase:.1f} dB** (+{fitted:.1f} dB with `--fit-offsets`), amplitude +{amplitude:.1f} dB]"
            "(docs/benchmarks.md#release-check)") in text
    phase, fitted, amplitude = figures[352]
    assert (f"[phase +{phase:.1f} dB (+{fitted:.1f} dB with `--fit-offsets`), amplitude +{amplitude:.1f} dB]"
            "(docs/benchmarks.md#release-check)") in text
    doc = (ROOT / "docs" / "benchmarks.md").read_text()
    section = doc[doc.index("### Release check"):doc.index("### Demo")]
    assert "python benchmarks/release_check.py --size 600" in section
    for size, row in figures.items():
        for value in row:
            assert f"+{value:.2f} dB" in section, (size, value)
    # "network + 20 rPIE iterations: object error ... lower [than 100 from flat] on all ten 600² release scans;
    # 7 of 10 at 352²"
    assert big["options"]["nn_iterations"] == 20 and big["options"]["flat_iterations"] == 100
    reach = sum(s6["rpie_network_iterations_to_flat_100_object_error"].values(), [])
    assert len(reach) == 10 and all(r is not None and r <= 20 for r in reach), reach
    reach = sum(s3["rpie_network_iterations_to_flat_100_object_error"].values(), [])
    assert "all ten 600² release scans" in text
    assert f"{sum(r is not None and r <= 20 for r in reach)} of {len(reach)} at 352²" in text, reach
    assert s6["passes"] is True
    for folder in ("release-600", "release"):
        assert f"benchmarks/results/{folder}/release.json" in readme


def test_speed_jsons_are_of_the_shipped_architecture():
    """Speed depends on the architecture, not on the weights: every ``ptyfast bench`` JSON that
    ``docs/benchmarks.md`` cites was measured on the shipped model's architecture, input size, parameter count and
    MACs per pattern (counted here on the shipped ONNX). The bench JSON records no model hash, so which weights
    ran is not checked."""
    pytest.importorskip("onnx")
    from ptyfast.models.flops import count_macs_onnx

    doc = (ROOT / "docs" / "benchmarks.md").read_text()
    cited = sorted(set(re.findall(r"\b(bench-[\w-]+\.json)", doc)))
    assert len(cited) >= 3, cited
    shipped = json.loads(SHIPPED_CHECKPOINT.with_suffix(".json").read_text())
    macs = count_macs_onnx(SHIPPED_CHECKPOINT.with_suffix(".onnx"))
    for name in cited:
        model = json.loads((RESULTS / name).read_text())["model"]
        assert model["architecture"] == shipped["architecture"], name
        assert model["input_size"] == shipped["input_size"], name
        assert model["parameters"] == shipped["training"]["parameters"], name
        assert model["macs_per_pattern"] == macs, (name, model["macs_per_pattern"], macs)
