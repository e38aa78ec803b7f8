"""Probes: the bundled default, a focused X-ray probe from Fresnel propagation, loaders, normalisation."""

from __future__ import annotations

from importlib import resources

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


#: The default probe: a zone-plate-like focus (λ = 0.1 nm, 16 nm focal spot) seen 55 µm downstream of the
#: focus on a 7.8 nm object pixel (1 µm window on 128² pixels), 10⁶ photons per frame. 90 % of its energy
#: lies within a radius of ≈ 22 px (the Tike Siemens star's real probe: 28 px), so each 128² pattern
#: oversamples its exit wave more than 2× per axis and one pattern determines its patch.
DEFAULT_PROBE_PARAMETERS = dict(wavelength=1e-10, focus_size=16e-9, defocus=55e-6, pixel_size=1e-6 / 128,
                                photons=1e6, obstruction=0.0)
DEFAULT_PROBE_FILE = "probe_confined128.npy"
PAPER_PROBE_FILE = "probe_pxy1000.npy"


def _bundled(name: str) -> np.ndarray:
    with resources.files("ptyfast.data").joinpath(name).open("rb") as fh:
        return np.load(fh).astype(np.complex64)


def default_geometry(detector_pixel: float = 75e-6):
    """The far-field geometry the default probe was made for: its wavelength, and the detector distance at
    which a 128-pixel detector of ``detector_pixel`` gives its object pixel, z = dx·N·p/λ (0.75 m)."""
    from ptyfast.scan import Geometry

    par = DEFAULT_PROBE_PARAMETERS
    return Geometry(wavelength=par["wavelength"], pixel_size=detector_pixel,
                    distance=par["pixel_size"] * 128 * detector_pixel / par["wavelength"])


def default_probe() -> np.ndarray:
    """ptyfast's default probe: complex64 (128, 128), confined (see :data:`DEFAULT_PROBE_PARAMETERS`).

    Stored as a file (``fresnel_probe(**DEFAULT_PROBE_PARAMETERS)``) so that its hash, which models record in
    their manifest, does not depend on the FFT library's rounding.
    """
    return _bundled(DEFAULT_PROBE_FILE)


def paper_probe() -> np.ndarray:
    """The seed paper's probe ``pxy_probe1000.npy``: complex64 (128, 128), sum(|P|^2) = 1000 (MIT licence).

    It fills the 128² window (90 % of its energy within a radius of 72 px), so one pattern does not
    determine its patch; it serves the paper-reproduction protocol only.
    """
    return _bundled(PAPER_PROBE_FILE)


#: The lit pixels of a window: |P|² ≥ this fraction of its maximum.
LIT_FRACTION = 0.1


def lit_pixels(intensity: np.ndarray, fraction: float = LIT_FRACTION) -> np.ndarray:
    """Bool: pixels of a probe intensity |P|² that are ≥ ``fraction`` of its maximum."""
    return intensity >= fraction * float(np.max(intensity))


def lit_mask(probe: np.ndarray, fraction: float = LIT_FRACTION) -> np.ndarray:
    """Bool (H, W): pixels whose probe intensity is ≥ ``fraction`` of its maximum — what one pattern sees, where
    the ``lit`` training loss holds a network to its labels and what the phase-offset solve compares."""
    return lit_pixels(np.abs(probe) ** 2, fraction)


def scaled_to(probe: np.ndarray, like: np.ndarray) -> np.ndarray:
    """``probe`` (complex64) scaled to the power Σ|P|² of ``like``."""
    power = float(np.sum(np.abs(probe) ** 2))
    return (probe * np.sqrt(float(np.sum(np.abs(like) ** 2)) / max(power, 1e-30))).astype(np.complex64)


def energy_radius(probe: np.ndarray, fraction: float = 0.9) -> float:
    """Radius in pixels, around the intensity centroid, that holds ``fraction`` of the probe's energy."""
    inten = np.abs(np.asarray(probe)) ** 2
    inten = inten / max(float(inten.sum()), 1e-30)
    yy, xx = np.indices(inten.shape)
    r = np.hypot(yy - (inten * yy).sum(), xx - (inten * xx).sum()).ravel()
    order = np.argsort(r)
    k = min(int(np.searchsorted(np.cumsum(inten.ravel()[order]), fraction)), r.size - 1)
    return float(r[order][k])


def oversampling_problem(probe: np.ndarray) -> str:
    """One sentence when ``probe`` is too wide for one pattern to determine its patch, else "".

    The far-field pattern oversamples the exit wave ≥ 2× per axis only when the probe's support is at most
    about half the window: here, 90 % of its energy within a radius of a quarter of the window side.
    """
    r90 = energy_radius(probe)
    limit = min(np.shape(probe)) / 4
    if r90 <= limit:
        return ""
    return (f"the probe is not confined (90 % of its energy within {r90:.0f} px, more than a quarter of the "
            f"{min(np.shape(probe))}-px window), so its patterns are not oversampled and one pattern cannot "
            "determine its patch: a network trained on it can only learn the average object.")


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
