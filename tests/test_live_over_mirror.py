"""The live views over a Flux mirror (docs/top.md, docs/dashboard.md,
docs/flux.md): a real `flux start --test-size=1` instance (sched-simple)
with real jobs made by `flux submit`, `flux job memo` and `flux cancel`,
`flux-annotate serve --flux` following it, and then

- the live model (flux_annot.views.live) following the mirror equals
  `flux-annotate list -A -a --json` from the mirror, every state as Flux
  shows it;
- `flux-annotate top -A` in tmux shows the jobs and names the Flux
  instance, follows a new `flux submit` and a `flux job memo` live, and
  `q` quits;
- the dashboard in headless Chromium: its table equals `list --json`, and
  a memo made through Flux shows up without a reload.

Needs $FLUX_ANNOT_TEST_FLUX_PREFIX (see tests/fluxinst.py); tmux and
Debian's chromium as tests/test_top.py and tests/test_dashboard_browser.py.
"""

import json
import os
import subprocess

import pytest

from flux_annot.ids import JobID
from flux_annot.views.live import LiveModel, LiveThread
from fluxinst import FluxInstance, Mirror, flux_prefix, submit, wait_for


HOLD_PRIORITY_C = os.path.join(os.path.dirname(__file__), "data", "flux_hold_priority.c")


