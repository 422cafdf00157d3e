#!/usr/bin/env python3
"""Stand-in engine for the `nodeagent serve` tests, shaped like `vllm serve` with Ray: an HTTP
API (/health, /v1/models) in the main process, and worker processes in their own sessions
(like Ray workers), each with a child of its own (a grandchild of the engine). Faults on
request: crash after a delay (optionally only on the first run), hang (health stops answering),
a worker that escapes the CPU binding, a main process that ignores SIGTERM."""
import argparse
import http.server
import json
import os
import signal
import sys
import threading
import time

p = argparse.ArgumentParser()
p.add_argument("--port", type=int, required=True)
p.add_argument("--served-model-name", default="qwen2.5")
p.add_argument("--workers", type=int, default=2)
p.add_argument("--startup-delay", type=float, default=0.0)
p.add_argument("--crash-after", type=float)
p.add_argument("--crash-once-file", help="crash only when this file does not exist yet")
p.add_argument("--exit-code", type=int, default=3)
p.add_argument("--hang-after", type=float)
p.add_argument("--hang-once-file", help="hang only when this file does not exist yet")
p.add_argument("--escape-worker", action="store_true", help="one worker widens its CPU affinity")
p.add_argument("--orphan-workers", action="store_true", help="workers are re-parented at once")
a = p.parse_args()


def worker(i, escape):
    os.setsid()  # Ray workers run in their own session and process group.
    if escape:
        os.sched_setaffinity(0, range(os.cpu_count()))
    if os.fork() == 0:
        os.execvp("sleep", ["sleep", "100000"])
    os.execvp("sleep", ["sleep", "100000"])


for i in range(a.workers):
    if os.fork() == 0:
        if a.orphan_workers and os.fork() != 0:
            os._exit(0)
        worker(i, a.escape_worker and i == 0)
    if a.orphan_workers:
        os.wait()

time.sleep(a.startup_delay)


def once(path):
    if not path:
        return True
    if os.path.exists(path):
        return False
    open(path, "w").close()
    return True


hang_at = None
if a.hang_after is not None and once(a.hang_once_file):
    hang_at = time.time() + a.hang_after
if a.crash_after is not None and once(a.crash_once_file):
    threading.Timer(a.crash_after, lambda: os._exit(a.exit_code)).start()


class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        if hang_at is not None and time.time() >= hang_at:
            time.sleep(100000)
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
print(f"listening on http://127.0.0.1:{a.port}", flush=True)
srv.serve_forever()
