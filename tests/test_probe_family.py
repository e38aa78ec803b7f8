"""The probe family, probe-conditioned inputs and models, and how reconstruct gives a model its probe."""

from __future__ import annotations

import subprocess
import sys

import h5py
import numpy as np
import pytest

from cli_helpers import one_error_line
from ptyfast.errors import InputError
from ptyfast.models.preprocess import estimate_channels, input_channels, preprocess, probe_channels
from ptyfast.physics import default_probe, far_field, paper_probe
from ptyfast.physics.probe import energy_radius, lit_mask
from ptyfast.physics.probe_family import (HELD_OUT_KINDS, MAX_RADIUS_FRACTION, ProbeDraw, family_probe,
                                          family_problem, held_out_probe, probe_bank)

PREP = {"transform": "sqrt", "normalise": "photons"}


def run(*args):
    return subprocess.run([sys.executable, "-m", "ptyfast", *map(str, args)], capture_output=True, text=True)


def test_family_members_are_confined_varied_and_reproducible():
    modes, draws = probe_bank(24, 5)
    again, _ = probe_bank(24, 5)
    np.testing.assert_array_equal(modes, again)
    radii = [energy_radius(m) for m in modes[:, 0]]
    assert max(radii) <= MAX_RADIUS_FRACTION * 128 and min(radii) >= 5 and np.ptp(radii) > 8
    assert all(family_problem(m) == "" for m in modes[:, 0])
    total = np.sum(np.abs(modes) ** 2, axis=(1, 2, 3))
    np.testing.assert_allclose(total, 1e6, rtol=1e-4)  # the modes share the photons
    assert {d.side for d in draws} == {-1, 1} and any(d.stop for d in draws) and any(d.second_mode for d in draws)
    assert any(d.astigmatism for d in draws) and any(d.coma for d in draws)


def test_the_two_sides_of_focus_share_the_intensity_but_not_the_phase():
    down, _ = family_probe((128, 128), ProbeDraw(radius=20, spot=2, side=1))
    up, _ = family_probe((128, 128), ProbeDraw(radius=20, spot=2, side=-1))
    np.testing.assert_allclose(np.abs(down), np.abs(up), atol=1e-3 * np.abs(down).max())
    lit = lit_mask(down)
    assert np.abs(np.angle(down * np.conj(up))[lit]).mean() > 0.5


def test_held_out_probes_are_of_their_kind_and_inside_the_family():
    for kind in HELD_OUT_KINDS:
        p = held_out_probe(kind, 0)
        assert p.shape == (128, 128) and family_problem(p) == ""
        np.testing.assert_array_equal(p, held_out_probe(kind, 0))
        assert not np.array_equal(p, held_out_probe(kind, 1))
    with pytest.raises(InputError, match="unknown held-out probe kind"):
        held_out_probe("donut", 0)


@pytest.mark.parametrize("probe, fragment", [
    (np.zeros((64, 64), np.complex64), "window is 128×128"),
    (np.full((128, 128), np.nan, np.complex64), "NaN"),
    (np.zeros((128, 128), np.complex64), "all zeros"),
    (None, "not confined"),  # the seed paper's probe fills the window
])
def test_probes_outside_the_family_are_named_in_one_sentence(probe, fragment):
    probe = paper_probe() if probe is None else probe
    problem = family_problem(probe, (128, 128))
    assert fragment in problem and problem.count(". ") == 0


def test_probe_channels_ignore_the_probes_scale_and_global_phase():
    p = default_probe()
    ch = probe_channels(p)
    assert ch.shape == (2, 128, 128) and ch.dtype == np.float32
    np.testing.assert_allclose(probe_channels(3.7 * p * np.exp(1.1j)), ch, atol=1e-5)
    assert np.isclose(np.hypot(*ch).max(), 1.0)


def test_the_physics_estimate_of_a_flat_object_is_flat_where_the_probe_lights():
    """√I with the probe's own far-field phase, propagated back and divided by the probe, is the object itself
    when the object is 1 (noise-free): the channel carries the probe's physics, not a learned guess."""
    p = held_out_probe("aberrated", 0)
    intensity = np.abs(far_field(p[None])) ** 2
    est = estimate_channels(intensity, p, [float(np.sum(np.abs(p) ** 2))])[0]
    lit = lit_mask(p)
    np.testing.assert_allclose(est[0][lit], 1.0, atol=0.1)
    np.testing.assert_allclose(est[1][lit], 0.0, atol=0.1)