def hold_priority_plugin(prefix, where):
    """tests/data/flux_hold_priority.c built against the Flux under test: a
    jobtap plugin that keeps a job of urgency 1 in PRIORITY."""
    so = str(where / "hold_priority.so")
    cc = os.environ.get("CC", "cc")
    r = subprocess.run(
        [cc, "-std=c11", "-shared", "-fPIC", f"-I{prefix}/include", HOLD_PRIORITY_C, "-o", so,
         f"-L{prefix}/lib", "-lflux-core"],
        capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"cannot build the jobtap plugin: {r.stderr}"
    return so


@pytest.fixture(scope="module")
def flux(tmp_path_factory):
    """One instance and its mirror for the module; the jobs, oldest first:
    running (RUN, the whole node), prio (PRIORITY: urgency 1 and the
    plugin), dep (DEPEND on `running`), waiting (SCHED: no resources),
    held x2 (SCHED, urgency 0, a memo on the first), cancelled (INACTIVE)."""
    where = tmp_path_factory.mktemp("lvmirror")
    inst = FluxInstance(flux_prefix()).start()
    mirror = None
    try:
        inst.flux("jobtap", "load", hold_priority_plugin(inst.prefix, where))
        mirror = Mirror(inst, where / "mirror.db").start()
        mirror.wait_synced()
        jobs = {}
        jobs["running"] = submit(inst, "-N1", "--exclusive", "sleep", "600")
        wait_for("the first job to run", lambda: inst.jobs()[jobs["running"]]["state"] == "RUN")
        # prio and dep before the SCHED jobs: older, yet behind them in the queue
        jobs["prio"] = submit(inst, "--urgency=1", "sleep", "600")
        jobs["dep"] = submit(inst, f"--dependency=afterany:{jobs['running']}", "sleep", "600")
        jobs["waiting"] = submit(inst, "sleep", "600")
        jobs["held"] = submit(inst, "--urgency=0", "sleep", "600")
        jobs["held2"] = submit(inst, "--urgency=0", "sleep", "600")
        jobs["cancelled"] = submit(inst, "--urgency=0", "sleep", "600")
        inst.flux("cancel", str(jobs["cancelled"]))
        inst.flux("job", "memo", str(jobs["held"]), "note=held-by-test", "n=1")
        want = {"running": "RUN", "prio": "PRIORITY", "dep": "DEPEND", "waiting": "SCHED",
                "held": "SCHED", "held2": "SCHED", "cancelled": "INACTIVE"}
        wait_for("Flux to settle",
                 lambda: all(inst.jobs()[jobs[k]]["state"] == s for k, s in want.items()))
        yield inst, mirror, jobs
    finally:
        if mirror is not None:
            mirror.cleanup()
        inst.cleanup()


def list_json(m):
    """`flux-annotate list -A -a --json` from the mirror, as a person runs it."""
    return json.loads(m.cli("list", "-A", "-a", "--json").stdout)["jobs"]


def by_id(jobs):
    return {j["id"]: (j["userid"], j["state"], j["annotations"]) for j in jobs}


def model_view(model):
    """{id: (userid, state, annotations)} of a live model, as by_id."""
    with model.lock:
        return {i: (j.userid, j.state, j.annotations) for i, j in model.jobs.items()}


def settled(inst, mirror):
    """Wait until the mirror shows what Flux shows (states); its list."""
    def same():
        f = {i: j["state"] for i, j in inst.jobs().items()}
        got = list_json(mirror)
        return got if {j["id"]: j["state"] for j in got} == f else None

    return wait_for("the mirror to show Flux's states", same)


# --- (1) the live model ---------------------------------------------------------


def test_live_model_equals_list(flux):
    inst, mirror, jobs = flux
    want = by_id(settled(inst, mirror))
    states = {s for _, s, _ in want.values()}
    assert {"PRIORITY", "DEPEND", "SCHED", "RUN", "INACTIVE"} <= states, states
    model = LiveModel()
    thread = LiveThread(model, mirror.socket, give_up=60).start()
    try:
        wait_for("the model to equal list --json",
                 lambda: model.status == "live" and model_view(model) == by_id(list_json(mirror)))
        view = model_view(model)
        assert view[jobs["dep"]][1] == "DEPEND"
        assert view[jobs["prio"]][1] == "PRIORITY"
        assert view[jobs["held"]][1:] == ("SCHED", {"user": {"note": "held-by-test", "n": 1}})
        assert view[jobs["running"]][2]["sched"]["resource_summary"].startswith("rank0/core")
        assert view[jobs["cancelled"]][1] == "INACTIVE"
        counts = model.counts()
        for state in ("PRIORITY", "DEPEND", "SCHED", "RUN", "INACTIVE"):
            assert counts[state] == sum(1 for v in view.values() if v[1] == state)
        # live: a change through Flux comes to the model by the subscription
        inst.flux("job", "memo", str(jobs["held2"]), "live=model")
        wait_for("the memo in the model",
                 lambda: (model_view(model).get(jobs["held2"]) or (0, 0, None))[2]
                 == {"user": {"live": "model"}})
        wait_for("the model to equal list --json again",
                 lambda: model_view(model) == by_id(list_json(mirror)))
    finally:
        thread.stop()
    assert thread.done.is_set() and thread.error is None


# --- (2) top in tmux ----------------------------------------------------------


TOP_FMT = "{id.f58:>12} {state:<8} {user}"


@pytest.fixture
def term():
    from test_top import Tmux

    t = Tmux()
    yield t
    t.close()


def test_top_over_the_mirror(flux, term):
    from test_top import table

    inst, mirror, jobs = flux
    got = settled(inst, mirror)
    term.start(mirror.socket, "-A", "--give-up", "60")
    active = [j for j in got if j["state"] != "INACTIVE"]
    lines = term.wait(lambda ls: len(table(ls)) == len(active), f"{len(active)} rows")
    # The header names the Flux instance the mirror follows, and still
    # shows seq and the clock on 80 columns (the socket gives way).
    assert f"Flux {inst.uri}  seq " in lines[0], lines[0]
    assert lines[0].rstrip()[-8:].count(":") == 2, lines[0]
    # Counts as Flux shows them, DEPEND included; the inactive job counted.
    counts = {}
    for j in got:
        counts[j["state"]] = counts.get(j["state"], 0) + 1
    for state, n in counts.items():
        assert f"{state} {n}" in lines[1], lines[1]
    rows = {row.split()[0]: row for row in table(lines)}
    assert set(rows) == {JobID(j["id"]).f58 for j in active}
    assert JobID(jobs["cancelled"]).f58 not in "\n".join(lines)
    # Queue order: the scheduler's queue (SCHED, oldest first: sched-simple
    # gives no estimates), then the older DEPEND job, then the running one.
    order = [row.split()[0] for row in table(lines)]
    assert order == [JobID(jobs[k]).f58
                     for k in ("waiting", "held", "held2", "prio", "dep", "running")]
    assert rows[JobID(jobs["prio"]).f58].split()[2] == "P"
    # the state column (first letters); the memo starts in its column (80
    # columns cut it) and is whole in the detail pane
    assert rows[JobID(jobs["dep"]).f58].split()[2] == "D"
    assert rows[JobID(jobs["running"]).f58].split()[2] == "R"
    assert '{"n' in rows[JobID(jobs["held"]).f58]
    term.keys("j", "Enter")  # the second row: held
    lines = term.wait(lambda ls: any(line.startswith("---") for line in ls), "the detail pane")
    detail = "\n".join(lines[next(i for i, x in enumerate(lines) if x.startswith("---")):])
    assert f"{JobID(jobs['held']).f58}  {jobs['held']}  user " in detail and "  SCHED" in detail
    assert '"note": "held-by-test"' in detail

    # Live: a new `flux submit` and a memo through `flux job memo`.
    new = submit(inst, "--urgency=0", "sleep", "600")
    inst.flux("job", "memo", str(jobs["held"]), "via=flux")
    lines = term.wait(
        lambda ls: JobID(new).f58 in "\n".join(table(ls)) and '"via": "flux"' in "\n".join(ls),
        "the new job and the memo on the screen")
    assert f"SCHED {counts['SCHED'] + 1}" in lines[1]
    # Flux moves the PRIORITY job into the scheduler's queue: its row moves
    # up among the SCHED jobs (by id: it is older) and the counts follow.
    inst.flux("job", "urgency", str(jobs["prio"]), "16")
    lines = term.wait(lambda ls: "PRIORITY" not in ls[1], "PRIORITY to empty")
    assert f"SCHED {counts['SCHED'] + 2}" in lines[1]
    order = [row.split()[0] for row in table(lines)]
    assert order.index(JobID(jobs["prio"]).f58) < order.index(JobID(jobs["waiting"]).f58)
    assert order.index(JobID(jobs["prio"]).f58) < order.index(JobID(jobs["dep"]).f58)
    term.keys("q")
    lines = term.wait(lambda ls: "EXIT=0" in "\n".join(ls), "top to quit")
    assert "JOBID" not in "\n".join(lines)


def test_top_rows_equal_list_over_the_mirror(flux, term):
    """The rows of top -A -o FORMAT are the rows `list -A -o FORMAT` prints
    (same text), every active state included."""
    from test_top import table

    inst, mirror, jobs = flux
    got = settled(inst, mirror)
    term.start(mirror.socket, "-A", "-o", TOP_FMT, "--give-up", "60")
    want = sorted(
        line.rstrip()
        for line in mirror.cli("list", "-A", "-n", "-o", TOP_FMT).stdout.splitlines()
    )
    lines = term.wait(lambda ls: sorted(table(ls)) == want, "the screen to match list")
    states = [row.split()[1] for row in table(lines)]
    assert "DEPEND" in states and "RUN" in states and "SCHED" in states
    assert len(want) == len([j for j in got if j["state"] != "INACTIVE"])
    term.keys("q")
    term.wait(lambda ls: "EXIT=0" in "\n".join(ls), "top to quit")


# --- (3) the dashboard in headless Chromium --------------------------------------


@pytest.fixture
def browser():
    from dashproc import chrome

    d = chrome()
    yield d
    d.quit()


def test_dashboard_over_the_mirror(flux, browser):
    from dashproc import JS_TABLE, DashboardProc
    from test_dashboard_browser import name_of, open_page, page_view, wait_equal

    inst, mirror, jobs = flux
    settled(inst, mirror)
    dash = DashboardProc(mirror.socket).start()
    try:
        open_page(browser, dash)
        listed = wait_equal(browser, mirror.socket)
        states = {j["state"] for j in listed}
        assert {"DEPEND", "SCHED", "RUN", "INACTIVE"} <= states
        counts = browser.execute_script(
            "var o = {}; document.querySelectorAll('#counts .count-box').forEach("
            "function (d) { o[d.dataset.state] = d.firstElementChild.textContent; }); return o;")
        for s in ("NEW", "DEPEND", "PRIORITY", "SCHED", "RUN", "CLEANUP", "INACTIVE"):
            assert counts[s] == str(sum(1 for j in listed if j["state"] == s)), counts
        # The pending table in queue order: SCHED, then the older PRIORITY
        # and DEPEND jobs (when the top test ran first, prio is SCHED now).
        pending = [int(r[0]) for r in browser.execute_script(JS_TABLE, "#pending")]
        sched_ids = sorted(j["id"] for j in listed if j["state"] == "SCHED")
        later = [jobs["prio"]] if jobs["prio"] not in sched_ids else []
        assert pending == sched_ids + later + [jobs["dep"]]
        assert jobs["dep"] < jobs["waiting"] and jobs["waiting"] in sched_ids
        # A memo made through Flux and a new job show up on the open page
        # (the new job's owner too: the dashboard asks the mirror).
        inst.flux("job", "memo", str(jobs["held"]), "page=live")
        new = submit(inst, "--urgency=0", "sleep", "600")
        wait_for("the new job on the page", lambda: new in page_view(browser))
        def memo_shown():
            ann = (page_view(browser).get(jobs["held"]) or (0, 0, None))[2] or {}
            return ann.get("user", {}).get("page") == "live"

        wait_for("the memo on the page", memo_shown)
        listed = wait_equal(browser, mirror.socket)
        held = next(j for j in listed if j["id"] == jobs["held"])
        assert page_view(browser)[new][:2] == (name_of(os.getuid()), "SCHED")
        assert held["annotations"]["user"]["note"] == "held-by-test"
        memos = browser.execute_script(
            "return Array.from(document.querySelectorAll('#memos tbody tr')).map("
            "tr => tr.textContent);")
        assert any("page=live" in m for m in memos), memos
    finally:
        dash.stop()



# --- a job Flux rejects -----------------------------------------------------------


def test_jobs_flux_rejects_end_inactive_and_the_views_go_on(flux):
    """Flux posts `submit` then `invalidate` for a job a plugin rejects at
    validation, and forgets it. The mirror ends it INACTIVE with a note
    (never a NEW job for ever in a live view), and what comes after still
    flows (it used to stop every later batch)."""
    inst, mirror, jobs = flux
    model = LiveModel()
    thread = LiveThread(model, mirror.socket, give_up=60).start()
    try:
        wait_for("the model to equal list --json",
                 lambda: model.status == "live" and model_view(model) == by_id(list_json(mirror)))
        before = set(model_view(model))
        for _ in range(3):
            r = inst.flux("submit", "--urgency=2", "sleep", "1", check=False)
            assert r.returncode != 0 and "rejected by the test plugin" in r.stderr
        inst.flux("job", "memo", str(jobs["held2"]), "after=rejects")
        new = submit(inst, "--urgency=0", "sleep", "600")
        wait_for("the memo and the new job in the model",
                 lambda: new in model_view(model)
                 and model_view(model)[jobs["held2"]][2]["user"].get("after") == "rejects")
        listed = wait_for("the model to equal list --json",
                          lambda: (lambda got: got if model_view(model) == by_id(got) else None)(
                              list_json(mirror)))
        rejected = {j["id"]: j for j in listed if j["id"] not in before | {new}}
        assert len(rejected) == 3
        for j in rejected.values():
            assert j["state"] == "INACTIVE" and j["annotations"] is None
            assert j["exception"] == "the Flux instance rejected the job (invalidate)"
        assert not set(rejected) & set(inst.jobs())  # Flux forgot them
        assert "NEW" not in model.counts()
    finally:
        thread.stop()


# --- restarts ------------------------------------------------------------------


def test_live_model_across_restarts_of_the_mirror_and_of_flux(tmp_path):
    """The model resumes after the mirror restarts (what Flux did meanwhile
    comes through `since`), and after Flux itself restarts the jobs Flux
    lost are INACTIVE in the model as in `list`."""
    inst = FluxInstance(flux_prefix()).start()
    mirror = Mirror(inst, tmp_path / "mirror.db")
    thread = None
    try:
        mirror.start()
        mirror.wait_synced()
        running = submit(inst, "sleep", "600")
        held = submit(inst, "--urgency=0", "sleep", "600")
        model = LiveModel()
        thread = LiveThread(model, mirror.socket, give_up=120, retry=0.2).start()

        def equal():
            return model.status == "live" and model_view(model) == by_id(list_json(mirror))

        wait_for("the model to equal list --json", equal)
        wait_for("the job to run", lambda: model_view(model)[running][1] == "RUN")
        seq = model.seq
        assert mirror.stop() == 0
        wait_for("the model to notice", lambda: model.status == "disconnected")
        # Flux goes on while the mirror is away
        new = submit(inst, "--urgency=0", "sleep", "600")
        inst.flux("job", "memo", str(held), "while=away")
        mirror.start()
        mirror.wait_synced()
        wait_for("the model to catch up", lambda: new in model_view(model) and equal())
        assert model_view(model)[held][2] == {"user": {"while": "away"}}
        assert model.seq > seq
        # Flux dies and comes back without the jobs
        inst.kill()
        wait_for("the mirror to notice", lambda: not mirror.stats()["flux"]["connected"])
        inst.start()
        mirror.wait_synced()
        wait_for("the lost jobs to be INACTIVE in the model",
                 lambda: all(model_view(model)[j][1] == "INACTIVE" for j in (running, held, new))
                 and equal())
    finally:
        if thread is not None:
            thread.stop()
        mirror.cleanup()
        inst.cleanup()
