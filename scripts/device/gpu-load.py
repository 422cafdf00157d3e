"""A GPU load for the device scripts: a matmul loop on one CUDA device.

Usage: python3 gpu-load.py DEVICE N SECONDS HOLD_MIB
  DEVICE    CUDA device index
  N         matrix size (N x N, float32): 8192 keeps an H100 at 100 %
  SECONDS   how long to run
  HOLD_MIB  extra memory to hold, so memory figures move too
"""
import sys
import time

import torch

dev, n, secs, hold_mib = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
torch.cuda.set_device(dev)
a = torch.randn(n, n, device="cuda")
b = torch.randn(n, n, device="cuda")
hold = torch.empty(hold_mib * 1024 * 1024 // 4, device="cuda")
end = time.time() + secs
while time.time() < end:
    c = a @ b
torch.cuda.synchronize()
