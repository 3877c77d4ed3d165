"""The dashboard page in a real headless Chromium (Debian's chromium and
chromedriver through Selenium; nothing is downloaded): what a person sees
on the page equals what `flux-annotate list --json` says, after a stream of
changes and across a restart of the service; and the page's own merge
(static/merge.js) against the rules of docs/data-model.md, with the same
cases as the Python tests."""

import json
import os
import pwd
import random
import subprocess
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flux_annot import AnnotationService, Client, Cred, merge, sched
from flux_annot.views.dashboard import STATIC_DIR

import test_core_merge as core_cases
import test_events_delta_property as delta_cases
from dashproc import JS_SEQ, JS_TABLE, DashboardProc, chrome, wait_for
from serverproc import NOBODY, ServerProc, is_root, run_as

PENDING = ("NEW", "DEPEND", "PRIORITY", "SCHED")


@pytest.fixture(scope="module")
def browser():
    d = chrome()
    yield d
    d.quit()


@pytest.fixture
def server():
    srv = ServerProc().start()
    yield srv
    srv.cleanup()


def list_json(socket_path):
    """`flux-annotate list -A -a --json`, as a person would run it."""
    r = subprocess.run(
        [sys.executable, "-m", "flux_annot", "list", "-A", "-a", "--json", "--socket", socket_path],
        capture_output=True, text=True, timeout=60, check=True)
    return json.loads(r.stdout)["jobs"]


def norm(v):
    """JSON value with every number a float (the page is JavaScript) and
    objects compared without regard to key order."""
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, list):
        return [norm(x) for x in v]
    return {k: norm(x) for k, x in v.items()}


def name_of(uid):
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def page_view(browser):
    """{id: (user, state, annotations)} from the page's "All jobs" table."""
    rows = browser.execute_script(JS_TABLE, "#jobs")
    return {int(r[0]): (r[2], r[3], norm(json.loads(r[4])) if r[4] else None) for r in rows}


def list_view(jobs):
    return {j["id"]: (name_of(j["userid"]), j["state"], norm(j["annotations"])) for j in jobs}


def wait_equal(browser, socket_path, timeout=90):
    """Poll until the page's table equals `list --json` (bounded); returns the list."""
    deadline = time.monotonic() + timeout
    while True:
        jobs = list_json(socket_path)
        want = list_view(jobs)
        got = page_view(browser)
        if got == want:
            return jobs
        if time.monotonic() > deadline:
            diff = {k: (got.get(k), want.get(k)) for k in set(got) | set(want) if got.get(k) != want.get(k)}
            raise AssertionError(f"page differs from list --json on {len(diff)} jobs: "
                                 f"{dict(list(diff.items())[:5])}")
        time.sleep(0.3)


def open_page(browser, dash):
    # without the token: 403, and a sentence saying where the token is
    browser.delete_all_cookies()
    browser.get(dash.base + "/")
    assert "403 Forbidden" in browser.find_element("tag name", "body").text
    assert browser.execute_script("return window.fluxDash === undefined;")
    browser.get(dash.url)
    wait_for(lambda: browser.execute_script(JS_SEQ) >= 0, 30, what="the first render")
    # the token left the address bar; the cookie carries it
    assert "token" not in browser.current_url


def banner(browser):
    return browser.execute_script(
        "var b = document.getElementById('banner'); return b.hidden ? '' : b.textContent;")


# --- 1,000 changes through the service ------------------------------------------


