"""`flux-annotate`: the command line (docs/cli.md).

Exit status: 0 success, 1 a service error (the message, errstr included,
on stderr), 2 a usage error (argparse's, or a bad argument found here:
a bad job id, `key=value` syntax, a bad format string). A bad `--config`
file for `serve` is exit 1: the service refuses to start, as with any
other start-up error.

Choices where docs/cli.md is silent:

- `set`/`memo`/`sched`/`alloc` arguments are `key.path=value`; the value is
  JSON if it parses (`1`, `true`, `"x"`, `[1,2]`, `{"a":1}`), else the
  string itself; `null` deletes; `-` reads the value from stdin (once per
  command). Several arguments merge into one patch, later ones winning.
- `get JOBID` prints the job's annotations (`null` if none); with a path,
  the value at that path; `--job` prints the whole `{id, userid, state,
  annotations}` record instead. Output is compact JSON.
- `list --json` prints `{"jobs": [...]}` with ids as integers.
- `watch` starts from a snapshot (so its lines can show every field of the
  job) unless `--since` is given; it prints one line per state transition
  and per annotation change, with the extra fields `{seq}`, `{event}`
  (`state` or `annotations`) and `{timestamp}` (transitions).
- `alloc` clears `t_estimate`, `reason_pending` and `jobs_ahead` as
  `flux_annot.sched.success` does (its `key=value` arguments may set them
  again). The owner tools print nothing on success. An alloc response the service
  ignores (the job is not pending) is exit 1 with a message: nothing was
  done.
"""

import argparse
import errno
import json
import os
import pwd
import sys
import time

from flux_annot.views import listing
from flux_annot.errors import AnnotError
from flux_annot.ids import JobID, MAX_ID, parse_jobid

PROG = "flux-annotate"

WATCH_FORMAT = "{seq:>5} {id.f58:>12} {event:<11} {state:<8} {annotations}"
_TOPICS = {
    "job-state": "job-state",
    "state": "job-state",
    "job-annotations": "job-annotations",
    "annotations": "job-annotations",
}


# `flux-annotate COMMAND --help` ends with these examples (docs/cli.md has more).
EXAMPLES = {
    "serve": """\
examples:
  flux-annotate serve --store :memory: &        # everything in memory
  flux-annotate serve --store jobs.db --config site.toml
  FLUX_ANNOT_SOCKET=/tmp/a.sock flux-annotate serve
  flux-annotate serve --flux --metrics 127.0.0.1:9464   # Prometheus scrapes /metrics""",
    "backup": """\
examples:
  flux-annotate backup --store /var/lib/flux-annot/annot.db /backup/annot-$(date +%F).db""",
    "set": """\
examples:
  flux-annotate set 1234 workflow.stage=2 workflow.name=prep   # owner: any writable namespace
  flux-annotate set 1234 user.note="waiting for input"
  flux-annotate set --volatile 1234 user.progress=0.5          # not written to the eventlog
  flux-annotate set 1234 user.note=null                        # null deletes
  echo '{"a": [1, 2]}' | flux-annotate set 1234 user.data=-    # value read from stdin""",
    "memo": """\
examples:
  flux-annotate memo 1234 step=3 label=warmup    # sets user.step and user.label
  flux-annotate memo 1234 label=null             # deletes user.label
  flux-annotate memo ƒNH step=4                  # ƒNH is job 1234 in F58 (0x4d2 works too)""",
    "get": """\
examples:
  flux-annotate get 1234                     # {"sched":{...},"user":{...}} or null
  flux-annotate get 1234 sched.t_estimate    # one value
  flux-annotate get --job 1234               # {"id":...,"userid":...,"state":...,"annotations":...}""",
    "list": """\
examples:
  flux-annotate list                                   # your active jobs
  flux-annotate list -A -a                             # every user's jobs, inactive ones too
  flux-annotate list --states pending -o '{id.f58:>12} {sched.t_estimate} {sched.reason_pending}'
  flux-annotate list -o '{id} {user.a-b} {annotations.workflow.stage}'
  flux-annotate list --json""",
    "watch": """\
examples:
  flux-annotate watch                          # a snapshot, then every change
  flux-annotate watch --topic job-state        # state transitions only
  flux-annotate watch --since 42               # resume after batch 42
  flux-annotate watch -o '{seq} {id} {event} {sched.reason_pending}'""",
    "stats": """\
example:
  flux-annotate stats          # jobs by state, requests, rejections by reason, store state""",
    "submit": """\
examples:
  flux-annotate submit 1234                    # a job of yours, in SCHED
  flux-annotate submit 1235 --userid alice --t-submit 1700000000""",
    "state": """\
examples:
  flux-annotate state 1234 CLEANUP             # RUN -> CLEANUP
  flux-annotate state 1234 INACTIVE --note "node failure"   # kept as the exception note""",
    "sched": """\
examples:
  flux-annotate sched 1234 t_estimate=1700000000 reason_pending="insufficient resources"
  flux-annotate sched 1234 jobs_ahead=3 reason_pending=null""",
    "alloc": """\
example:
  flux-annotate alloc 1234 resource_summary="rank0/core[0-1]"   # job -> RUN""",
    "deny": """\
example:
  flux-annotate deny 1234 "requested 8 GPUs, the instance has 4"   # job -> INACTIVE""",
    "cancel": """\
example:
  flux-annotate cancel 1234        # drops the job's sched notes; it stays pending""",
    "demo": """\
examples:
  flux-annotate demo                           # 12 jobs on 4 cores for 5 seconds
  flux-annotate demo --jobs 40 --cores 8 --seconds 20""",
    "dashboard": """\
examples:
  flux-annotate dashboard                      # prints http://127.0.0.1:PORT/?token=...
  flux-annotate dashboard --port 8080 --socket /run/flux-annot/socket""",
    "accuracy": """\
examples:
  flux-annotate accuracy                       # the table: first, last, horizons, queues
  flux-annotate accuracy --since 1d --queue batch
  flux-annotate accuracy --by user --jobs      # per user, and one row per job
  flux-annotate accuracy --json                # the object of docs/accuracy.md""",
    "top": """\
examples:
  flux-annotate top                            # your active jobs, live (q quits)
  flux-annotate top -A -o '{id.f58:>12} {username:<8} {state:<8} {sched.reason_pending}'""",
}


