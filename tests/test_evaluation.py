"""``ptyfast paper``: the harness end to end on a tiny configuration, the image split, caching
of trained models, and bad input (exit 2, one line)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

from cli_helpers import app, runner  # noqa: E402
from cli_helpers import one_error_line  # noqa: E402


def _png(path, seed: int, size: int = 96) -> None:
    from skimage import io

    rng = np.random.default_rng(seed)
    img = (np.clip(np.cumsum(rng.normal(0, 8, (size, size)), axis=0), -128, 127) + 128).astype(np.uint8)
    io.imsave(path, img, check_contrast=False)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Two held-out-named images, seeded random PtyNet-S weights, an own model cache."""
    from model_helpers import random_checkpoint
    from ptyfast.physics.probe import paper_probe

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PTYFAST_CACHE", str(tmp_path_factory.mktemp("cache")))
        images = tmp_path_factory.mktemp("faces")
        _png(images / "cat_face_angle90.png", 1)
        _png(images / "cat_face_angle91.png", 2)
        s = random_checkpoint(tmp_path_factory.mktemp("w") / "ptynet-s.pt", "ptynet-s-paper", probe=paper_probe(),
                              input_size=(128, 128), probe_photons=1000.0,
                              preprocessing={"transform": "sqrt", "normalise": "max"},
                              training={"lr": 3e-4, "schedule": "onecycle"})[0]
        yield images, s


def tiny_config(model_s, **kw):
    from ptyfast.evaluation.paper import PaperConfig

    base = dict(models=("ptynet-s", "ptychonn", "ptychonet"), model_s=str(model_s), train_steps=1, train_batch=2, pool_size=2,
                train_object_size=140, val_size=2, test_objects=1, object_size=200, overlaps=(0.5,),
                refine_overlaps=(0.5,), finetune_epochs=1, refine_iterations=2, threads=2)
    return PaperConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def report(env, tmp_path_factory):
    from ptyfast.evaluation.paper import run_paper_protocol

    images, s = env
    out = tmp_path_factory.mktemp("rep") / "paper"
    lines: list[str] = []
    path = run_paper_protocol(images, out, config=tiny_config(s), console=type("C", (), {"print": lines.append})())
    return path, out, lines


