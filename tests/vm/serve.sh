# Serve helpers for the VM scenarios (sourced after lib.sh). Writes a serve config whose binding
# is the plan's for the device on the memoryless node 2, starts `nodeagent serve`, waits for it
# to be ready and reports every engine process's binding, as the kernel shows it.

# serve_config FILE STATE_DIR CPUS MEM_NODES [ON_ESCAPE]: a config for the simulator behind the
# wrapper.
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
on_escape = "${5:-fail}"

[supervise]
ready_timeout = "240s"
binding_check_interval = "1s"
stop_grace = "10s"
# A refused start must fail at once, not after a crash loop of backoffs.
restart_budget = 0
CFG
}

# serve_config_auto FILE STATE_DIR INSTANCE [ON_ESCAPE]: the same engine, with the binding the
# planner gives instance INSTANCE (0-based) at one GPU per instance (`[binding] auto = true`).
serve_config_auto() {
  cat >"$1" <<CFG
host = "local"
model = "sim"
state_dir = "$2"

[engine]
argv = ["/bin/sh", "/engine-wrapper.sh", "{self}", "{port}", "{served_model_name}", "$2/engine-started"]
port = 8000

[launch]
tp = 1
instance = $3

[binding]
auto = true
on_escape = "${4:-fail}"

[supervise]
ready_timeout = "240s"
binding_check_interval = "1s"
stop_grace = "10s"
restart_budget = 0
CFG
}

# serve_run NAME MODE CONFIG STATE_DIR [SERVE_ARG...]: start serve in MODE, wait until ready, then print
# sections NAME-status (status --json), NAME-tree (binding of the agent's every descendant)
# and NAME-stop (how serve ended after SIGTERM).
serve_run() {
  _sn=$1 _mode=$2 _cfg=$3 _dir=$4
  shift 4
  mkdir -p "$_dir"
  agent_start "$_dir/serve" --config "$_cfg" --mode "$_mode" "$@"
  _agent=$agent
  poll 240 $_agent is_ready "$_dir"
  # One more binding check interval, so the agent's own check covers every worker.
  sleep 2
  section "$_sn-status" nodeagent status --state-dir "$_dir" --json
  # The engine's main process is the agent's child (status' main_pid can be null after a warned
  # escape, so it is not used here).
  _main=$(echo $(cat /proc/$_agent/task/*/children))
  section "$_sn-check-binding" sh /check-binding.sh "$_main"
  section_sh "$_sn-tree" ". /lib.sh; for p in \$(descendants $_agent); do [ \$p = $_agent ] || { proc_binding \$p; echo; }; done"
  agent_stop $_agent
  sleep 1
  section_sh "$_sn-stop" "echo serve-exit=$agent_rc; . /lib.sh; engine_leftovers; cat $_dir/serve.err >&2"
}

# serve_refused NAME MODE CONFIG STATE_DIR: serve must refuse to start; prints NAME-refused with
# serve's exit status and stderr, and whether the engine was ever started.
serve_refused() {
  mkdir -p "$4"
  section_sh "$1-refused" "timeout 120 nodeagent serve --config $3 --mode $2; rc=\$?
    echo engine-started=\$([ -e $4/engine-started ] && echo yes || echo no); exit \$rc"
}
