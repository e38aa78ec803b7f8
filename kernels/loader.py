"""The one loader for ``kernels/*.cu``: read the text, compile lazily with CuPy, cache per device.

The source is prefixed with a ``#line 1 "<absolute path>"`` directive, so NVRTC's errors name the
``.cu`` file and line, not a temporary buffer. Compilation happens on the first ``get_function``
for a device; CuPy's own on-disk cache (``~/.cupy/kernel_cache``) then makes later processes fast.
Nothing here imports CuPy at module import time.
"""

from __future__ import annotations

import threading
from functools import lru_cache
from pathlib import Path

KERNEL_DIR = Path(__file__).resolve().parent

#: Options shared by NVRTC (here) and ``nvcc -ptx`` (tests/test_cuda_compile.py).
NVRTC_OPTIONS = ("--std=c++17",)

_modules: dict[tuple[str, int], object] = {}
_lock = threading.Lock()


def cu_files() -> list[Path]:
    """Every ``.cu`` source shipped with ``ptyfast.kernels``."""
    return sorted(KERNEL_DIR.glob("*.cu"))


@lru_cache(maxsize=None)
def source(name: str) -> str:
    """Text of ``kernels/<name>.cu`` with a leading ``#line`` directive pointing at the file."""
    path = KERNEL_DIR / f"{name}.cu"
    if not path.is_file():
        known = ", ".join(p.stem for p in cu_files())
        raise FileNotFoundError(f"no CUDA source {path}; known kernels: {known}")
    quoted = path.as_posix().replace("\\", "\\\\").replace('"', '\\"')
    return f'#line 1 "{quoted}"\n' + path.read_text()


def get_module(name: str):
    """The ``cupy.RawModule`` for ``kernels/<name>.cu`` on the current device (compiled once)."""
    import cupy

    device = cupy.cuda.runtime.getDevice()
    key = (name, device)
    mod = _modules.get(key)
    if mod is None:
        with _lock:
            mod = _modules.get(key)
            if mod is None:
                mod = cupy.RawModule(code=source(name), options=NVRTC_OPTIONS)
                _modules[key] = mod
    return mod


def get_function(name: str, function: str):
    """A ``cupy.RawKernel``-like function ``function`` from ``kernels/<name>.cu`` (current device)."""
    return get_module(name).get_function(function)