def table_row(text: str, *first: str) -> list[str]:
    """The cells of the one markdown table row of ``text`` whose first cells are ``first``."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines()
            if line.startswith("|")]
    found = [r for r in rows if r[: len(first)] == list(first)]
    assert len(found) == 1, (first, found)
    return found[0]


def test_report_and_results(report):
    path, out, _ = report
    text = path.read_text()
    for heading in ("## Training budget", "## Table 1 analogue", "## Table 2", "## Table 3", "## Figure 9"):
        assert heading in text
    assert "baseline: flat" in text and "baseline: blurred" in text
    res = json.loads((out / "results.json").read_text())
    # the paper's numbers in the rows of ours: Table 1's PtyNet-S row (phase MSE at 50 %), Table 2's PtyNet-S at
    # 50 % overlap (phase PSNR), Table 3's phase after fine-tuning on noisy data (PSNR)
    t1 = res["table1"]["rows"]["ptynet-s"]
    assert table_row(text, "PtyNet-S", f"{t1['parameters']:,}")[3::5] == [f"{t1['phase_mse_50']:.4f}", "0.0852"]
    q2 = res["table2"]["models"]["ptynet-s"]["0.5"]["mean"]
    assert table_row(text, "PtyNet-S", "50%")[2:6] == [f"{q2['phase_psnr']:.2f}", f"{q2['phase_ssim']:.3f}",
                                                      f"{q2['phase_mse']:.4f}", "14.349"]
    q3 = res["table3"]["conditions"]["finetune_noise"]
    assert table_row(text, "phase", "finetune noise")[2::3] == [f"{q3['phase_psnr']:.2f}", "25.314"]
    t2 = res["table2"]["models"]
    for name in ("ptynet-s", "ptychonn", "ptychonet"):
        q = t2[name]["0.5"]["mean"]
        assert np.isfinite(q["phase_psnr"]) and 0 <= q["phase_ssim"] <= 1 and q["phase_mse"] >= 0
    assert res["table1"]["rows"]["ptynet-s"]["parameters"] == 324_452
    assert res["table1"]["rows"]["ptychonn"]["parameters"] == 1_247_074
    assert res["table1"]["rows"]["ptychonet"]["parameters"] == 5_510_850 and "| PtychoNet |" in text
    assert set(res["table3"]["conditions"]) == {"clear", "noise", "finetune_clear", "finetune_noise"}
    f9 = res["figure9"]["overlaps"]["0.5"]
    assert len(f9["reference_errors"]) == 2 and f9["target_error"] > 0
    assert res["models"]["ptychonn"]["training"]["steps"] == 1
    for fig in res["figures"]:
        assert (out / fig).stat().st_size > 1000 and (out / fig).suffix == ".png"
    assert {"figures/reconstructions.png", "figures/frc.png", "figures/convergence.png"} <= set(res["figures"])


def test_trained_models_are_reused(report, env):
    from ptyfast.evaluation.paper import train_model

    _, out, lines = report
    assert any("trained 1 steps" in str(line) for line in lines)
    again: list[str] = []
    s = train_model("ptychonn", out / "models" / "ptychonn", [], tiny_config(env[1]), {}, log=again.append)
    assert s["reused"] and "reusing" in again[0]


def test_split_prefers_the_named_held_out_faces(tmp_path):
    from ptyfast.evaluation.paper import split_images

    for i, name in enumerate(("cat_face_abs1.png", "cat_face_angle5.png", "cat_face_angle90.png",
                              "cat_face_angle91.png")):
        _png(tmp_path / name, i, 16)
    test, train, note = split_images(tmp_path)
    assert [p.name for p in test] == ["cat_face_angle90.png", "cat_face_angle91.png"]
    assert [p.name for p in train] == ["cat_face_abs1.png", "cat_face_angle5.png"] and "held out" in note


def _one_line(r, fragment):
    one_error_line(r, fragment)


def test_cli_missing_images_folder(tmp_path):
    _one_line(runner.invoke(app, ["paper", "--images", str(tmp_path / "nope"),
                                  "-o", str(tmp_path / "o")]), "does not exist")


def test_cli_empty_images_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    _one_line(runner.invoke(app, ["paper", "--images", str(tmp_path / "empty"),
                                  "-o", str(tmp_path / "o")]), "holds 0 image(s)")
    assert not (tmp_path / "o").exists()


def test_cli_no_images_option(tmp_path):
    _one_line(runner.invoke(app, ["paper", "-o", str(tmp_path / "o")]), "--images DIR")


def test_cli_bad_models(env, tmp_path):
    _one_line(runner.invoke(app, ["paper", "--images", str(env[0]), "--models", "resnet",
                                  "-o", str(tmp_path / "o")]), "--models must name")


def test_cli_bad_overlap(env, tmp_path):
    _one_line(runner.invoke(app, ["paper", "--images", str(env[0]), "--overlaps", "75",
                                  "-o", str(tmp_path / "o")]), "overlaps are fractions")


def test_cli_report_folder_is_not_the_image_folder(env):
    before = sorted(p.name for p in env[0].iterdir())
    _one_line(runner.invoke(app, ["paper", "--images", str(env[0]), "-o", str(env[0])]), "is the image folder")
    assert sorted(p.name for p in env[0].iterdir()) == before


def test_evaluate_protocol_points_to_the_paper_command(tmp_path):
    _one_line(runner.invoke(app, ["evaluate", "--protocol", "paper", "--images", str(tmp_path)]), "ptyfast paper")


def test_budgeted_training_calibrates_steps(env, tmp_path):
    """The real run's path: a short calibration sets the steps from the budget (at least the 6 timed ones)."""
    from ptyfast.evaluation.paper import train_model

    cfg = tiny_config(env[1], train_steps=None, budget_minutes=0.01)
    lines: list[str] = []
    s = train_model("ptychonn", tmp_path / "m", [], cfg, {"lr": 3e-4}, log=lines.append)
    assert s["steps"] == 6 and s["calibration"]["seconds_per_step"] > 0 and not s["reused"]
    assert (tmp_path / "m" / "best.pt").is_file() and not (tmp_path / "m" / "calibration").exists()
    assert any("s/step" in line for line in lines)


