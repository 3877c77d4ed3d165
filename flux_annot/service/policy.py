"""Credentials and the namespace rules of docs/policy.md.

A `Cred` is who is asking: a userid and whether it holds the instance
owner's role (the scheduler and the job manager are owner-role clients).
`Policy` turns the `namespace.*` tables of the config into the two
questions the service asks on every request:

- may these roles write these top-level namespaces? (`check_write`), where
  the roles of a request are "sched" (an alloc response), "owner" (the
  instance owner) and "job-owner" (the job's own user, owner or not);
- what part of a job may a credential read? The instance owner and the
  job's own user see the whole tree; anyone else sees only the namespaces
  whose `read` list holds "all" (docs/DESIGN.md). That view is precomputed
  once per config as a namespace list plus include/exclude mode, which the
  C core applies (`JobTable.get_view` / `encode`) without building dicts.
"""

from collections.abc import Iterable
from typing import TYPE_CHECKING

from flux_annot.errors import EINVAL, EPERM, error

if TYPE_CHECKING:
    from flux_annot.service.config import Config
    from flux_annot.service.service import AnnotationService

_U32 = 1 << 32


class Cred:
    """A credential: `userid` and whether it has the instance owner role."""

    __slots__ = ("userid", "owner")

    def __init__(self, userid: int, owner: bool = False) -> None:
        if isinstance(userid, bool) or not isinstance(userid, int) or not 0 <= userid < _U32:
            raise error(EINVAL, f"userid must be an unsigned 32-bit integer, not {userid!r}")
        self.userid = userid
        self.owner = bool(owner)

    @classmethod
    def owner_of(cls, service: "AnnotationService") -> "Cred":
        """The instance owner's credential for `service`."""
        return cls(service.owner_uid, owner=True)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Cred):
            return NotImplemented
        return self.userid == other.userid and self.owner == other.owner

    def __hash__(self) -> int:
        return hash((self.userid, self.owner))

    def __repr__(self) -> str:
        return f"Cred({self.userid}, owner={self.owner})"


SCHED_RESERVED = "the sched namespace is reserved for the scheduler"


class Policy:
    """The namespace rules of one `Config`, precomputed for cheap checks."""

    def __init__(self, config: "Config") -> None:
        self.config = config
        named = {n: r for n, r in config.namespace.items() if n != "default"}
        default = config.namespace["default"]
        self._named = named
        self._default = default
        # Per role: the named namespaces it may write, and whether it may
        # write the unnamed ones (the `default` table).
        self._write = {
            role: (frozenset(n for n, r in named.items() if role in r.write), role in default.write)
            for role in ("sched", "owner", "job-owner")
        }
        # True when the scheduler may write any namespace: alloc responses
        # then skip the key check entirely.
        ok, dflt = self._write["sched"]
        self.sched_writes_all = dflt and len(ok) == len(named)
        # The view of someone else's job (readers "all").
        self.default_all_readable = "all" in default.read
        if self.default_all_readable:
            self.view_exclude = True
            self.view_namespaces = sorted(n for n, r in named.items() if "all" not in r.read)
        else:
            self.view_exclude = False
            self.view_namespaces = sorted(n for n, r in named.items() if "all" in r.read)

    def writable(self, role: str, ns: str) -> bool:
        """Whether `role` ("sched", "owner", "job-owner") may write namespace `ns`."""
        ok, dflt = self._write[role]
        return ns in ok or (dflt and ns not in self._named)

    def check_sched(self, keys: Iterable[str]) -> None:
        """EPERM unless an alloc response may write every namespace in `keys`."""
        if self.sched_writes_all:
            return
        ok, dflt = self._write["sched"]
        for ns in keys:
            if ns not in ok and not (dflt and ns not in self._named):
                raise error(EPERM, f"the scheduler may not write the {ns!r} namespace")

    def check_owner(self, keys: Iterable[str], own_job: bool) -> None:
        """EPERM unless the instance owner may write every namespace in `keys`.

        `own_job`: the job belongs to the owner's uid (then "job-owner" applies too).
        """
        for ns in keys:
            if self.writable("owner", ns) or (own_job and self.writable("job-owner", ns)):
                continue
            raise error(EPERM, self._refusal(ns, "the instance owner"))

    def check_guest(self, keys: Iterable[str]) -> None:
        """EPERM unless a guest may write every namespace in `keys` of its own job."""
        for ns in keys:
            if not self.writable("job-owner", ns):
                raise error(EPERM, self._refusal(ns, "guests"))

    def _refusal(self, ns: str, who: str) -> str:
        if ns == "sched" and self.writable("sched", "sched"):
            return SCHED_RESERVED
        allowed = sorted(n for n in self._named if self.writable("job-owner", n))
        if who == "guests" and allowed:
            return (
                f"guests may not write the {ns!r} namespace "
                f"(guests may write: {', '.join(allowed)})"
            )
        return f"{who} may not write the {ns!r} namespace"

    def sees_all(self, cred: Cred, job_userid: int) -> bool:
        """Whether `cred` reads the job's whole tree (owner role or its own job)."""
        return cred.owner or cred.userid == job_userid
