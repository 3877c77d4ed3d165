"""`flux-annotate demo`: the service at work, in one process.

An in-memory `AnnotationService` and a small first-come-first-served
scheduler over a few cores, driven in simulated time:

- N jobs are submitted (seeded RNG: sizes of 1..cores cores, a requested
  walltime; each really runs 45-100% of it, so estimates move). Two users
  own them; a few owners attach notes with `memo` (they stay all along),
  and running jobs report progress in a volatile `user.progress` note.
  One job asks for more cores than exist and is denied (RFC 27 DENY).
- Every scheduling cycle the scheduler, like Flux's, answers through RFC 27
  alloc responses built with `flux_annot.sched`: pending jobs get
  `t_estimate` (a strict-FCFS plan over the walltimes of running jobs),
  `reason_pending` and `jobs_ahead` (ANNOTATE); a job that fits starts with
  SUCCESS and `resource_summary` such as `rank0/core[0-1]` — which also
  clears its pending notes. Jobs that end go RUN → CLEANUP → INACTIVE.
- At the end, the accuracy table of the scheduler's own estimates
  (`flux-annotate accuracy`, docs/accuracy.md), in simulated time.
- The listing is read back from the service (`list`, as `flux-annotate list
  -A -a` would) and formatted by `flux_annot.listing` with the CLI's
  default format, so what you see is what the service holds. On a
  terminal: a table redrawn ~10 times a second for `seconds`, with the
  latest event batches below it. Otherwise: plain text, a time stamp and a
  listing for every cycle in which a job started or ended, no waiting.
"""

import os
import pwd
import random
import shutil
import sys
import time

from flux_annot import sched
from flux_annot.views.accuracy_table import render
from flux_annot.views.listing import DEFAULT_FORMAT, JobFormat, compact_json, hms, sort_jobs
from flux_annot.ids import encode_f58

FPS = 10
NOTES = [
    "calibration run",
    "rerun of failed step 3",
    "paper figure 2",
    "nightly regression",
    "mesh 512^3",
    "do not kill: long",
]
HIDE_CURSOR, SHOW_CURSOR = "\x1b[?25l", "\x1b[?25h"
HOME, CLEAR_EOL, CLEAR_EOS = "\x1b[H", "\x1b[K", "\x1b[J"


class SimJob:
    __slots__ = ("id", "userid", "size", "walltime", "runtime", "start", "cores", "ended", "note")

    def __init__(self, id, userid, size, walltime, runtime, note):
        self.id = id
        self.userid = userid
        self.size = size
        self.walltime = walltime
        self.runtime = runtime
        self.start = None
        self.cores = ()
        self.ended = None
        self.note = note


def idset(cores):
    """RFC 22 idset of core numbers: [0,1,2,5] → "0-2,5" (bracketed if >1)."""
    cores = sorted(cores)
    parts = []
    i = 0
    while i < len(cores):
        j = i
        while j + 1 < len(cores) and cores[j + 1] == cores[j] + 1:
            j += 1
        parts.append(str(cores[i]) if i == j else f"{cores[i]}-{cores[j]}")
        i = j + 1
    text = ",".join(parts)
    return text if len(cores) == 1 else f"[{text}]"


def plan_fcfs(now, ncores, running, queue):
    """Strict FCFS start estimates: {job id: start time} for `queue` (in
    order), given `running` jobs that free their cores at start+walltime.

    A job starts no earlier than the job ahead of it, at the first time at
    which its cores stay free for its whole walltime. Brute force over the
    few candidate times (ends of reservations): the demo has few jobs."""
    busy = [(now, j.start + j.walltime, j.size) for j in running]  # (from, until, cores)
    out = {}
    t_min = now
    for job in queue:
        if job.size > ncores:
            continue
        candidates = sorted({t_min} | {u for _, u, _ in busy if u > t_min})
        for t in candidates:
            end = t + job.walltime
            points = [t] + [f for f, _, _ in busy if t < f < end]
            if all(sum(c for f, u, c in busy if f <= p < u) + job.size <= ncores for p in points):
                out[job.id] = t
                busy.append((t, end, job.size))
                t_min = t
                break
    return out


