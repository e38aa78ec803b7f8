"""``reconstruct --scheduler``: reconstruct on a Dask cluster (``dask.distributed``, the ``cluster`` extra).

- **Many scans** → one task per scan; each worker runs the whole single-process job
  (:func:`ptyfast.runtime.reconstruct.run_reconstruct`) and returns the reconstruction; the client writes the
  outputs (atomically, as they complete).
- **One scan** → its frames are cut into contiguous partitions; each worker streams its partition from the
  shared file system, infers, and returns a :class:`~ptyfast.runtime.stitch.PartialStitch` (Σ w·patch and
  Σ w on the common object grid — blending is linear — or, when the phase offsets are to be solved over the
  whole scan, its cropped patches). Partials are combined pairwise on the workers (a tree), the client
  finishes the blend, and the consistency figure's per-frame sums are computed per partition the same way.
  The result equals the single-process one to floating-point rounding.

Workers load the model once each (a per-process cache keyed by the model settings) and compute with one
thread unless ``--threads`` says otherwise (a LocalCluster worker per core). Paths must be valid on the
workers: on a cluster, a shared file system; the client passes absolute paths.

``local:N`` starts a :class:`distributed.LocalCluster` of N worker processes on this machine; any other value is
a scheduler address (``tcp://host:8786``), e.g. one started by ``dask-jobqueue`` on SLURM/PBS (docs/cluster.md).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from ptyfast.errors import ClusterError, InputError, SetupError

LOCAL_PREFIX = "local:"
CONNECT_TIMEOUT_S = 5
PARTITIONS_PER_WORKER = 2

_backends: dict = {}  # per worker process: the opened model for each setting


def local_cluster(n: int, device: str = "auto"):
    """``local:N``: N one-thread worker processes; on a GPU machine with ``dask-cuda`` installed (and a device
    other than ``cpu``), a LocalCUDACluster with one worker per GPU instead (at most N)."""
    from distributed import LocalCluster

    if device != "cpu":
        from ptyfast.export.tensorrt_engine import gpu_info

        try:
            from dask_cuda import LocalCUDACluster
        except ModuleNotFoundError:
            LocalCUDACluster = None
        if LocalCUDACluster is not None and gpu_info() is not None:  # not exercised here: no GPU on CI
            return LocalCUDACluster(n_workers=n, threads_per_worker=1, dashboard_address=":0",
                                    silence_logs=logging.CRITICAL)
    # failures reach the user as one sentence from the client; the workers' own tracebacks are not shown
    return LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                        silence_logs=logging.CRITICAL)


def open_client(spec: str, device: str = "auto"):
    """(client, cluster or None) for ``--scheduler``: ``local:N`` or a scheduler address."""
    try:
        from distributed import Client
    except ModuleNotFoundError:
        raise SetupError("--scheduler needs Dask; install it with: pip install 'ptyfast[cluster]'.") from None
    if spec.startswith(LOCAL_PREFIX):
        count = spec[len(LOCAL_PREFIX):]
        if not count.isdigit() or int(count) < 1:
            raise InputError(f"--scheduler {spec}: write local:N with N ≥ 1 worker processes (e.g. local:2).")
        cluster = local_cluster(int(count), device)
        return Client(cluster), cluster
    try:
        return Client(spec, timeout=CONNECT_TIMEOUT_S), None
    except (OSError, TimeoutError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"could not reach a Dask scheduler at '{spec}' within {CONNECT_TIMEOUT_S} s ({reason}); "
                         "check the address (tcp://host:8786) or use --scheduler local:N.") from None


def close_client(client, cluster) -> None:
    client.close()
    if cluster is not None:
        cluster.close()


def worker_threads(job) -> int:
    """--threads if given, else the worker's own thread count (1 per LocalCluster worker)."""
    if job.threads:
        return int(job.threads)
    try:
        from distributed import get_worker

        return int(get_worker().state.nthreads)
    except (ImportError, ValueError, AttributeError):
        return 1


def worker_backend(job):
    """The model for ``job`` in this worker process, opened on first use (then reused by every task)."""
    from ptyfast import threads
    from ptyfast.runtime.backends import open_backend

    key = (job.model, job.backend, job.device, job.precision, job.threads)
    if key not in _backends:
        n = threads.set_threads(worker_threads(job))
        _backends[key] = open_backend(job.model, job.backend, job.device, job.precision, threads=n)
    return _backends[key]


def _load(path: str, frames: str | None, auto_mask: bool = True):
    from ptyfast.io.convert import load_any

    return load_any(path, validate=False, frames=frames, auto_mask=auto_mask)


def scan_task(path: str, frames: str | None, job):
    """One whole scan on a worker: (Reconstruction, provenance)."""
    from ptyfast.runtime.reconstruct import run_reconstruct

    with _load(path, frames, job.auto_mask) as scan:
        backend, reason = worker_backend(job)
        return run_reconstruct(scan, job, backend=backend, reason=reason)


