"""Generate the cffi API-mode C source of `flux_annot._core`.

meson runs this as a custom_target: `python _gen_core.py _cdef.h OUT.c`.
The cdef lives in `_cdef.h` (a plain file listed as a build input, so an
edit regenerates); the C core itself is compiled by meson as a static
library and linked into the extension, so `set_source` only includes the
header.
"""

import sys

import cffi


def build_ffi(cdef_path):
    ffi = cffi.FFI()
    with open(cdef_path, encoding="utf-8") as f:
        ffi.cdef(f.read())
    # The full dotted name: its last part must equal the extension name.
    ffi.set_source("flux_annot._core", '#include "fa.h"\n')
    return ffi


def main(argv):
    if len(argv) != 3:
        sys.exit("usage: _gen_core.py CDEF OUT.c")
    build_ffi(argv[1]).emit_c_code(argv[2])


if __name__ == "__main__":
    main(sys.argv)
