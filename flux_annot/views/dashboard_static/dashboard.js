/* flux-annot dashboard: the page's side (docs/dashboard.md).
 *
 * The page follows the dashboard's event stream (Server-Sent Events on
 * "events"): a `snapshot` replaces every job; a `batch` carries the
 * service's delta batch, whose annotation patches are merged here
 * (merge.js, the rules of docs/data-model.md: null deletes, empty objects
 * pruned); a `status` says whether the dashboard is live, resynchronising
 * or cut off from the service (the banner). Job ids are decimal strings.
 *
 * Rendering is throttled (at most ~10 times a second, and once a second
 * for the clock) and keyed by job id: a row is rewritten only when its
 * text changed, rows are moved rather than rebuilt. Every text comes from
 * the service's data and is set with textContent, never parsed as HTML.
 */
(function () {
  "use strict";

  var STATES = ["NEW", "DEPEND", "PRIORITY", "SCHED", "RUN", "CLEANUP", "INACTIVE"];
  var PENDING = { NEW: 1, DEPEND: 1, PRIORITY: 1, SCHED: 1 };
  var RUNNING = { RUN: 1, CLEANUP: 1 };
  var CAP = { pending: 500, running: 500, memos: 300, jobs: 1000, timeline: 300 };
  var F58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
  var LOG_CAP = 200000;

  var S = {
    jobs: new Map(), // id (decimal string) -> job
    users: new Map(), // userid (string) -> name
    seq: 0,
    status: "connecting", // the dashboard's link to the service
    link: "connecting", // this page's link to the dashboard
    eps: 0,
    lag: null, // seconds between the dashboard relaying a batch and this page applying it
    updated: null,
    applyLog: [], // [seq, time applied (s)] per batch
    renderLog: [], // [seq, time shown (s)] per render
    batches: 0,
    snapshots: 0,
    forbidden: false,
    error: null, // the dashboard's last problem reaching the service
    accuracy: null, // the estimate accuracy report with its histogram (docs/accuracy.md)
  };
  var filter = { user: "", text: "" };
  var renderTimer = null;
  var lastRender = 0;
  var nUsersShown = -1;

  function now() {
    return (performance.timeOrigin + performance.now()) / 1000;
  }

  function $(id) {
    return document.getElementById(id);
  }

  // --- job ids and formatting ------------------------------------------------

  function f58(id) {
    var n = BigInt(id);
    var s = "";
    do {
      s = F58[Number(n % 58n)] + s;
      n = n / 58n;
    } while (n > 0n);
    return "\u0192" + s;
  }

  function makeJob(id, userid, state, ann) {
    return {
      id: id,
      key: id.padStart(20, "0"), // ids compare as strings of equal length
      f58: f58(id),
      userid: userid,
      state: state,
      ann: ann,
      search: null,
    };
  }

  function username(uid) {
    if (uid === null || uid === undefined) return "?";
    var name = S.users.get(String(uid));
    return name === undefined ? String(uid) : name;
  }

  function pad2(n) {
    return (n < 10 ? "0" : "") + n;
  }

  function clock(t) {
    var d = new Date(t * 1000);
    return pad2(d.getHours()) + ":" + pad2(d.getMinutes()) + ":" + pad2(d.getSeconds());
  }

  function rel(secs) {
    var sign = secs < 0 ? "-" : "+";
    var s = Math.round(Math.abs(secs));
    if (s < 60) return sign + s + "s";
    if (s < 3600) return sign + Math.floor(s / 60) + "m" + pad2(s % 60) + "s";
    if (s < 86400) return sign + Math.floor(s / 3600) + "h" + pad2(Math.floor((s % 3600) / 60)) + "m";
    return sign + Math.floor(s / 86400) + "d" + pad2(Math.floor((s % 86400) / 3600)) + "h";
  }

  function text(v) {
    if (v === undefined || v === null) return "";
    return typeof v === "string" ? v : JSON.stringify(v);
  }

  function ns(job, name) {
    var a = job.ann;
    var v = a && Object.prototype.hasOwnProperty.call(a, name) ? a[name] : null;
    return FluxMerge.isObject(v) ? v : null;
  }

  function field(obj, key) {
    return obj && Object.prototype.hasOwnProperty.call(obj, key) ? obj[key] : undefined;
  }

  function memoText(user) {
    var parts = [];
    for (var k in user) parts.push(k + "=" + text(user[k]));
    return parts.join("  ");
  }

  // --- applying the stream -----------------------------------------------------

  function addUsers(users) {
    if (!users) return;
    for (var uid in users) S.users.set(uid, users[uid]);
  }

  function common(msg) {
    S.seq = msg.seq;
    S.status = msg.status || S.status;
    S.error = msg.error || null;
    if (typeof msg.eps === "number") S.eps = msg.eps;
    S.updated = now();
    if (typeof msg.t === "number") S.lag = Math.max(0, S.updated - msg.t);
  }

  function applySnapshot(msg) {
    var jobs = new Map();
    addUsers(msg.users);
    for (var i = 0; i < msg.jobs.length; i++) {
      var e = msg.jobs[i];
      jobs.set(e[0], makeJob(e[0], e[1], e[2], e[3] ? FluxMerge.merge(null, e[3]) : null));
    }
    S.jobs = jobs;
    S.snapshots++;
    common(msg);
  }

  function job(id, owners) {
    var j = S.jobs.get(id);
    if (j === undefined) {
      var uid = owners && owners[id] !== undefined ? owners[id] : null;
      j = makeJob(id, uid, "?", null);
      S.jobs.set(id, j);
    }
    return j;
  }

  function applyBatch(msg) {
    var owners = msg.owners || null;
    var i, e, j;
    addUsers(msg.users);
    // A batch's annotation changes come before its transitions (the
    // allocation's notes, then RUN); the page shows both at once anyway.
    var ann = msg.annotations || [];
    for (i = 0; i < ann.length; i++) {
      e = ann[i];
      j = job(e[0], owners);
      j.ann = FluxMerge.applyDelta(j.ann, e[1]);
      j.search = null;
    }
    var tr = msg.transitions || [];
    for (i = 0; i < tr.length; i++) {
      e = tr[i];
      j = job(e[0], owners);
      j.state = e[1];
      if (owners && owners[e[0]] !== undefined) j.userid = owners[e[0]];
      j.search = null;
    }
    S.batches++;
    common(msg);
    if (S.applyLog.length < LOG_CAP) S.applyLog.push([msg.seq, S.updated]);
  }

  function applyOwners(msg) {
    addUsers(msg.users);
    for (var id in msg.owners) {
      var j = S.jobs.get(id);
      if (j !== undefined) {
        j.userid = msg.owners[id];
        j.search = null;
      }
    }
  }

  function applyStatus(msg) {
    S.status = msg.status;
    S.error = msg.error || null;
    if (typeof msg.eps === "number") S.eps = msg.eps;
  }

  // --- the stream --------------------------------------------------------------

  var source = null;
  var backoff = 1000;

  function connect() {
    source = new EventSource("events");
    source.addEventListener("open", function () {
      S.link = "open";
      S.forbidden = false;
      backoff = 1000;
      schedule();
    });
    source.addEventListener("snapshot", function (ev) {
      applySnapshot(JSON.parse(ev.data));
      schedule();
    });
    source.addEventListener("batch", function (ev) {
      applyBatch(JSON.parse(ev.data));
      schedule();
    });
    source.addEventListener("owners", function (ev) {
      applyOwners(JSON.parse(ev.data));
      schedule();
    });
    source.addEventListener("accuracy", function (ev) {
      S.accuracy = JSON.parse(ev.data);
      schedule();
    });
    source.addEventListener("status", function (ev) {
      applyStatus(JSON.parse(ev.data));
      schedule();
    });
    source.addEventListener("error", function () {
      S.link = "reconnecting";
      schedule();
      if (source.readyState === EventSource.CLOSED) {
        // The browser gave up (the dashboard refused or is gone): retry with
        // backoff, and tell a refused token apart from a dashboard that is down.
        source.close();
        fetch("healthz", { cache: "no-store" }).then(
          function (r) {
            S.forbidden = r.status === 403;
            schedule();
          },
          function () {}
        );
        setTimeout(connect, backoff);
        backoff = Math.min(backoff * 2, 15000);
      }
    });
  }

  // --- rendering ---------------------------------------------------------------

  function schedule() {
    if (renderTimer !== null) return;
    var wait = Math.max(0, 100 - (performance.now() - lastRender));
    renderTimer = setTimeout(render, wait);
  }

  function matches(j) {
    if (filter.user !== "" && String(j.userid) !== filter.user) return false;
    if (filter.text !== "") {
      if (j.search === null) {
        j.search = (
          j.f58 + " f" + j.f58.slice(1) + " " + j.id + " " + username(j.userid) + " " + j.state + " " +
          (j.ann ? JSON.stringify(j.ann) : "")
        ).toLowerCase();
      }
      if (j.search.indexOf(filter.text) < 0) return false;
    }
    return true;
  }

  function ahead(j) {
    var v = field(ns(j, "sched"), "jobs_ahead");
    return typeof v === "number" ? v : Infinity;
  }

  // The scheduler's queue (SCHED) first, then the jobs not in it yet,
  // nearest to it first (NEW -> DEPEND -> PRIORITY -> SCHED).
  var STAGE = { SCHED: 0, PRIORITY: 1, DEPEND: 2, NEW: 3 };

  function byQueue(a, b) {
    var s = STAGE[a.state] - STAGE[b.state];
    if (s !== 0) return s;
    var x = ahead(a), y = ahead(b);
    if (x !== y) return x < y ? -1 : 1;
    return a.key < b.key ? -1 : a.key > b.key ? 1 : 0;
  }

  function newestFirst(a, b) {
    return a.key < b.key ? 1 : a.key > b.key ? -1 : 0;
  }

  function group(j) {
    return PENDING[j.state] ? 0 : RUNNING[j.state] ? 1 : 2;
  }

  function listOrder(a, b) {
    // as `flux-annotate list`: pending oldest first, then running and
    // inactive jobs newest first
    var g = group(a) - group(b);
    if (g !== 0) return g;
    return group(a) === 0 ? -newestFirst(a, b) : newestFirst(a, b);
  }

  /* Keyed rows: `list` (cut at `cap`) becomes the children of `box`, each
     made by make(job) once, refilled by fill(el, cells) when its cells
     changed, moved into place when the order changed. */
  function renderKeyed(box, list, cap, make, cellsOf, fill) {
    var rows = box._rows || (box._rows = new Map());
    var n = Math.min(list.length, cap);
    var seen = new Set();
    var child = box.firstElementChild;
    for (var i = 0; i < n; i++) {
      var j = list[i];
      seen.add(j.id);
      var el = rows.get(j.id);
      if (el === undefined) {
        el = make(j);
        rows.set(j.id, el);
      }
      var cells = cellsOf(j);
      var sig = cells.join("\u0001");
      if (el._sig !== sig) {
        fill(el, cells, j);
        el._sig = sig;
      }
      if (el !== child) box.insertBefore(el, child);
      else child = child.nextElementSibling;
    }
    while (child) {
      var next = child.nextElementSibling;
      box.removeChild(child);
      child = next;
    }
    rows.forEach(function (_, id) {
      if (!seen.has(id)) rows.delete(id);
    });
  }

  function makeRow(j) {
    var tr = document.createElement("tr");
    tr.dataset.id = j.id;
    return tr;
  }

  function tableFiller(classes) {
    return function (tr, cells, j) {
      while (tr.cells.length < cells.length) tr.insertCell(-1);
      for (var i = 0; i < cells.length; i++) {
        var td = tr.cells[i];
        td.textContent = cells[i];
        td.className = classes[i] === "state" ? "state st-" + j.state : classes[i] || "";
        if ((classes[i] || "").indexOf("wide") >= 0) td.title = cells[i];
      }
    };
  }

  var fillers = {
    pending: tableFiller(["id", "", "state", "num", "", "wide"]),
    running: tableFiller(["id", "", "state", "wide"]),
    memos: tableFiller(["id", "", "state", "wide"]),
    jobs: tableFiller(["id", "", "state", "wide mono"]),
  };

  function renderTable(name, list) {
    var table = $(name);
    renderKeyed(table.tBodies[0], list, CAP[name], makeRow, cellsFor[name], fillers[name]);
    $(name + "-count").textContent = "(" + list.length.toLocaleString() + ")";
    $(name + "-more").textContent =
      list.length > CAP[name]
        ? "showing the first " + CAP[name] + " of " + list.length.toLocaleString() +
          "; narrow the filter to see the others"
        : list.length === 0
        ? "none"
        : "";
  }

  var T = 0; // "now" of the current render, for relative times
  var cellsFor = {
    pending: function (j) {
      var s = ns(j, "sched");
      var te = field(s, "t_estimate");
      var when = typeof te === "number" ? clock(te) + " (" + rel(te - T) + ")" : text(te);
      return [j.f58, username(j.userid), j.state, text(field(s, "jobs_ahead")), when,
        text(field(s, "reason_pending"))];
    },
    running: function (j) {
      return [j.f58, username(j.userid), j.state, text(field(ns(j, "sched"), "resource_summary"))];
    },
    memos: function (j) {
      return [j.f58, username(j.userid), j.state, memoText(ns(j, "user"))];
    },
    jobs: function (j) {
      return [j.f58, username(j.userid), j.state, j.ann ? JSON.stringify(j.ann) : ""];
    },
  };

  // --- the timeline: a bar per pending job, from now to its t_estimate ---------

  function niceStep(span) {
    var steps = [10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];
    for (var i = 0; i < steps.length; i++) if (span / steps[i] <= 6) return steps[i];
    return Math.ceil(span / 6 / 86400) * 86400;
  }

  function makeBar(j) {
    var row = document.createElement("div");
    row.className = "tl-row";
    row.dataset.id = j.id;
    var label = document.createElement("span");
    label.className = "tl-label";
    var track = document.createElement("div");
    track.className = "tl-track";
    var bar = document.createElement("div");
    bar.className = "tl-bar";
    var when = document.createElement("span");
    when.className = "tl-when";
    track.appendChild(bar);
    row.appendChild(label);
    row.appendChild(track);
    row.appendChild(when);
    return row;
  }

  function renderTimeline(pending) {
    var shown = pending.slice(0, CAP.timeline);
    var horizon = 60;
    for (var i = 0; i < shown.length; i++) {
      var te = field(ns(shown[i], "sched"), "t_estimate");
      if (typeof te === "number" && te - T > horizon) horizon = te - T;
    }
    var step = niceStep(horizon);
    horizon = Math.ceil(horizon / step) * step;
    var axis = $("timeline-axis");
    var ticks = [];
    for (var t = 0; t <= horizon; t += step) ticks.push(t);
    var sig = horizon + "/" + Math.floor(T);
    if (axis._sig !== sig) {
      axis._sig = sig;
      axis.textContent = "";
      for (var k = 0; k < ticks.length; k++) {
        var tick = document.createElement("span");
        tick.className = "tl-tick";
        tick.style.left = (100 * ticks[k]) / horizon + "%";
        tick.textContent = k === 0 ? "now" : rel(ticks[k]) + " · " + clock(T + ticks[k]).slice(0, 5);
        axis.appendChild(tick);
      }
    }
    renderKeyed($("timeline-rows"), shown, CAP.timeline, makeBar,
      function (j) {
        var te = field(ns(j, "sched"), "t_estimate");
        if (typeof te !== "number") return [j.f58, "", "no estimate", username(j.userid)];
        var frac = Math.max(0, Math.min(1, (te - T) / horizon));
        return [j.f58, (100 * frac).toFixed(2), te < T ? "overdue " + rel(te - T) : rel(te - T),
          username(j.userid)];
      },
      function (row, cells, j) {
        row.children[0].textContent = cells[0];
        var bar = row.children[1].firstElementChild;
        if (cells[1] === "") {
          bar.className = "tl-bar unknown";
          bar.style.width = "100%";
        } else {
          bar.className = "tl-bar" + (cells[2].indexOf("overdue") === 0 ? " overdue" : "");
          bar.style.width = cells[1] + "%";
        }
        row.children[2].textContent = cells[2];
        row.title = cells[0] + " (" + cells[3] + "): " + cells[2];
      });
    $("timeline-count").textContent = "(" + pending.length.toLocaleString() + " pending)";
    $("timeline-more").textContent =
      pending.length > CAP.timeline
        ? "showing the first " + CAP.timeline + " of " + pending.length.toLocaleString()
        : pending.length === 0 ? "no pending job" : "";
  }

  function renderCounts(counts, total) {
    var box = $("counts");
    if (!box.firstElementChild) {
      STATES.concat(["TOTAL"]).forEach(function (s) {
        var d = document.createElement("div");
        d.className = "count-box st-" + s;
        d.dataset.state = s;
        var n = document.createElement("b");
        var l = document.createElement("span");
        l.textContent = s;
        d.appendChild(n);
        d.appendChild(l);
        box.appendChild(d);
      });
    }
    for (var i = 0; i < box.children.length; i++) {
      var d = box.children[i];
      var s = d.dataset.state;
      d.firstElementChild.textContent = (s === "TOTAL" ? total : counts[s] || 0).toLocaleString();
    }
  }

  function renderUsers() {
    var uids = new Set();
    S.jobs.forEach(function (j) {
      if (j.userid !== null && j.userid !== undefined) uids.add(String(j.userid));
    });
    if (uids.size === nUsersShown) return;
    nUsersShown = uids.size;
    var sel = $("filter-user");
    var keep = sel.value;
    while (sel.options.length > 1) sel.remove(1);
    Array.from(uids)
      .sort(function (a, b) { return username(a) < username(b) ? -1 : 1; })
      .forEach(function (uid) {
        var o = document.createElement("option");
        o.value = uid;
        o.textContent = username(uid) + " (" + uid + ")";
        sel.appendChild(o);
      });
    sel.value = keep;
    if (sel.value !== keep) filter.user = sel.value;
  }

  var BANNERS = {
    connecting: "Connecting to the flux-annot service\u2026",
    resync: "Resynchronising: re-reading the job list from the service\u2026",
    disconnected: "The flux-annot service is unreachable: showing the last known state, reconnecting\u2026",
  };

  function renderStatus() {
    var banner = $("banner");
    var msg = "";
    var pill = S.status;
    if (S.link !== "open") {
      pill = "reconnecting";
      msg = S.forbidden
        ? "The dashboard refused this page's token (it was restarted?): open the URL it printed."
        : "Lost contact with the dashboard server: showing the last state received, reconnecting\u2026";
    } else if (BANNERS[S.status]) {
      msg = BANNERS[S.status] + (S.error && S.status !== "connecting" ? " (" + S.error + ")" : "");
    }
    banner.hidden = msg === "";
    banner.textContent = msg;
    banner.dataset.kind = S.link !== "open" ? "link" : S.status;
    var st = $("status");
    st.textContent = pill;
    st.dataset.status = pill;
    $("seq").textContent = String(S.seq);
    $("eps").textContent = S.eps.toLocaleString();
    $("lag").textContent = S.lag === null ? "\u2013" : Math.round(S.lag * 1000) + " ms";
    $("updated").textContent = S.updated === null ? "\u2013" : clock(S.updated);
  }

  // seconds, signed and short: "-4.0s", "+2m05s", "+1h02m" (as the CLI's table)
  function dur(s) {
    if (s === null || s === undefined) return "\u2013";
    var sign = s < 0 ? "-" : "+";
    var a = Math.abs(s);
    if (a < 60) return sign + a.toFixed(1) + "s";
    var r = Math.round(a);
    if (a < 3600) return sign + Math.floor(r / 60) + "m" + pad2(r % 60) + "s";
    if (a < 86400) return sign + Math.floor(r / 3600) + "h" + pad2(Math.floor(r / 60) % 60) + "m";
    return sign + Math.floor(r / 86400) + "d" + pad2(Math.floor(r / 3600) % 24) + "h";
  }

  function renderAccuracy() {
    var a = S.accuracy;
    if (!a) return;
    var last = a.last || {};
    $("accuracy-count").textContent = a.jobs_started + " started, " + a.jobs_never_started + " never started";
    $("accuracy-summary").textContent = last.count
      ? "last estimate (" + last.count + " jobs): bias " + dur(last.bias) + ", median |error| " +
        dur(last.median_abs).slice(1) + ", p90 |error| " + dur(last.p90_abs).slice(1) +
        " \u00b7 first estimate: bias " + dur((a.first || {}).bias)
      : "no job has started with an estimate yet";
    var h = a.histogram || { edges: [], counts: [] };
    var box = $("accuracy-hist");
    var max = Math.max.apply(null, [1].concat(h.counts));
    while (box.children.length > h.counts.length) box.removeChild(box.lastChild);
    h.counts.forEach(function (n, i) {
      var bar = box.children[i];
      if (!bar) {
        bar = document.createElement("div");
        box.appendChild(bar);
      }
      var lo = h.edges[i], hi = h.edges[i + 1];
      bar.className = "acc-bar" + (n === 0 ? " empty" : "") + (lo >= 0 ? " late" : "");
      bar.style.height = (n / max) * 100 + "%";
      bar.dataset.count = String(n);
      bar.title = n + " job" + (n === 1 ? "" : "s") + " started " + dur(lo) + " to " + dur(hi) +
        " from the last estimate";
    });
    var axis = $("accuracy-axis");
    axis.textContent = "";
    if (h.edges.length) {
      [h.edges[0], 0, h.edges[h.edges.length - 1]].forEach(function (e) {
        var span = document.createElement("span");
        span.textContent = e === 0 ? "0 (on time)" : dur(e);
        axis.appendChild(span);
      });
    }
  }

  function render() {
    renderTimer = null;
    lastRender = performance.now();
    T = now();
    var counts = {};
    var pending = [], running = [], memos = [], all = [];
    S.jobs.forEach(function (j) {
      if (!matches(j)) return;
      counts[j.state] = (counts[j.state] || 0) + 1;
      all.push(j);
      if (PENDING[j.state]) pending.push(j);
      else if (RUNNING[j.state]) running.push(j);
      if (ns(j, "user")) memos.push(j);
    });
    pending.sort(byQueue);
    running.sort(newestFirst);
    memos.sort(newestFirst);
    all.sort(listOrder);
    renderUsers();
    renderCounts(counts, all.length);
    renderTimeline(pending);
    renderAccuracy();
    renderTable("pending", pending);
    renderTable("running", running);
    renderTable("memos", memos);
    renderTable("jobs", all);
    renderStatus();
    var filtered = filter.user !== "" || filter.text !== "";
    $("filter-note").textContent = filtered
      ? all.length.toLocaleString() + " of " + S.jobs.size.toLocaleString() + " jobs match"
      : "";
    document.body.dataset.seq = String(S.seq);
    if (S.renderLog.length < LOG_CAP) S.renderLog.push([S.seq, now()]);
  }

  function onFilter() {
    filter.user = $("filter-user").value;
    filter.text = $("filter-text").value.trim().toLowerCase();
    schedule();
  }

  window.fluxDash = { state: S, render: render };
  $("filter-user").addEventListener("change", onFilter);
  $("filter-text").addEventListener("input", onFilter);
  $("filter-text").addEventListener("change", onFilter);
  setInterval(schedule, 1000); // the clock moves: relative times and bars
  renderStatus();
  connect();
})();
