"""Errors that the CLI turns into one clear sentence and an exit status, by kind.

Every kind derives from :class:`PtyfastError`, which is what an edge that reports them (the CLI) catches; the
kinds are separate, so that code that recovers from one (a backend that cannot run here: try the next) does not
swallow another (a full disk while caching its model file).

============================  ======  ==============================================================
kind                          status  what went wrong
============================  ======  ==============================================================
:class:`InputError`           2       a file, an option or a combination of them ptyfast cannot use
:class:`SetupError`           2       the environment: a package, a device or a driver is missing or broken
:class:`ClusterError`         1       the Dask cluster failed the job (a :class:`SetupError`)
:class:`OutputError`          1       an output could not be written (full disk, quota, file-size limit)
:class:`ResultError`          1       a result refused because the user asked for strictness
============================  ======  ==============================================================
"""


class PtyfastError(ValueError):
    """A failure ptyfast reports as one sentence: what failed, what was expected, what was found and, where
    possible, the remedy. ``exit_code`` is the CLI's exit status for it."""

    exit_code = 2


class InputError(PtyfastError):
    """Bad user input: a file, an option or a combination of them that ptyfast cannot use.

    The message is one sentence that names the input, what was expected, what was found and,
    where possible, the remedy.
    """


class SetupError(PtyfastError):
    """The environment cannot run what was asked: a package is not installed (or two conflict), a device or a
    driver is missing. One sentence naming what to install or change; exit status 2."""


class ClusterError(SetupError):
    """The Dask cluster failed the job (workers died on a task more often than the scheduler allows, or the
    scheduler went away); one sentence, exit status 1, nothing written for the scans not yet finished."""

    exit_code = 1


class OutputError(PtyfastError):
    """An output could not be written (full disk, quota, file-size limit); one sentence, exit status 1.

    Nothing was written: the temporary file has been removed.
    """

    exit_code = 1


class ResultError(PtyfastError):
    """A result that cannot explain its data, refused because the user asked for strictness (``--strict``);
    one sentence, exit status 1, nothing written."""

    exit_code = 1
