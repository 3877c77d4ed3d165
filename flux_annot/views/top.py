"""`flux-annotate top`: the live full-screen view of the queue (docs/top.md).

Three layers:

- `LiveModel` + `LiveThread` (flux_annot.live): one subscription
  (snapshot + deltas) kept live on a thread of its own;
- `TopView` (no curses): which jobs are shown and in what order, the
  counts by state and the text of each row, kept in step with the model by
  `update()`, which looks only at the jobs the model reports as changed
  (sort keys and row texts of the others are kept);
- `TopScreen`: curses. It redraws a screen line only when its text or
  attribute changed (curses then sends the terminal only the cells that
  differ), follows resizes, and handles the keys.

Why curses from the standard library: `flux top` itself is curses, it
needs nothing installed on a login node, and it does what this view needs
(a table, a pane, keys, resizes). Colour is used only for the state
column markers and the header's warning, never to carry meaning alone,
and not at all under `NO_COLOR` (https://no-color.org). In a locale that
is not UTF-8 job ids are spelled with ASCII `f` and any other character the
terminal cannot show becomes `?`.
"""

import collections
import curses
import gc
import json
import locale
import math
import os
import time
import unicodedata

from flux_annot.views import listing
from flux_annot.ids import JobID
from flux_annot.views.accuracy_table import summary_line
from flux_annot.views.live import LiveModel, LiveThread, decode_tree

# Fits 80 columns: JOBID USER ST AHEAD T_ESTIMATE REASON RESOURCES MEMO.
TOP_FORMAT = (
    "{id.f58:>12} {username:<8.8} {state_single:>2} {sched.jobs_ahead:>5} "
    "{sched.t_estimate!d:%H:%M:%S::>10} {sched.reason_pending:<16.16+} "
    "{sched.resource_summary:<12.12+} {user}"
)

SORTS = ("queue", "id", "user", "state")
PENDING = frozenset(("NEW", "DEPEND", "PRIORITY", "SCHED"))
# Queue order: the scheduler's queue (SCHED) first; then the jobs not in it
# yet, nearest to it first (a Flux job goes NEW → DEPEND → PRIORITY → SCHED).
_STAGE = {"SCHED": 0, "PRIORITY": 1, "DEPEND": 2, "NEW": 3}
RUNNING = frozenset(("RUN", "CLEANUP"))
_STATE_INDEX = {s: i for i, s in enumerate(listing.STATES)}
_INF = math.inf

REFRESH = 0.5  # seconds between two looks at the model


def _num(v):
    if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v:
        return float(v)
    return _INF


