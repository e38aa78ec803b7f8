"""Probes: the bundled default, a focused X-ray probe from Fresnel propagation, loaders, normalisation."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np

from ptyfast.errors import InputError
from ptyfast.physics.xp import get_array_module


def normalise_probe(probe, photons: float):
    """Scale ``probe`` so that sum(|P|^2) = ``photons`` (photons per frame for |O| = 1, ortho FFT)."""
    xp = get_array_module(probe)
    power = float(xp.sum(xp.abs(probe) ** 2))
    if not np.isfinite(power) or power <= 0:
        raise InputError("the probe is empty (all zeros) or not finite; it cannot be normalised.")
    return (probe * np.sqrt(photons / power)).astype(probe.dtype, copy=False)


def default_probe() -> np.ndarray:
    """The seed paper's probe ``pxy_probe1000.npy``: complex64 (128, 128), sum(|P|^2) = 1000 (MIT licence)."""
    with resources.files("ptyfast.data").joinpath("probe_pxy1000.npy").open("rb") as fh:
        return np.load(fh).astype(np.complex64)


def fresnel_probe(
    shape: tuple[int, int] = (128, 128),
    *,
    wavelength: float = 1e-10,
    focus_size: float = 100e-9,
    defocus: float = 5e-6,
    pixel_size: float = 1e-6 / 128,
    photons: float = 1e3,
    obstruction: float = 0.0,
) -> np.ndarray:
    """A focused probe seen ``defocus`` metres away from the focus (angular-spectrum Fresnel propagation).

    The focusing optic is a circular pupil (optionally with a central stop, fraction ``obstruction`` of its
    radius, as for a zone plate) whose numerical aperture gives a focal spot of FWHM ``focus_size``
    (Airy: FWHM ≈ 0.514 λ / NA). The focal field is propagated by ``defocus`` with the Fresnel transfer
    function exp(-i π λ z (fx² + fy²)) on the object-plane grid of ``pixel_size`` metres.

    Returns complex64 (H, W), sum(|P|^2) = ``photons``. The paper's setting: λ = 0.1 nm, ~100 nm focus,
    5 µm out of focus, 1 µm window on 128² pixels.
    """
    h, w = shape
    if min(wavelength, focus_size, pixel_size) <= 0 or h < 2 or w < 2:
        raise InputError("probe wavelength, focus size, pixel size and shape must be positive.")
    na = 0.514 * wavelength / focus_size
    fy = np.fft.fftfreq(h, d=pixel_size)[:, None]
    fx = np.fft.fftfreq(w, d=pixel_size)[None, :]
    fr = np.sqrt(fx**2 + fy**2)
    cutoff = na / wavelength  # spatial frequency of the pupil edge
    pupil = (fr <= cutoff) & (fr >= obstruction * cutoff)
    if pupil.sum() < 4:
        raise InputError(
            f"a {focus_size:g} m focus is not resolved by {pixel_size:g} m pixels; use a smaller pixel size."
        )
    transfer = np.exp(-1j * np.pi * wavelength * defocus * fr**2)
    field = np.fft.fftshift(np.fft.ifft2(pupil * transfer))
    return normalise_probe(field.astype(np.complex64), photons)


def load_probe(path: str | Path) -> np.ndarray:
    """Load a complex probe from .npy or from a CXI/HDF5 file (``entry_1/instrument_1/source_1/illumination``
    or ``entry_1/probe``)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"probe file {path} does not exist.")
    if path.suffix == ".npy":
        try:
            p = np.load(path)
        except Exception as exc:  # corrupt or not an .npy file
            raise InputError(f"probe file {path} could not be read as .npy ({exc}).") from None
    else:
        from ptyfast.io.cxi import read_probe

        p = read_probe(path)
    p = np.squeeze(np.asarray(p))
    if p.ndim != 2 or not np.iscomplexobj(p) and not np.isrealobj(p):
        raise InputError(f"probe in {path} must be a 2-D complex array; found shape {p.shape}.")
    if not np.all(np.isfinite(p)):
        raise InputError(f"probe in {path} contains NaN or Inf.")
    return p.astype(np.complex64)
