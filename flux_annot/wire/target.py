"""Which flux-annot service a client talks to (docs/cli.md, docs/python-api.md).

A client given no socket chooses, in this order (the first that applies):

1. `--socket P` / `socket=P`: that Unix socket;
2. `$FLUX_ANNOT_SOCKET`: that Unix socket;
3. `--flux-uri URI` / `flux_uri=URI`, else `$FLUX_URI`: the `annot` service
   of that Flux instance, through its broker (`FLUX_URI` is set inside
   every job, `flux proxy` and `flux start` shell, on every node);
4. the default socket path (`$XDG_RUNTIME_DIR/flux-annot/socket`, else
   `/tmp/flux-annot-$UID/socket`).

`resolve()` only decides; nothing is opened or imported here.
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass

from flux_annot.wire.protocol import default_socket_path

SOCKET = "socket"
FLUX = "flux"


@dataclass(frozen=True)
class Target:
    """A service address: `kind` is "socket" (`address` a path) or "flux"
    (`address` a Flux URI)."""

    kind: str
    address: str

    @property
    def is_flux(self) -> bool:
        return self.kind == FLUX

    def describe(self) -> str:
        """What a message or a header names: the path, or `Flux URI`."""
        return f"Flux {self.address}" if self.is_flux else self.address


def resolve(
    socket: str | None = None,
    flux_uri: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Target:
    """The target a client with these arguments talks to (module doc)."""
    env = os.environ if environ is None else environ
    if socket:
        return Target(SOCKET, socket)
    path = env.get("FLUX_ANNOT_SOCKET")
    if path:
        return Target(SOCKET, path)
    uri = flux_uri or env.get("FLUX_URI")
    if uri:
        return Target(FLUX, uri)
    return Target(SOCKET, str(default_socket_path(env)))
