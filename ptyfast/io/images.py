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
