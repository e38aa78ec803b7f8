"""Errors that the CLI turns into one clear sentence and exit status 2."""


class InputError(ValueError):
    """Bad user input: a file, an option or a combination of them that ptyfast cannot use.

    The message is one sentence that names the input, what was expected, what was found and,
    where possible, the remedy.
    """


class OutputError(InputError):
    """An output could not be written (full disk, quota, file-size limit); one sentence, exit status 1.

    Nothing was written: the temporary file has been removed.
    """

    exit_code = 1



class ClusterError(InputError):
    """The Dask cluster failed the job (workers died on a task more often than the scheduler allows, or the
    scheduler went away); one sentence, exit status 1, nothing written for the scans not yet finished."""

    exit_code = 1


class ResultError(InputError):
    """A result that cannot explain its data, refused because the user asked for strictness (``--strict``);
    one sentence, exit status 1, nothing written."""

    exit_code = 1
