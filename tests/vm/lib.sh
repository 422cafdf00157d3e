# Helpers for the scenario scripts that run inside the VM (busybox sh). Sourced by each scenario.
# Every check prints one framed section that tests/vm.rs parses:
#   @@NA-BEGIN name@@ / stdout / @@NA-STDERR name@@ / stderr / @@NA-END name rc=N@@
# The scenario only collects facts; the Rust test judges them, so a failing check still lets
# the rest of the scenario run and report.

# section NAME CMD [ARG...]: run CMD, frame its stdout, stderr and exit status.
section() {
  _name=$1
  shift
  "$@" >/tmp/.sec.out 2>/tmp/.sec.err
  _rc=$?
  echo "@@NA-BEGIN $_name@@"
  awk 1 /tmp/.sec.out
  echo "@@NA-STDERR $_name@@"
  awk 1 /tmp/.sec.err
  echo "@@NA-END $_name rc=$_rc@@"
}

# section_sh NAME 'SHELL TEXT': like section, for pipelines and redirections.
section_sh() {
  _n=$1
  shift
  section "$_n" sh -c "$1"
}

# section_tree NAME DIR: bring a directory out of the VM as base64 of a gzipped tar.
section_tree() {
  section "$1" sh -c "tar -C '$2' -cz . | base64"
}

# proc_binding PID: the facts that prove a process's binding, one `key: value` per line:
# its CPU affinity, its cpuset of memory nodes, and the memory policies of its mappings
# (numa_maps' second field: default, bind:N, prefer:N, interleave:N-M, ...).
proc_binding() {
  echo "pid: $1"
  grep -E '^(Name|PPid|Cpus_allowed_list|Mems_allowed_list):' "/proc/$1/status"
  echo "policies: $(awk '{print $2}' "/proc/$1/numa_maps" | sort -u | tr '\n' ' ')"
}

# descendants PID: PID and every process below it, one per line (busybox ps has no --ppid).
descendants() {
  echo "$1"
  for _s in /proc/[0-9]*/stat; do
    _p=${_s#/proc/}
    _p=${_p%/stat}
    # Field 4 of stat is the parent; the comm field (2) may hold spaces, so cut after ')'.
    _pp=$(sed 's/.*) //' "$_s" 2>/dev/null | awk '{print $2}')
    [ "$_pp" = "$1" ] && descendants "$_p"
  done
}