class TopView:
    """The rows `top` shows (module doc). Read and written on one thread."""

    def __init__(self, model, fmt, states=None, sort="queue", text_filter=""):
        self.model = model
        self.fmt = fmt
        self.states = frozenset(states) if states else frozenset(listing.ACTIVE_STATES)
        self.sort = sort
        self.text_filter = text_filter.lower()
        self.order = []  # ids shown, in order
        self.counts = collections.Counter()  # jobs by state (every job of the model)
        self.rows_changed = set()  # shown ids whose row text changed since the last take
        self._keys = {}  # shown id -> sort key
        self._state = {}  # id -> state counted in self.counts
        self._text = {}  # id -> row text (cache)
        self._all = True  # next update looks at every job
        self._frozen = False

    # -- settings ----------------------------------------------------------

    def set_sort(self, sort):
        self.sort = sort
        self._all = True

    def set_filter(self, text):
        self.text_filter = text.lower()
        self._all = True

    # -- keeping in step ---------------------------------------------------

    def update(self):
        """Take the model's changes; True if anything shown may differ."""
        model = self.model
        with model.lock:
            changed = model.changed()
            if self._all:
                changed |= set(model.jobs) | set(self._state)
                self._all = False
            if not changed:
                return False
            jobs = model.jobs
            keys = self._keys
            counts = self.counts
            reorder = False
            for jid in changed:
                old = self._state.get(jid)
                job = jobs.get(jid)
                new = job.state if job is not None else None
                if old != new:
                    if old is not None:
                        counts[old] -= 1
                        if not counts[old]:
                            del counts[old]
                    if new is not None:
                        counts[new] += 1
                        self._state[jid] = new
                    else:
                        self._state.pop(jid, None)
                self._text.pop(jid, None)
                if job is not None and self._shows(job):
                    key = self._key(job)
                    if keys.get(jid) != key:
                        if jid not in keys:
                            self.order.append(jid)
                        keys[jid] = key
                        reorder = True
                    self.rows_changed.add(jid)
                elif jid in keys:
                    del keys[jid]
                    reorder = True
            if reorder:
                order = [i for i in self.order if i in keys]
                order.sort(key=keys.__getitem__)  # nearly sorted: cheap
                self.order = order
        if not self._frozen and model.synced:
            # The jobs of the first snapshot live as long as top: keep the
            # cyclic collector from scanning them all (a 100k-job full
            # collection is tens of ms on this thread).
            gc.freeze()
            self._frozen = True
        return True

    def _shows(self, job):
        if job.state not in self.states:
            return False
        f = self.text_filter
        if not f:
            return True
        uid = job.userid
        hay = [str(job.state).lower(), str(job.id)]
        if uid is not None:
            hay.append(str(uid))
            hay.append(listing.username(uid).lower())
        try:
            hay.append(JobID(job.id).f58plain.lower())
        except Exception:
            pass
        raw = job.annotations_json
        if raw is not None:
            hay.append(raw.decode("utf-8", "replace").lower())
        return any(f in h for h in hay)

    def _key(self, job):
        sort = self.sort
        jid = job.id
        if sort == "queue":
            st = job.state
            if st in PENDING:
                # decoded for the key only: not kept on the job (only shown
                # rows keep a dict)
                ann = decode_tree(job.annotations_json)
                sched = ann.get("sched") if isinstance(ann, dict) else None
                stage = _STAGE[st]
                if isinstance(sched, dict):
                    ahead = _num(sched.get("jobs_ahead"))
                    return (0, stage, ahead, _num(sched.get("t_estimate")), jid)
                return (0, stage, _INF, _INF, jid)
            return (1 if st in RUNNING else 2, 0, 0.0, 0.0, -jid)
        if sort == "id":
            return (jid,)
        if sort == "user":
            uid = job.userid
            return ("" if uid is None else listing.username(uid), jid)
        return (_STATE_INDEX.get(job.state, 99), jid)

    # -- reading -------------------------------------------------------------

    def row(self, jid):
        """The formatted row of a shown job (cached until it changes)."""
        text = self._text.get(jid)
        if text is None:
            with self.model.lock:
                job = self.model.jobs.get(jid)
                d = job.as_dict() if job is not None else {"id": jid}
            text = self._text[jid] = self.fmt.format(d)
        return text

    def job(self, jid):
        """(state, userid, annotations) of a job now, or None."""
        with self.model.lock:
            job = self.model.jobs.get(jid)
            if job is None:
                return None
            return job.state, job.userid, job.annotations

    def take_rows_changed(self):
        out, self.rows_changed = self.rows_changed, set()
        return out


# --- text for the terminal ---------------------------------------------------------


class Terminal:
    """What the terminal can show: its encoding, and whether colour is wanted."""

    def __init__(self, encoding, colour):
        self.encoding = encoding
        self.utf8 = encoding.lower().replace("-", "").replace("_", "") == "utf8"
        self.colour = colour

    def text(self, s):
        """`s` made showable: ASCII `f` ids and `?` where the terminal's
        encoding has no character."""
        if self.utf8 or s.isascii():
            return s
        s = s.replace(listing.ELLIPSIS, "~").replace("\u0192", "f")
        return s.encode(self.encoding, "replace").decode(self.encoding, "replace")


def clip(text, width):
    """The leading part of `text` that fits `width` terminal cells."""
    if width <= 0:
        return ""
    if text.isascii():
        return text[:width]
    out = []
    used = 0
    for ch in text:
        if unicodedata.combining(ch):
            w = 0
        elif unicodedata.east_asian_width(ch) in ("W", "F"):
            w = 2
        else:
            w = 1
        if used + w > width:
            break
        used += w
        out.append(ch)
    return "".join(out)


