"""Reading probes from CXI/HDF5 files and ptyfast outputs: one mode, or the strongest of a mixed state."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ptyfast.io.cxi_spec import OUTPUT_PROBE_PATH, PROBE_PATHS, find_dataset, open_hdf5

__all__ = ["all_modes", "probe_modes", "read_probe"]


def probe_modes(stored: np.ndarray) -> tuple[np.ndarray, str]:
    """The probe to use from a stored probe array: one (H, W) mode, or the strongest of several incoherent
    modes stacked on the leading axes (mixed states, as Tike, Pty-Chi and PtyPy store them), with a note
    saying how many there were and which is used (empty for a single mode). Returns (probe, note)."""
    p = np.asarray(stored)
    if p.ndim <= 2:
        return p, ""
    modes = p.reshape(-1, *p.shape[-2:])
    power = np.sum(np.abs(modes.astype(np.complex128)) ** 2, axis=(1, 2))
    nonzero = power > 0
    if nonzero.sum() <= 1:
        k = int(np.argmax(power))
        return modes[k], ""
    k = int(np.argmax(power))
    shares = ", ".join(f"{v / power.sum():.0%}" for v in power[nonzero])
    return modes[k], (f"the file holds {int(nonzero.sum())} probe modes (power {shares}); mode {k} (the strongest, "
                      f"{power[k] / power.sum():.0%} of the power) is used")


def all_modes(stored) -> np.ndarray:
    """Every mode of a stored probe as (modes, H, W) complex64 (``refine`` refines them all)."""
    p = np.asarray(stored)
    return p.reshape(-1, *p.shape[-2:]).astype(np.complex64)


def read_probe(path: str | Path, *, outputs: bool = False) -> np.ndarray:
    """The probe of a CXI/HDF5 file: complex (H, W) at ``entry_1/instrument_1/source_1/illumination`` or
    ``entry_1/probe`` — or, with ``outputs``, a ptyfast result's ``probe`` (the strongest mode when several are
    stored, :func:`probe_modes`)."""
    path = Path(path)
    with open_hdf5(path) as f:
        ds = find_dataset(f, PROBE_PATHS + ((OUTPUT_PROBE_PATH,) if outputs else ()), "probe", path)
        p, _ = probe_modes(ds[()])
    return p.astype(np.complex64)
