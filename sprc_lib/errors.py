"""The exceptions that mean "the user can fix this": bad data, paths, checkpoints, settings, run folders.

The command line prints such an error as one short message (the file or field, and what to do) and
exits with code 2; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in what the user gave; the message names the file or field and says what to do."""


class RunFolderError(UserError):
    """A run folder that cannot be used as asked: it holds another run, another process writes it, ..."""


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the message says where and how to go on."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the user named (or a step they have not run yet) is not there."""


class CheckpointError(UserError, ValueError):
    """A checkpoint that is not what it claims or does not fit the model: the message says which and why."""


class DiskFullError(UserError, OSError):
    """No room left to write a file: the message names the folder, the free space and the space needed."""