def fit_header(sources, right, width):
    """Line 1 of the screen: "flux-annot top  SOURCE  RIGHT" in `width`
    cells. `right` (seq, rate, clock) always stays; when the line is too
    long, the first of `sources` (alternatives, longest first) that fits is
    taken, then the title goes, and last the source keeps its end (the
    specific part of a path or URI) after an ellipsis."""
    for title in ("flux-annot top  ", ""):
        for src in sources:
            line = f"{title}{src}  {right}"
            if len(line) <= width:
                return line
    src = sources[-1]
    room = width - len(right) - 2
    if room >= 8:
        return f"{listing.ELLIPSIS}{src[len(src) - room + 1:]}  {right}"
    return f"flux-annot top  {sources[0]}  {right}"  # clipped by the screen


def detail_lines(jid, info):
    """The detail pane's lines for one job: who, state, whole annotations."""
    if info is None:
        return [f"{JobID(jid).f58}: gone"]
    state, userid, ann = info
    user = "?" if userid is None else f"{listing.username(userid)} ({userid})"
    lines = [f"{JobID(jid).f58}  {jid}  user {user}  {state}"]
    if ann is None:
        lines.append("(no annotations)")
        return lines
    try:
        text = json.dumps(ann, indent=2, ensure_ascii=False)
    except (RecursionError, ValueError):
        text = listing.compact_json(ann, limit=4096)
    lines.extend(listing.sanitize(line) for line in text.splitlines())
    return lines


# --- the screen ------------------------------------------------------------------


_HELP = "q quit  j/k move  Enter detail  / filter  s sort  p pause"