def test_conditioned_preprocessing_adds_the_probe_channels_and_keeps_the_pattern_channel():
    p = default_probe()
    frames = np.abs(far_field(p[None] * np.exp(0.3j * np.random.default_rng(0).random((3, 128, 128))))) ** 2
    plain = preprocess(frames, preprocessing=PREP, probe_power=1e6)
    for kind, channels in (("probe", 3), ("probe+estimate", 5)):
        x = preprocess(frames, preprocessing=PREP, probe_power=1e6, probe=p, conditioning=kind)
        assert x.shape == (3, channels, 128, 128)
        np.testing.assert_array_equal(x[:, :1], plain)
        np.testing.assert_array_equal(x[1, 1:3], probe_channels(p))
    with pytest.raises(InputError, match="needs the scan's probe"):
        preprocess(frames, preprocessing=PREP, probe_power=1e6, conditioning="probe")
    assert input_channels(type("M", (), {"conditioning": "probe+estimate"})) == 5
    with pytest.raises(InputError, match="upgrade ptyfast"):
        input_channels(type("M", (), {"conditioning": "telepathy"}))


def test_family_sampler_draws_a_probe_per_sample_and_its_patterns_follow_from_the_labels():
    """Each sample's pattern is recomputed from its label and its own probe's modes (a partially coherent
    member's intensities add), and its input carries that probe."""
    from ptyfast.training.data import DataOptions, PatternSampler, build_pool

    opts = DataOptions(object_size=160, pool_size=4, procedural_fraction=1.0, family_probes=12,
                       given_probe_share=0.25, conditioning="probe+estimate")
    pool = build_pool([], opts, np.random.default_rng(0))
    sampler = PatternSampler(pool, default_probe(), opts, 3)
    d = sampler.draw(16)
    assert len(set(d.probe.tolist())) > 4
    x, amp, pha, mask = sampler.render(d)
    modes = sampler.modes[d.probe]
    obj = amp * np.exp(1j * pha)
    intensity = sum(np.abs(far_field(modes[:, k] * obj)) ** 2 for k in range(2))
    again = preprocess(intensity, preprocessing=PREP, probe_power=d.power, probe=modes[:, 0],
                       conditioning="probe+estimate")
    np.testing.assert_allclose(again, x, rtol=1e-3, atol=1e-3)
    assert np.array_equal(mask[0] > 0, sampler.lit[d.probe[0]])


def test_torch_twin_of_the_conditioning_channels():
    torch = pytest.importorskip("torch")
    from ptyfast.training.torch_data import condition_tensor

    probes = np.stack([held_out_probe(k, 0) for k in HELD_OUT_KINDS])
    obj = np.exp(0.4j * np.random.default_rng(1).random((3, 128, 128))).astype(np.complex64)
    intensity = (np.abs(far_field(probes * obj)) ** 2).astype(np.float32)
    photons = np.full(3, 1e6)
    want = preprocess(intensity, preprocessing=PREP, probe_power=photons, probe=probes, conditioning="probe+estimate")
    got = condition_tensor(torch.from_numpy(intensity), torch.from_numpy(probes), torch.from_numpy(photons),
                           "probe+estimate")
    np.testing.assert_allclose(got.numpy(), want[:, 1:], atol=2e-3)


def test_a_conditioned_model_started_from_an_unconditioned_one_computes_what_it_did():
    torch = pytest.importorskip("torch")
    from ptyfast.models import build_model
    from ptyfast.training.train import widen_input

    torch.manual_seed(0)
    old, new = build_model("ptynet-s").eval(), build_model("ptynet-s-probe-est").eval()
    new.load_state_dict(widen_input(old.state_dict(), new))
    x = torch.rand(2, 5, 128, 128)
    with torch.no_grad():
        for a, b in zip(old(x[:, :1]), new(x)):
            torch.testing.assert_close(a, b)


@pytest.fixture(scope="module")
def conditioned(tmp_path_factory):
    """A random-weight probe-conditioned checkpoint, a scan under a held-out probe, and probe files."""
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from model_helpers import random_checkpoint
    from ptyfast.io import write_cxi
    from ptyfast.physics import random_object, raster_positions
    from ptyfast.physics.simulate import simulate_scan

    d = tmp_path_factory.mktemp("conditioned")
    model, _, _ = random_checkpoint(d / "m.pt", "ptynet-s-probe-est", probe=default_probe(), preprocessing=PREP,
                                    conditioning="probe+estimate", phase_offsets="free", amplitude_range=(0.0, 2.0),
                                    probe_family={"kind": "test"})
    rng = np.random.default_rng(0)
    probe = held_out_probe("central-stop", 1)
    obj = random_object((224, 224), rng)
    scan = simulate_scan(obj, probe, raster_positions(obj.shape, probe.shape, overlap=0.75, rng=rng), photons=1e6,
                         rng=rng)
    wide = simulate_scan(obj, paper_probe(), scan.positions, photons=1e6, rng=rng)
    files = {"scan": write_cxi(d / "scan.cxi", scan), "wide": write_cxi(d / "wide.cxi", wide), "dir": d}
    np.save(d / "probe.npy", probe)
    np.save(d / "small.npy", probe[:64, :64])
    np.save(d / "nan.npy", np.full((128, 128), np.nan, np.complex64))
    with h5py.File(d / "noprobe.h5", "w") as f:
        f.create_dataset("object", data=np.ones((8, 8), np.complex64))
    return model, files


