"""Supervised training really learns (tiny CPU run), resumes, and runs under torchrun with 2 processes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ptyfast.errors import InputError  # noqa: E402
from ptyfast.models.checkpoint import load_checkpoint, read_checkpoint  # noqa: E402
from ptyfast.physics.probe import fresnel_probe  # noqa: E402
from ptyfast.training.data import DataOptions  # noqa: E402
from ptyfast.training.loss import learning_figures, lit_loss  # noqa: E402
from ptyfast.training.train import TrainOptions, train  # noqa: E402

PROBE = fresnel_probe((32, 32), pixel_size=1e-6 / 32, focus_size=150e-9, defocus=200e-6, photons=1e4)
#: A probe confined like the default one (90 % of its energy within 7.6 px of the 32² window).
CONFINED = fresnel_probe((32, 32), pixel_size=1e-6 / 128, focus_size=16e-9, defocus=14e-6, photons=1e4)


def tiny_options(**kw) -> TrainOptions:
    base = dict(model="ptynet-s", steps=80, batch=16, lr=2e-3, lr_min=2e-4, schedule="onecycle", val_every=40,
                val_size=64, seed=0, threads=2,
                data=DataOptions(object_size=72, pool_size=12, procedural_fraction=1.0))
    base.update(kw)
    return TrainOptions(**base)


def test_tiny_training_lowers_the_validation_loss(tmp_path):
    # Heads start at 0.5 / 0 rad (no bias initialisation), far from the data: training must close that gap.
    result = train([], tmp_path / "run", tiny_options(init_bias=False), probe=PROBE)
    history = result["history"]
    first, last = history[0][2], history[-1][2]
    assert history[0][0] == 0 and history[-1][0] == 80
    assert last < 0.6 * first, history
    model, manifest = load_checkpoint(tmp_path / "run" / "best.pt")
    assert manifest.architecture == "ptynet-s" and manifest.input_size == (32, 32)
    assert manifest.training["steps"] > 0 and manifest.training["best_val_loss"] <= last + 1e-9


def test_resume_continues_from_last_checkpoint(tmp_path):
    run = tmp_path / "run"
    train([], run, tiny_options(steps=40, schedule="cyclic", cycle_steps=20), probe=PROBE)
    assert read_checkpoint(run / "last.pt")["step"] == 40
    result = train([], run, tiny_options(steps=60, schedule="cyclic", cycle_steps=20), probe=PROBE, resume=True)
    ck = read_checkpoint(run / "last.pt")
    assert ck["step"] == 60 and result["steps"] == 60
    assert [h[0] for h in ck["history"]] == [0, 40, 60]


def test_ema_weights_are_validated_kept_and_resumed(tmp_path):
    run = tmp_path / "run"
    result = train([], run, tiny_options(steps=40, ema=0.9, schedule="cyclic", cycle_steps=20), probe=PROBE)
    ck = read_checkpoint(run / "last.pt")
    ema, raw = ck["ema_state_dict"], ck["state_dict"]
    assert result["ema"] == 0.9
    # the average lags the optimiser's weights, so they differ; best.pt holds averaged weights
    assert any(not torch.equal(ema[k], raw[k]) for k in raw if raw[k].is_floating_point())
    best = read_checkpoint(run / "best.pt")["state_dict"]
    if ck["best_val"] == ck["history"][-1][2]:  # the last validation was the best: best.pt is that average
        assert all(torch.equal(best[k], ema[k]) for k in ema)
    train([], run, tiny_options(steps=60, ema=0.9, schedule="cyclic", cycle_steps=20), probe=PROBE, resume=True)
    assert read_checkpoint(run / "last.pt")["step"] == 60
    plain = tmp_path / "plain"
    train([], plain, tiny_options(steps=20), probe=PROBE)
    with pytest.raises(InputError, match="without --ema"):
        train([], plain, tiny_options(steps=30, ema=0.9), probe=PROBE, resume=True)


@pytest.mark.slow
def test_torchrun_two_cpu_processes(tmp_path):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not on PATH")
    probe_file = tmp_path / "probe.npy"
    np.save(probe_file, PROBE)
    cmd = [torchrun, "--standalone", "--nproc-per-node", "2", "-m", "ptyfast", "train", "-o", str(tmp_path / "ddp"),
           "--steps", "10", "--batch", "4", "--val-every", "5", "--val-size", "16", "--object-size", "72",
           "--pool-size", "4", "--procedural", "1", "--probe", str(probe_file), "--threads", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    ck = read_checkpoint(tmp_path / "ddp" / "last.pt")
    assert ck["step"] == 10
    manifest = load_checkpoint(tmp_path / "ddp" / "best.pt")[1]
    assert manifest.training["processes"] == 2 and manifest.training["batch"] == 8


def test_cli_rejects_unreadable_image(tmp_path):
    bad = tmp_path / "x.png"
    bad.write_text("not an image")
    res = subprocess.run([sys.executable, "-m", "ptyfast", "train", str(bad), "-o", str(tmp_path / "r"), "--steps", "1"],
                         capture_output=True, text=True)
    assert res.returncode == 2
    assert "could not be read" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "r" / "best.pt").exists()


def test_cli_rejects_output_under_a_file(tmp_path):
    blocker = tmp_path / "f"
    blocker.write_text("x")
    res = subprocess.run([sys.executable, "-m", "ptyfast", "train", "-o", str(blocker / "run"), "--steps", "1"],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "cannot create output folder" in res.stderr and "Traceback" not in res.stderr


def test_cli_rejects_unknown_model(tmp_path):
    res = subprocess.run([sys.executable, "-m", "ptyfast", "train", "-o", str(tmp_path / "r"), "--model", "resnet"],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "unknown model 'resnet'" in res.stderr


def test_labels_are_the_patches_their_patterns_were_computed_from():
    """Every training pattern is recomputed from its label through the one forward model (window position,
    fftshift, amplitude/phase channel order, photon scaling, input normalisation)."""
    from ptyfast.physics import far_field
    from ptyfast.models.preprocess import preprocess
    from ptyfast.training.data import PatternSampler, build_pool

    opts = DataOptions(object_size=72, pool_size=4, procedural_fraction=1.0)
    pool = build_pool([], opts, np.random.default_rng(0))
    x, amp, pha, mask = PatternSampler(pool, CONFINED, opts, 3).sample(8)
    power = float(np.sum(np.abs(CONFINED) ** 2))
    intensity = np.abs(far_field(CONFINED[None] * (amp * np.exp(1j * pha)))) ** 2
    again = preprocess(intensity, preprocessing={"transform": "sqrt", "normalise": "photons"}, probe_power=power)
    np.testing.assert_allclose(again, x, rtol=1e-4, atol=1e-4)
    swapped = np.abs(far_field(CONFINED[None] * (pha * np.exp(1j * amp)))) ** 2
    assert not np.allclose(preprocess(swapped, preprocessing={"transform": "sqrt", "normalise": "photons"},
                                      probe_power=power), x, atol=1e-2)
    lit = np.abs(CONFINED) ** 2 >= 0.1 * np.max(np.abs(CONFINED) ** 2)
    assert mask.shape == amp.shape and np.array_equal(mask[0] > 0, lit)


def overfit_one_batch(model_name: str, object_size: int, samples: int, steps: int, check=None) -> dict:
    """Train ``model_name`` with the recipe on one fixed batch for ``steps`` Adam steps; its learning figures on
    that batch. ``check(model)`` runs after the heads are prepared."""
    from ptyfast.models import build_model
    from ptyfast.training.data import PatternSampler, build_pool
    from ptyfast.training.train import _loss, evaluate, init_weights, object_statistics, prepare_heads

    torch.manual_seed(0)
    torch.set_num_threads(2)
    opts = TrainOptions(model=model_name, data=DataOptions(object_size=object_size, pool_size=8,
                                                            procedural_fraction=1.0))
    pool = build_pool([], opts.data, np.random.default_rng(0))
    batch = PatternSampler(pool, CONFINED, opts.data, 1).sample(samples)
    model = build_model(model_name)
    init_weights(model)
    mean, std = object_statistics(pool)
    assert prepare_heads(model, mean, std, opts).startswith("standardised")
    if check is not None:
        check(model)
    model = model.to(memory_format=torch.channels_last)
    device = torch.device("cpu")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(steps):
        loss = _loss(model, batch, opts, device, std)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return evaluate(model, batch, opts, device, std)


def test_network_overfits_one_fixed_batch():
    """The standard sanity check of a recipe: 16 fixed samples are memorised (with the paper's full-window MSE
    on a confined probe PtyNet-S stayed at 1.01× its mean loss after 300 steps; this reaches ≈ 0.14 in 150)."""
    figures = overfit_one_batch("ptynet-s", 96, 16, 150)
    assert figures["relative"] < 0.3 and figures["struct"] < 0.3, figures


def test_learning_figures_flag_a_constant_and_ignore_unobservable_phase_offsets():
    rng = np.random.default_rng(0)
    amp = torch.from_numpy(rng.uniform(0.4, 1.0, (6, 16, 16)).astype(np.float32))
    pha = torch.from_numpy(rng.uniform(0.5, 1.5, (6, 16, 16)).astype(np.float32))
    mask = torch.zeros(6, 16, 16)
    mask[:, 4:12, 4:12] = 1
    std = (0.2, 0.3)
    const = (torch.full_like(amp, float(amp[mask > 0].mean())), torch.full_like(pha, float(pha[mask > 0].mean())))
    f = learning_figures(const, (amp, pha), mask, std, "lit")
    assert abs(f["relative"] - 1) < 1e-6 and abs(f["struct"] - 1) < 1e-6
    offsets = torch.from_numpy(rng.uniform(-1, 1, (6, 1, 1)).astype(np.float32))
    f = learning_figures((amp, pha + offsets), (amp, pha), mask, std, "lit")
    assert f["struct"] < 1e-6 and f["relative"] < 0.5
    outside = (amp + 5 * (1 - mask), pha - 5 * (1 - mask))  # errors where the probe does not light count nothing
    assert float(lit_loss(outside, (amp, pha), mask, std)) < 1e-10
    # phase_weight scales the phase channel only
    noisy = (amp + 0.1 * torch.randn_like(amp), pha + 0.1 * torch.randn_like(pha))
    amp_only = float(lit_loss((noisy[0], pha), (amp, pha), mask, std))
    pha_only = float(lit_loss((amp, noisy[1]), (amp, pha), mask, std))
    both = float(lit_loss(noisy, (amp, pha), mask, std, phase_weight=3.0))
    assert both == pytest.approx(amp_only + 3 * pha_only, rel=1e-5)


def test_train_warns_once_when_the_probe_is_not_oversampled(tmp_path):
    from ptyfast.physics.probe import paper_probe

    probe_file = tmp_path / "paper.npy"
    np.save(probe_file, paper_probe())
    res = subprocess.run([sys.executable, "-m", "ptyfast", "train", "-o", str(tmp_path / "r"), "--steps", "1",
                          "--batch", "2", "--val-size", "8", "--object-size", "160", "--pool-size", "2",
                          "--probe", str(probe_file), "--threads", "1"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    out = res.stdout + res.stderr
    assert out.count("not oversampled") == 1 and "Traceback" not in out


def test_init_from_starts_a_new_schedule_from_earlier_weights(tmp_path):
    first = train([], tmp_path / "a", tiny_options(steps=20, val_every=20, data=DataOptions(
        object_size=72, pool_size=4, procedural_fraction=1.0)), probe=CONFINED)
    later = train([], tmp_path / "b", tiny_options(steps=20, val_every=20, init_from=first["last"], data=DataOptions(
        object_size=72, pool_size=4, procedural_fraction=1.0)), probe=CONFINED)
    # the continued run starts where the first one ended, not from the untrained network
    assert later["history"][0][2] < first["history"][0][2]
    assert load_checkpoint(tmp_path / "b" / "best.pt")[1].training["init_from"] == "last.pt"
    with pytest.raises(Exception, match="does not hold 'ptychonn' weights"):
        train([], tmp_path / "c", tiny_options(model="ptychonn", steps=1, init_from=first["last"]), probe=CONFINED)
    # a run never writes over the weights it starts from
    before = (tmp_path / "a" / "last.pt").read_bytes()
    with pytest.raises(Exception, match="checkpoint this run writes over"):
        train([], tmp_path / "a", tiny_options(steps=1, init_from=first["last"]), probe=CONFINED)
    assert (tmp_path / "a" / "last.pt").read_bytes() == before


def test_cli_rejects_unknown_normalisation_before_any_work(tmp_path):
    res = subprocess.run([sys.executable, "-m", "ptyfast", "train", "-o", str(tmp_path / "r"), "--normalise", "l2"],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "unknown input normalisation (--normalise) 'l2'; choose photons, max, std or none" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("steps", [1, 2, 3, 4, 5, 50])
def test_onecycle_schedule_accepts_short_runs(steps):
    """Short runs (a smoke test, a few fine-tuning steps) got a ZeroDivisionError from OneCycleLR when the
    warm-up rounded to one step; every length now trains at rates within (0, lr]."""
    import torch

    from ptyfast.training.train import TrainOptions, _make_scheduler

    model = torch.nn.Linear(2, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = _make_scheduler(opt, TrainOptions(steps=steps, warmup=0.02))
    rates = []
    for _ in range(steps):
        opt.step()
        sched.step()
        rates.append(sched.get_last_lr()[0])
    assert all(0 < r <= 1e-3 * (1 + 1e-9) for r in rates)


@pytest.mark.parametrize("args, fragment", [
    (["--amp", "fp8"], "unknown --amp mode 'fp8'; choose bf16 or none"),
    (["--ema", "1.0"], "--ema must be in [0, 1)"),
    (["--normalise", "foo"], "unknown input normalisation (--normalise) 'foo'"),
    (["--photons", "5:1"], "--photons must be LO:HI with 0 < LO ≤ HI"),
    (["--schedule", "x"], "unknown schedule 'x'; choose onecycle or cyclic"),
    (["--loss", "y"], "unknown loss 'y'"),
    (["--model", "nope"], "unknown model 'nope'"),
    (["--simulate", "gpu"], "unknown --simulate choice 'gpu'; choose auto, numpy or torch"),
    (["--labels", "ref.h5", "--simulate", "torch"], "--simulate torch does not apply with --labels"),
])
def test_train_options_are_validated_before_anything_is_written(tmp_path, args, fragment):
    from cli_helpers import app, one_error_line, runner

    res = runner.invoke(app, ["train", "-o", str(tmp_path / "run"), "--steps", "1", *args])
    one_error_line(res, fragment)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("normalise, transform", [("photons", "sqrt"), ("max", "sqrt"), ("std", "log1p"),
                                                  ("none", "quarter")])
def test_torch_simulator_renders_the_numpy_samplers_batches(normalise, transform):
    """The same draws rendered in torch (gather, forward model, photon scaling, preprocessing) equal numpy's."""
    from ptyfast.training.data import PatternSampler, build_pool
    from ptyfast.training.torch_data import TorchPatternSampler

    opts = DataOptions(object_size=72, pool_size=4, procedural_fraction=1.0, normalise=normalise, transform=transform,
                       clean_photons=(1e3, 1e7)).validate()
    pool = build_pool([], opts, np.random.default_rng(0))
    want = PatternSampler(pool, CONFINED, opts, 3).sample(8)
    got = TorchPatternSampler(pool, CONFINED, opts, 3, "cpu").sample(8)
    for name, w, g in zip(("x", "amplitude", "phase", "mask"), want, got):
        assert torch.is_tensor(g) and g.shape == w.shape, name
        np.testing.assert_allclose(g.numpy(), w, rtol=1e-4, atol=1e-4 * float(np.max(np.abs(w))), err_msg=name)


