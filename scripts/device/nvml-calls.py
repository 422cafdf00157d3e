"""CPU cost of each NVML call the monitor makes, on GPU 0 of a real host (ctypes, no pynvml):
every call run REPS times, process CPU time (user + sys) per call in microseconds. Tells which
readings are worth reading less often (monitor::sampler's health period).

Usage: python3 nvml-calls.py [REPS]   (default 500). Prints one JSON line per call.
"""
import ctypes as C
import json
import sys
import time

reps = int(sys.argv[1]) if len(sys.argv) > 1 else 500
nv = C.CDLL("libnvidia-ml.so.1")
assert nv.nvmlInit_v2() == 0
dev = C.c_void_p()
assert nv.nvmlDeviceGetHandleByIndex_v2(0, C.byref(dev)) == 0
u = C.c_uint()
ull = C.c_ulonglong()
buf = C.create_string_buffer(256)
mem = (C.c_ulonglong * 3)()
util = (C.c_uint * 2)()
pci = C.create_string_buffer(256)
procs = (C.c_ubyte * (64 * 64))()
ecc = C.c_int()
ecc_pending = C.c_int()


def procs_call():
    n = C.c_uint(64)
    return nv.nvmlDeviceGetComputeRunningProcesses_v3(dev, C.byref(n), procs)


calls = {
    # every tick
    "nvmlDeviceGetCount_v2": lambda: nv.nvmlDeviceGetCount_v2(C.byref(u)),
    "nvmlDeviceGetHandleByIndex_v2": lambda: nv.nvmlDeviceGetHandleByIndex_v2(0, C.byref(C.c_void_p())),
    "nvmlDeviceGetMemoryInfo": lambda: nv.nvmlDeviceGetMemoryInfo(dev, mem),
    "nvmlDeviceGetUtilizationRates": lambda: nv.nvmlDeviceGetUtilizationRates(dev, util),
    "nvmlDeviceGetPciInfo_v3": lambda: nv.nvmlDeviceGetPciInfo_v3(dev, pci),
    "nvmlDeviceGetName": lambda: nv.nvmlDeviceGetName(dev, buf, 96),
    "nvmlDeviceGetTemperature": lambda: nv.nvmlDeviceGetTemperature(dev, 0, C.byref(u)),
    "nvmlDeviceGetPowerUsage": lambda: nv.nvmlDeviceGetPowerUsage(dev, C.byref(u)),
    "nvmlDeviceGetComputeRunningProcesses_v3": procs_call,
    # health
    "nvmlDeviceGetEccMode": lambda: nv.nvmlDeviceGetEccMode(dev, C.byref(ecc), C.byref(ecc_pending)),
    "nvmlDeviceGetTotalEccErrors": lambda: nv.nvmlDeviceGetTotalEccErrors(dev, 1, 0, C.byref(ull)),
    "nvmlDeviceGetClockInfo(SM)": lambda: nv.nvmlDeviceGetClockInfo(dev, 1, C.byref(u)),
    "nvmlDeviceGetMaxClockInfo(SM)": lambda: nv.nvmlDeviceGetMaxClockInfo(dev, 1, C.byref(u)),
    "nvmlDeviceGetCurrentClocksEventReasons": lambda: nv.nvmlDeviceGetCurrentClocksEventReasons(dev, C.byref(ull)),
    "nvmlDeviceGetPerformanceState": lambda: nv.nvmlDeviceGetPerformanceState(dev, C.byref(u)),
    "nvmlDeviceGetCurrPcieLinkGeneration": lambda: nv.nvmlDeviceGetCurrPcieLinkGeneration(dev, C.byref(u)),
    "nvmlDeviceGetMaxPcieLinkGeneration": lambda: nv.nvmlDeviceGetMaxPcieLinkGeneration(dev, C.byref(u)),
    "nvmlDeviceGetCurrPcieLinkWidth": lambda: nv.nvmlDeviceGetCurrPcieLinkWidth(dev, C.byref(u)),
    "nvmlDeviceGetMaxPcieLinkWidth": lambda: nv.nvmlDeviceGetMaxPcieLinkWidth(dev, C.byref(u)),
    "nvmlDeviceGetNvLinkState(0)": lambda: nv.nvmlDeviceGetNvLinkState(dev, 0, C.byref(u)),
}
empty = time.process_time()
for _ in range(reps):
    pass
base = (time.process_time() - empty) / reps
for name, f in calls.items():
    rc = f()
    t0, w0 = time.process_time(), time.perf_counter()
    for _ in range(reps):
        f()
    cpu = (time.process_time() - t0) / reps - base
    wall = (time.perf_counter() - w0) / reps
    print(json.dumps({"call": name, "rc": rc, "cpu_us": round(cpu * 1e6, 2), "wall_us": round(wall * 1e6, 2)}), flush=True)
nv.nvmlShutdown()
