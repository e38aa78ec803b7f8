"""``--threads`` governs every library: one thread means one core's worth of CPU time."""

from __future__ import annotations

import resource
import subprocess
import sys
import time

import numpy as np


def test_set_threads_reaches_blas_and_fft():
    from threadpoolctl import threadpool_info

    from ptyfast import threads

    try:
        assert threads.set_threads(1) == 1
        assert threads.get() == 1  # the kernels' scipy.fft calls pass workers=threads.get()
        assert all(pool["num_threads"] == 1 for pool in threadpool_info())
        assert threads.set_threads(None) == threads.available()
    finally:
        threads.set_threads(None)


def test_limited_holds_in_the_calling_thread_only():
    import threading

    from ptyfast import threads

    try:
        threads.set_threads(3)
        seen = {}
        with threads.limited(1):
            seen["inside"] = threads.get()
            other = threading.Thread(target=lambda: seen.update(other=threads.get()))
            other.start()
            other.join()
        seen["after"] = threads.get()
        assert seen == {"inside": 1, "other": 3, "after": 3}
    finally:
        threads.set_threads(None)


def test_consistency_does_not_depend_on_the_thread_count():
    """The consistency pass spreads each chunk's frames over the threads: the same sums, bit for bit, on 1 or 2."""
    from ptyfast import threads
    from ptyfast.physics.probe import default_probe
    from ptyfast.physics.scanpath import raster_positions
    from ptyfast.physics.simulate import simulate_scan
    from ptyfast.runtime.consistency import consistency_sums

    rng = np.random.default_rng(0)
    probe = default_probe()
    obj = np.exp(0.5j * rng.random((300, 300))).astype(np.complex64)
    scan = simulate_scan(obj, probe, raster_positions(obj.shape, probe.shape, overlap=0.6), rng=rng)
    wrong = np.exp(0.3j * rng.random(obj.shape)).astype(np.complex64)
    try:
        sums = []
        for n in (1, 2):
            threads.set_threads(n)
            sums.append(consistency_sums(scan, wrong, probe, scan.positions, chunk=5))
        np.testing.assert_array_equal(sums[0], sums[1])
        assert np.all(sums[0] > 0)
    finally:
        threads.set_threads(None)


def test_reconstruct_threads_one_uses_one_core(tmp_path):
    """CPU time over wall time of the whole process stays near 1 (it would approach the core count when a
    library ignored the setting and the machine had idle cores)."""
    from ptyfast.io import write_cxi
    from ptyfast.physics.probe import default_probe
    from ptyfast.physics.scanpath import raster_positions
    from ptyfast.scan import Scan

    probe = default_probe()
    pos = raster_positions((32 * 24 + 128, 32 * 24 + 128), probe.shape, overlap=0.75)
    frames = np.random.default_rng(0).poisson(5.0, (len(pos), 128, 128)).astype(np.float32)
    scan = write_cxi(tmp_path / "s.cxi", Scan(diffraction=frames, positions=pos, probe=probe))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "ptyfast", "reconstruct", str(scan), "-o", str(tmp_path / "r.h5"),
                           "--threads", "1", "--no-png"], capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert proc.returncode == 0, proc.stderr
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert cpu / wall < 1.25, (cpu, wall)
