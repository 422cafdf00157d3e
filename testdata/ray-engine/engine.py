#!/usr/bin/env python3
"""Test engine for `nodeagent serve` with the real Ray (tests/ray.rs), doing on one node what
vLLM's Ray executor does: the driver starts a local Ray cluster with `ray.init()` (or joins the
one `ray start --head` started, `--address`), places one actor per "GPU" (`--gpus`, else the
number of ids in CUDA_VISIBLE_DEVICES), each holding memory (`--mem-mb`, touched, so it is
resident like model weights) and computing its share of every request's tokens, and answers the
OpenAI endpoints from the driver with the standard library's http.server: /health, /v1/models,
/metrics (vllm:num_requests_running/waiting, prompt and generation token counters) and
/v1/chat/completions (streamed or not).

Worker death, as vLLM's Ray executor sees it: a request or the health check that meets a dead
actor (RayActorError) makes /health answer 500 ("At least one Worker is dead") and the driver
exit with code 1, as vLLM's engine does when a Ray worker dies. The actors' pids are written to
`--pids-file` (one `rank pid` line each) so a test can kill one.
"""
import argparse
import http.server
import json
import os
import signal
import sys
import threading
import time

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
import ray  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--port", type=int, required=True)
p.add_argument("--served-model-name", default="ray-test")
p.add_argument("--gpus", type=int, help="actors to start (default: ids in CUDA_VISIBLE_DEVICES, else 2)")
p.add_argument("--address", help="join this Ray cluster (ray start --head) instead of starting one")
p.add_argument("--temp-dir", help="Ray's temp dir (its session_* dirs, sockets, logs)")
p.add_argument("--dashboard-port", type=int, default=0, help="0: no dashboard")
p.add_argument("--num-cpus", type=int, default=1)
p.add_argument("--mem-mb", type=int, default=16, help="memory each actor holds")
p.add_argument("--token-delay", type=float, default=0.005, help="seconds per streamed token")
p.add_argument("--pids-file", help="write `rank pid` of each actor here once ready")
a = p.parse_args()

gpus = a.gpus
if gpus is None:
    visible = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    gpus = len(visible) or 2

log = lambda *m: print("engine:", *m, flush=True)  # noqa: E731

if a.address or os.environ.get("RAY_ADDRESS"):
    ray.init(address=a.address or os.environ["RAY_ADDRESS"], log_to_driver=False)
else:
    ray.init(
        address="local",
        num_cpus=a.num_cpus,
        object_store_memory=80 * 1024 * 1024,
        include_dashboard=a.dashboard_port > 0,
        dashboard_port=a.dashboard_port or None,
        _temp_dir=a.temp_dir,
        log_to_driver=False,
    )
log("ray", ray.__version__, "up:", ray.get_runtime_context().gcs_address)


@ray.remote(num_cpus=0)
class RayWorkerWrapper:
    """One per GPU: holds `mem_mb` of memory and computes its share of the tokens."""

    def __init__(self, rank, mem_mb):
        self.rank = rank
        self.weights = bytearray(mem_mb * 1024 * 1024)
        for i in range(0, len(self.weights), 4096):
            self.weights[i] = 1

    def pid(self):
        return os.getpid()

    def check_health(self):
        return True

    def generate(self, n, world):
        # This rank's share of n tokens: positions rank, rank+world, ...
        return [f"t{i}" for i in range(self.rank, n, world)]


workers = [RayWorkerWrapper.remote(r, a.mem_mb) for r in range(gpus)]
pids = ray.get([w.pid.remote() for w in workers])
log("workers", pids)
if a.pids_file:
    tmp = a.pids_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("".join(f"{r} {pid}\n" for r, pid in enumerate(pids)))
    os.replace(tmp, a.pids_file)

lock = threading.Lock()
stats = {"running": 0, "waiting": 0, "prompt": 0, "generation": 0}
dead = threading.Event()


def worker_died(e):
    log("At least one Worker is dead:", type(e).__name__)
    dead.set()
    # vLLM: the engine loop dies on the worker error and the API server shuts down.
    threading.Timer(0.5, lambda: os._exit(1)).start()


def run_on_workers(method, *args, timeout=30):
    try:
        return ray.get([getattr(w, method).remote(*args) for w in workers], timeout=timeout)
    except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as e:
        worker_died(e)
        raise


