"""Errors for user mistakes. The CLI prints them as one line and exits with status 2."""

__all__ = ["UserError"]


class UserError(Exception):
    """A mistake in what the user asked for (bad argument, missing file, design that does not
    fit). The message names the bad value and says what is accepted or what to do."""
