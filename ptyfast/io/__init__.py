"""File input/output: CXI read/write, converters for foreign layouts, images, atomic output files.

Every reader returns a :class:`ptyfast.scan.Scan`; every writer goes through :func:`atomic_path`.
"""

from ptyfast.io.atomic import atomic_path, check_writable
from ptyfast.io.convert import load_any, read_ptynet, read_tike
from ptyfast.io.cxi import read_cxi, read_probe, write_cxi
from ptyfast.io.images import read_image

__all__ = [
    "atomic_path", "check_writable", "load_any", "read_ptynet", "read_tike", "read_cxi", "read_probe", "write_cxi",
    "read_image",
]