def health_loop():
    # vLLM's Ray executor finds a dead actor on its next call; poll like a busy engine does.
    while not dead.is_set():
        try:
            run_on_workers("check_health", timeout=10)
        except Exception:
            return
        time.sleep(0.5)


threading.Thread(target=health_loop, daemon=True).start()


def generate(n):
    tokens = [None] * n
    shares = run_on_workers("generate", n, gpus)
    for rank, share in enumerate(shares):
        tokens[rank::gpus] = share
    return tokens


class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send(self, code, body, ctype="application/json"):
        body = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path in ("/health", "/ping"):
            if dead.is_set():
                return self.send(500, {"error": "At least one Worker is dead"})
            return self.send(200, b"", "text/plain")
        if self.path == "/v1/models":
            return self.send(200, {"object": "list", "data": [{"id": a.served_model_name, "object": "model", "owned_by": "ray-engine"}]})
        if self.path == "/metrics":
            m = a.served_model_name
            with lock:
                s = dict(stats)
            text = "".join(
                f'# TYPE vllm:{k} {t}\nvllm:{k}{{model_name="{m}"}} {v}\n'
                for k, t, v in [
                    ("num_requests_running", "gauge", s["running"]),
                    ("num_requests_waiting", "gauge", s["waiting"]),
                    ("prompt_tokens_total", "counter", s["prompt"]),
                    ("generation_tokens_total", "counter", s["generation"]),
                ]
            )
            return self.send(200, text.encode(), "text/plain; version=0.0.4")
        self.send(404, {"error": "not found"})

    def do_POST(self):
        if self.path != "/v1/chat/completions":
            return self.send(404, {"error": "not found"})
        try:
            req = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
            n = int(req.get("max_tokens") or 16)
            prompt = sum(len(str(m.get("content", "")).split()) for m in req["messages"])
        except (ValueError, KeyError, TypeError) as e:
            return self.send(400, {"error": {"message": f"bad request: {e}", "type": "BadRequestError"}})
        with lock:
            stats["running"] += 1
            stats["prompt"] += prompt
        try:
            try:
                tokens = generate(n)
            except Exception as e:
                return self.send(500, {"error": {"message": f"engine dead: {type(e).__name__}", "type": "EngineDeadError"}})
            cid = f"chatcmpl-{time.time_ns()}"
            usage = {"prompt_tokens": prompt, "completion_tokens": n, "total_tokens": prompt + n}
            if not req.get("stream"):
                with lock:
                    stats["generation"] += n
                msg = {"role": "assistant", "content": " ".join(tokens)}
                return self.send(200, {"id": cid, "object": "chat.completion", "model": a.served_model_name,
                                       "choices": [{"index": 0, "message": msg, "finish_reason": "length"}], "usage": usage})
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("connection", "close")
            self.end_headers()
            self.close_connection = True

            def chunk(delta, finish=None, **extra):
                body = {"id": cid, "object": "chat.completion.chunk", "model": a.served_model_name,
                        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
                self.wfile.write(f"data: {json.dumps(body)}\n\n".encode())
                self.wfile.flush()

            chunk({"role": "assistant"})
            for i, t in enumerate(tokens):
                time.sleep(a.token_delay)
                with lock:
                    stats["generation"] += 1
                chunk({"content": ("" if i == 0 else " ") + t}, "length" if i == n - 1 else None)
            if (req.get("stream_options") or {}).get("include_usage"):
                body = {"id": cid, "object": "chat.completion.chunk", "model": a.served_model_name, "choices": [], "usage": usage}
                self.wfile.write(f"data: {json.dumps(body)}\n\n".encode())
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        finally:
            with lock:
                stats["running"] -= 1


def stop(*_):
    # vLLM on SIGTERM: stop serving, tear the executor down (ray.shutdown), exit.
    log("SIGTERM: shutting Ray down")
    threading.Timer(10, lambda: os._exit(0)).start()
    try:
        ray.shutdown()
    finally:
        os._exit(0)


signal.signal(signal.SIGTERM, stop)
srv = http.server.ThreadingHTTPServer(("127.0.0.1", a.port), H)
srv.daemon_threads = True
log(f"listening on http://127.0.0.1:{a.port}")
srv.serve_forever()
