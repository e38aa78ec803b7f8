"""ptyfast: fast neural-network ptychography reconstruction.

Conventions used everywhere (see docs/guide.md, "Conventions"):

* diffraction: (N, H, W) photon counts, zero frequency at the array centre;
* positions: (N, 2) float (y, x) in object pixels, top-left corner of the probe window;
* forward model: ``Psi = fftshift(fft2(P * O[y:y+H, x:x+W], norm="ortho"))``, ``I = |Psi|**2``.
"""

__version__ = "0.1.0"

from ptyfast.errors import InputError  # noqa: E402
from ptyfast.scan import Geometry, Scan  # noqa: E402

__all__ = ["__version__", "InputError", "Geometry", "Scan"]
