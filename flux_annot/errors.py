"""The exception tree of flux-annot: one `AnnotError` carrying an errno.

Every failure a user can see (a C core error, a policy refusal, a limit, a
wire error) is an `AnnotError` with `.errno` (a Linux errno value, docs/protocol.md)
and a human sentence. Subclasses for the common families also derive from
the matching built-in exception, so `except PermissionError` works.
"""

import errno as _errno

EPERM = _errno.EPERM
ENOENT = _errno.ENOENT
E2BIG = _errno.E2BIG
EAGAIN = _errno.EAGAIN
EEXIST = _errno.EEXIST
EINVAL = _errno.EINVAL
ENOSYS = _errno.ENOSYS
ENODATA = _errno.ENODATA
EPROTO = _errno.EPROTO
EOVERFLOW = _errno.EOVERFLOW
EMSGSIZE = _errno.EMSGSIZE
EDQUOT = _errno.EDQUOT
EIO = _errno.EIO
ENOSPC = _errno.ENOSPC
ETIMEDOUT = _errno.ETIMEDOUT


class AnnotError(Exception):
    """An error with an errno value and a sentence a user can read."""

    index: int  # JobTable.annotate_many: the index of the patch that failed

    def __init__(self, errnum: int, message: str | None = None) -> None:
        self.errno = int(errnum)
        self.message = message if message else _errno_sentence(self.errno)
        super().__init__(self.errno, self.message)

    def __str__(self) -> str:
        return self.message


class AnnotPermissionError(AnnotError, PermissionError):  # type: ignore[misc]  # .errno is always an int here
    """EPERM: the credential may not do this."""


class UnknownJobError(AnnotError, LookupError):
    """ENOENT: unknown job id, or the job is inactive."""


class AnnotValueError(AnnotError, ValueError):
    """EINVAL / EPROTO: the request or its JSON is malformed."""


class LimitError(AnnotError):
    """E2BIG / EDQUOT / EAGAIN / EMSGSIZE: a limit of docs/limits.md was hit."""


_CLASSES: dict[int, type[AnnotError]] = {
    EPERM: AnnotPermissionError,
    ENOENT: UnknownJobError,
    EINVAL: AnnotValueError,
    EPROTO: AnnotValueError,
    E2BIG: LimitError,
    EDQUOT: LimitError,
    EAGAIN: LimitError,
    EMSGSIZE: LimitError,
}


def _errno_sentence(errnum: int) -> str:
    import os

    try:
        return os.strerror(errnum)
    except (ValueError, OverflowError):
        return f"error {errnum}"


def error(errnum: int, message: str | None = None) -> AnnotError:
    """Build the `AnnotError` subclass that matches `errnum`."""
    return _CLASSES.get(int(errnum), AnnotError)(errnum, message)
