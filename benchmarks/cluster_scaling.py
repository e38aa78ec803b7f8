"""One large scan: one process vs a Dask LocalCluster, side by side in one run, and the scaling model.

    python benchmarks/cluster_scaling.py [--size 1400] [--workers 2] [--json benchmarks/results/cluster_scaling.json]

The scan: a procedural object, the default probe, 75 % overlap ((size − 128)/32 + 1)² frames, written as CXI in a
temporary folder. Timed (wall, best of --repeat, the order alternated): the single-process job with --threads 1
and with --threads W, and the same job on a LocalCluster of W one-thread workers started beforehand (its start-up
is timed separately). All use the shipped model on ONNX Runtime with phase offsets solved (the default).

The scaling model for sizing a cluster:  T(W) ≈ N / (W · r) + T_reduce(W) + T_client,  with r the per-worker
rate (frames/s, inference + read + preprocess, measured here from the workers' own timings), T_reduce the tree
reduction and transfer (measured; with phase offsets solved it is a gather of ≈ 63 kB per frame, otherwise
log₂W additions of the object), T_client the client's finish (offset solve + blend + the consistency pass, which
is itself spread over the workers). Reading is not the limit here: the file-system rate is printed beside.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path



def make_scan(folder: Path, size: int) -> Path:
    from ptyfast.io.cxi import write_cxi
    from ptyfast.physics.simulate import random_scan

    return write_cxi(folder / "large.cxi", random_scan(size))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=1400)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    from distributed import Client, LocalCluster

    from ptyfast import threads
    from ptyfast.io.cxi import read_cxi
    from ptyfast.runtime.backends import open_backend
    from ptyfast.runtime.reconstruct import ReconstructJob, run_reconstruct

    W = args.workers
    with tempfile.TemporaryDirectory() as tmp:
        path = make_scan(Path(tmp), args.size)
        scan = read_cxi(path, validate=False)
        n = scan.n_frames
        t = time.perf_counter()
        frames = scan.frames(0, n)
        read_s = time.perf_counter() - t
        print(f"{n} frames of 128² ({frames.nbytes / 2**20:.0f} MiB): file-system read {n / read_s:,.0f} frames/s")
        del frames
        t = time.perf_counter()
        cluster = LocalCluster(n_workers=W, threads_per_worker=1, processes=True, dashboard_address=":0")
        client = Client(cluster)
        startup = time.perf_counter() - t
        client.run(lambda: __import__("ptyfast.runtime.distributed"))
        rows: dict[str, list] = {"one process, 1 thread": [], f"one process, {W} threads": [],
                                 f"LocalCluster {W}×1": []}
        detail = {}
        backends = {k: open_backend(None, threads=k)[0] for k in (1, W)}
        try:
            # warm-up (model load on the workers, caches), not timed
            run_reconstruct(scan, ReconstructJob(threads=1), client=client, source=(str(path), None))
            for rep in range(args.repeat):
                order = list(rows) if rep % 2 == 0 else list(rows)[::-1]
                for name in order:
                    if name.startswith("LocalCluster"):
                        t = time.perf_counter()
                        rec, _ = run_reconstruct(scan, ReconstructJob(threads=1), client=client,
                                                 source=(str(path), None))
                        wall = time.perf_counter() - t
                        detail = {k: rec.timings[k] for k in ("wall_partials", "wall_reduce", "partitions",
                                                              "infer", "read", "preprocess", "consistency")}
                    else:
                        k = 1 if "1 thread" in name else W
                        threads.set_threads(k)
                        t = time.perf_counter()
                        rec, _ = run_reconstruct(scan, ReconstructJob(threads=k), backend=backends[k])
                        wall = time.perf_counter() - t
                        if k == 1:
                            single = dict(rec.timings)
                    rows[name].append(wall)
                    print(f"  {name:24s} {wall:6.2f} s  ({n / wall:5.0f} frames/s)", flush=True)
        finally:
            for b in backends.values():
                b.close()
            client.close()
            cluster.close()
    best = {k: min(v) for k, v in rows.items()}
    per_worker = n / (detail["infer"] + detail["read"] + detail["preprocess"])  # summed over the workers
    client_s = best[f"LocalCluster {W}×1"] - detail["wall_partials"] - detail["wall_reduce"]
    print(f"\nbest of {args.repeat}: " + ", ".join(f"{k} {v:.2f} s" for k, v in best.items()))
    print(f"cluster/one process (1 thread): {best[f'LocalCluster {W}×1'] / best['one process, 1 thread']:.2f}× the "
          f"time; cluster start-up {startup:.1f} s (once per call of the CLI's local:N)")
    print(f"model: per-worker rate r = {per_worker:.0f} frames/s; reduce {detail['wall_reduce']:.2f} s; client finish "
          f"{client_s:.2f} s (consistency {detail['consistency']:.2f} s, spread)")
    model = {w: n / (w * per_worker) + detail["wall_reduce"] + client_s for w in (1, 2, 4, 8, 16, 32)}
    print("predicted wall for this scan: " + ", ".join(f"{w} workers {t:.1f} s" for w, t in model.items()))
    if args.json:
        from ptyfast.io.atomic import write_json

        write_json(args.json, {"frames": n, "workers": W, "walls_s": rows, "best_s": best,
                               "cluster_startup_s": startup, "file_read_frames_per_s": n / read_s,
                               "cluster_detail": detail, "single_process_timings": single,
                               "per_worker_frames_per_s": per_worker, "client_finish_s": client_s,
                               "predicted_wall_s": model, "command": "python benchmarks/cluster_scaling.py"})


if __name__ == "__main__":
    main()
