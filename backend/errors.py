"""Domain errors: every service raises these, and every surface (page, CLI, REST) shows their message."""


class SextantError(Exception):
    """Base class; the message is written for the user who caused it."""


class InvalidInputError(SextantError):
    """The user's input is wrong; nothing was stored."""


class NotFoundError(SextantError):
    """A named thing does not exist."""


class ConflictError(SextantError):
    """The request clashes with the current state (e.g. a concurrent write); retrying may succeed."""
