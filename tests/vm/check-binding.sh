#!/bin/sh
# check-binding.sh PID: the binding the kernel gave PID and every process below it, one line
# each. docs/FAQ.md, "Checking a binding on your own host", shows this script; the VM tests run
# it on the engine nodeagent serve started, so the manual's recipe is tested. Needs only /proc
# (`children` lists a thread's child processes) and awk: it runs under busybox too.
tree() {
  echo "$1"
  for c in $(cat /proc/$1/task/*/children 2>/dev/null); do tree $c; done
}
for pid in $(tree $1); do
  [ -r /proc/$pid/numa_maps ] || continue   # gone meanwhile
  printf '%-7s %-16s cpus=%-8s mems=%-8s policy=%s\n' "$pid" "$(cat /proc/$pid/comm)" \
    "$(awk '/^Cpus_allowed_list/{print $2}' /proc/$pid/status)" \
    "$(awk '/^Mems_allowed_list/{print $2}' /proc/$pid/status)" \
    "$(awk '{print $2}' /proc/$pid/numa_maps | sort -u | tr '\n' ' ')"
done
