"""Runs commands side by side and reports the CPU time each used, its children included
(getrusage of the reaped child via os.wait4: the agent plus every nvidia-smi it ran and reaped).

Usage: python3 cpu-cost.py NAME1 'CMD1' NAME2 'CMD2' ...   (each CMD run with sh -c, env as given)
Prints one JSON line per command: name, wall_s, user_s, sys_s, cpu_s, pct_of_one_core, rc.
"""
import json
import os
import subprocess
import sys
import time

pairs = list(zip(sys.argv[1::2], sys.argv[2::2]))
procs = {}
start = time.monotonic()
for name, cmd in pairs:
    # exec: the shell is replaced, so the rusage is the command's own (and its children's).
    p = subprocess.Popen(["sh", "-c", "exec " + cmd])
    procs[p.pid] = (name, p)
left = dict(procs)
while left:
    pid, status, ru = os.wait4(-1, 0)
    if pid not in left:
        continue
    name, _ = left.pop(pid)
    wall = time.monotonic() - start
    cpu = ru.ru_utime + ru.ru_stime
    print(json.dumps({
        "name": name, "wall_s": round(wall, 2), "user_s": round(ru.ru_utime, 3),
        "sys_s": round(ru.ru_stime, 3), "cpu_s": round(cpu, 3),
        "pct_of_one_core": round(100 * cpu / wall, 4), "rc": os.waitstatus_to_exitcode(status),
    }), flush=True)