def test_release_check_scores_covered_pixels_and_passes_only_at_its_thresholds():
    """A small release check of the shipped model on the bundled held-out pair (224², 9 frames; 2 rPIE iterations
    from the network against 3 from a flat start). Measured: phase +1.59 dB and amplitude +8.68 dB over a flat
    guess, SSIM above it, the network start at the flat start's object error after 1 iteration; ``passes`` is
    False, the phase being below the release's +6 dB. The rows are scored on the covered pixels (weight ≥ 10 % of
    its maximum, 10,742 of the grid's 37,636), and the rPIE curves are those of the objects it returns."""
    from importlib import resources

    from ptyfast.evaluation.release import ReleaseOptions, check_one, iterations_to_reach, release_check
    from ptyfast.io.images import read_image
    from ptyfast.metrics import object_error, truth_on_grid
    from ptyfast.physics import default_probe
    from ptyfast.runtime.backends import open_backend

    assert iterations_to_reach(np.array([0.5, 0.2, 0.1]), 0.2) == 2 and iterations_to_reach(np.array([1.0]), 0.5) is None
    data = resources.files("ptyfast.data")
    pairs = [(read_image(data / "demo_amplitude.png"), read_image(data / "demo_phase.png"))]
    options = ReleaseOptions(size=224, nn_iterations=2, flat_iterations=3)
    res = release_check(None, pairs, options, backend="onnxruntime")
    s = res["summary"]
    assert s["phase_psnr_gain_over_flat_db"] > 1.3 and s["amplitude_psnr_gain_over_flat_db"] > 8.0, s
    assert s["phase_ssim_above_flat"] and s["amplitude_ssim_above_flat"], s
    assert s["rpie_network_iterations_to_flat_100_object_error"] == {"noise-free": [1], "noisy": [1]}, s
    assert s["passes"] is False and s["passes_with_fit_offsets"] is False, s  # everything but the +6 dB phase
    scan = res["scans"][0]
    assert scan["frames"] == 9 and set(scan["rpie"]) == {"noise-free", "noisy"}  # 3 × 3 windows on 224²
    assert {"network", "network, offsets not solved", "flat", "blurred"} <= set(res["mean"])
    assert len(scan["rpie"]["noise-free"]["flat_start"]) == 3 and len(scan["rpie"]["noisy"]["network_start"]) == 2

    # the same scan once more (the same seed), keeping what release_check drops: grid, region, objects
    backend, _ = open_backend(None, "onnxruntime", "cpu")
    with backend:
        one = check_one(backend, default_probe(), *pairs[0], options, np.random.default_rng(options.seed))
    rec, region = one["_rec"], one["_region"]
    truth = truth_on_grid(one["_truth"], rec.origin, rec.object.shape)
    covered = (rec.weight >= 0.1 * rec.weight.max()) & (np.abs(truth) > 0)
    assert np.array_equal(region, covered) and covered.sum() < 0.5 * covered.size
    assert one["pixels_compared"] == scan["pixels_compared"] == int(covered.sum())
    # every row on those pixels but the unsolved blend's, which is scored on its own weight map's covered pixels
    # (its windows are not cropped to the probe's support: 10,759 pixels against 10,742)
    shared = {name: row["pixels"] for name, row in one["rows"].items() if name != "network, offsets not solved"}
    assert len(shared) == 6 and set(shared.values()) == {covered.sum()}, shared
    assert abs(one["rows"]["network, offsets not solved"]["pixels"] - covered.sum()) < 0.005 * covered.sum()
    curves = one["rpie"]["noisy"]
    assert curves["flat_object_error_at_end"] == pytest.approx(
        object_error(one["_objects"]["flat + 3 rPIE"], truth, region), rel=1e-6)
    assert curves["network_start_object_error"][-1] == pytest.approx(
        object_error(one["_objects"]["network + 2 rPIE"], truth, region), rel=1e-6)
    assert curves["network_object_error_before"] == pytest.approx(
        object_error(one["_objects"][curves["network_start_from"]], truth, region), rel=1e-6)
    assert np.all(np.diff(curves["flat_start_object_error"]) < 0)  # rPIE lowers it at every iteration


def test_release_check_without_rpie_scores_the_network_and_says_it_did_not_check_figure9(tmp_path):
    from ptyfast.evaluation.release import ReleaseOptions, release_check

    rng = np.random.default_rng(0)
    pairs = [(rng.random((64, 64)), rng.random((64, 64)))]
    res = release_check(None, pairs, ReleaseOptions(size=224, rpie=False), backend="onnxruntime", figure_dir=tmp_path)
    assert res["scans"][0]["rpie"] == {} and "network" in res["mean"] and "network + 20 rPIE" not in res["mean"]
    assert res["summary"]["passes"] is None and res["summary"]["passes_with_fit_offsets"] is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["release_truth_vs_network.png"]
