"""The one exception hierarchy that the CLI and the API translate.

Every message is a single line a person can act on; callers never need the
traceback. `BadInput` means the caller asked for something wrong (exit 2 on the
command line); every other `JsonsnapError` is a failure of the world: the
database, git, the lock or the files (exit 1).
"""


class JsonsnapError(Exception):
    """Base of every error jsonsnap raises on purpose."""


class BadInput(JsonsnapError):
    """The request itself is wrong: an unknown table, a malformed date or URL."""


class DatabaseFailure(JsonsnapError):
    """The database could not be reached or failed while being read or written."""

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        #: The failure alone, without the (masked) URL: for an API response.
        self.reason = reason or message


class RepoError(JsonsnapError):
    """The snapshot repository is missing, unusable, or git failed."""


class LockTimeout(JsonsnapError):
    """Another jsonsnap run holds the repository lock for longer than allowed."""


class SnapshotCorrupt(JsonsnapError):
    """A snapshot file does not match its manifest (checksum, count or format)."""


class CodecError(JsonsnapError):
    """A value cannot be encoded or decoded without loss."""


class RestoreConflict(JsonsnapError):
    """The snapshot cannot go into the database as it is (a constraint, a missing column)."""


class ScheduleError(JsonsnapError):
    """The crontab could not be read or written."""
