# Serve helpers for the VM scenarios (sourced after lib.sh). Writes a serve config whose binding
# is the plan's for the device on the memoryless node 2, starts `nodeagent serve`, waits for it
# to be ready and reports every engine process's binding, as the kernel shows it.

# serve_config FILE STATE_DIR CPUS MEM_NODES: a config for the simulator behind the wrapper.
serve_config() {
  cat >"$1" <<CFG
host = "local"
model = "sim"
state_dir = "$2"

[engine]
argv = ["/bin/sh", "/engine-wrapper.sh", "{self}", "{port}", "{served_model_name}", "$2/engine-started"]
port = 8000

[binding]
auto = false
cpus = "$3"
mem_policy = "bind"
mem_nodes = [$4]

[supervise]
ready_timeout = "240s"
binding_check_interval = "1s"
stop_grace = "10s"
# A refused start must fail at once, not after a crash loop of backoffs.
restart_budget = 0
CFG
}

# serve_run NAME MODE CONFIG STATE_DIR: start serve in MODE, wait until ready, then print
# sections NAME-status (status --json), NAME-tree (binding of the agent's every descendant)
# and NAME-stop (how serve ended after SIGTERM).
serve_run() {
  _sn=$1 _mode=$2 _cfg=$3 _dir=$4
  mkdir -p "$_dir"
  nodeagent serve --config "$_cfg" --mode "$_mode" >"$_dir/serve.out" 2>"$_dir/serve.err" &
  _agent=$!
  _i=0
  _state=
  while [ $_i -lt 240 ]; do
    _state=$(nodeagent status --state-dir "$_dir" --json 2>/dev/null | grep -o '"state": *"[a-z]*"' | head -1)
    case $_state in *ready*) break ;; esac
    kill -0 $_agent 2>/dev/null || break
    sleep 1
    _i=$((_i + 1))
  done
  # One more binding check interval, so the agent's own check covers every worker.
  sleep 2
  section "$_sn-status" nodeagent status --state-dir "$_dir" --json
  section_sh "$_sn-tree" ". /lib.sh; for p in \$(descendants $_agent); do [ \$p = $_agent ] || { proc_binding \$p; echo; }; done"
  kill -TERM $_agent 2>/dev/null
  wait $_agent
  _rc=$?
  sleep 1
  section_sh "$_sn-stop" "echo serve-exit=$_rc; . /lib.sh; engine_leftovers; cat $_dir/serve.err >&2"
}

# serve_refused NAME MODE CONFIG STATE_DIR: serve must refuse to start; prints NAME-refused with
# serve's exit status and stderr, and whether the engine was ever started.
serve_refused() {
  mkdir -p "$4"
  section_sh "$1-refused" "timeout 120 nodeagent serve --config $3 --mode $2; rc=\$?
    echo engine-started=\$([ -e $4/engine-started ] && echo yes || echo no); exit \$rc"
}