class UsageError(Exception):
    """A bad argument: exit status 2."""


# --- argument helpers -------------------------------------------------------


def jobid_arg(text):
    try:
        return JobID(parse_jobid(text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def userid_arg(text):
    if text.isascii() and text.isdigit():
        uid = int(text)
        if uid < 2**32:
            return uid
        raise argparse.ArgumentTypeError(f"userid {text} is out of range (32-bit)")
    try:
        return pwd.getpwnam(text).pw_uid
    except KeyError:
        raise argparse.ArgumentTypeError(f"unknown user {text!r}") from None


def seq_arg(text):
    if text.isascii() and text.isdigit() and int(text) <= MAX_ID:
        return int(text)
    raise argparse.ArgumentTypeError(f"invalid sequence number {text!r}: expected an integer >= 0")


def _reject_constant(name):
    raise ValueError(name)


def parse_value(raw):
    """JSON if `raw` parses as JSON, else the string itself."""
    try:
        value = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return raw
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        raise UsageError(f"value {raw!r} is out of range for a JSON number")
    return value


def parse_assignments(args, stdin=None):
    """`key.path=value` arguments → one merge patch (dict)."""
    patch = {}
    stdin_used = False
    for arg in args:
        key, sep, raw = arg.partition("=")
        if not sep:
            raise UsageError(f"{arg!r} is not key=value (e.g. note=hello or a.b=1)")
        steps = key.split(".")
        if any(not s for s in steps):
            raise UsageError(f"{key!r}: keys in a path must be non-empty (a.b.c)")
        if raw == "-":
            if stdin_used:
                raise UsageError("only one value can be read from stdin (-)")
            stdin_used = True
            raw = (stdin or sys.stdin).read()
            value = parse_value(raw)
            if isinstance(value, str) and value.endswith("\n"):
                value = value[:-1]
        else:
            value = parse_value(raw)
        cur = patch
        for step in steps[:-1]:
            nxt = cur.get(step)
            if not isinstance(nxt, dict):
                nxt = {}
                cur[step] = nxt
            cur = nxt
        cur[steps[-1]] = value
    return patch


def _format(text, extra_fields=()):
    try:
        return listing.JobFormat(text, extra_fields=extra_fields)
    except ValueError as e:
        raise UsageError(str(e)) from None


def _client(args):
    # the socket or the Flux instance, as every client chooses (flux_annot.target)
    from flux_annot.wire.client import Client

    return Client(socket=args.socket, flux_uri=args.flux_uri)


def _print_json(obj, **kw):
    print(json.dumps(obj, ensure_ascii=False, separators=(",", ":"), **kw))


# --- commands ---------------------------------------------------------------


def default_store_path():
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "flux-annot", "annot.db")


def load_config(path):
    """Read a TOML config file into a dict (validated by the service)."""
    import tomllib

    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise AnnotError(e.errno or 22, f"cannot read config {path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise AnnotError(22, f"config {path} is not valid TOML: {e}") from None


def cmd_serve(args):
    from flux_annot.ops import daemon
    from flux_annot.service.config import Config
    from flux_annot.wire.server import run_server

    flux = args.flux or args.flux_uri is not None  # the Flux mirror (docs/flux.md)
    if args.store is None and flux:
        args.store = os.path.join(os.path.dirname(default_store_path()), "flux-mirror.db")
    store = args.store if args.store is not None else default_store_path()
    config = load_config(args.config) if args.config else None
    # Everything that can refuse to start without touching the store comes
    # first: the config, then the metrics endpoint (bound now, before the
    # store's lock is taken).
    listen = args.metrics if args.metrics is not None else Config(config).metrics.listen
    metrics = None
    if listen:
        from flux_annot.ops.metrics import MetricsEndpoint

        metrics = MetricsEndpoint(listen)
    log = daemon.setup_logging(PROG)
    if store == ":memory:":
        store = None
    else:
        os.makedirs(os.path.dirname(os.path.abspath(store)), mode=0o700, exist_ok=True)

    def ready(srv):
        where = store if store else "in memory"
        log.info("serving on %s (store: %s)", srv.socket_path, where)
        if flux:
            uri = args.flux_uri or os.environ.get("FLUX_URI") or "the default instance"
            log.info("mirroring the Flux instance at %s", uri)
            # the broker transport logs its own line once registered
        if metrics is not None:
            metrics.attach(srv)
            log.info("metrics on %s", metrics.url())
        daemon.notify("READY=1", f"STATUS=serving on {srv.socket_path}")

    try:
        if flux:
            from flux_annot.flux.mirror_server import run_mirror

            return run_mirror(args.flux_uri, args.socket, store, config, ready=ready)
        return run_server(args.socket, store, config, ready=ready)
    finally:
        if metrics is not None:
            metrics.close()


def cmd_backup(args):
    # `flux-annotate backup DEST`: a copy of the store while the service runs
    # (docs/operations.md).
    from flux_annot.service.store import backup

    store = args.store if args.store is not None else default_store_path()
    seq, jobs = backup(store, args.dest)
    print(f"{PROG}: backed up {os.path.abspath(store)} to {os.path.abspath(args.dest)} "
          f"(batch {seq}, {jobs} jobs)", file=sys.stderr)
    return 0


def cmd_set(args):
    patch = parse_assignments(args.assign)
    with _client(args) as c:
        c.annotate(int(args.jobid), patch, volatile=args.volatile)
    return 0


def cmd_memo(args):
    patch = parse_assignments(args.assign)
    with _client(args) as c:
        c.memo(int(args.jobid), patch, volatile=args.volatile)
    return 0


def cmd_get(args):
    with _client(args) as c:
        job = c.get(int(args.jobid))
    if args.job:
        _print_json(job)
        return 0
    value = job.get("annotations")
    if args.path:
        steps = args.path.split(".")
        for step in steps:
            if not isinstance(value, dict) or step not in value:
                print(f"{PROG}: get: job {args.jobid} has no annotation {args.path}", file=sys.stderr)
                return 1
            value = value[step]
    _print_json(value)
    return 0


def list_query(args):
    """(states, userid) for `list`, with flux jobs' defaults."""
    if args.states:
        try:
            states = listing.parse_states(args.states)
        except ValueError as e:
            raise UsageError(str(e)) from None
    elif args.all_states:
        states = None
    else:
        states = list(listing.ACTIVE_STATES)
    userid = None if args.all_users else os.getuid()
    return states, userid


def cmd_list(args):
    fmt = None if args.json else _format(args.format or listing.DEFAULT_FORMAT)
    states, userid = list_query(args)
    with _client(args) as c:
        jobs = c.list(states=states, userid=userid)
    jobs = listing.sort_jobs(jobs)
    if args.json:
        _print_json({"jobs": jobs})
        return 0
    out = []
    if not args.no_header:
        out.append(fmt.header())
    out.extend(fmt.format(j) for j in jobs)
    if out:
        sys.stdout.write("\n".join(out) + "\n")
    return 0


def _watch_lines(batch, jobs, fmt, lookup):
    """Lines for one event batch; updates the `jobs` cache."""
    seq = batch.get("seq")
    lines = []
    for entry in batch.get("annotations") or ():
        jid, tree = entry[0], entry[1]
        job = jobs.get(jid) or lookup(jid)
        job["annotations"] = tree
        lines.append(fmt.format(job, {"seq": seq, "event": "annotations"}))
    for entry in batch.get("transitions") or ():
        jid, state = entry[0], entry[1]
        ts = entry[2] if len(entry) > 2 else None
        job = jobs.get(jid) or lookup(jid)
        job["state"] = state
        lines.append(fmt.format(job, {"seq": seq, "event": "state", "timestamp": ts}))
    return lines


def cmd_watch(args):
    from flux_annot.wire.target import resolve

    fmt = _format(args.format or WATCH_FORMAT, extra_fields=("seq", "event", "timestamp"))
    topics = None
    if args.topic:
        try:
            topics = sorted({_TOPICS[t] for t in args.topic})
        except KeyError as e:
            raise UsageError(f"unknown topic {e.args[0]!r}: use job-state or job-annotations") from None
    needs_owner = any(f in ("userid", "username") for f in fmt.fields)
    # Through a Flux broker the instance outlives its flux-annot service:
    # watch waits for a restarted service and resumes after the last seq.
    # On a socket the service is the endpoint: its end ends watch.
    resume = resolve(args.socket, args.flux_uri).is_flux
    with _client(args) as c:
        jobs = {}

        def lookup(jid):
            job = {"id": jid}
            if needs_owner:  # a job born after the snapshot: ask once who owns it
                try:
                    job.update(c.get(jid))
                except AnnotError:
                    pass
            jobs[jid] = job
            return job

        since = args.since
        if since is not None:
            for job in c.list():
                jobs[job["id"]] = job
        stream = _subscribe(c, topics, since)
        if not args.no_header:
            print(fmt.header(), flush=True)
        started = False
        try:
            while True:
                try:
                    with stream:
                        for batch in stream:
                            started = True
                            since = batch.get("seq", since)
                            if batch.get("snapshot"):
                                for job in batch.get("jobs") or ():
                                    jobs[job["id"]] = job
                                continue
                            lines = _watch_lines(batch, jobs, fmt, lookup)
                            if lines:
                                sys.stdout.write("\n".join(lines) + "\n")
                                sys.stdout.flush()
                    why, resync = "the service ended the stream", False
                except AnnotError as e:
                    resync = e.errno == errno.EOVERFLOW or (e.errno == errno.EINVAL and "since" in str(e))
                    if not (resume and started) or not (resync or e.errno in _GONE):
                        raise
                    why = str(e)
                if not resume:
                    return 0
                since = _await_service(c, why, since, resync)
                stream = _subscribe(c, topics, since)
        except KeyboardInterrupt:
            pass
    return 0


_GONE = (errno.ECONNRESET, errno.ENOSYS)  # the service stopped or went away


def _subscribe(c, topics, since):
    if since is None:
        return c.events(topics=topics, snapshot=True)
    return c.events(topics=topics, since=since)


def _await_service(c, why, since, resync):
    """watch through Flux: wait (saying so once) until the service answers
    again; the seq to resume after (None: start from a snapshot, when the
    service cannot resume from `since`)."""
    if resync:
        print(f"{PROG}: watch: {why}; starting again from a snapshot (changes after seq "
              f"{since} until then are not shown)", file=sys.stderr, flush=True)
        return None
    print(f"{PROG}: watch: {why}; waiting for it to resume after seq {since}",
          file=sys.stderr, flush=True)
    while True:
        time.sleep(1.0)
        try:
            c.stats()
        except AnnotError as e:
            if e.errno == errno.ENOSYS:  # not back yet
                continue
            raise
        print(f"{PROG}: watch: the service is back: resuming after seq {since}",
              file=sys.stderr, flush=True)
        return since


def cmd_stats(args):
    with _client(args) as c:
        stats = c.stats()
    print(json.dumps(stats, indent=2, ensure_ascii=False))
    return 0


def cmd_accuracy(args):
    from flux_annot.views.accuracy_table import parse_since, render

    since = None
    if args.since is not None:
        try:
            since = parse_since(args.since)
        except ValueError as e:
            raise UsageError(f"--since: {e}") from None
    queue = args.queue
    if queue is not None and (not queue.strip() or not queue.isprintable()):
        raise UsageError(f"--queue: {queue!r} is not a queue name")
    with _client(args) as c:
        report = c.accuracy(since=since, queue=queue, by=args.by, jobs=args.jobs)
        if queue is not None and not report["by_queue"]:
            known = sorted(c.accuracy()["by_queue"])
            if queue not in known:
                raise UsageError(
                    f"--queue: no job with an estimate is in queue {queue!r} "
                    f"(queues: {', '.join(known) if known else 'none yet'})"
                )
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print(render(report))
    return 0


def cmd_submit(args):
    userid = args.userid if args.userid is not None else os.getuid()
    with _client(args) as c:
        c.submit(int(args.jobid), userid, t_submit=args.t_submit)
    return 0


def cmd_state(args):
    try:
        states = listing.parse_states(args.state)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if len(states) != 1:
        raise UsageError(f"{args.state!r} names {len(states)} states: give exactly one")
    with _client(args) as c:
        c.state(int(args.jobid), states[0], note=args.note)
    return 0


def _alloc(args, payload):
    with _client(args) as c:
        reply = c.alloc_response(payload)
    if isinstance(reply, dict) and reply.get("ignored"):
        print(f"{PROG}: {args.command}: job {args.jobid} is not pending: the service ignored the response",
              file=sys.stderr)
        return 1
    return 0


def cmd_sched(args):
    patch = parse_assignments(args.assign)
    return _alloc(args, {"id": int(args.jobid), "type": 1, "annotations": {"sched": patch}})


def cmd_alloc(args):
    # As flux_annot.sched.success: the pending-only notes are cleared.
    notes = {"t_estimate": None, "reason_pending": None, "jobs_ahead": None}
    notes.update(parse_assignments(args.assign))
    return _alloc(args, {"id": int(args.jobid), "type": 0, "annotations": {"sched": notes}})


def cmd_deny(args):
    return _alloc(args, {"id": int(args.jobid), "type": 2, "note": args.note})


def cmd_cancel(args):
    return _alloc(args, {"id": int(args.jobid), "type": 3})


def cmd_demo(args):
    from flux_annot.views.demo import run_demo

    if args.jobs < 1 or args.jobs > 500:
        raise UsageError("--jobs must be between 1 and 500")
    if args.cores < 1 or args.cores > 256:
        raise UsageError("--cores must be between 1 and 256")
    if not 0 < args.seconds <= 3600:
        raise UsageError("--seconds must be > 0 and at most 3600")
    return run_demo(jobs=args.jobs, cores=args.cores, seconds=args.seconds, seed=args.seed)


def cmd_dashboard(args):
    # `flux-annotate dashboard`: the live web page (docs/dashboard.md).
    try:
        from flux_annot.views.dashboard import run_dashboard
    except ImportError as e:
        print(f"{PROG}: dashboard: needs the dashboard extra ({e.name or e} is missing): "
              "pip install 'flux-annot[dashboard]'", file=sys.stderr)
        return 1
    if not 0 <= args.port <= 65535:
        raise UsageError("--port must be between 0 and 65535")
    if args.page_buffer < 65536:
        raise UsageError("--page-buffer must be at least 65536 bytes")
    return run_dashboard(socket=args.socket, bind=args.bind, port=args.port,
                         page_buffer=args.page_buffer, flux_uri=args.flux_uri)



def cmd_top(args):
    # `flux-annotate top`: the live full-screen view (docs/top.md).
    from flux_annot.views.top import run_top

    fmt = _format(args.format) if args.format else None
    states = None
    if args.states:
        try:
            states = listing.parse_states(args.states)
        except ValueError as e:
            raise UsageError(str(e)) from None
    if not 0 < args.give_up <= 86400:
        raise UsageError("--give-up must be > 0 and at most 86400 seconds")
    if not sys.stdin.isatty() or not sys.stdout.isatty():
        raise UsageError("top needs a terminal (use list or watch in scripts)")
    return run_top(socket=args.socket, fmt=fmt, states=states, all_users=args.all_users,
                   give_up=args.give_up, flux_uri=args.flux_uri)


# --- parser -----------------------------------------------------------------


def build_parser():
    # --socket is accepted before or after the command name.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--socket", metavar="PATH", default=argparse.SUPPRESS,
                        help="service socket (default: $FLUX_ANNOT_SOCKET, else the Flux "
                        "instance at --flux-uri or $FLUX_URI, else "
                        "$XDG_RUNTIME_DIR/flux-annot/socket, /tmp/flux-annot-$UID/socket)")
    common.add_argument("--flux-uri", metavar="URI", default=argparse.SUPPRESS,
                        help="reach the service through the broker of the Flux instance at URI "
                        "(default: $FLUX_URI); serve: mirror that instance (implies --flux)")

    p = argparse.ArgumentParser(prog=PROG, parents=[common],
                                description="Job annotations for a Flux-style job manager.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name, func, help):
        sp = sub.add_parser(name, parents=[common], help=help, description=help,
                            epilog=EXAMPLES.get(name),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        sp.set_defaults(func=func)
        return sp

    sp = add("serve", cmd_serve, "run the service")
    sp.add_argument("--store", metavar="FILE|:memory:", default=None,
                    help="SQLite store (default: $XDG_STATE_HOME/flux-annot/annot.db)")
    sp.add_argument("--config", metavar="FILE", default=None, help="TOML configuration")
    sp.add_argument("--flux", action="store_true",
                    help="mirror the Flux instance at $FLUX_URI or --flux-uri (docs/flux.md)")
    sp.add_argument("--metrics", metavar="ADDR:PORT", default=None,
                    help="serve Prometheus metrics at http://ADDR:PORT/metrics "
                    "(default: [metrics] listen; off) (docs/operations.md)")

    sp = add("backup", cmd_backup, "copy the store to a new file, also while the service runs")
    sp.add_argument("--store", metavar="FILE", default=None,
                    help="the store (default: $XDG_STATE_HOME/flux-annot/annot.db)")
    sp.add_argument("dest", metavar="DEST", help="the new file (must not exist)")

    for name, func, help in (("set", cmd_set, "annotate a job"),
                             ("memo", cmd_memo, "set user notes on a job (under `user`, as flux job memo)")):
        sp = add(name, func, help)
        sp.add_argument("--volatile", action="store_true", help="do not write to the eventlog")
        sp.add_argument("jobid", type=jobid_arg, metavar="JOBID")
        sp.add_argument("assign", nargs="+", metavar="key.path=value",
                        help="JSON value or string; null deletes; - reads stdin")

    sp = add("get", cmd_get, "print a job's annotations as JSON")
    sp.add_argument("--job", action="store_true", help="print the whole job record")
    sp.add_argument("jobid", type=jobid_arg, metavar="JOBID")
    sp.add_argument("path", nargs="?", metavar="key.path")

    sp = add("list", cmd_list, "list jobs like flux jobs (default: your active jobs)")
    sp.add_argument("-o", "--format", metavar="FORMAT", help="format string (see flux_annot.listing)")
    sp.add_argument("-a", dest="all_states", action="store_true", help="include inactive jobs")
    sp.add_argument("-A", dest="all_users", action="store_true", help="jobs of all users")
    sp.add_argument("--states", metavar="S,...", help="states: names, letters, pending/running/active/inactive")
    sp.add_argument("-n", "--no-header", action="store_true", help="no heading line")
    sp.add_argument("--json", action="store_true", help="print JSON instead of a table")

    sp = add("watch", cmd_watch, "follow events live")
    sp.add_argument("--since", type=seq_arg, metavar="SEQ", help="resume after batch SEQ")
    sp.add_argument("--topic", action="append", metavar="T", help="job-state or job-annotations (repeatable)")
    sp.add_argument("-o", "--format", metavar="FORMAT",
                    help="line format; extra fields {seq} {event} {timestamp}")
    sp.add_argument("-n", "--no-header", action="store_true", help="no heading line")

    add("stats", cmd_stats, "print service counters as JSON")

    sp = add("accuracy", cmd_accuracy, "how good the scheduler's start-time estimates were")
    sp.add_argument("--json", action="store_true", help="print the report as JSON")
    sp.add_argument("--jobs", action="store_true", help="add one record per job")
    sp.add_argument("--since", metavar="TIME",
                    help="jobs that started since TIME: epoch seconds, ISO 8601, or 30m / 2h / 7d ago")
    sp.add_argument("--queue", metavar="Q", help="only the jobs of queue Q (sched.queue, else default)")
    sp.add_argument("--by", choices=("queue", "user"), default="queue",
                    help="group the summary by queue (default) or by user")

    sp = add("submit", cmd_submit, "owner: create a job in SCHED")
    sp.add_argument("jobid", type=jobid_arg, metavar="JOBID")
    sp.add_argument("--userid", type=userid_arg, metavar="U", help="owner (uid or name; default: you)")
    sp.add_argument("--t-submit", type=float, metavar="T", help="submit time (default: now)")

    sp = add("state", cmd_state, "owner: move a job to STATE")
    sp.add_argument("jobid", type=jobid_arg, metavar="JOBID")
    sp.add_argument("state", metavar="STATE")
    sp.add_argument("--note", help="exception note (with INACTIVE)")

    sp = add("sched", cmd_sched, "owner: scheduler ANNOTATE response (sched keys)")
    sp.add_argument("jobid", type=jobid_arg, metavar="JOBID")
    sp.add_argument("assign", nargs="+", metavar="key=value")

    sp = add("alloc", cmd_alloc, "owner: scheduler SUCCESS response (job → RUN; clears t_estimate, "
             "reason_pending, jobs_ahead)")
    sp.add_argument("jobid", type=jobid_arg, metavar="JOBID")
    sp.add_argument("assign", nargs="*", metavar="key=value", help="sched annotations, e.g. resource_summary=...")

    sp = add("deny", cmd_deny, "owner: scheduler DENY response (job → INACTIVE)")
    sp.add_argument("jobid", type=jobid_arg, metavar="JOBID")
    sp.add_argument("note", metavar="NOTE")

    sp = add("cancel", cmd_cancel, "owner: scheduler CANCEL response (sched notes dropped, job stays pending)")
    sp.add_argument("jobid", type=jobid_arg, metavar="JOBID")

    sp = add("demo", cmd_demo, "in-memory service + FCFS scheduler; shows the listing as it changes")
    sp.add_argument("--jobs", type=int, default=12, metavar="N", help="jobs to submit (default 12)")
    sp.add_argument("--cores", type=int, default=4, metavar="C", help="cores to schedule (default 4)")
    sp.add_argument("--seconds", type=float, default=5.0, metavar="S", help="run time on a terminal (default 5)")
    sp.add_argument("--seed", type=int, default=5, help="random seed (default 5)")

    sp = add("dashboard", cmd_dashboard, "serve a live web page of the queue (prints its URL with a token)")
    sp.add_argument("--bind", default="127.0.0.1", metavar="ADDR", help="address to listen on (default 127.0.0.1)")
    sp.add_argument("--port", type=int, default=0, metavar="N", help="port (default 0: any free port)")
    sp.add_argument("--page-buffer", type=int, default=16 << 20, metavar="BYTES",
                    help="bytes queued for a page that stops reading before it is dropped (default 16 MiB)")

    sp = add("top", cmd_top, "full-screen live view of the queue (like flux top)")
    sp.add_argument("-o", "--format", metavar="FORMAT", help="row format, as list -o")
    sp.add_argument("-A", dest="all_users", action="store_true", help="jobs of all users")
    sp.add_argument("--states", metavar="S,...", help="states shown (default: active)")
    sp.add_argument("--give-up", type=float, default=60.0, metavar="SECONDS",
                    help="exit when the service has been gone this long (default 60)")
    return p


def _quiet_broken_pipe():
    # `flux-annotate list | head`: stop quietly, and keep Python's exit-time
    # flush of stdout from complaining.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def main(argv=None):
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    if not hasattr(args, "socket"):
        args.socket = None
    if not hasattr(args, "flux_uri"):
        args.flux_uri = None
    try:
        return args.func(args)
    except UsageError as e:
        parser.print_usage(sys.stderr)
        print(f"{PROG} {args.command}: error: {e}", file=sys.stderr)
        return 2
    except AnnotError as e:
        print(f"{PROG}: {args.command}: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        _quiet_broken_pipe()
        return 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
