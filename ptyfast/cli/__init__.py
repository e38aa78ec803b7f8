"""The ``ptyfast`` command line. One small module per command; each registers itself on ``app``.

Known errors (:class:`ptyfast.errors.InputError`, unreadable files) become one sentence on stderr and
exit status 2; ``PTYFAST_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import os
import sys

from ptyfast.cli.app import app, fail

# Command modules register on import (order = order in --help).
_COMMANDS = [
    "simulate", "info", "convert", "models", "train", "finetune", "export",
    "reconstruct", "refine", "evaluate", "paper", "bench", "demo",
]


def _load_commands() -> None:
    import importlib

    for name in _COMMANDS:
        try:
            importlib.import_module(f"ptyfast.cli.cmd_{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"ptyfast.cli.cmd_{name}":
                raise


def _terminate(signum, frame):
    """SIGINT/SIGTERM/SIGHUP: remove every temporary output and leave with 128 + signal, at once.

    Raising an exception instead is not enough: Python may run the handler inside a garbage-collector or
    weakref callback, where an exception is printed and ignored and the command would run on to exit 0.
    """
    import signal

    from ptyfast.io.atomic import remove_temporaries

    remove_temporaries()
    what = "interrupted" if signum == signal.SIGINT else f"terminated by {signal.Signals(signum).name}"
    os.write(2, f"{what}; partial outputs removed\n".encode())
    os._exit(128 + signum)


def install_signal_handlers() -> None:
    """SIGINT (Ctrl-C), SIGTERM and SIGHUP end the command at once with its temporary outputs removed
    (:func:`_terminate`); SIGXFSZ is ignored so that a file-size limit surfaces as EFBIG, reported as one
    sentence, instead of killing us."""
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _terminate)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def main(argv: list[str] | None = None) -> None:
    from ptyfast.errors import PtyfastError
    from ptyfast.io import atomic

    install_signal_handlers()
    _load_commands()
    try:
        app(args=argv, standalone_mode=True)
    except PtyfastError as exc:  # raised outside a command's own edge (option parsing callbacks)
        if os.environ.get("PTYFAST_DEBUG"):
            raise
        sys.exit(fail(str(exc), getattr(exc, "exit_code", 2)).exit_code)
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
