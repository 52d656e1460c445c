"""The one error type of the toolkit's command-line entry points.

Every failure the `spaced` CLI reports is a SpacedError: its `kind` names the failure and its
message says what to do next. The CLI prints `ERROR (<kind>): <message>` (the traceback only with
`--debug`); anything else is an internal error.
"""

from __future__ import annotations


class SpacedError(Exception):
    """Base of every failure reported as `ERROR (<kind>): <message>`; subclasses set `kind`."""

    kind = "Error"


class CliError(SpacedError):
    """A failure of a command-line argument or input whose kind is given where it is raised."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
