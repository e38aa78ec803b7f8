"""The ``ptyfast`` command line. One small module per command; each registers itself on ``app``.

Known errors (:class:`ptyfast.errors.InputError`, unreadable files) become one sentence on stderr and
exit status 2; ``PTYFAST_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import os
import sys

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


def main(argv: list[str] | None = None) -> None:
    from ptyfast.errors import InputError

    _load_commands()
    try:
        app(args=argv, standalone_mode=True)
    except InputError as exc:
        if os.environ.get("PTYFAST_DEBUG"):
            raise
        console_err.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(2)


__all__ = ["app", "main"]