class Demo:
    def __init__(self, njobs, ncores, seed, out):
        from flux_annot.service.policy import Cred
        from flux_annot.service.service import AnnotationService

        self.out = out
        self.ncores = ncores
        self.rng = rng = random.Random(seed)
        # The service keeps the simulated time (transitions, estimate
        # history), so the accuracy table at the end is in simulated seconds.
        self.svc = AnnotationService(store=None, batch_window=0, clock=lambda: self.now)
        self.owner = Cred.owner_of(self.svc)
        self.sub = self.svc.subscribe(self.owner)
        self.events = []  # recent event lines, for the terminal view
        self.fmt = JobFormat(DEFAULT_FORMAT)
        me = os.getuid()
        try:
            other = pwd.getpwnam("nobody").pw_uid
        except KeyError:
            other = me + 1
        if other == me:
            other = me + 1
        self.users = (me, other)
        # Simulated clock: starts at the real time now; job ids follow Flux's
        # FLUID layout (ms timestamp << 24 | sequence) so they look familiar.
        self.t0 = self.now = time.time()
        base_ms = int(self.t0 * 1000) % (1 << 40)
        self.jobs = []
        for i in range(njobs):
            size = rng.choice([1, 1, 1, 2, 2, 3, ncores]) if ncores > 1 else 1
            size = min(size, ncores)
            if njobs >= 6 and i == 4:
                size = ncores + 2  # cannot ever run: the scheduler denies it
            walltime = rng.choice([60, 120, 180, 300, 600])
            runtime = walltime * rng.uniform(0.45, 1.0)
            note = NOTES[i % len(NOTES)] if rng.random() < 0.4 else None
            jid = ((base_ms + 7 * i) << 24) | (i & 0x3FF)
            userid = self.users[0] if rng.random() < 0.7 else self.users[1]
            self.jobs.append(SimJob(jid, userid, size, walltime, runtime, note))
        total = sum(j.size * j.runtime for j in self.jobs if j.size <= ncores)
        longest = max((j.runtime for j in self.jobs if j.size <= ncores), default=60.0)
        self.makespan = max(total / ncores, longest) * 1.5  # rough, FCFS leaves holes
        self.seq = 0
        self.horizon = self.makespan

    # --- the job manager and the job owners ---------------------------------

    def submit_all(self):
        from flux_annot.service.policy import Cred

        for j in self.jobs:
            self.svc.submit(j.id, j.userid, t_submit=self.now)
            if j.note:
                self.svc.memo(Cred(j.userid), j.id, {"note": j.note})
        self.svc.flush()

    # --- the scheduler --------------------------------------------------------

    def cycle(self, dt):
        """Advance simulated time by dt and run one scheduling cycle;
        returns a short text of what started/ended (empty if nothing)."""
        from flux_annot.service.policy import Cred

        svc = self.svc
        self.now += dt
        now = self.now
        changes = []
        for j in self.jobs:
            if j.start is not None and j.ended is None and now >= j.start + j.runtime:
                st = svc.get(self.owner, j.id)["state"]
                if st == "RUN":
                    svc.memo(Cred(j.userid), j.id, {"progress": "done"}, volatile=True)
                    svc.state(j.id, "CLEANUP")
                    changes.append(f"{encode_f58(j.id)} ends")
                else:
                    svc.state(j.id, "INACTIVE")
                    j.ended = now
        running = [j for j in self.jobs if j.start is not None and j.ended is None]
        used = {c for j in running for c in j.cores}
        free = [c for c in range(self.ncores) if c not in used]
        queue = [j for j in self.jobs if j.start is None and j.ended is None]
        still = []
        blocked = False
        for j in queue:
            if j.size > self.ncores:
                svc.alloc_response(sched.deny(j.id, f"job needs {j.size} cores; this instance has {self.ncores}"))
                j.ended = now
                changes.append(f"{encode_f58(j.id)} denied")
                continue
            if not blocked and j.size <= len(free):
                j.cores, free = free[: j.size], free[j.size:]
                j.start = now
                svc.alloc_response(sched.success(j.id, resource_summary=f"rank0/core{idset(j.cores)}"))
                changes.append(f"{encode_f58(j.id)} starts")
                running.append(j)
            else:
                blocked = True  # strict FCFS: nobody passes the head of the queue
                still.append(j)
        plan = plan_fcfs(now, self.ncores, running, still)
        # When will everything be over, as planned now (walltimes: an upper bound)?
        ends = [j.start + j.runtime + 1.0 for j in running]
        ends += [plan[j.id] + j.walltime for j in still if j.id in plan]
        self.horizon = max(ends, default=now) - now
        for ahead, j in enumerate(still):
            if ahead == 0:
                reason = "insufficient resources"
            else:
                reason = "jobs ahead in queue"
            t_est = plan.get(j.id)
            svc.alloc_response(
                sched.annotate(j.id, t_estimate=round(t_est, 1) if t_est else None,
                               reason_pending=reason, jobs_ahead=ahead)
            )
        for j in running:  # the job itself reports progress (a volatile user note)
            if j.start is not None and j.ended is None and now < j.start + j.runtime:
                pct = int(100 * (now - j.start) / j.runtime)
                svc.memo(Cred(j.userid), j.id, {"progress": f"{pct}%"}, volatile=True)
        svc.flush()
        self._collect_events()
        return ", ".join(changes)

    def done(self):
        return all(j.ended is not None for j in self.jobs)

    def _collect_events(self):
        for batch in self.sub:
            self.seq = batch.get("seq", self.seq)
            # a batch's annotation changes come before its transitions
            # (SUCCESS: the allocation's notes, then RUN)
            for jid, tree in batch.get("annotations") or ():
                self.events.append(f"seq {self.seq:>4}  {encode_f58(jid):>12}  {compact_json(tree, 90)}")
            for jid, state, *_ in batch.get("transitions") or ():
                self.events.append(f"seq {self.seq:>4}  {encode_f58(jid):>12}  state → {state}")
        del self.events[:-6]

    # --- display --------------------------------------------------------------

    def listing(self):
        jobs = sort_jobs(self.svc.list(self.owner))
        return [self.fmt.header()] + [self.fmt.format(j) for j in jobs]

    def counts(self):
        running = sum(1 for j in self.jobs if j.start is not None and j.ended is None)
        pending = sum(1 for j in self.jobs if j.start is None and j.ended is None)
        done = len(self.jobs) - running - pending
        busy = {c for j in self.jobs if j.start is not None and j.ended is None for c in j.cores}
        bar = "".join("#" if c in busy else "." for c in range(self.ncores))
        return f"cores [{bar}]  running {running}  pending {pending}  done {done}"

    def clock(self):
        return time.strftime("%H:%M:%S", time.localtime(self.now)) + f" (+{hms(self.now - self.t0)})"

    def frame(self, columns=80, rows=24):
        """The terminal view, cut to the terminal's size (no wrapping, no
        scrolling: the redraw starts at the top-left corner every time)."""
        head = [
            f"flux-annotate demo: in-memory service, FCFS scheduler on {self.ncores} cores   "
            f"simulated time {self.clock()}",
            self.counts(),
            "",
        ]
        tail = ["", "latest event batches (whole annotations after each change):"]
        tail += ["  " + e for e in self.events]
        table = self.listing()
        room = max(2, rows - 1 - len(head) - len(tail))
        if len(table) > room:
            more = len(table) - room + 1
            table = table[: room - 1] + [f"   ... {more} more jobs"]
        return [line[:columns] for line in head + table + tail]