class TopScreen:
    """The curses side of `top` (module doc). `win` is the curses screen
    (anything with its calls: the bench passes a stand-in)."""

    def __init__(self, win, view, term, source):
        self.win = win
        self.view = view
        self.term = term
        # what the header names: one text, or alternatives longest first
        # (`_source`: the socket and the Flux instance, or the instance alone)
        self.source = (source,) if isinstance(source, str) else tuple(source)
        self.selected = None  # job id
        self.top = 0  # index of the first row shown
        self.detail = False
        self.paused = False
        self.prompt = None  # text being typed after `/`
        self.message = ""
        self._drawn = {}  # screen line -> (text, attr)
        self._colours = {}
        self.lines, self.cols = win.getmaxyx()

    # -- drawing --------------------------------------------------------------

    def setup_colours(self):
        if not self.term.colour or not curses.has_colors():
            return
        try:
            curses.start_color()
            curses.use_default_colors()
            for n, fg in ((1, curses.COLOR_YELLOW), (2, curses.COLOR_GREEN), (3, curses.COLOR_RED)):
                curses.init_pair(n, fg, -1)
                self._colours[n] = curses.color_pair(n)
        except curses.error:
            self._colours = {}

    def resize(self):
        self.lines, self.cols = self.win.getmaxyx()
        self._drawn.clear()
        self.win.erase()

    def put(self, y, text, attr=0):
        """Draw screen line y if it differs from what is there."""
        text = clip(self.term.text(text), self.cols - 1 if y == self.lines - 1 else self.cols)
        if self._drawn.get(y) == (text, attr):
            return
        self._drawn[y] = (text, attr)
        try:
            self.win.move(y, 0)
            self.win.clrtoeol()
            if text:
                self.win.addstr(y, 0, text, attr)
        except curses.error:
            pass  # the bottom-right cell, or a terminal resized under us

    def header(self):
        m = self.view.model
        status = m.status
        marker = {"live": "", "connecting": "[CONNECTING]", "resync": "[RESYNC]",
                  "disconnected": "[DISCONNECTED]"}.get(status, f"[{status.upper()}]")
        if self.paused:
            marker = (marker + " [PAUSED]").strip()
        clock = time.strftime("%H:%M:%S")
        right = f"seq {m.seq}  {m.events_per_second():.0f} ev/s  {clock}"
        line0 = fit_header(self.source, right, self.cols - (len(marker) + 1 if marker else 0))
        counts = self.view.counts
        parts = [f"{s} {counts[s]}" for s in listing.STATES if counts.get(s)]
        if not parts:
            parts = ["no jobs"]
        filt = f"  filter /{self.view.text_filter}" if self.view.text_filter else ""
        line1 = "  ".join(parts) + f"   shown {len(self.view.order)}  sort {self.view.sort}{filt}"
        return line0, marker, line1

    def draw(self):
        lines, cols = self.lines, self.cols
        if lines < 4 or cols < 20:
            self.put(0, "terminal too small")
            for y in range(1, lines):
                self.put(y, "")
            self.win.noutrefresh()
            return
        line0, marker, line1 = self.header()
        if marker:
            attr = (self._colours.get(3, 0) | curses.A_BOLD) if self.term.colour else curses.A_BOLD
            text = f"{marker} {line0}"
            self.put(0, text, attr)
        else:
            self.put(0, line0, curses.A_BOLD)
        self.put(1, line1)
        self.put(2, self.view.fmt.header(), curses.A_REVERSE)
        body_top = 3
        footer = lines - 1
        body_end = footer
        if lines >= 6:  # the estimate accuracy line above the footer (docs/accuracy.md)
            body_end = footer - 1
            with self.view.model.lock:
                acc = self.view.model.accuracy
            self.put(body_end, clip(summary_line(acc), cols), curses.A_DIM)
        if self.detail:
            body_end = body_top + max(3, (footer - body_top) // 2)
        height = body_end - body_top
        order = self.view.order
        self._fix_selection(height)
        for i in range(height):
            idx = self.top + i
            y = body_top + i
            if idx < len(order):
                jid = order[idx]
                attr = curses.A_REVERSE if jid == self.selected else 0
                self.put(y, self.view.row(jid), attr)
            else:
                self.put(y, "")
        if self.detail:
            self.put(body_end, "-" * cols, curses.A_DIM)
            info = self.view.job(self.selected) if self.selected is not None else None
            dl = detail_lines(self.selected, info) if self.selected is not None else ["(no job selected)"]
            for i, y in enumerate(range(body_end + 1, footer - 1 if lines >= 6 else footer)):
                self.put(y, dl[i] if i < len(dl) else "")
        if self.prompt is not None:
            self.put(footer, f"filter: {self.prompt}_", curses.A_BOLD)
        else:
            self.put(footer, self.message or _HELP, curses.A_DIM)
        self.win.noutrefresh()

    def _fix_selection(self, height):
        order = self.view.order
        if not order:
            self.selected = None
            self.top = 0
            return
        try:
            idx = order.index(self.selected) if self.selected is not None else 0
        except ValueError:  # gone from the view: keep the place
            idx = min(getattr(self, "_idx", 0), len(order) - 1)
        self.selected = order[idx]
        self._idx = idx
        if idx < self.top:
            self.top = idx
        elif idx >= self.top + height:
            self.top = idx - height + 1
        self.top = max(0, min(self.top, max(0, len(order) - height)))

    # -- keys ------------------------------------------------------------------

    def move(self, delta):
        order = self.view.order
        if not order:
            return
        try:
            idx = order.index(self.selected)
        except ValueError:
            idx = 0
        idx = max(0, min(len(order) - 1, idx + delta))
        self.selected = order[idx]

    def key(self, ch):
        """Handle one key; False to quit."""
        if self.prompt is not None:
            return self._prompt_key(ch)
        self.message = ""
        page = max(1, self.lines - 5)
        if ch in (ord("q"), ord("Q")):
            return False
        if ch in (curses.KEY_DOWN, ord("j")):
            self.move(1)
        elif ch in (curses.KEY_UP, ord("k")):
            self.move(-1)
        elif ch == curses.KEY_NPAGE:
            self.move(page)
        elif ch == curses.KEY_PPAGE:
            self.move(-page)
        elif ch == curses.KEY_HOME or ch == ord("g"):
            self.move(-len(self.view.order))
        elif ch == curses.KEY_END or ch == ord("G"):
            self.move(len(self.view.order))
        elif ch in (curses.KEY_ENTER, 10, 13):
            self.detail = not self.detail
        elif ch == ord("/"):
            self.prompt = self.view.text_filter
        elif ch == ord("s"):
            self.view.set_sort(SORTS[(SORTS.index(self.view.sort) + 1) % len(SORTS)])
            self.view.update()
        elif ch == ord("p"):
            self.paused = not self.paused
            if not self.paused:
                self.view.update()
        return True

    def _prompt_key(self, ch):
        if ch in (curses.KEY_ENTER, 10, 13):
            self.view.set_filter(self.prompt)
            self.prompt = None
            self.view.update()
        elif ch == 27:  # Esc
            self.prompt = None
        elif ch in (curses.KEY_BACKSPACE, 127, 8):
            self.prompt = self.prompt[:-1]
        elif isinstance(ch, str):  # a wide character from get_wch
            if ch.isprintable():
                self.prompt += ch
        elif 32 <= ch < 127:
            self.prompt += chr(ch)
        return True


# --- the command --------------------------------------------------------------------


def _get_key(win):
    """One key (int, or str for a non-ASCII character) or None."""
    try:
        ch = win.get_wch()
    except curses.error:
        return None
    if isinstance(ch, str):
        if len(ch) == 1 and ord(ch) < 128:
            return ord(ch)
        return ch
    return ch


def _loop(win, view, thread, term, source, refresh):
    try:
        curses.curs_set(0)
    except curses.error:
        pass
    win.keypad(True)
    win.timeout(100)
    screen = TopScreen(win, view, term, source)
    screen.setup_colours()
    next_look = 0.0
    dirty = True
    while True:
        ch = _get_key(win)
        if ch == curses.KEY_RESIZE:
            curses.update_lines_cols()
            screen.resize()
            dirty = True
        elif ch is not None:
            if not screen.key(ch):
                return None
            dirty = True
        now = time.monotonic()
        if now >= next_look:
            next_look = now + refresh
            if not screen.paused:
                view.update()
            dirty = True  # the header's clock, rate and status
        if thread.done.is_set():
            return thread.error
        if dirty:
            screen.draw()
            curses.doupdate()
            dirty = False


def _source(path, stats):
    """What the header names: the socket, and the Flux instance a mirror
    follows when its stats say which."""
    flux = stats.get("flux") if isinstance(stats, dict) else None
    uri = flux.get("uri") if isinstance(flux, dict) else None
    if isinstance(uri, str) and uri:
        # on a narrow screen the Flux instance is what tells mirrors apart
        return (f"{path} (Flux {uri})", f"Flux {uri}")
    return (path,)


def run_top(socket=None, fmt=None, states=None, all_users=False, give_up=60.0,
            refresh=REFRESH, flux_uri=None):
    """`flux-annotate top`; returns the exit status (0: q, 130: Ctrl-C,
    1: the service went away for good). The service is chosen as every
    client chooses (flux_annot.target: socket, then a Flux instance)."""
    import sys

    from flux_annot.wire.client import Client
    from flux_annot.errors import AnnotError
    from flux_annot.wire.target import resolve

    target = resolve(socket, flux_uri)
    try:  # a service that is not there at all: say so before taking the screen
        with Client(socket, timeout=10, flux_uri=flux_uri) as c:
            stats = c.stats()
        # through Flux: the instance as this node reaches it (the user's FLUX_URI)
        source = target.describe() if target.is_flux else _source(target.address, stats)
    except AnnotError as e:
        print(f"flux-annotate: top: {e}", file=sys.stderr)
        return 1
    if fmt is None:
        fmt = listing.JobFormat(TOP_FORMAT)
    model = LiveModel()
    userid = None if all_users else os.getuid()
    thread = LiveThread(model, socket, flux_uri=flux_uri, userid=userid, give_up=give_up,
                        accuracy=True).start()
    view = TopView(model, fmt, states)
    locale.setlocale(locale.LC_ALL, "")
    encoding = locale.nl_langinfo(locale.CODESET) or "ascii"
    term = Terminal(encoding, colour="NO_COLOR" not in os.environ)
    os.environ.setdefault("ESCDELAY", "25")
    # The terminal's size from the terminal: with LINES/COLUMNS in the
    # environment ncurses takes them and never follows a resize.
    os.environ.pop("LINES", None)
    os.environ.pop("COLUMNS", None)
    status = 0
    err = None
    try:
        err = curses.wrapper(_loop, view, thread, term, source, refresh)
    except KeyboardInterrupt:
        status = 130
    finally:
        thread.stop()
    if err is not None:
        print(f"flux-annotate: top: the service went away: {err}", file=sys.stderr)
        return 1
    return status
