"""Failures the user can act on: the CLI prints their one-line message instead of a traceback."""


class StageError(RuntimeError):
    """The stage could not do its work (e.g. every mirror failed); exit code 1."""
