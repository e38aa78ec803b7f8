"""Array-module helpers: pick numpy or CuPy from the arrays themselves (never a global default)."""

from __future__ import annotations

import numpy as np


def get_array_module(*arrays):
    """``cupy`` if any argument is a CuPy array, else ``numpy``. Never imports CuPy eagerly."""
    for a in arrays:
        if type(a).__module__.startswith("cupy"):
            import cupy

            return cupy
    return np
