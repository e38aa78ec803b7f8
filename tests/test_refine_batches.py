"""Disjoint batches (``refine --batching disjoint``): every position once per pass, no two windows of a batch
overlapping on the probe, a batch step equal to the same positions updated one after another, the sequential
algorithm's convergence, and the CLI option (library and command line, bad input)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from ptyfast.physics import random_object, raster_positions
from ptyfast.physics.simulate import simulate_scan
from ptyfast.refine import refine
from ptyfast.refine.batches import DisjointBatches, RandomBatches, probe_support
from ptyfast.refine.engines import make_engine
from cli_helpers import invoke, one_error_line


def disc_probe(size: int = 64, radius: float = 14.0, photons: float = 1e6) -> np.ndarray:
    """A probe exactly zero outside a disc (a curved phase inside), so that 'no overlap on the support' is exact."""
    y, x = np.mgrid[:size, :size] - (size - 1) / 2
    r2 = y**2 + x**2
    p = np.where(r2 <= radius**2, np.exp(1j * r2 / 60.0), 0).astype(np.complex64)
    return (p * np.sqrt(photons / np.sum(np.abs(p) ** 2))).astype(np.complex64)


@pytest.fixture(scope="module")
def scan():
    probe = disc_probe()
    obj = random_object((200, 200), 4)
    pos = raster_positions(obj.shape, probe.shape, overlap=0.8, jitter=1.0, rng=5)
    return simulate_scan(obj, probe, pos, rng=6)


def test_batches_cover_every_position_once_without_overlaps(scan):
    h, w = probe_support(scan.probe)
    assert (h, w) == (28, 28)
    batcher = DisjointBatches(scan.positions, (h, w))
    rng = np.random.default_rng(0)
    for _ in range(3):
        groups = batcher.batches(rng)
        assert np.array_equal(np.sort(np.concatenate(groups)), np.arange(scan.n_frames))
        for g in groups:
            d = np.abs(scan.positions[g][:, None] - scan.positions[g][None])
            clash = (d[..., 0] < h) & (d[..., 1] < w) & ~np.eye(len(g), dtype=bool)
            assert not clash.any()
        assert len(groups) < scan.n_frames / 4  # real batching: 121 windows at a 12.8 px step in a few groups
    capped = DisjointBatches(scan.positions, (h, w), cap=3).batches(rng)
    assert max(map(len, capped)) <= 3 and sum(map(len, capped)) == scan.n_frames
    # windows farther apart than the support never clash: one batch
    assert len(DisjointBatches(np.array([[0.0, 0.0], [0.0, 30.0], [30.0, 0.0]]), (28, 28)).batches(rng)) == 1
    assert [len(b) for b in RandomBatches(10, 4).batches(rng)] == [4, 4, 2]


def test_a_disjoint_batch_step_equals_its_positions_one_after_another(scan):
    groups = DisjointBatches(scan.positions, probe_support(scan.probe)).batches(np.random.default_rng(1))
    group = max(groups, key=len)
    assert len(group) >= 3
    engines = []
    for _ in range(3):
        obj = np.ones((200, 200), np.complex64)
        engines.append(make_engine("rpie", obj, scan.probe.copy(), scan.positions, np.array(scan.diffraction,
                                   np.float32), None, 0.1, 0.1, np))
    on_region, apart, one_by_one = engines
    apart.disjoint = True  # what refine(batching="disjoint") sets
    apart.apart_ratio = 0.0  # each window's step on its own footprint (large objects), not on a bounding region
    on_region.step(group, update_probe=False)
    apart.step(group, update_probe=False)
    for i in group:
        one_by_one.step(np.array([i]), update_probe=False)
    moved = np.abs(one_by_one.obj - 1).max()
    assert moved > 0.05
    assert not np.allclose(scan.positions[group], np.round(scan.positions[group]))  # sub-pixel footprints
    np.testing.assert_allclose(on_region.obj, one_by_one.obj, atol=1e-5 * moved)
    np.testing.assert_allclose(apart.obj, one_by_one.obj, atol=1e-5 * moved)


def test_disjoint_batching_converges_like_sequential(scan):
    seq = refine(scan, init="flat", iterations=15, update_probe=False)
    dis = refine(scan, init="flat", iterations=15, update_probe=False, batching="disjoint")
    rnd = refine(scan, init="flat", iterations=15, update_probe=False, batch=scan.n_frames)
    assert dis.options["batching"] == "disjoint" and dis.options["batch"] is None
    # measured (121 frames): 15 iterations end at 3.02e-5 sequential, 3.03e-5 disjoint, 7.38e-5 with every
    # position in one random batch (overlapping steps averaged)
    assert dis.errors[-1] < 1.15 * seq.errors[-1]
    assert dis.errors[-1] < 0.6 * rnd.errors[-1]


def test_cli_batching(tmp_path, scan):
    from ptyfast.io.cxi_write import write_cxi

    path = tmp_path / "scan.cxi"
    write_cxi(path, scan)
    out = tmp_path / "r.h5"
    res = invoke("refine", str(path), "-n", "3", "--batching", "disjoint", "-o", str(out), "--no-png")
    assert res.exit_code == 0, res.output
    with h5py.File(out) as f:
        assert out.exists() and np.isfinite(f["object"][()]).all()
    bad = invoke("refine", str(path), "-n", "3", "--batching", "spread", "-o", str(tmp_path / "x.h5"))
    one_error_line(bad, "batching")
    assert not (tmp_path / "x.h5").exists()
