"""Safe outputs: every file ptyfast writes goes through :func:`atomic_path`.

What the one helper guarantees, so that no command can forget it:

* **never over an input** — every file the process reads is recorded (:func:`register_input`; the CLI
  records each file named on its command line, the readers record what they open) and a target that is the
  same file (same device and inode: symlinks and hard links included) is refused with one sentence;
* **atomic** — data go to ``<dir>/.<name>.tmp-XXXX`` and are renamed onto the target only on success;
* **nothing left behind** — the temporary file is removed on any error, and on SIGINT/SIGTERM/SIGHUP (the
  CLI's handler removes every registered temporary and exits, :func:`ptyfast.cli.install_signal_handlers`); its
  name is recorded before the file is created, so there is no window in which it exists unrecorded;
* **umask permissions** — the output gets ``0o666 & ~umask``, as a plain ``open()`` would give it
  (``mkstemp`` alone would leave 0600);
* **full disks** — ENOSPC / EDQUOT / EFBIG become :class:`OutputError`: "no space left on ... while writing
  OUT", one sentence.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import signal
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ptyfast.errors import InputError, OutputError

_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}

_inputs: dict[tuple[int, int], Path] = {}  # (st_dev, st_ino) → the path it was read as
_live: set[Path] = set()  # temporary files not yet renamed or removed
_failed: list[BaseException] = []  # writer errors kept alive: h5py may crash freeing a file it failed to close
_pending: list[list[tuple[Path, Path]]] = []  # open output transactions: (temporary, final) awaiting commit


def umask() -> int:
    """The process umask now (from /proc, which does not change it; elsewhere set-and-restore)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def register_input(path: str | Path) -> None:
    """Record that this process reads ``path`` (a file, or every file under a folder); no output may replace it."""
    path = Path(path)
    try:
        if path.is_dir():
            for i, p in enumerate(path.rglob("*")):
                if i > 200_000:
                    break
                if p.is_file():
                    register_input(p)
            return
        st = path.stat()
    except OSError:
        return
    _inputs.setdefault((st.st_dev, st.st_ino), path)


def reset_inputs() -> None:
    """Forget the recorded inputs (each CLI command starts afresh)."""
    _inputs.clear()


def check_not_input(final: str | Path) -> None:
    """Raise InputError if ``final`` is (or links to) a file this process reads."""
    try:
        st = Path(final).stat()
    except OSError:
        return
    src = _inputs.get((st.st_dev, st.st_ino))
    if src is not None:
        same = "" if Path(final).absolute() == src.absolute() else f" (the same file as input {src})"
        raise InputError(f"the output {final} would overwrite an input of this command{same}; choose another "
                         "output path.")


def check_writable(final: str | Path) -> Path:
    """Check up front that ``final`` can be written and is not an input; return it as a :class:`Path`.

    Raises
    ------
    InputError
        If the parent directory does not exist or is not writable, ``final`` is a directory, or it is a file
        this process reads.
    """
    final = Path(final)
    parent = final.parent
    if final.is_dir():
        raise InputError(f"cannot write {final}: it is a directory; give a file name such as {final / 'scan.cxi'}.")
    if not parent.is_dir():
        raise InputError(f"cannot write {final}: directory {parent} does not exist; create it first.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {final}: directory {parent} is not writable; choose another output path.")
    check_not_input(final)
    return final


def _errno(exc: BaseException) -> int | None:
    """The errno of an OSError, or the one HDF5 writes into its message ("errno = 28") when h5py raises
    another type (a failed metadata flush surfaces as RuntimeError)."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return exc.errno
    found = re.search(r"errno = (\d+)", str(exc)) if isinstance(exc, Exception) else None
    return int(found.group(1)) if found else None


def is_disk_full(exc: BaseException) -> bool:
    """True for the errors a full file system, a quota or a file-size limit raise."""
    return _errno(exc) in _DISK_FULL


def _mount_point(path: Path) -> Path:
    path = path.resolve()
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def disk_full_error(final: Path, exc: BaseException) -> OutputError:
    """One sentence for a write that ran out of space (or hit a quota / RLIMIT_FSIZE)."""
    code = _errno(exc)
    if code == errno.EFBIG:
        return OutputError(f"the file-size limit (ulimit -f) was reached while writing {final}; nothing was "
                           "written; raise the limit or choose another -o.")
    import shutil

    mount = _mount_point(final.parent)
    free = shutil.disk_usage(mount).free
    what = "quota exceeded" if code == errno.EDQUOT else "no space left"
    return OutputError(f"{what} on {mount} ({free / 2**20:.1f} MiB free) while writing {final}; nothing was "
                       "written; free some space or choose another -o.")


def _new_temporary(final: Path) -> Path:
    """Create ``.<name>.tmp-XXXX`` beside ``final``, recorded *before* it is created.

    Blocking the signals in this thread is not enough: another thread (a reader, a stitching stage) can take
    the signal, and Python then runs the handler in the main thread at its next bytecode — which could fall
    between creating the file and recording it (seen under load: a SIGINT left ``.c.cxi.tmp-…`` behind). A name
    recorded first and then created with O_EXCL has no such window: the handler finds it, or finds nothing."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    try:
        while True:
            tmp = final.parent / f".{final.name}.tmp-{secrets.token_hex(8)}"
            _live.add(tmp)
            try:
                fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
                break
            except FileExistsError:  # another file's name: not ours to remove
                _live.discard(tmp)
            except BaseException:
                _live.discard(tmp)
                raise
        try:
            os.fchmod(fd, 0o666 & ~umask())
        finally:
            os.close(fd)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
    return tmp