def partial_task(path: str, frames: str | None, job, plan, start: int, stop: int):
    """Frames [start, stop) of a scan on a worker: a PartialStitch."""
    from ptyfast.runtime.stitch import stitch_frames

    with _load(path, frames, job.auto_mask) as scan:
        backend, _ = worker_backend(job)
        return stitch_frames(scan, backend, plan, start, stop, batch=job.batch, chunk=job.chunk)


def sums_task(path: str, frames: str | None, job, plan, obj: np.ndarray, start: int, stop: int):
    """Consistency sums (3, stop − start) of frames [start, stop) against the stitched object, on the worker's
    threads (:func:`worker_threads`: one per LocalCluster worker), not on every core of the machine."""
    from ptyfast import threads
    from ptyfast.runtime.consistency import consistency_sums

    threads.set_threads(worker_threads(job))
    with _load(path, frames, job.auto_mask) as scan:
        return consistency_sums(scan, obj, plan.probe, plan.grid_pos, fit=plan.fit, size=plan.size,
                                chunk=job.chunk, start=start, stop=stop)


def partitions(n: int, workers: int, minimum: int) -> list[tuple[int, int]]:
    """Contiguous frame ranges: about PARTITIONS_PER_WORKER per worker, none smaller than ``minimum`` frames."""
    count = max(1, min(PARTITIONS_PER_WORKER * max(workers, 1), n // max(minimum, 1)))
    edges = np.linspace(0, n, count + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges, edges[1:]) if b > a]


def n_workers(client) -> int:
    return max(1, len(client.scheduler_info().get("workers", {})))


def tree_reduce(client, futures: list, combine):
    """Combine futures pairwise on the workers until one is left (order kept: neighbours are combined)."""
    while len(futures) > 1:
        nxt = [client.submit(combine, futures[i : i + 2], pure=False) for i in range(0, len(futures) - 1, 2)]
        if len(futures) % 2:
            nxt.append(futures[-1])
        futures = nxt
    return futures[0]


def gather(client, futures, what: str):
    """client.gather that turns a cluster failure into one sentence (ClusterError)."""
    from distributed import KilledWorker

    try:
        return client.gather(futures)
    except KilledWorker as exc:
        raise ClusterError(f"{what} failed: workers died running it more often than the scheduler allows "
                           f"({exc.args[0] if exc.args else 'killed worker'}); nothing was written for it.") from None
    except (OSError, TimeoutError) as exc:  # the scheduler went away
        raise ClusterError(f"{what} failed: lost the Dask scheduler ({exc}); nothing was written for it.") from None


def reconstruct_split(client, source: tuple[str, str | None], scan, plan, job, *, progress=None):
    """One scan spread over the cluster's workers (see the module docstring); returns a Reconstruction whose
    read/preprocess/infer timings are summed over the workers (CPU-side seconds), ``wall`` the elapsed time."""
    import time

    from distributed import as_completed

    from ptyfast.runtime.consistency import consistency_from_sums
    from ptyfast.runtime.reconstruct import finish_reconstruction
    from ptyfast.runtime.stitch import combine_partials

    t_start = time.perf_counter()
    path, frames = source
    n = scan.n_frames
    workers = n_workers(client)
    parts = partitions(n, workers, minimum=job.batch or 32)
    plan_f = client.scatter(plan, broadcast=True)
    futures = [client.submit(partial_task, path, frames, job, plan_f, a, b, pure=False) for a, b in parts]
    frames_of = {f.key: b - a for f, (a, b) in zip(futures, parts)}
    done = 0
    for fut in as_completed(futures):
        if fut.status == "finished" and progress is not None:
            done += frames_of[fut.key]
            progress(done, n, "stitch")
    t_partials = time.perf_counter()
    part = gather(client, tree_reduce(client, futures, combine_partials), f"reconstructing {path}")
    t_reduced = time.perf_counter()

    def spread_consistency(obj: np.ndarray):
        obj_f = client.scatter(obj, broadcast=True)
        sums = [client.submit(sums_task, path, frames, job, plan_f, obj_f, a, b, pure=False) for a, b in parts]
        return consistency_from_sums(np.concatenate(gather(client, sums, f"the consistency pass of {path}"),
                                                    axis=1))

    rec = finish_reconstruction(scan, plan, part, consistency=job.consistency, consistency_fn=spread_consistency,
                               t_start=t_start, release=True, offset_fitter=job.offset_fitter)
    rec.timings["workers"] = workers
    rec.timings["partitions"] = len(parts)
    rec.timings["wall_partials"] = t_partials - t_start  # until every partition was inferred
    rec.timings["wall_reduce"] = t_reduced - t_partials  # tree reduction and transfer to the client
    return rec


def absolute_job(job):
    """The job with a model path made absolute (workers may run in another directory)."""
    if job.model and Path(job.model).exists():
        return replace(job, model=str(Path(job.model).resolve()))
    return job


def submit_scans(client, sources: list[tuple[str, str | None]], job) -> list:
    """One task per scan (see :func:`scan_task`); returns the futures in the order of ``sources``."""
    job = absolute_job(job)
    return [client.submit(scan_task, str(Path(p).resolve()), fr, job, pure=False) for p, fr in sources]
