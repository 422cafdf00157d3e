"""A tiny engine for the device checks: a real CUDA process that reports what it sees of the
GPUs (the visibility variables, torch.cuda.device_count(), each device's PCI bus id) on stdout
and serves /health and /v1/models so that `nodeagent serve` takes it for ready.

Usage: python3 tiny-engine.py --port PORT [--served-model-name NAME]
"""
import http.server
import json
import os
import sys

import torch

args = sys.argv[1:]
port = int(args[args.index("--port") + 1])
name = args[args.index("--served-model-name") + 1] if "--served-model-name" in args else "tiny"

seen = {
    "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
    "CUDA_DEVICE_ORDER": os.environ.get("CUDA_DEVICE_ORDER"),
    "device_count": torch.cuda.device_count(),
    "devices": [],
}
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    bus = getattr(p, "pci_bus_id", None)
    dom = getattr(p, "pci_domain_id", None)
    dev = getattr(p, "pci_device_id", None)
    seen["devices"].append(
        {"index": i, "name": p.name, "pci": f"{dom:04x}:{bus:02x}:{dev:02x}.0" if bus is not None else None}
    )
# A real CUDA context, so the GPU lists this process.
x = torch.ones(1024, 1024, device="cuda")
torch.cuda.synchronize()
print("tiny-engine sees " + json.dumps(seen), flush=True)


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/health":
            body = b""
        elif self.path == "/v1/models":
            body = json.dumps({"object": "list", "data": [{"id": name, "object": "model"}]}).encode()
        elif self.path == "/seen":
            body = json.dumps(seen).encode()
        else:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
