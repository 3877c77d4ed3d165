"""flux-annot: the job annotation service of a Flux-style job manager."""

from .client import AsyncClient, Client
from .core import JobTable, merge
from . import sched
from .policy import Cred
from .service import AnnotationService
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
    "AnnotationService", "Cred", "sched",
]
