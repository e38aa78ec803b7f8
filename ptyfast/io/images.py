"""Grey-scale images for building simulated objects."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ptyfast.errors import InputError


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as a 2-D float64 grey image.

    Parameters
    ----------
    path : path
        Any format scikit-image reads (PNG, TIFF, JPEG, ...). RGB(A) is converted to luminance
        (``skimage.color.rgb2gray``; alpha dropped); integer images are scaled to [0, 1].

    Returns
    -------
    ndarray, (H, W) float64
        Values in [0, 1] for integer images; float images are returned unscaled. Callers that build
        objects rescale to their own range (:func:`ptyfast.physics.object_from_images`).

    Raises
    ------
    InputError
        Missing or unreadable file, or not a 2-D / RGB(A) image, or values that are not finite.
    """
    from skimage import color, io, util

    from ptyfast.io.cxi import short_reason

    path = Path(path)
    if not path.is_file():
        raise InputError(f"image {path} does not exist.")
    try:
        img = io.imread(path)
    except Exception as exc:  # skimage raises many types for unreadable files
        detail = short_reason(exc)
        raise InputError(f"image {path} could not be read ({detail}); use PNG or TIFF.") from None
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[-1] in (3, 4):
        img = color.rgb2gray(img[..., :3])
    elif img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim != 2 or min(img.shape) < 2:
        raise InputError(f"image {path} must be a 2-D grey or RGB image; found an array of shape {img.shape}.")
    out = util.img_as_float64(img) if np.issubdtype(img.dtype, np.integer) else img.astype(np.float64)
    if not np.all(np.isfinite(out)):
        raise InputError(f"image {path} contains NaN or Inf values.")
    return out


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.resolve() == b.resolve() or a.samefile(b):
            return True
        return a.stat().st_size == b.stat().st_size and a.read_bytes() == b.read_bytes()
    except OSError:
        return False


def build_object(
    images: list[Path], *, size: int, random_object: bool = False, rng: np.random.Generator | int | None = None
) -> tuple[np.ndarray, str]:
    """The complex (size, size) object for a simulation and a one-line description of where it came from.

    Parameters
    ----------
    images : list of Path
        None (needs ``random_object``), one (amplitude from it, phase from a procedural field) or two
        *different* images (amplitude from the first, phase from the second).
    size : int
        Object side in pixels.
    random_object : bool
        Use a procedural object (amplitude and phase independent procedural fields).
    rng : Generator or int, optional
        Seed for procedural fields.
    """
    from ptyfast.physics import object_from_images
    from ptyfast.physics import random_object as make_random
    from ptyfast.physics.objects import random_field

    rng = np.random.default_rng(rng)
    if random_object and images:
        raise InputError("give images or --random-object, not both.")
    if random_object:
        return make_random((size, size), rng), "procedural random object"
    if not images:
        raise InputError("give one or two images (amplitude [phase]) or --random-object.")
    if len(images) > 2:
        raise InputError(f"give at most two images (amplitude and phase); found {len(images)}.")
    amp = read_image(images[0])
    if len(images) == 2:
        if _same_file(images[0], images[1]):
            raise InputError(f"amplitude and phase must come from two different images; {images[1]} is the same "
                             f"image as {images[0]}.")
        phase = read_image(images[1])
        how = f"amplitude {images[0].name}, phase {images[1].name}"
    else:
        phase = random_field((size, size), rng)
        how = f"amplitude {images[0].name}, procedural phase"
    return object_from_images(amp, phase, (size, size)), how


def held_out_object(shape: tuple[int, int]) -> np.ndarray:
    """The bundled held-out pair (cat_face_angle95 amplitude, angle97 phase; never trained on) as an object of
    ``shape``: the demo's, the benchmarks' and the bf16 check's sample."""
    from importlib import resources

    from ptyfast.physics.objects import object_from_images

    data = resources.files("ptyfast.data")
    with resources.as_file(data / "demo_amplitude.png") as a, resources.as_file(data / "demo_phase.png") as p:
        return object_from_images(read_image(a), read_image(p), tuple(shape))