class Driver:
    """Random valid changes of every kind through the service's socket."""

    def __init__(self, client, rng, first_id):
        self.c = client
        self.rng = rng
        self.state = {}
        self.next_id = first_id
        self.counts = {}

    def submit(self, userid=None):
        jid = self.next_id
        self.next_id += 1
        uid = userid if userid is not None else self.rng.choice([0, 0, NOBODY])
        self.c.submit(jid, uid)
        self.state[jid] = "SCHED"
        return jid

    def step(self):
        rng, c = self.rng, self.c
        pending = [j for j, s in self.state.items() if s == "SCHED"]
        running = [j for j, s in self.state.items() if s in ("RUN", "CLEANUP")]
        active = pending + running
        kinds = ["sched", "sched", "sched-null", "memo", "memo-null", "site", "site-null",
                 "submit"]
        if pending:
            kinds += ["success", "deny", "cancel"]
        if running:
            kinds += ["state"]
        kind = rng.choice(kinds)
        if kind in ("sched", "sched-null", "success", "deny", "cancel") and not pending:
            kind = "submit"
        if kind in ("memo", "memo-null", "site", "site-null") and not active:
            kind = "submit"
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if kind == "submit":
            self.submit()
        elif kind == "sched":
            j = rng.choice(pending)
            c.alloc_response(sched.annotate(
                j, t_estimate=round(time.time() + rng.uniform(5, 3000), 3),
                reason_pending=rng.choice(["insufficient resources", "jobs ahead in queue",
                                           "déjà <b>vu</b> & \"quotes\""]),
                jobs_ahead=rng.randrange(50)))
        elif kind == "sched-null":
            j = rng.choice(pending)
            c.alloc_response({"id": j, "type": sched.ANNOTATE,
                              "annotations": {"sched": {"reason_pending": None, "extra": {"x": None}}}})
        elif kind == "memo":
            j = rng.choice(active)
            c.memo(j, {rng.choice(["note", "step", "tag"]): rng.choice(
                ["calibration", 3, [1, 2], {"deep": {"er": rng.random()}}, True])},
                volatile=rng.random() < 0.5)
        elif kind == "memo-null":
            j = rng.choice(active)
            c.memo(j, {rng.choice(["note", "step", "tag"]): None, "tag": {"deep": {"er": None}}})
        elif kind == "site":
            j = rng.choice(active)
            c.annotate(j, {"site": {"rack": rng.randrange(8), "nested": {"a": {"b": rng.random()}}}},
                       volatile=rng.random() < 0.5)
        elif kind == "site-null":
            j = rng.choice(active)
            c.annotate(j, {"site": {"nested": {"a": {"b": None}}, "rack": None}})
        elif kind == "success":
            j = rng.choice(pending)
            c.alloc_response(sched.success(j, resource_summary=f"rank0/core[0-{rng.randrange(1, 8)}]"))
            self.state[j] = "RUN"
        elif kind == "deny":
            j = rng.choice(pending)
            c.alloc_response(sched.deny(j, "needs more cores than exist"))
            self.state[j] = "INACTIVE"
        elif kind == "cancel":
            c.alloc_response(sched.cancel(rng.choice(pending)))
        elif kind == "state":
            j = rng.choice(running)
            new = "CLEANUP" if self.state[j] == "RUN" and rng.random() < 0.7 else "INACTIVE"
            c.state(j, new)
            self.state[j] = new


def test_page_equals_list_json_after_1000_changes(browser, server):
    rng = random.Random(12)
    with Client(server.path) as c:
        drv = Driver(c, rng, first_id=1)
        for _ in range(40):
            drv.submit()
        dash = DashboardProc(server.path).start()
        try:
            open_page(browser, dash)
            for _ in range(1000):
                drv.step()
            assert all(drv.counts.get(k) for k in (
                "sched", "sched-null", "memo", "memo-null", "site-null", "success", "deny",
                "state", "submit"))
            jobs = wait_equal(browser, server.path)
            assert banner(browser) == ""
            pending = [j for j in jobs if j["state"] in PENDING]
            # the timeline: one bar per pending job
            bars = browser.execute_script(
                "return Array.from(document.querySelectorAll('#timeline-rows .tl-row')).map("
                "r => [r.dataset.id, r.querySelectorAll('.tl-bar').length]);")
            assert sorted(int(i) for i, _ in bars) == sorted(j["id"] for j in pending)
            assert all(n == 1 for _, n in bars)
            # the pending queue with its notes, in queue order
            rows = browser.execute_script(JS_TABLE, "#pending")
            by_id = {j["id"]: j for j in jobs}
            assert sorted(int(r[0]) for r in rows) == sorted(j["id"] for j in pending)
            for r in rows:
                s = (by_id[int(r[0])]["annotations"] or {}).get("sched", {})
                assert r[4] == str(s.get("jobs_ahead", ""))
                assert r[6] == s.get("reason_pending", "")
                assert (r[5] == "") == ("t_estimate" not in s)
            aheads = [int(r[4]) if r[4] else 10**9 for r in rows]
            assert aheads == sorted(aheads)
            # running jobs with their resources
            rows = browser.execute_script(JS_TABLE, "#running")
            running = {j["id"]: j for j in jobs if j["state"] in ("RUN", "CLEANUP")}
            assert sorted(int(r[0]) for r in rows) == sorted(running)
            for r in rows:
                s = (running[int(r[0])]["annotations"] or {}).get("sched", {})
                assert r[4] == s.get("resource_summary", "")
            # memos
            rows = browser.execute_script(JS_TABLE, "#memos")
            memos = {j["id"] for j in jobs if (j["annotations"] or {}).get("user")}
            assert {int(r[0]) for r in rows} == memos
            # counts by state
            counts = browser.execute_script(
                "return Object.fromEntries(Array.from(document.querySelectorAll('#counts .count-box'))"
                ".map(d => [d.dataset.state, d.querySelector('b').textContent]));")
            for s in ("SCHED", "RUN", "CLEANUP", "INACTIVE"):
                assert int(counts[s].replace(",", "")) == sum(1 for j in jobs if j["state"] == s)
            assert int(counts["TOTAL"].replace(",", "")) == len(jobs)
        finally:
            dash.stop()


