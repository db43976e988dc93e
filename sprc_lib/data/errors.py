"""The one exception type for bad dataset input, so callers can catch data problems apart from bugs."""

from __future__ import annotations

from sprc_lib.errors import UserError


class DataError(UserError):
    """A dataset file, record or image is missing or malformed.

    The message always names the file (and the record index / pair id / field where one applies)
    and says what to do about it, because the person reading it is usually fixing a download.
    """