def run_demo(jobs=12, cores=4, seconds=5.0, seed=5, out=None):
    """Run the demo; returns the exit status (0)."""
    out = out or sys.stdout
    tty = out.isatty()
    demo = Demo(jobs, cores, seed, out)
    frames = max(1, int(seconds * FPS))
    # Simulated seconds per frame: the whole workload fits in ~85% of the
    # frames, so the end (everything INACTIVE) is on screen for a moment.
    dt = demo.makespan / (frames * 0.85)
    demo.submit_all()
    if tty:
        return _run_tty(demo, frames, dt, out)
    return _run_plain(demo, frames, dt, out)


def _step(demo, dt, frames, i):
    """Simulated seconds for frame i: the base step, faster if the plan
    says the work would not be over by ~85% of the frames."""
    left = frames * 0.85 - i
    if left >= 1:
        return max(dt, demo.horizon / left)
    return max(dt, demo.horizon)


def _run_tty(demo, frames, dt, out):
    out.write(HIDE_CURSOR + "\x1b[2J")
    try:
        deadline = time.monotonic()
        for i in range(frames):
            if not demo.done():
                demo.cycle(_step(demo, dt, frames, i))
            size = shutil.get_terminal_size()
            text = HOME + (CLEAR_EOL + "\n").join(demo.frame(size.columns, size.lines)) + CLEAR_EOL + "\n" + CLEAR_EOS
            out.write(text)
            out.flush()
            deadline += 1.0 / FPS
            pause = deadline - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        # Too many jobs for the time given: finish the work at full speed
        # and show how it ended.
        i = frames
        if not demo.done():
            while not demo.done() and i < 100 * frames:
                demo.cycle(_step(demo, dt, frames, i))
                i += 1
            size = shutil.get_terminal_size()
            out.write(HOME + (CLEAR_EOL + "\n").join(demo.frame(size.columns, size.lines)) + CLEAR_EOL + "\n"
                      + CLEAR_EOS)
    except KeyboardInterrupt:
        pass
    finally:
        out.write(SHOW_CURSOR)
        out.flush()
    _summary(demo, out)
    return 0


def _run_plain(demo, frames, dt, out):
    w = out.write
    w(f"flux-annotate demo: in-memory service, FCFS scheduler on {demo.ncores} cores, "
      f"{len(demo.jobs)} jobs\n\n")
    w(f"[{demo.clock()}] submitted\n")
    i = 0
    while not demo.done() and i < 100 * frames:  # the bound is only a safety net
        changes = demo.cycle(_step(demo, dt, frames, i))
        i += 1
        if changes:
            w(f"\n[{demo.clock()}] {changes}\n")
            w("\n".join(demo.listing()) + "\n")
            out.flush()
    w(f"\n[{demo.clock()}] {'all jobs are inactive' if demo.done() else 'stopped'}\n")
    w("\n".join(demo.listing()) + "\n")
    _summary(demo, out)
    return 0


def _summary(demo, out):
    st = demo.svc.stats()
    njobs = len(demo.jobs)
    finished = sum(1 for j in demo.jobs if j.ended is not None)
    out.write(
        f"\n{finished} of {njobs} jobs finished after {demo.clock()} of simulated time; "
        f"{demo.seq} event batches published; "
        f"{st.get('requests', {}).get('alloc-response', '?')} alloc responses\n"
    )
    # How good were the scheduler's estimates (docs/accuracy.md): its FCFS
    # plan counts full walltimes, the jobs run 45-100% of them.
    out.write("\n" + render(demo.svc.accuracy(demo.owner)) + "\n")
    out.flush()
    demo.sub.close()
    demo.svc.close()