def test_filters_and_text_is_never_html(browser, server):
    with Client(server.path) as c:
        for i in range(1, 7):
            c.submit(i, 0 if i % 2 else NOBODY)
        c.memo(3, {"note": "<img src=x onerror=\"window.pwned=1\"> needle"})
        c.alloc_response(sched.annotate(4, reason_pending="<script>window.pwned=2</script>"))
        dash = DashboardProc(server.path).start()
        try:
            open_page(browser, dash)
            wait_equal(browser, server.path)
            assert browser.execute_script("return window.pwned === undefined;")
            memo = browser.execute_script(JS_TABLE, "#memos")
            assert memo[0][4] == "note=<img src=x onerror=\"window.pwned=1\"> needle"
            assert browser.execute_script("return document.querySelectorAll('img').length;") == 0
            # filter by user: the select lists both users
            from selenium.webdriver.support.ui import Select

            sel = Select(browser.find_element("id", "filter-user"))
            labels = [o.text for o in sel.options]
            assert labels[0] == "all users"
            assert f"{name_of(NOBODY)} ({NOBODY})" in labels and f"{name_of(0)} (0)" in labels
            sel.select_by_value(str(NOBODY))
            wait_for(lambda: {int(r[0]) for r in browser.execute_script(JS_TABLE, "#jobs")} == {2, 4, 6},
                     20, what="the user filter")
            sel.select_by_value("")
            box = browser.find_element("id", "filter-text")
            box.send_keys("NEEDLE")
            wait_for(lambda: {int(r[0]) for r in browser.execute_script(JS_TABLE, "#jobs")} == {3},
                     20, what="the text filter")
            from selenium.webdriver.common.keys import Keys

            erase = Keys.CONTROL + "a" + Keys.BACKSPACE  # as a person empties the box
            box.send_keys(erase)
            box.send_keys("f4")  # F58 of job 3 is ƒ4 (f4 in ASCII, as flux accepts it)
            wait_for(lambda: {int(r[0]) for r in browser.execute_script(JS_TABLE, "#jobs")} == {3},
                     20, what="the F58 filter")
            box.send_keys(erase)
            wait_for(lambda: len(browser.execute_script(JS_TABLE, "#jobs")) == 6, 20,
                     what="no filter")
        finally:
            dash.stop()