def _discard(tmp: Path) -> None:
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    try:
        tmp.unlink(missing_ok=True)
        _live.discard(tmp)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def register_temporary(path: Path) -> None:
    """Treat ``path`` (a file written in place, e.g. a live SWMR stream readers must see under its final name)
    as temporary: removed on error or signal until :func:`unregister_temporary`. Refuses what
    :func:`check_writable` refuses."""
    path = check_writable(path)
    _live.add(path)


def unregister_temporary(path: Path) -> None:
    _live.discard(Path(path))


def remove_temporaries() -> list[Path]:
    """Remove every temporary output still alive (signal and exit paths); return what was removed."""
    removed = []
    for tmp in list(_live):
        try:
            tmp.unlink()
            removed.append(tmp)
        except FileNotFoundError:
            pass
        except OSError:
            continue
        _live.discard(tmp)
    return removed


@contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path ``<dir>/.<name>.tmp-XXXX`` that becomes ``final`` only if the block succeeds.

    Parameters
    ----------
    final : path
        The file to create or replace (never a file this process reads: see the module notes).

    Yields
    ------
    Path
        An (empty, already created) temporary file in the same directory, mode ``0o666 & ~umask``; write to it
        by name (``h5py.File(tmp, "w", rdcc_nbytes=0)``, ``torch.save(obj, tmp)``, ...). HDF5 writers pass
        ``rdcc_nbytes=0``: with no chunk cache a full disk fails the write call itself, not a dataset's
        deallocation, where h5py can only print the error and HDF5 later crashes.

    Notes
    -----
    The rename is ``os.replace`` within one directory, atomic on POSIX. On any exception (including
    ``KeyboardInterrupt`` and the CLI's SIGTERM/SIGHUP exception) the temporary file is removed and the
    exception propagates, a full disk as :class:`~ptyfast.errors.OutputError`; ``final`` is untouched.
    """
    final = check_writable(final)
    tmp = _new_temporary(final)
    try:
        yield tmp
        check_not_input(final)  # a reader may have registered it since the up-front check
        if _pending:
            _pending[-1].append((tmp, final))  # renamed when the enclosing transaction commits
        else:
            os.replace(tmp, final)
            _live.discard(tmp)
    except BaseException as exc:
        _discard(tmp)
        if is_disk_full(exc):
            _failed.append(exc)
            raise disk_full_error(final, exc) from None
        raise


@contextmanager
def output_transaction() -> Iterator[None]:
    """All files written through :func:`atomic_path` inside the block appear together at its end, or none
    does: a reconstruction whose PNG previews hit a full disk leaves no HDF5 either. A transaction opened inside
    another joins it (its files appear with the enclosing transaction's)."""
    if _pending:
        yield
        return
    batch: list[tuple[Path, Path]] = []
    _pending.append(batch)
    try:
        yield
    except BaseException:
        _pending.remove(batch)
        for tmp, _ in batch:
            _discard(tmp)
        raise
    _pending.remove(batch)
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)  # all renames happen, or none
    try:
        for tmp, final in batch:
            os.replace(tmp, final)
            _live.discard(tmp)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


@contextmanager
def output_folder(path: str | Path) -> Iterator[Path]:
    """``ensure_dir(path)`` for the block; a folder this call created is removed again if the block fails and
    left it empty (a failed export or training run leaves no empty folder behind)."""
    path = Path(path)
    created = not path.exists()
    ensure_dir(path)
    try:
        yield path
    except BaseException:
        if created:
            try:
                path.rmdir()
            except OSError:
                pass
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


def save_figure(fig, path: str | Path, **savefig_kwargs) -> Path:
    """``fig.savefig`` atomically (format from the suffix, PNG by default); the figure is left open."""
    path = Path(path)
    savefig_kwargs.setdefault("format", path.suffix.lstrip(".") or "png")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, **savefig_kwargs)
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_json(path: str | Path, obj, *, indent: int = 2) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically (numpy values allowed)."""
    import json

    return write_text(path, json.dumps(obj, indent=indent, default=json_default))


def ensure_dir(path: str | Path) -> Path:
    """Create output folder ``path`` (and parents) or raise one clear InputError."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise InputError(f"cannot create output folder {path}: a file is in the way; choose another -o.") from None
    except PermissionError:
        raise InputError(f"cannot create output folder {path}: permission denied; choose another -o.") from None
    except OSError as exc:
        raise InputError(f"cannot create output folder {path} ({exc.strerror}); choose another -o.") from None
    if not os.access(path, os.W_OK):
        raise InputError(f"output folder {path} is not writable; choose another -o.")
    return path
