#!/usr/bin/env python3
"""Stand-in engine for tests/cgroup.rs: testdata/serve/fake_engine.py (an HTTP API in the main
process, workers in their own sessions like Ray's, each with a child) plus the ways a process can
leave the engine's tree that a /proc walk cannot follow:

--helper setpgid|setsid   a helper double-forks (its parent exits at once, so it re-parents to
                          the agent, a child subreaper) and calls setpgid(0, 0) (it stays in the
                          agent's session, in a group of its own) or setsid(); it then runs
                          `sleep 100001`.
--workers-after S         the workers are forked S seconds after the start, not at once.
--crash-after S           the main process exits with --exit-code after S seconds.
--startup-delay S         /health answers only after S seconds."""
import argparse
import http.server
import json
import os
import signal
import threading
import time

p = argparse.ArgumentParser()
p.add_argument("--port", type=int, required=True)
p.add_argument("--served-model-name", default="qwen2.5")
p.add_argument("--workers", type=int, default=2)
p.add_argument("--workers-after", type=float, default=0.0)
p.add_argument("--startup-delay", type=float, default=0.0)
p.add_argument("--crash-after", type=float)
p.add_argument("--exit-code", type=int, default=3)
p.add_argument("--helper", choices=["none", "setpgid", "setsid"], default="none")
a = p.parse_args()


def worker():
    os.setsid()  # Ray workers run in their own session and process group.
    if os.fork() == 0:
        os.execvp("sleep", ["sleep", "100000"])
    os.execvp("sleep", ["sleep", "100000"])


def helper(how):
    if os.fork() == 0:
        if os.fork() != 0:
            os._exit(0)  # the middle process: its child is orphaned at once
        if how == "setpgid":
            os.setpgid(0, 0)
        else:
            os.setsid()
        os.execvp("sleep", ["sleep", "100001"])
    os.wait()


if a.crash_after is not None:
    threading.Timer(a.crash_after, lambda: os._exit(a.exit_code)).start()
if a.helper != "none":
    helper(a.helper)
time.sleep(a.workers_after)
for i in range(a.workers):
    if os.fork() == 0:
        worker()
time.sleep(a.startup_delay)


class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path in ("/health", "/ping"):
            body = b""
        elif self.path == "/v1/models":
            body = json.dumps({"object": "list", "data": [{"id": a.served_model_name, "object": "model"}]}).encode()
        else:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


srv = http.server.ThreadingHTTPServer(("127.0.0.1", a.port), H)
srv.daemon_threads = True
signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
srv.serve_forever()
