"""The accuracy report (docs/accuracy.md) as text a person reads: `flux-annotate accuracy`, the demo.

`render(report)` turns the object of `AnnotationService.accuracy` into a
table: one row per estimate (first, last, each horizon) with the number of
jobs, the bias (mean error) and the median and 90th percentile of the
absolute error; then one row per queue (or user) for the last estimate;
with the per-job records, one row per job. `parse_since` reads `--since`.
"""

import datetime
import re
import time
from typing import Any

from flux_annot.ids import encode_f58

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: float | None = None) -> float:
    """`--since`: seconds since the epoch (1733560000), a duration ago (90s,
    30m, 2h, 7d) or an ISO 8601 date or date and time (local time unless it
    says otherwise). ValueError naming the text otherwise."""
    t = text.strip()
    m = _DURATION.match(t)
    if m:
        return (time.time() if now is None else now) - float(m.group(1)) * _UNIT[m.group(2)]
    try:
        v = float(t)
        if v == v and abs(v) != float("inf"):
            return v
    except ValueError:
        pass
    try:
        d = datetime.datetime.fromisoformat(t)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: give seconds since the epoch, an ISO 8601 date or "
            "date and time (2026-12-07T10:00), or a duration ago (90s, 30m, 2h, 7d)"
        ) from None
    return d.timestamp()


def duration(s: float | None) -> str:
    """Seconds, signed, short: "-4.0s", "+2m05s", "+1h02m", "-3d04h"."""
    if s is None:
        return "-"
    sign = "-" if s < 0 else "+"
    a = abs(s)
    if a < 60:
        return f"{sign}{a:.1f}s"
    if a < 3600:
        m, r = divmod(int(round(a)), 60)
        return f"{sign}{m}m{r:02d}s"
    if a < 86400:
        h, r = divmod(int(round(a)) // 60, 60)
        return f"{sign}{h}h{r:02d}m"
    d, r = divmod(int(round(a)) // 3600, 24)
    return f"{sign}{d}d{r:02d}h"


def _absdur(s: float | None) -> str:
    return "-" if s is None else duration(s)[1:]


def _row(label: str, st: dict[str, Any]) -> str:
    return (f"{label:<22} {st['count']:>6} {duration(st['bias']):>9} "
            f"{_absdur(st['median_abs']):>10} {_absdur(st['p90_abs']):>10}")


def render(report: dict[str, Any]) -> str:
    """The report as a table (see the module docstring)."""
    n, never = report["jobs_started"], report["jobs_never_started"]
    lines = [
        f"Estimate accuracy: {n} job{'s' if n != 1 else ''} started having had an estimate, "
        f"{never} left without starting.",
        "Error = start - estimate (+: started later than estimated, -: earlier).",
        "",
        f"{'ESTIMATE':<22} {'JOBS':>6} {'BIAS':>9} {'MEDIAN|E|':>10} {'P90|E|':>10}",
        _row("first", report["first"]),
        _row("last", report["last"]),
    ]
    for h, st in report["horizons"].items():
        lines.append(_row(f"in force {h}s before", st))
    for title, key in (("QUEUE", "by_queue"), ("USER", "by_user")):
        groups = report.get(key)
        if not groups or (key == "by_queue" and "by_user" in report):
            continue
        lines.append("")
        lines.append(f"{title:<14} {'STARTED':>7} {'NEVER':>6} {'LAST: BIAS':>11} "
                     f"{'MEDIAN|E|':>10} {'P90|E|':>10}")
        for name, g in groups.items():
            st = g["last"]
            lines.append(f"{name:<14} {g['jobs_started']:>7} {g['jobs_never_started']:>6} "
                         f"{duration(st['bias']):>11} {_absdur(st['median_abs']):>10} "
                         f"{_absdur(st['p90_abs']):>10}")
    jobs = report.get("jobs")
    if jobs is not None:
        lines.append("")
        lines.append(f"{'JOBID':>12} {'USER':>7} {'QUEUE':<10} {'EST':>4} {'FIRST ERR':>10} "
                     f"{'LAST ERR':>10} START")
        for j in jobs:
            start = j["start"]
            if start is None:
                first = last = "-"
                when = "never started"
            else:
                first = duration(start - j["first"]["t_estimate"])
                last = duration(start - j["last"]["t_estimate"])
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(start))
            lines.append(f"{encode_f58(j['id'], ascii=True):>12} {j['userid']:>7} "
                         f"{j['queue']:<10} {j['estimates']:>4} {first:>10} {last:>10} {when}")
    return "\n".join(lines)


def summary_line(summary: dict[str, Any] | None) -> str:
    """One line of stats' `accuracy` (or a report), under 80 columns: `top` shows it."""
    if not summary:
        return "accuracy: no estimates yet"
    st = summary.get("last") or {}
    head = (f"accuracy: {summary.get('jobs_started', 0)} started, "
            f"{summary.get('jobs_never_started', 0)} never")
    if not st.get("count"):
        return head
    return (f"{head}; last: bias {duration(st['bias'])}, |err| median "
            f"{_absdur(st['median_abs'])}, p90 {_absdur(st['p90_abs'])}")
