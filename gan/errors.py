"""Exceptions of the gan package."""

from segment.errors import DataError


class GanError(DataError):
    """A GAN setting, checkpoint or generator input is invalid; the message names the value and the fix.

    It subclasses ``DataError`` so the ``medaug`` command reports it as a user error.
    """
