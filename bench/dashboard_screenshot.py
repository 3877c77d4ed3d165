"""The dashboard's picture for the README: bench/dashboard.png.

Starts a service on a socket, runs the scheduler of `flux-annotate demo`
(flux_annot.views.demo: FCFS over a few cores, RFC 27 responses with
t_estimate, reason_pending, jobs_ahead, resource_summary; memos; one DENY)
against it through the socket for part of its work, starts
`flux-annotate dashboard`, and takes a screenshot of the page in headless
Chromium (Debian's, offline).

Run: python bench/dashboard_screenshot.py [--out bench/dashboard.png]
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_dashboard import service_dashboard_browser  # noqa: E402


class SocketService:
    """The calls the demo makes on an AnnotationService, over the socket
    (the demo runs as the instance owner: credentials are the connection's)."""

    def __init__(self, client):
        self.c = client

    def submit(self, id, userid, t_submit=None):
        self.c.submit(id, userid, t_submit=t_submit)

    def memo(self, cred, id, memo, volatile=False):
        self.c.memo(id, memo, volatile=volatile)

    def state(self, id, state, note=None):
        self.c.state(id, state, note=note)

    def alloc_response(self, payload):
        return self.c.alloc_response(payload)

    def get(self, cred, id):
        return self.c.get(id)

    def list(self, cred, states=None, userid=None):
        return self.c.list(states=states, userid=userid)

    def stats(self):
        return self.c.stats()

    def flush(self):
        pass


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "dashboard.png"))
    ap.add_argument("--jobs", type=int, default=36)
    ap.add_argument("--cores", type=int, default=8)
    ap.add_argument("--cycles", type=int, default=14, help="scheduling cycles before the picture")
    args = ap.parse_args(argv)

    from flux_annot import Client
    from flux_annot.views.demo import Demo

    demo = Demo(args.jobs, args.cores, seed=5, out=sys.stdout)
    demo.sub.close()
    demo.svc.close()
    demo.sub = []
    with service_dashboard_browser(window=(1400, 1700)) as (path, srv, dash, url, driver):
        with Client(path) as c:
            demo.svc = SocketService(c)
            demo.t0 = demo.now = time.time()  # real time: the page's "now" is the scheduler's
            demo.submit_all()
            driver.get(url)
            dt = demo.makespan / 45
            for _ in range(args.cycles):
                demo.cycle(dt)
                time.sleep(0.15)
            seq = c.stats()["seq"]
        deadline = time.monotonic() + 30
        while driver.execute_script("return fluxDash.state.seq;") < seq:
            if time.monotonic() > deadline:
                raise RuntimeError("the page did not catch up")
            time.sleep(0.1)
        time.sleep(1.2)  # one more redraw of the clock
        driver.save_screenshot(args.out)
    print(f"dashboard_screenshot: {args.out} (seq {seq}, {args.jobs} jobs, {args.cores} cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
