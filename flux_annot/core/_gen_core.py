"""Generate the cffi API-mode C source of `flux_annot.core._core`.

meson runs this as a custom_target: `python _gen_core.py _cdef.h OUT.c`.
The cdef lives in `_cdef.h` (a plain file listed as a build input, so an
edit regenerates); the C core itself is compiled by meson as a static
library and linked into the extension, so `set_source` only includes the
header.
"""

import sys

import cffi


# cffi releases the GIL around every C call. Our calls are short (well
# under a microsecond) and a table or ctx must not be used by two threads
# at once (fa.h): keep the GIL held, which both makes concurrent calls on
# one table impossible and saves a release/re-acquire per call. Errors
# come back in the fa_ctx (errno value + sentence), never through C's
# errno, so cffi's save/restore of errno around each call (ffi.errno) is
# dropped too.
_PREAMBLE = """#include "fa.h"
#undef Py_BEGIN_ALLOW_THREADS
#undef Py_END_ALLOW_THREADS
#define Py_BEGIN_ALLOW_THREADS {
#define Py_END_ALLOW_THREADS }
#undef _cffi_restore_errno
#undef _cffi_save_errno
#define _cffi_restore_errno() ((void)0)
#define _cffi_save_errno() ((void)0)
"""


def build_ffi(cdef_path):
    ffi = cffi.FFI()
    with open(cdef_path, encoding="utf-8") as f:
        ffi.cdef(f.read())
    # The full dotted name: its last part must equal the extension name.
    ffi.set_source("flux_annot.core._core", _PREAMBLE)
    return ffi


def main(argv):
    if len(argv) != 3:
        sys.exit("usage: _gen_core.py CDEF OUT.c")
    build_ffi(argv[1]).emit_c_code(argv[2])


if __name__ == "__main__":
    main(sys.argv)
