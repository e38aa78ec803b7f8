"""The ``ptyfast`` command line. One small module per command; each registers itself on ``app``.

Known errors (:class:`ptyfast.errors.InputError`, unreadable files) become one sentence on stderr and
exit status 2; ``PTYFAST_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import os
import sys

from rich.markup import escape

from ptyfast.cli.app import app, console_err

# Command modules register on import (order = order in --help).
_COMMANDS = [
    "simulate", "info", "convert", "models", "train", "finetune", "export",
    "reconstruct", "refine", "evaluate", "bench", "demo",
]


def _load_commands() -> None:
    import importlib

    for name in _COMMANDS:
        try:
            importlib.import_module(f"ptyfast.cli.cmd_{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"ptyfast.cli.cmd_{name}":
                raise


def _raise_terminated(signum, frame):
    from ptyfast.errors import Terminated

    raise Terminated(signum)


def install_signal_handlers() -> None:
    """SIGTERM/SIGHUP raise :class:`~ptyfast.errors.Terminated` (cleanup runs as for Ctrl-C); SIGXFSZ is
    ignored so that a file-size limit surfaces as EFBIG, reported as one sentence, instead of killing us."""
    import signal

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_terminated)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def main(argv: list[str] | None = None) -> None:
    from ptyfast.errors import InputError
    from ptyfast.io import atomic

    install_signal_handlers()
    _load_commands()
    try:
        app(args=argv, standalone_mode=True)
    except InputError as exc:
        if os.environ.get("PTYFAST_DEBUG"):
            raise
        console_err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        sys.exit(2)
    except SystemExit as exc:
        if atomic._failed:
            # HDF5 cannot close a file whose last flush failed and may crash freeing it at exit: the temporary
            # file is already gone, so leave without running the library's exit handlers.
            atomic.remove_temporaries()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(exc.code if isinstance(exc.code, int) else 1)
        raise


__all__ = ["app", "main"]
