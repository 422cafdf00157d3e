# Helpers for the scenario scripts that run inside the VM (busybox sh). Sourced by each scenario.
# Every check prints one framed section that tests/vm.rs parses:
#   @@NA-BEGIN name@@ / stdout / @@NA-STDERR name@@ / stderr / @@NA-END name rc=N@@
# The scenario only collects facts; the Rust test judges them, so a failing check still lets
# the rest of the scenario run and report.

# section NAME CMD [ARG...]: run CMD, frame its stdout, stderr and exit status. A line
# `@@NA-TIME NAME START END@@` after the frame gives the guest's uptime (seconds) when CMD
# started and ended: run-vm.sh turns these into timings.log (where the scenario spends its time).
section() {
  _name=$1
  shift
  read -r _t0 _ </proc/uptime
  "$@" >/tmp/.sec.out 2>/tmp/.sec.err
  _rc=$?
  read -r _t1 _ </proc/uptime
  echo "@@NA-BEGIN $_name@@"
  awk 1 /tmp/.sec.out
  echo "@@NA-STDERR $_name@@"
  awk 1 /tmp/.sec.err
  echo "@@NA-END $_name rc=$_rc@@"
  echo "@@NA-TIME $_name $_t0 $_t1@@"
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
# Pure shell, no fork per process: forks are slow under emulation.
descendants() {
  _root=$1
  _all=
  for _s in /proc/[0-9]*/stat; do
    read -r _line 2>/dev/null <"$_s" || continue
    # "pid (comm) state ppid ...": comm may hold spaces and parens, so cut after the last ") ".
    _rest=${_line##*) }
    set -- $_rest
    _all="$_all ${_line%% *}:$2"
  done
  _want=" $_root "
  echo "$_root"
  _changed=1
  while [ $_changed = 1 ]; do
    _changed=0
    for _e in $_all; do
      case $_want in *" ${_e%%:*} "*) continue ;; esac
      case $_want in *" ${_e#*:} "*)
        _want="$_want${_e%%:*} "
        echo "${_e%%:*}"
        _changed=1
        ;;
      esac
    done
  done
}

# engine_leftovers: one `leftover PID CMDLINE` line per simulator process still alive.
engine_leftovers() {
  for _c in /proc/[0-9]*/cmdline; do
    _p=${_c#/proc/}
    _p=${_p%/cmdline}
    [ "$_p" = "$$" ] && continue
    _cmd=$(tr '\0' ' ' <"$_c" 2>/dev/null)
    case $_cmd in *" simulate"*) echo "leftover $_p $_cmd" ;; esac
  done
}

# poll SECS PID CMD [ARG...]: run CMD once a second until it succeeds (0), the process PID has
# ended (1; an empty PID is never checked) or SECS seconds passed (1). The agent's wait loops of
# every scenario (ready, workers up, memory counted) are this one loop with their own CMD.
poll() {
  _secs=$1 _pid=$2
  shift 2
  _i=0
  while [ $_i -lt "$_secs" ]; do
    "$@" && return 0
    [ -n "$_pid" ] && ! kill -0 "$_pid" 2>/dev/null && return 1
    sleep 1
    _i=$((_i + 1))
  done
  return 1
}

# is_ready STATE_DIR [STATUS_ARG...]: `nodeagent status` of that state dir says ready.
is_ready() {
  _d=$1
  shift
  nodeagent status --state-dir "$_d" "$@" --json 2>/dev/null | grep -q '"state": *"ready"'
}

# agent_start LOG SERVE_ARG...: `nodeagent serve SERVE_ARG...` in the background, its stdout in
# LOG.out and stderr in LOG.err; its pid in $agent.
agent_start() {
  _log=$1
  shift
  nodeagent serve "$@" >"$_log.out" 2>"$_log.err" &
  agent=$!
}

# agent_stop PID: SIGTERM to the agent, wait for it; its exit status in $agent_rc.
agent_stop() {
  kill -TERM "$1" 2>/dev/null
  wait "$1"
  agent_rc=$?
}
