"""A family of confined X-ray probes, drawn at random for training and for held-out tests.

Every member is a focused beam seen out of focus on a 128²-pixel window (or any square window): a circular
pupil, optionally with a central stop (a zone plate's), optionally aberrated (astigmatism, coma), propagated
by a defocus of either sign, shifted in the window by a few pixels, and optionally partially coherent (a
second, weaker mode from a laterally displaced source). Parameters are drawn in *window pixels*, which is
all a network sees: the geometric radius of the defocused beam r ≈ NA·|z| / dx and the focal spot's size
in pixels fix the probe up to the aberrations.

A probe belongs to the family when its patterns oversample the exit wave — 90 % of its energy within
:data:`MAX_RADIUS_FRACTION` of the window side, so the window holds ≥ 3× the pixels of the lit disc (phase
retrieval needs ≥ 2×) — and it lights at least :data:`MIN_LIT_PIXELS` pixels. Measured probes sit inside:
the Tike Siemens star's probe as rPIE refines it holds 90 % within 38 px of its 128² window.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ptyfast.errors import InputError
from ptyfast.physics.probe import energy_radius, lit_mask, normalise_probe

WAVELENGTH = 1e-10  # m; only λ·z / dx² matters for the probe in window pixels
PIXEL = 1e-6 / 128  # m; the object pixel the family is drawn on

#: A probe lighting fewer pixels than this (|P|² ≥ 10 % of max) carries too little of the object per pattern.
MIN_LIT_PIXELS = 60
#: The family's widest probe: 90 % of the energy within this fraction of the window side (42 px of 128).
MAX_RADIUS_FRACTION = 0.33


@dataclass(frozen=True)
class ProbeFamily:
    """Ranges of the random probe family (window pixels and waves).

    Attributes
    ----------
    radius : (lo, hi) geometric radius of the defocused beam, NA·|z|/dx, in pixels.
    spot : (lo, hi) FWHM of the in-focus spot in pixels (sets the NA; a smaller spot = more fringes).
    stop_probability, stop : chance of a central stop and its range (fraction of the pupil radius).
    astigmatism, coma : chance and maximum amplitude (waves at the pupil edge) of each aberration.
    coherence_probability, second_mode : chance of a second incoherent mode and its share of the power.
    shift : maximum displacement of the probe from the window centre, pixels, per axis.
    """

    radius: tuple[float, float] = (10.0, 40.0)
    spot: tuple[float, float] = (1.2, 4.0)
    stop_probability: float = 0.4
    stop: tuple[float, float] = (0.2, 0.55)
    astigmatism: tuple[float, float] = (0.4, 1.0)
    coma: tuple[float, float] = (0.3, 0.6)
    coherence_probability: float = 0.3
    second_mode: tuple[float, float] = (0.05, 0.25)
    shift: float = 6.0

    def describe(self) -> dict:
        return {"kind": "focused-beam family", **{k: list(v) if isinstance(v, tuple) else v
                                                  for k, v in asdict(self).items()}}


@dataclass(frozen=True)
class ProbeDraw:
    """One member's parameters (see :func:`family_probe`)."""

    radius: float
    spot: float
    side: int  # +1 downstream of the focus, −1 upstream
    stop: float = 0.0
    astigmatism: float = 0.0
    astigmatism_angle: float = 0.0
    coma: float = 0.0
    coma_angle: float = 0.0
    shift: tuple[int, int] = (0, 0)
    second_mode: float = 0.0
    second_offset: tuple[float, float] = (0.0, 0.0)


