"""flux-annot: the job annotation service of a Flux-style job manager."""

from flux_annot.wire.client import AsyncClient, Client
from flux_annot.core import JobTable, merge
from flux_annot import sched
from flux_annot.service.policy import Cred
from flux_annot.service.service import AnnotationService
from flux_annot.errors import (
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