def test_reconstruct_accepts_any_family_probe_without_flags(conditioned):
    model, f = conditioned
    res = run("reconstruct", f["scan"], "--model", model, "-o", f["dir"] / "out.h5", "--no-png")
    assert res.returncode == 0, res.stderr
    with h5py.File(f["dir"] / "out.h5") as h:
        assert np.all(np.isfinite(h["object"][()]))
    assert "inside the model's probe family" in res.stdout


def test_reconstruct_takes_the_probe_from_a_file_or_a_ptyfast_output(conditioned):
    model, f = conditioned
    res = run("reconstruct", f["scan"], "--model", model, "--probe", f["dir"] / "probe.npy", "-o",
              f["dir"] / "given.h5", "--no-png")
    assert res.returncode == 0 and "the probe of probe.npy" in res.stdout, res.stderr
    res = run("reconstruct", f["scan"], "--model", model, "--probe", f["dir"] / "given.h5", "-o",
              f["dir"] / "again.h5", "--no-png")  # a ptyfast output holds its probe at /probe
    assert res.returncode == 0 and "the probe of given.h5" in res.stdout, res.stderr


def test_a_probe_in_another_power_convention_is_scaled_to_the_data(conditioned):
    """A unit-norm probe (other codes' convention) would feed the network patterns 10⁶ times too bright: it is
    scaled to the data's photons per frame and said so; a probe within the plausible range is used as given."""
    from ptyfast.models.probe_choice import PROBE_POWER_RANGE

    model, f = conditioned
    probe = np.load(f["dir"] / "probe.npy")
    np.save(f["dir"] / "unit.npy", probe / np.linalg.norm(probe))
    outs = {}
    for name in ("unit.npy", "probe.npy"):
        res = run("reconstruct", f["scan"], "--model", model, "--probe", f["dir"] / name, "-o",
                  f["dir"] / f"power-{name}.h5", "--no-png")
        assert res.returncode == 0, res.stderr
        outs[name] = res.stdout
        with h5py.File(f["dir"] / f"power-{name}.h5") as h:
            power = float(np.sum(np.abs(h["probe"][()]) ** 2))
        with h5py.File(f["scan"]) as h:
            photons = float(np.mean(np.sum(h["entry_1/data_1/data"][()], axis=(1, 2))))
        assert PROBE_POWER_RANGE[0] <= power / photons <= PROBE_POWER_RANGE[1], (name, power, photons)
    assert "scaled to the data" in " ".join(outs["unit.npy"].split())
    assert "scaled to the data" not in " ".join(outs["probe.npy"].split())
    with h5py.File(f["dir"] / "power-unit.npy.h5") as a, h5py.File(f["dir"] / "power-probe.npy.h5") as b:
        np.testing.assert_allclose(a["object"][()], b["object"][()], rtol=0, atol=2e-2 * np.abs(b["object"][()]).max())


@pytest.mark.parametrize("case, fragment", [
    ("wide", "not confined"),
    ("small.npy", "window is 128×128"),
    ("nan.npy", "NaN"),
    ("noprobe.h5", "has no probe dataset"),
    ("missing.npy", "does not exist"),
])
def test_probes_a_conditioned_model_cannot_use_are_one_sentence_and_write_nothing(conditioned, case, fragment):
    model, f = conditioned
    out = f["dir"] / f"refused-{case}.h5"
    args = [f["wide"]] if case == "wide" else [f["scan"], "--probe", f["dir"] / case]
    res = run("reconstruct", *args, "--model", model, "-o", out, "--no-png")
    one_error_line(res, fragment)
    assert not out.exists()


def test_reconstruct_will_not_write_over_its_probe_file(conditioned):
    model, f = conditioned
    target = f["dir"] / "probe_copy.npy"
    target.write_bytes((f["dir"] / "probe.npy").read_bytes())
    before = target.read_bytes()
    one_error_line(run("reconstruct", f["scan"], "--model", model, "--probe", target, "-o", target, "--no-png"))
    assert target.read_bytes() == before
