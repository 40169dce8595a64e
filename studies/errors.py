"""Exceptions of study files and study runs."""


class SpecError(ValueError):
    """A study file is missing or invalid; the message names the file and the key."""
