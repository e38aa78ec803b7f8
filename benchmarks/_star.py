"""Load the Tike Siemens star as a Scan (through ptyfast.io.load_any when it exists, else a direct read).

The direct read applies the documented conversion: data (1, N, 128, 128) photon counts with the zero frequency
at the array corner → fftshift to the centre; probe (1, 1, 1, 1, 128, 128) complex64; scan (1, N, 2) (y, x)
pixels ≈ ±165 → shifted so the smallest is 0. The probe's power convention (Tike's unnormalised FFT) is left
alone: refine() rescales it to the data (``rescale_probe="auto"``).
"""

from __future__ import annotations

import bz2
import io
import os
from pathlib import Path

import numpy as np

SHARED_DATA = Path(os.environ.get("PTYFAST_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
STAR = SHARED_DATA / "tike-siemens-star" / "siemens-star-small.npz.bz2"


def load_star(path: Path = STAR):
    try:
        from ptyfast.io import load_any  # the converters, once they land
    except ImportError:
        load_any = None
    if load_any is not None:
        return load_any(path)
    from ptyfast.scan import Scan

    with bz2.open(path) as fh:
        d = np.load(io.BytesIO(fh.read()))
    data = np.fft.fftshift(d["data"][0], axes=(-2, -1)).astype(np.float32)
    probe = d["probe"][0, 0, 0, 0].astype(np.complex64)
    pos = d["scan"][0].astype(np.float64)
    pos -= pos.min(axis=0)
    return Scan(diffraction=data, positions=pos, probe=probe, meta={"source": str(path), "converter": "bench"})
