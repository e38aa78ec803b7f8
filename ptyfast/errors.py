"""Errors that the CLI turns into one clear sentence and exit status 2."""


class InputError(ValueError):
    """Bad user input: a file, an option or a combination of them that ptyfast cannot use.

    The message is one sentence that names the input, what was expected, what was found and,
    where possible, the remedy.
    """
