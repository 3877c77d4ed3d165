"""Finding Flux's Python bindings the way Flux's own tools do (docs/flux.md).

Flux's bindings are not a dependency of this package: they come with the
Flux installation (PREFIX/lib/flux/python3.X). Flux's own Python commands
do not rely on the user's PYTHONPATH either: `flux` puts its builtin
`python_path` in front of PYTHONPATH when it runs them. So a user in a
Flux shell, or a job, has `flux` on PATH but (usually) no PYTHONPATH
naming the bindings.

`import_flux()` therefore:

1. imports `flux` (a PYTHONPATH, `flux python`, or an installed
   `flux-python` package: whatever the user set up wins);
2. else asks the `flux` command on PATH: `flux env` prints the
   environment Flux gives its commands, PYTHONPATH included; the entries
   missing from `sys.path` are added at its end, and the import is tried
   again;
3. else raises `AnnotError` (EIO) with one sentence saying what is
   missing and how to fix it (no `flux` command at all, or bindings that
   do not import with this Python).

The outcome is cached for the process.
"""

import importlib
import os
import shlex
import shutil
import subprocess
import sys
from typing import Any

from flux_annot.errors import EIO, AnnotError

_cached: Any = None


def _flux_env_pythonpath(flux_cmd: str) -> list[str]:
    """The PYTHONPATH entries `flux env` prints (those Flux's commands get)."""
    try:
        out = subprocess.run(
            [flux_cmd, "env"], capture_output=True, text=True, timeout=30,
            stdin=subprocess.DEVNULL,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    for line in out.splitlines():
        # `export PYTHONPATH="a:b"` (flux-env(1); one variable a line)
        if line.startswith("export PYTHONPATH="):
            try:
                value = shlex.split(line[len("export PYTHONPATH="):])
            except ValueError:
                return []
            return [p for p in ":".join(value).split(":") if p]
    return []


def _import() -> Any:
    mod = importlib.import_module("flux")
    importlib.import_module("flux.constants")
    return mod


def import_flux() -> Any:
    """The `flux` module (module doc); AnnotError (EIO, one sentence) if it
    cannot be found."""
    global _cached
    if _cached is not None:
        return _cached
    try:
        _cached = _import()
        return _cached
    except ImportError:
        pass
    flux_cmd = shutil.which("flux")
    uri = os.environ.get("FLUX_URI")
    where = f" (FLUX_URI is {uri})" if uri else ""
    if flux_cmd is None:
        raise AnnotError(
            EIO,
            f"Flux's Python bindings are not importable and there is no `flux` command on "
            f"PATH to say where they are{where}: put your Flux installation's bin directory "
            "on PATH, set PYTHONPATH=PREFIX/lib/flux/python3.X, or run under `flux python`",
        )
    added = [p for p in _flux_env_pythonpath(flux_cmd) if p not in sys.path]
    sys.path.extend(added)
    importlib.invalidate_caches()
    try:
        _cached = _import()
        return _cached
    except ImportError as exc:
        second = exc
    missing = getattr(second, "name", None) or str(second)
    if missing.split(".")[0] in ("flux", "_flux"):
        # the bindings are there but not for this Python (another minor
        # version), or `flux env` named no bindings at all
        looked = ", ".join(added) or "nothing new"
        raise AnnotError(
            EIO,
            f"Flux's Python bindings do not import in this Python "
            f"({sys.version_info.major}.{sys.version_info.minor}: {second}); "
            f"`{flux_cmd} env` added {looked} to the path: run flux-annotate with the Python "
            "Flux was built for, or set PYTHONPATH to its PREFIX/lib/flux/python3.X",
        ) from None
    raise AnnotError(
        EIO,
        f"Flux's Python bindings need the {missing!r} module: pip install cffi pyyaml ply",
    ) from None


def flux_lib() -> tuple[Any, Any]:
    """(ffi, lib) of Flux's C API through the bindings' cffi module."""
    import_flux()
    inner = importlib.import_module("flux.core.inner")
    return inner.ffi, inner.lib
