"""Live mode latency: from a frame written to it appearing in ``reconstruct --follow``'s output, one run.

    python benchmarks/live_latency.py [--size 600] [--rate 20] [--refresh-seconds 1] [--json FILE]

This process writes a simulated scan frame by frame at --rate frames/s in SWMR mode (:func:`ptyfast.io.live.
stream_cxi`, as ``simulate --stream`` does) and records when each frame was flushed; a ``ptyfast reconstruct
--follow`` subprocess follows it (refresh every --refresh-seconds, previews on); a thread here watches the output
and records when each new version appears and how many frames it holds. Per refresh: the latency of its newest
frame (compute: poll + inference + stitch of everything so far + HDF5 and PNG writes), and, per frame, the wait
until the first refresh that shows it (that adds up to one refresh period).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import h5py
import numpy as np


def watch(out: Path, seen: list, stop: threading.Event) -> None:
    last = None
    while not stop.is_set():
        try:
            mtime = out.stat().st_mtime_ns
            if mtime != last:
                with h5py.File(out, "r") as f:
                    frames = json.loads(f.attrs["provenance"])["frames"]
                seen.append((time.time(), frames))
                last = mtime
        except (FileNotFoundError, OSError, KeyError):
            pass
        time.sleep(0.01)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=600)
    ap.add_argument("--rate", type=float, default=20.0)
    ap.add_argument("--refresh-seconds", type=float, default=1.0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    from ptyfast.io.live import stream_cxi
    from ptyfast.physics.simulate import random_scan

    scan = random_scan(args.size)
    written = np.zeros(scan.n_frames)
    with tempfile.TemporaryDirectory() as tmp:
        live, out = Path(tmp) / "live.cxi", Path(tmp) / "live_recon.h5"
        seen: list = []
        stop = threading.Event()
        follower = None

        def on_frame(i, t):
            nonlocal follower
            written[i] = t
            if i == 0:
                follower = subprocess.Popen(
                    [sys.executable, "-m", "ptyfast", "reconstruct", str(live), "--follow", "-o", str(out),
                     "--refresh-seconds", str(args.refresh_seconds), "--refresh-frames", "1000000",
                     "--idle-timeout", "30", "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    text=True)

        watcher = threading.Thread(target=watch, args=(out, seen, stop), daemon=True)
        watcher.start()
        t0 = time.time()
        stream_cxi(live, scan, args.rate, on_frame=on_frame)
        t_written = time.time()
        _, err = follower.communicate(timeout=300)
        t_final = time.time()
        time.sleep(0.2)
        stop.set()
        watcher.join()
        assert follower.returncode == 0, err
    refreshes = [(t, n) for t, n in seen if n]
    newest = [t - written[n - 1] for t, n in refreshes]
    first_shown = []
    for i, tw in enumerate(written):
        shown = [t for t, n in refreshes if n > i]
        first_shown.append(shown[0] - tw)
    res = {
        "frames": scan.n_frames, "rate": args.rate, "refresh_seconds": args.refresh_seconds,
        "refreshes": len(refreshes),
        "newest_frame_latency_s": {"median": float(np.median(newest)), "max": float(np.max(newest))},
        "frame_to_first_view_s": {"median": float(np.median(first_shown)), "p95": float(np.percentile(first_shown, 95)),
                                  "max": float(np.max(first_shown))},
        "writer_seconds": t_written - t0, "final_output_after_last_frame_s": t_final - t_written,
        "command": "python benchmarks/live_latency.py " + " ".join(sys.argv[1:]),
    }
    print(f"{scan.n_frames} frames written at {args.rate:g}/s in {t_written - t0:.1f} s; {len(refreshes)} outputs seen")
    print(f"newest frame of each refresh → visible: median {res['newest_frame_latency_s']['median']:.2f} s, "
          f"max {res['newest_frame_latency_s']['max']:.2f} s")
    print(f"each frame → first output that shows it: median {res['frame_to_first_view_s']['median']:.2f} s, "
          f"95 % {res['frame_to_first_view_s']['p95']:.2f} s (refresh period {args.refresh_seconds:g} s)")
    print(f"final output (consistency pass included) {t_final - t_written:.2f} s after the last frame")
    if args.json:
        from ptyfast.io.atomic import write_json

        write_json(args.json, res)


if __name__ == "__main__":
    main()
