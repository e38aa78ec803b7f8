"""reconstruct on Dask (the ``cluster`` extra): a real LocalCluster of worker processes, real worker deaths
(SIGKILL), a real unreachable address. The single-process result is the reference throughout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import h5py
import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("distributed", reason="Dask is not installed (pip install 'ptyfast[cluster]')")

from distributed import Client, LocalCluster  # noqa: E402

from ptyfast.io.cxi import read_cxi, write_cxi  # noqa: E402
from ptyfast.physics.simulate import random_scan  # noqa: E402
from ptyfast.runtime.reconstruct import ReconstructJob, run_reconstruct  # noqa: E402
from cli_helpers import one_error_line  # noqa: E402

TOL = 1e-5  # of the object's amplitude (the figure)


def run(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "ptyfast", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def _scan(path, size, seed):
    return write_cxi(path, random_scan(size, seed, meta={"source": str(path)}))


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    d = tmp_path_factory.mktemp("dask")
    return [_scan(d / "a.cxi", 420, 0), _scan(d / "b.cxi", 260, 1)]  # 100 and 25 frames


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as c:
        yield c


def _read(out):
    with h5py.File(out, "r") as f:
        return f["object"][()], json.loads(f.attrs["provenance"])


def _same(a, b):
    """Equal amplitude (to TOL of its maximum) and equal phase (to 1e-5 rad, no offset removed; measured 2e-7 rad
    here at most) wherever the object is lit (amplitude ≥ 10 % of its maximum: the phase of the unlit grid
    means nothing)."""
    assert a.shape == b.shape
    assert np.max(np.abs(np.abs(a) - np.abs(b))) <= TOL * np.max(np.abs(a))
    assert np.max(np.abs(a - b)) <= 10 * TOL * np.max(np.abs(a))
    lit = np.abs(a) >= 0.1 * np.max(np.abs(a))
    assert lit.sum() > 0.5 * lit.size
    dphi = np.abs(np.angle(a[lit] * np.conj(b[lit])))
    assert dphi.max() <= 1e-5, (dphi.max(), np.median(dphi))


@pytest.mark.quality
@pytest.mark.parametrize("align", [True, False], ids=["phase-offsets-solved", "pure-sums"])
def test_one_scan_split_across_workers_equals_one_process(scans, client, align):
    scan = read_cxi(scans[0], validate=False)
    job = ReconstructJob(batch=16, align_phase=align, threads=1)  # 100 frames → 4 partitions of ≥ 16
    ref, _ = run_reconstruct(scan, job)
    rec, prov = run_reconstruct(scan, job, client=client, source=(str(scans[0]), None))
    assert rec.timings["partitions"] == 4 and rec.timings["workers"] == 2
    _same(ref.object, rec.object)
    np.testing.assert_allclose(rec.weight, ref.weight, rtol=1e-5, atol=1e-6 * ref.weight.max())
    assert rec.consistency.error == pytest.approx(ref.consistency.error, rel=1e-5)
    np.testing.assert_allclose(rec.consistency.per_frame, ref.consistency.per_frame, rtol=1e-3)
    assert prov["frames"] == scan.n_frames == 100
    loaded = client.run(lambda: len(__import__("ptyfast.runtime.distributed", fromlist=["_backends"])._backends))
    assert set(loaded.values()) <= {0, 1} and sum(loaded.values()) >= 1  # once per worker, not per task


def test_frame_selection_travels_to_the_workers(scans, client):
    from ptyfast.io.convert import load_any

    scan = load_any(scans[0], validate=False, frames="10:70")
    job = ReconstructJob(batch=16, threads=1)
    ref, _ = run_reconstruct(scan, job)
    rec, _ = run_reconstruct(scan, job, client=client, source=(str(scans[0]), "10:70"))
    assert rec.n_frames == 60
    _same(ref.object, rec.object)


@pytest.fixture(scope="module")
def single(scans, tmp_path_factory):
    """Both scans reconstructed in one process (the reference outputs)."""
    out = tmp_path_factory.mktemp("single")
    res = run("reconstruct", *scans, "-o", out, "--no-png", "--threads", "1")
    assert res.returncode == 0, res.stderr
    return out


def test_cli_local_cluster_equals_single_process(scans, single, tmp_path):
    cluster = tmp_path / "cluster"
    cluster.mkdir()
    res = run("reconstruct", *scans, "-o", cluster, "--no-png", "--scheduler", "local:2")
    assert res.returncode == 0, res.stderr
    assert "Dask: 2 workers" in res.stdout
    for name in ("a_recon.h5", "b_recon.h5"):
        a, _ = _read(single / name)
        b, prov = _read(cluster / name)
        _same(a, b)
        assert prov["frames"] in (100, 25)
    assert sorted(p.name for p in cluster.iterdir()) == ["a_recon.h5", "b_recon.h5"]
    # one scan on local:2: its frames split across the two workers
    res = run("reconstruct", scans[0], "-o", tmp_path / "split.h5", "--no-png", "--batch", "16",
              "--scheduler", "local:2")
    assert res.returncode == 0, res.stderr
    assert "2 workers, 4 partitions" in " ".join(res.stdout.split())
    _same(_read(single / "a_recon.h5")[0], _read(tmp_path / "split.h5")[0])


def test_unreachable_scheduler_is_one_sentence_within_seconds(scans, tmp_path):
    out = tmp_path / "x.h5"
    t = time.perf_counter()
    res = run("reconstruct", scans[1], "-o", out, "--scheduler", "tcp://127.0.0.1:9")
    assert time.perf_counter() - t < 30
    one_error_line(res, "could not reach a Dask scheduler")
    assert not out.exists()


@pytest.mark.parametrize("spec", ["local:0", "local:x"])
def test_bad_local_spec(scans, tmp_path, spec):
    res = run("reconstruct", scans[1], "-o", tmp_path / "x.h5", "--scheduler", spec)
    assert res.returncode == 2 and "local:N" in res.stderr


def _kill_a_busy_worker(c: Client, stop: threading.Event, killed: list) -> None:
    """SIGKILL the first worker process seen running a task (a real crash, no clean-up)."""
    pids = c.run(os.getpid)
    while not stop.is_set() and not killed:
        for addr, tasks in c.processing().items():
            if tasks and addr in pids:
                os.kill(pids[addr], signal.SIGKILL)
                killed.append(addr)
                return
        time.sleep(0.005)


@pytest.mark.slow
@pytest.mark.parametrize("allowed_failures", [3, 0], ids=["retried", "fails-cleanly"])
def test_worker_killed_mid_task(scans, tmp_path, allowed_failures):
    """A worker SIGKILLed while it reconstructs: the scheduler retries the task on another worker (same result),
    or, when it may not retry, the call fails with one sentence (exit 1) and writes nothing."""
    import dask

    ref, _ = _read_ref(scans[0], tmp_path)
    out = tmp_path / "cluster.h5"
    with dask.config.set({"distributed.scheduler.allowed-failures": allowed_failures}), \
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as c:
        stop, killed = threading.Event(), []
        watcher = threading.Thread(target=_kill_a_busy_worker, args=(c, stop, killed), daemon=True)
        watcher.start()
        res = run("reconstruct", scans[0], "-o", out, "--no-png", "--batch", "16",
                  "--scheduler", cluster.scheduler_address)
        stop.set()
        watcher.join()
    assert killed, "no worker was seen running a task"
    if allowed_failures:
        assert res.returncode == 0, res.stderr
        _same(ref, _read(out)[0])
    else:
        one_error_line(res, "workers died", code=1)
        assert not out.exists() and list(tmp_path.iterdir()) == [tmp_path / "ref.h5"]


def _read_ref(path, tmp_path):
    out = tmp_path / "ref.h5"
    res = run("reconstruct", path, "-o", out, "--no-png", "--threads", "1")
    assert res.returncode == 0, res.stderr
    return _read(out)


def test_documented_cluster_call(scans, single, tmp_path):
    """docs/cluster.md's dask-jobqueue recipe with a LocalCluster in place of SLURMCluster: start a cluster,
    hand its scheduler address to the CLI."""
    out = tmp_path / "out"
    out.mkdir()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        res = run("reconstruct", *scans, "-o", out, "--no-png", "--scheduler", cluster.scheduler_address)
    assert res.returncode == 0, res.stderr
    for name in ("a_recon.h5", "b_recon.h5"):
        _same(_read(single / name)[0], _read(out / name)[0])


def test_bad_scan_among_several_on_a_cluster_is_one_sentence(scans, tmp_path):
    bad = tmp_path / "bad.cxi"
    bad.write_bytes(b"junk")
    out = tmp_path / "out"
    out.mkdir()
    one_error_line(run("reconstruct", scans[1], bad, "-o", out, "--scheduler", "local:2"), "not an HDF5/CXI file")
    assert list(out.iterdir()) == []