def test_page_resumes_after_the_service_restarts(browser, tmp_path):
    srv = ServerProc(store=tmp_path / "annot.db").start()
    dash = None
    try:
        with Client(srv.path) as c:
            for i in range(1, 11):
                c.submit(i, 0)
            c.alloc_response(sched.success(2, resource_summary="rank0/core0"))
            c.memo(3, {"note": "before"})
        dash = DashboardProc(srv.path).start()
        open_page(browser, dash)
        wait_equal(browser, srv.path)
        srv.stop()
        wait_for(lambda: "unreachable" in banner(browser), 30, what="the disconnected banner")
        assert browser.execute_script("return document.getElementById('status').textContent;") == \
            "disconnected"
        srv.start()
        with Client(srv.path) as c:
            c.memo(3, {"note": None, "after": [1, 2]})
            c.memo(4, {"new": "after restart"})
            c.state(2, "CLEANUP")
            c.submit(11, NOBODY)
            c.alloc_response(sched.deny(5, "gone"))
        wait_equal(browser, srv.path)
        wait_for(lambda: banner(browser) == "", 30, what="the banner to go")
    finally:
        if dash is not None:
            dash.stop()
        srv.cleanup()


@pytest.mark.skipif(not is_root(), reason="running the dashboard as nobody needs root")
def test_a_guest_dashboard_shows_what_the_guest_may_see(browser, server):
    # the dashboard run by `nobody` shows nobody's jobs whole and only the
    # `sched` notes of other users' jobs, as `list` does for nobody
    os.chmod(os.path.dirname(server.path), 0o755)
    with Client(server.path) as c:
        c.submit(1, NOBODY)
        c.submit(2, 0)
        for j in (1, 2):
            c.alloc_response(sched.annotate(j, reason_pending="queued", t_estimate=time.time() + 60))
            c.memo(j, {"secret": f"memo of {j}"})
        c.annotate(2, {"site": {"rack": 4}})
    dash = DashboardProc(server.path, user=NOBODY).start()
    try:
        open_page(browser, dash)
        wait_for(lambda: len(page_view(browser)) == 2, 30, what="both jobs")
        got = page_view(browser)
        assert got[1][2]["user"] == {"secret": "memo of 1"}
        assert set(got[2][2]) == {"sched"}  # no memo, no site of root's job
        path = server.path
        r = run_as(NOBODY, lambda: Client(path).list())  # what list -A -a gives nobody
        assert page_view(browser) == list_view(r["value"])
    finally:
        dash.stop()


# --- the page's merge: the same cases as the Python tests, run in the browser ----

MERGE_JS = (STATIC_DIR / "merge.js").read_text()
JS_MERGE_MANY = """
var out = [];
for (var i = 0; i < arguments[0].length; i++) {
  var c = JSON.parse(arguments[0][i]);
  // a tree as the page holds one is pruned (as the Python tests' model.prune)
  var tree = c[0] === null ? null : FluxMerge.merge(null, c[0]);
  out.push(JSON.stringify(FluxMerge.merge(tree, c[1])));
}
return out;
"""
JS_REBUILD = """
var items = JSON.parse(arguments[0]);
var trees = {};
items[0].jobs.forEach(function (j) { trees[j.id] = j.annotations ? FluxMerge.merge(null, j.annotations) : null; });
for (var i = 1; i < items.length; i++) {
  (items[i].annotations || []).forEach(function (e) { trees[e[0]] = FluxMerge.applyDelta(trees[e[0]], e[1]); });
}
return JSON.stringify(trees);
"""


@pytest.fixture(scope="module")
def merge_page(browser):
    browser.get("about:blank")
    browser.execute_script(MERGE_JS)
    return browser


def js_merge_many(page, cases):
    return [json.loads(x) for x in page.execute_script(
        JS_MERGE_MANY, [json.dumps([t, p]) for t, p in cases])]


def test_js_merge_rfc7396_vectors(merge_page):
    cases = [(t, p) for t, p, _ in core_cases.RFC7396]
    got = js_merge_many(merge_page, cases)
    for (tree, patch, want), g in zip(core_cases.RFC7396, got):
        assert norm(g) == norm(want), (tree, patch)
    # a replaced key keeps its place, new keys come last
    out = merge_page.execute_script(
        "return JSON.stringify(FluxMerge.merge({a:1,b:2,c:3}, {d:4,b:20,a:null}));")
    assert out == '{"b":20,"c":3,"d":4}'
    # "__proto__" is an ordinary key, and the inputs are left as they were
    out = merge_page.execute_script(
        "var t = JSON.parse('{\"u\":{\"a\":1}}'); var p = JSON.parse('{\"__proto__\":{\"x\":1},\"u\":{\"a\":null}}');"
        "var r = FluxMerge.merge(t, p);"
        "return [JSON.stringify(r), JSON.stringify(t), r.x === undefined, ({}).x === undefined];")
    assert json.loads(out[0]) == {"__proto__": {"x": 1}} and out[1] == '{"u":{"a":1}}'
    assert out[2] and out[3]