def test_torch_simulator_draws_photon_counts():
    """Noisy samples are Poisson counts: input² × mean intensity is an integer, and differs from the clean one."""
    from ptyfast.training.data import build_pool
    from ptyfast.training.torch_data import TorchPatternSampler

    opts = DataOptions(object_size=72, pool_size=4, procedural_fraction=1.0, noise_fraction=1.0, photons=(1e4, 1e4))
    pool = build_pool([], opts, np.random.default_rng(0))
    sampler = TorchPatternSampler(pool, CONFINED, opts, 5, "cpu")
    x, amp = (t.numpy().astype(np.float64) for t in sampler.sample(8)[:2])
    counts = x[:, 0] ** 2 * 1e4 / amp[0].size
    assert np.abs(counts - np.round(counts)).max() < 1e-2
    # Parseval: the expected photons per frame are 10⁴ · Σ|P·O|² / Σ|P|²; Poisson spread ≈ 1 %.
    power = np.abs(CONFINED) ** 2
    expected = 1e4 * (power * amp**2).sum(axis=(1, 2)) / power.sum()
    np.testing.assert_allclose(counts.sum(axis=(1, 2)), expected, rtol=0.06)


def test_train_on_the_torch_simulator_records_it(tmp_path):
    result = train([], tmp_path / "run", tiny_options(steps=4, val_every=2, simulate="torch"), probe=CONFINED)
    assert result["simulator"] == "torch (cpu)"
    assert train([], tmp_path / "np", tiny_options(steps=2, val_every=2), probe=CONFINED)["simulator"] == "numpy"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the torch simulator's device path)")
def test_torch_simulator_on_the_gpu_matches_the_cpu():
    from ptyfast.training.data import build_pool
    from ptyfast.training.torch_data import TorchPatternSampler

    opts = DataOptions(object_size=72, pool_size=4, procedural_fraction=1.0)
    pool = build_pool([], opts, np.random.default_rng(0))
    cpu = TorchPatternSampler(pool, CONFINED, opts, 3, "cpu").sample(8)
    gpu = TorchPatternSampler(pool, CONFINED, opts, 3, "cuda").sample(8)
    for c, g in zip(cpu, gpu):
        np.testing.assert_allclose(g.cpu().numpy(), c.numpy(), rtol=1e-4, atol=1e-4)


def test_ptychonn_with_the_recipe_overfits_one_fixed_batch():
    """The baseline gets the same recipe (BatchNorm, standardised heads, both decoders' last layers zeroed) and
    memorises a fixed batch, as PtyNet-S does."""
    def zeroed(model):
        assert all(float(m.weight.detach().abs().max()) == 0 for m in (model.amplitude[-1], model.phase[-1]))

    figures = overfit_one_batch("ptychonn-recipe", 72, 8, 60, zeroed)
    assert figures["relative"] < 0.5 and figures["struct"] < 0.5, figures
