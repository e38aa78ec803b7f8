"""Read rate of compressed detector frames (hdf5plugin filters) through ptyfast's reader, one run, side by side.

    python benchmarks/decompression.py [--frames 516] [--json benchmarks/results/decompression.json]

Frames: the real Tike Siemens star (../shared/data or $PTYFAST_SHARED_DATA) as uint32 counts, repeated to
--frames; Poisson noise when the data are absent. Each filter writes the same frames (one chunk per frame, as
detectors do); the rate is uncompressed MB per second of `Scan.frames` reads (decompression + float32
conversion), best of three passes.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def frames_for(n: int) -> tuple[np.ndarray, str]:
    from _star import STAR as star  # ../shared/data or $PTYFAST_SHARED_DATA

    if star.is_file():
        from ptyfast.io import load_any

        s = load_any(star)
        f = np.rint(s.frames(0, s.n_frames)).astype(np.uint32)
        src = "Tike Siemens star (real counts)"
    else:
        f = np.random.default_rng(0).poisson(5.0, (n, 128, 128)).astype(np.uint32)
        src = "Poisson(5) noise"
    reps = int(np.ceil(n / len(f)))
    return np.concatenate([f] * reps)[:n], src


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=516)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    from conftest import _write_raw_cxi  # the foreign-writer helper of the tests
    from ptyfast.io import load_any

    frames, src = frames_for(a.frames)
    filters = {"none": {}, "gzip": {"compression": "gzip", "compression_opts": 4},
               "lz4": dict(hdf5plugin.LZ4()), "bitshuffle-lz4": dict(hdf5plugin.Bitshuffle(cname="lz4")),
               "zstd": dict(hdf5plugin.Zstd()),
               "blosc-zstd": dict(hdf5plugin.Blosc(cname="zstd", shuffle=hdf5plugin.Blosc.SHUFFLE))}
    raw_mb = frames.nbytes / 2**20
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for name, kw in filters.items():
            path = Path(d) / f"{name}.cxi"
            n = len(frames)
            _write_raw_cxi(path, np.zeros((1, 1, 1)), np.zeros((1, 3)))  # geometry and layout
            with h5py.File(path, "a") as f:
                del f["entry_1/instrument_1/detector_1/data"]
                f.create_dataset("entry_1/instrument_1/detector_1/data", data=frames, chunks=(1,) + frames.shape[1:],
                                 **kw)
                del f["entry_1/sample_1/geometry_1/translation"]
                f["entry_1/sample_1/geometry_1/translation"] = np.stack(
                    [np.arange(n) * 1e-8, np.zeros(n), np.zeros(n)], 1)
            best = float("inf")
            for _ in range(3):
                scan = load_any(path, validate=False)
                t = time.perf_counter()
                for s, _chunk in scan.iter_chunks(128):
                    pass
                best = min(best, time.perf_counter() - t)
            size = path.stat().st_size / 2**20
            rows.append({"filter": name, "file_mb": round(size, 2), "ratio": round(raw_mb / size, 2),
                         "read_mb_per_s": round(raw_mb / best, 1), "frames_per_s": round(n / best)})
            print(f"{name:15s} {size:8.1f} MB  ratio {raw_mb / size:5.2f}  read {raw_mb / best:7.1f} MB/s  "
                  f"{n / best:8.0f} frames/s")
    result = {"frames": len(frames), "shape": list(frames.shape[1:]), "source": src, "uncompressed_mb": raw_mb,
              "hdf5plugin": hdf5plugin.version, "rows": rows}
    if a.json:
        a.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