# JavaScript numbers are doubles: integers beyond 2**53 are out of the page's
# reach (docs/dashboard.md), so the random cases keep to that range.
scalars = (st.none() | st.booleans() | st.integers(-(2**53), 2**53)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=5))
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(core_cases.keys, inner, max_size=4),
    max_leaves=12,
)
patches = st.dictionaries(core_cases.keys, values, max_size=4)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.one_of(st.none(), patches), patches), min_size=1, max_size=25))
def test_js_merge_matches_the_core_on_random_patches(merge_page, cases):
    got = js_merge_many(merge_page, cases)
    for (tree, patch), g in zip(cases, got):
        assert norm(g) == norm(merge(tree, patch)), (tree, patch)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(st.lists(delta_cases.op, max_size=12), st.lists(delta_cases.op, max_size=25))
def test_js_snapshot_plus_deltas_equal_get(merge_page, before, after):
    svc = AnnotationService(owner_uid=delta_cases.OWNER, batch_window=3600.0)
    try:
        for i in delta_cases.IDS:
            svc.submit(i, delta_cases.USERS[i % 2])
        for o in before:
            delta_cases.apply(svc, o)
        subs = {cred: svc.subscribe(cred, snapshot=True, delta=True)
                for cred in (Cred.owner_of(svc), Cred(delta_cases.USERS[0]))}
        items = {cred: list(sub) for cred, sub in subs.items()}
        for o in after:
            delta_cases.apply(svc, o)
            if o[0] == "flush":
                for cred, sub in subs.items():
                    items[cred].extend(sub)
        svc.flush()
        for cred, sub in subs.items():
            items[cred].extend(sub)
            trees = json.loads(merge_page.execute_script(JS_REBUILD, json.dumps(items[cred])))
            for i in delta_cases.IDS:
                assert norm(trees.get(str(i))) == norm(svc.get(cred, i)["annotations"]), (cred, i)
            sub.close()
    finally:
        svc.close()


# --- estimate accuracy (docs/accuracy.md) ----------------------------------------


def page_accuracy(browser):
    """(summary text, [bar counts]) as the page shows them."""
    return browser.execute_script(
        "return [document.getElementById('accuracy-summary').textContent,"
        " Array.from(document.querySelectorAll('#accuracy-hist .acc-bar'))"
        "   .map(function (b) { return Number(b.dataset.count); })];")


def test_accuracy_histogram_and_summary_follow_starts(browser, server):
    """The page's histogram of the last estimate's error and its summary
    equal the service's report, and move as more jobs start."""
    from flux_annot.views.accuracy_table import duration

    dash = DashboardProc(server.path).start()
    try:
        open_page(browser, dash)
        with Client(server.path) as c:
            t = time.time()
            for i in range(1, 7):
                c.submit(i, 0)
                c.alloc_response(sched.annotate(i, t_estimate=t + 10 * i))
            for i in (1, 2, 3):
                c.alloc_response(sched.success(i))

        def shown(n):
            with Client(server.path) as c:
                want = c.accuracy(histogram=True)
            text, bars = page_accuracy(browser)
            return (want["last"]["count"] == n and bars == want["histogram"]["counts"]
                    and f"({n} jobs)" in text
                    and f"bias {duration(want['last']['bias'])}" in text) and (text, bars)

        text, bars = wait_for(lambda: shown(3), 30, what="the histogram of 3 starts")
        assert sum(bars) == 3 and len(bars) == 20
        with Client(server.path) as c:
            c.alloc_response(sched.success(4))
            c.alloc_response(sched.deny(5, "no"))
        text, bars = wait_for(lambda: shown(4), 30, what="the histogram to follow a start")
        assert sum(bars) == 4
        assert browser.execute_script(
            "return document.getElementById('accuracy-count').textContent;"
        ) == "4 started, 1 never started"
    finally:
        dash.stop()
