"""Errors a user can act on: each message names the file or key and what to do."""


class PddpmInputError(ValueError):
    """Bad input data (a file, a mask, a split sheet): the message names it and the fix."""


class PddpmConfigError(ValueError):
    """A configuration that the schema cannot catch (e.g. a key that names a missing data set)."""
