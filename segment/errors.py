"""Exceptions for invalid datasets and inputs, each naming the file or value at fault."""


class DataError(ValueError):
    """A dataset, file or case is missing or invalid; the message names it and the fix."""


class FetchError(DataError):
    """A download failed, did not match its published checksum, or its archive is unsafe to extract."""