def pupil_probe(shape: tuple[int, int], d: ProbeDraw, source_offset: tuple[float, float] = (0.0, 0.0)
                ) -> np.ndarray:
    """The complex field (unnormalised) of one coherent mode of draw ``d`` on a window of ``shape``.

    Pupil radius (cycles/pixel) from the spot: FWHM ≈ 0.514 λ/NA → cutoff = NA/λ = 0.514 / spot. The defocus
    follows from the beam radius: z = radius·dx / NA. Aberrations are Zernike phases on the pupil: astigmatism
    ρ² cos 2(θ−θ₀), coma (3ρ³ − 2ρ) cos(θ−θ₀), in waves. ``source_offset`` (pixels) tilts the pupil's
    illumination: a displaced source, for a partially coherent second mode.
    """
    h, w = shape
    cutoff = 0.514 / d.spot  # cycles per pixel
    na = cutoff * WAVELENGTH / PIXEL
    defocus = d.side * d.radius * PIXEL / na
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    rho = np.hypot(fy, fx) / cutoff
    theta = np.arctan2(fy, fx)
    pupil = (rho <= 1.0) & (rho >= d.stop)
    if pupil.sum() < 4:
        raise InputError(f"a {d.spot:g}-px spot is not resolved on a {h}×{w} window.")
    waves = (d.astigmatism * rho**2 * np.cos(2 * (theta - d.astigmatism_angle))
             + d.coma * (3 * rho**3 - 2 * rho) * np.cos(theta - d.coma_angle))
    fr2 = (fy / PIXEL) ** 2 + (fx / PIXEL) ** 2
    phase = 2 * np.pi * waves - np.pi * WAVELENGTH * defocus * fr2
    field = np.fft.fftshift(np.fft.ifft2(pupil * np.exp(1j * phase)))
    if source_offset != (0.0, 0.0):  # a displaced source moves the defocused beam sideways
        from scipy.ndimage import shift as nd_shift

        field = nd_shift(field.real, source_offset, order=1) + 1j * nd_shift(field.imag, source_offset, order=1)
    return np.roll(field, d.shift, axis=(0, 1)).astype(np.complex64)


def family_probe(shape: tuple[int, int], d: ProbeDraw, photons: float = 1e6) -> tuple[np.ndarray, np.ndarray | None]:
    """(dominant mode, second mode or None) of draw ``d``, together holding ``photons`` (Σ|P|² over modes)."""
    main = pupil_probe(shape, d)
    if d.second_mode <= 0:
        return normalise_probe(main, photons), None
    second = pupil_probe(shape, d, d.second_offset)
    return (normalise_probe(main, photons * (1 - d.second_mode)),
            normalise_probe(second, photons * d.second_mode))


def draw_probe(rng: np.random.Generator, family: ProbeFamily = ProbeFamily(), shape=(128, 128)) -> ProbeDraw:
    """Random parameters of one family member (redrawn until the probe is confined and lights enough)."""
    for _ in range(100):
        d = ProbeDraw(
            radius=float(rng.uniform(*family.radius)), spot=float(rng.uniform(*family.spot)),
            side=int(rng.choice([-1, 1])),
            stop=float(rng.uniform(*family.stop)) if rng.random() < family.stop_probability else 0.0,
            astigmatism=float(rng.uniform(*family.astigmatism)) * (rng.random() < 0.4),
            astigmatism_angle=float(rng.uniform(0, np.pi)),
            coma=float(rng.uniform(*family.coma)) * (rng.random() < 0.3),
            coma_angle=float(rng.uniform(0, 2 * np.pi)),
            shift=tuple(int(v) for v in rng.integers(-family.shift, family.shift + 1, size=2)),
            second_mode=float(rng.uniform(*family.second_mode)) if rng.random() < family.coherence_probability
            else 0.0,
            second_offset=tuple(float(v) for v in rng.uniform(-2.0, 2.0, size=2)),
        )
        main, _ = family_probe(shape, d)
        if not family_problem(main):
            return d
    raise InputError("the probe family's ranges give no confined probe; narrow --probe-radius.")


