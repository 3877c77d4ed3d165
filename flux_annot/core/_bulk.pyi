# Type stub for the C extension flux_annot.core._bulk (flux_annot/_bulk.c);
# only core.JobTable.annotate_many calls it.
from array import array
from collections.abc import Sequence

def apply(table: int, limits: int, ids: array[int], patches: Sequence[object], /) -> tuple[int, int, int] | None: ...
