"""flux-annot: the job annotation service of a Flux-style job manager."""

from .client import AsyncClient, Client
from .core import JobTable, merge
from .errors import (
    AnnotError,
    AnnotPermissionError,
    AnnotValueError,
    LimitError,
    UnknownJobError,
)

__all__ = [
    "merge",
    "JobTable",
    "AnnotError",
    "AnnotPermissionError",
    "UnknownJobError",
    "AnnotValueError",
    "LimitError",
    "Client",
    "AsyncClient",
]