def probe_bank(n: int, rng, family: ProbeFamily = ProbeFamily(), shape=(128, 128), photons: float = 1e6):
    """``n`` random members: (modes (n, 2, H, W) complex64 — the second all zero for a coherent probe —, draws)."""
    rng = np.random.default_rng(rng)
    modes = np.zeros((n, 2, *shape), np.complex64)
    draws = []
    for k in range(n):
        d = draw_probe(rng, family, shape)
        main, second = family_probe(shape, d, photons)
        modes[k, 0] = main
        if second is not None:
            modes[k, 1] = second
        draws.append(d)
    return modes, draws


def family_problem(probe: np.ndarray, size: tuple[int, int] | None = None) -> str:
    """One sentence when ``probe`` is outside what a family-trained model reconstructs, else "".

    Refused: a probe of another size than the model's window, non-finite or empty, not confined (its patterns
    are not oversampled), or lighting fewer than :data:`MIN_LIT_PIXELS` pixels.
    """
    probe = np.asarray(probe)
    if size is not None and probe.shape != tuple(size):
        return (f"the probe is {probe.shape[0]}×{probe.shape[1]} but the model's window is {size[0]}×{size[1]}; "
                "give a probe of the window's size or pass --fit to adapt the frames.")
    if not np.all(np.isfinite(probe)):
        return "the probe holds NaN or Inf values; refine the probe again (ptyfast refine) or give another."
    if not np.any(np.abs(probe) > 0):
        return "the probe is all zeros; give a probe with intensity (ptyfast refine writes one)."
    r90, limit = energy_radius(probe), MAX_RADIUS_FRACTION * min(probe.shape)
    if r90 > limit:
        return (f"the probe is not confined: 90 % of its energy lies within {r90:.0f} px, more than {limit:.0f} px "
                f"({MAX_RADIUS_FRACTION:.0%} of the {min(probe.shape)}-px window), so its patterns are not "
                "oversampled enough for one pattern to determine its patch; focus the beam closer to the sample or "
                "use a larger detector window")
    lit = int(lit_mask(probe).sum())
    if lit < MIN_LIT_PIXELS:
        return (f"the probe lights only {lit} pixels (|P|² ≥ 10 % of its maximum), fewer than {MIN_LIT_PIXELS}: "
                "too little of the object per pattern for the network; defocus the probe.")
    return ""


#: Held-out test probes: the kinds the issue names, each drawn with seeds never used in training.
HELD_OUT_KINDS = ("other-side", "central-stop", "aberrated")


def held_out_probe(kind: str, index: int, shape=(128, 128), photons: float = 1e6) -> np.ndarray:
    """A test probe of ``kind`` (``other-side``: the default focus upstream of focus at another radius;
    ``central-stop``: a zone plate with a stop; ``aberrated``: astigmatism and coma), coherent, deterministic."""
    if kind not in HELD_OUT_KINDS:
        raise InputError(f"unknown held-out probe kind '{kind}'; known: {', '.join(HELD_OUT_KINDS)}.")
    rng = np.random.default_rng([99_991, HELD_OUT_KINDS.index(kind), index])
    radius = float(rng.uniform(14, 34))
    spot = float(rng.uniform(1.6, 3.0))
    if kind == "other-side":
        d = ProbeDraw(radius=radius, spot=spot, side=-1)
    elif kind == "central-stop":
        d = ProbeDraw(radius=radius, spot=spot, side=int(rng.choice([-1, 1])), stop=float(rng.uniform(0.3, 0.5)))
    else:
        d = ProbeDraw(radius=radius, spot=spot, side=int(rng.choice([-1, 1])),
                      astigmatism=float(rng.uniform(0.5, 0.9)), astigmatism_angle=float(rng.uniform(0, np.pi)),
                      coma=float(rng.uniform(0.3, 0.5)), coma_angle=float(rng.uniform(0, 2 * np.pi)))
    return family_probe(shape, d, photons)[0]


__all__ = ["ProbeFamily", "ProbeDraw", "draw_probe", "family_probe", "family_problem", "held_out_probe",
           "probe_bank", "HELD_OUT_KINDS", "energy_radius"]
