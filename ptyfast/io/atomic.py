"""Atomic output files: write to a temporary name beside the target, rename onto it only on success.

Every command that writes a file uses :func:`atomic_path`, so a failed or interrupted run never leaves a
partial output behind and never clobbers an existing good file.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ptyfast.errors import InputError


def check_writable(final: str | Path) -> Path:
    """Check up front that ``final`` can be written; return it as a :class:`~pathlib.Path`.

    Raises
    ------
    InputError
        If the parent directory does not exist or is not writable, or ``final`` is a directory.
    """
    final = Path(final)
    parent = final.parent
    if final.is_dir():
        raise InputError(f"cannot write {final}: it is a directory; give a file name such as {final / 'scan.cxi'}.")
    if not parent.is_dir():
        raise InputError(f"cannot write {final}: directory {parent} does not exist; create it first.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {final}: directory {parent} is not writable; choose another output path.")
    return final


@contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path ``<dir>/.<name>.tmp-XXXX`` that becomes ``final`` only if the block succeeds.

    Parameters
    ----------
    final : path
        The file to create or replace.

    Yields
    ------
    Path
        An (empty, already created) temporary file in the same directory; write to it by name
        (``h5py.File(tmp, "w")``, ``np.save(tmp, ...)`` with an explicit file object, ...).

    Notes
    -----
    The rename is ``os.replace`` within one directory, atomic on POSIX. On any exception (including
    ``KeyboardInterrupt``) the temporary file is removed and the exception propagates; ``final`` is untouched.
    """
    final = check_writable(final)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.tmp-", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def json_default(v):
    """``json.dumps(..., default=json_default)``: numpy scalars/arrays, paths and tuples as plain JSON."""
    import numpy as np

    if isinstance(v, (np.floating, np.integer, np.bool_)):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (Path, tuple)):
        return str(v) if isinstance(v, Path) else list(v)
    raise TypeError(f"not JSON-serialisable: {type(v).__name__}")


def write_json(path: str | Path, obj, *, indent: int = 2) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically (numpy values allowed)."""
    import json

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=indent, default=json_default))
    return Path(path)


def ensure_dir(path: str | Path) -> Path:
    """Create output folder ``path`` (and parents) or raise one clear InputError."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise InputError(f"cannot create output folder {path}: a file is in the way; choose another -o.") from None
    except PermissionError:
        raise InputError(f"cannot create output folder {path}: permission denied; choose another -o.") from None
    if not os.access(path, os.W_OK):
        raise InputError(f"output folder {path} is not writable; choose another -o.")
    return path
