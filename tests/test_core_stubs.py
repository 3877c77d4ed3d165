"""The type stubs of the C module list exactly the functions the cdef declares."""

import re
from importlib import resources

from flux_annot.core._core import lib


def _read(name):
    return (resources.files("flux_annot.core") / name).read_text()


def test_stub_names_every_cdef_function_and_nothing_else():
    declared = set(re.findall(r"\b(fa_\w+)\s*\(", _read("_cdef.h")))
    stubbed = set(re.findall(r"def (fa_\w+)\(", _read("_core.pyi")))
    assert declared == stubbed
    for name in declared:  # and each one is really in the compiled module
        assert callable(getattr(lib, name))
