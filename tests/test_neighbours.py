"""Neighbour-conditioned data and network (ptyfast.training.neighbours): shapes, step-0 equality with the shipped
probe-est model, registration of the neighbours' channels, determinism, and the scan helper on a raster."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ptyfast.physics.probe import default_probe  # noqa: E402
from ptyfast.training.data import DataOptions, build_pool  # noqa: E402
from ptyfast.training.neighbours import (K, NeighbourDraw, NeighbourSampler, choose_neighbours,  # noqa: E402
                                         draw_offsets, neighbours_from_shipped, scan_neighbour_channels, sector_of,
                                         translate)


def _options(**kw):
    base = dict(pool_size=3, procedural_fraction=1.0, sample_like=True, noise_fraction=0.5, photons=(1e4, 1e8),
                family_probes=4)
    return DataOptions(**{**base, **kw})


@pytest.fixture(scope="module")
def pool():
    return build_pool([], _options(), np.random.default_rng(0))


def test_shapes_and_centre_only(pool):
    s = NeighbourSampler(pool, default_probe(), _options(), 3)
    x, amp, pha, mask = s.sample(4)
    assert x.shape == (4, 5 + 3 * K, 128, 128) and x.dtype == np.float32 and s.channels == 17
    assert amp.shape == pha.shape == mask.shape == (4, 128, 128)
    c = NeighbourSampler(pool, default_probe(), _options(), 3, centre_only=True)
    xc, ampc, phac, maskc = c.sample(4)
    assert xc.shape == (4, 5, 128, 128) and c.channels == 5
    # the same random stream: identical centre data with and without neighbours (the ablation's equal data)
    np.testing.assert_array_equal(xc, x[:, :5])
    np.testing.assert_array_equal(ampc, amp)
    np.testing.assert_array_equal(phac, pha)
    model = neighbours_from_shipped()
    a, p = model(torch.from_numpy(x[:2]))
    assert a.shape == p.shape == (2, 128, 128)


def test_offsets_like_a_scan():
    d = draw_offsets(2000, np.random.default_rng(1))
    step = np.hypot(*np.moveaxis(d, -1, 0))
    assert d.shape == (2000, K, 2)
    assert step.min() > 20 - 2 * np.sqrt(2) and step.max() < 44 + 2 * np.sqrt(2) and np.abs(d).max() <= 46
    assert (sector_of(d) == np.arange(K)).mean() > 0.95  # slot q lies in sector q up to the jitter
    assert list(sector_of(np.array([[0.0, 1.0], [1.0, 0.0], [0.0, -1.0], [-1.0, 0.0]]))) == [0, 1, 2, 3]


def test_step0_equals_shipped(pool):
    from ptyfast.models.checkpoint import read_checkpoint
    from ptyfast.models.ptynet_s import PtyNetSProbeEstimate
    from ptyfast.training.neighbours import shipped_probe_est_path

    x = torch.from_numpy(NeighbourSampler(pool, default_probe(), _options(), 5).sample(4)[0])
    assert float(x[:, 5:].abs().max()) > 0  # the neighbour channels are not empty, yet ignored at step 0
    shipped = PtyNetSProbeEstimate()
    shipped.load_state_dict(read_checkpoint(shipped_probe_est_path())["state_dict"])
    wide = neighbours_from_shipped()
    with torch.no_grad():
        for train in (False, True):  # eval (running statistics) and train (batch statistics) mode
            shipped.train(train)
            wide.train(train)
            for a, b in zip(wide(x), shipped(x[:, :5])):
                assert float((a - b).abs().max()) < 1e-5


def test_translate_direction():
    ch = np.random.default_rng(2).normal(size=(2, 3, 128, 128)).astype(np.float32)
    out = translate(ch, np.array([[0, 32], [-5, 0]]))
    np.testing.assert_array_equal(out[0, :, :, 32:], ch[0, :, :, :-32])
    assert not out[0, :, :, :32].any()
    np.testing.assert_array_equal(out[1, :, :-5], ch[1, :, 5:])
    assert not out[1, :, -5:].any()
    assert not translate(ch, np.array([[0, 128], [200, 0]])).any()


def test_sampler_registration(pool):
    """A neighbour at offset (0, +32): its probe footprint and estimate appear 32 columns to the right, zero in
    the 32 columns its window does not cover; its estimate is that of a window rendered at p + (0, 32)."""
    from ptyfast.training.data import Draw, PatternSampler

    s = NeighbourSampler(pool, default_probe(), _options(family_probes=0, noise_fraction=0.0), 7)
    d = s.draw(1)
    d.offsets = np.array([[[0.0, 32.0], [32.0, 0.0], [0.0, -32.0], [-32.0, 0.0]]])
    x = s.render(d)[0]
    probe = default_probe()
    unit = np.abs(probe) / np.abs(probe).max()
    np.testing.assert_allclose(x[0, 7, :, 32:], unit[:, :-32], atol=1e-6)
    assert not x[0, 5:8, :, :32].any()
    np.testing.assert_allclose(x[0, 10, 32:], unit[:-32], atol=1e-6)  # neighbour 1: 32 rows down
    # neighbour 0's estimate = the estimate of a window rendered on its own at p + (0, 32), moved by 32 columns
    own = PatternSampler.render(s, Draw(d.probe, d.objects, d.positions + [[0.0, 32.0]], d.photons, d.noisy,
                                        d.power))[0]
    np.testing.assert_allclose(x[0, 5:7, :, 32:], own[0, 3:5, :, :-32], rtol=1e-5, atol=1e-6)


def test_sampler_determinism(pool):
    a = NeighbourSampler(pool, default_probe(), _options(), 11).sample(3)
    b = NeighbourSampler(pool, default_probe(), _options(), 11).sample(3)
    c = NeighbourSampler(pool, default_probe(), _options(), 12).sample(3)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a[0], c[0])


def test_scan_helper_on_raster():
    """On a small noise-free raster, each interior frame's neighbours are its four raster neighbours (right, down,
    left, up) and their channels equal what the sampler renders for the same geometry."""
    from ptyfast.physics import fresnel_probe, random_object
    from ptyfast.physics.forward import forward_intensity

    rng = np.random.default_rng(3)
    probe = fresnel_probe((64, 64), pixel_size=1e-6 / 64, photons=1e4)
    obj = random_object((220, 220), rng)
    ys, xs = np.meshgrid(np.arange(0, 150, 20.0), np.arange(0, 150, 20.0), indexing="ij")
    pos = np.stack([ys.ravel(), xs.ravel()], axis=1) + rng.uniform(-0.4, 0.4, size=(ys.size, 2))
    inten = forward_intensity(probe, obj, pos)
    chosen = choose_neighbours(pos)
    cols = ys.shape[1]
    i = 3 * cols + 3  # an interior frame
    assert list(chosen[i]) == [i + 1, i + cols, i - 1, i - cols]
    assert (chosen >= 0).all() and (chosen != np.arange(len(pos))[:, None]).all()
    ch = scan_neighbour_channels(pos, inten, probe, indices=np.array([i, 0]))
    assert ch.shape == (2, 3 * K, 64, 64)
    # the sampler's channels for frame i with the raster's offsets (noise-free, the probe's own photons)
    s = NeighbourSampler([obj], probe, DataOptions(pool_size=1, noise_fraction=0.0), 0)
    power = np.array([float(np.sum(np.abs(probe) ** 2))])
    d = NeighbourDraw(np.array([0]), np.array([0]), pos[i : i + 1], power, np.array([False]), power,
                      offsets=(pos[chosen[i]] - pos[i])[None], noise_seed=0)
    x = s.render(d)[0]
    np.testing.assert_allclose(ch[0], x[0, 5:], rtol=1e-4, atol=1e-4 * float(np.abs(x[0, 5:]).max()))
    # frame 0 (a corner): its right and down neighbours are real raster neighbours, shifted by ≈ 20 px
    assert chosen[0, 0] == 1 and chosen[0, 1] == cols
    assert not ch[1, 2, :, :19].any() and ch[1, 2, :, 21:].any()
