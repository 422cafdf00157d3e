//! `ProcessRuntime`: the engine as a local process tree (bare with the binding applied natively
//! in the child, or under `numactl`). The engine gets its own process group and, where a cgroup
//! is writable, a cgroup of its own (`super::cgroup`), joined by the child before exec: every
//! descendant is then in it whatever it does with sessions, process groups or double forks, a
//! stop kills the cgroup, and a restarted agent finds and kills what a SIGKILLed one left by
//! the cgroup's path. Without a writable cgroup (the `proc-walk` containment), descendants are
//! found by walking `/proc/*/stat` parent links, because Ray workers leave the group and even
//! the session. Either way every process ever seen is remembered by (pid, start time) and
//! written to a pid file in the state dir (`super::statedir`: never through a symlink), and every
//! engine carries the state dir's `NODEAGENT_ENGINE` marker, so a later agent run can find and
//! kill what an agent killed with SIGKILL left behind, without ever killing a process that merely
//! reused a pid or that a forged pid file names (`super::pidfile`: a line is a hint, never an
//! order).
//!
//! Not here: deciding when to restart (`crate::supervise::supervisor`), containers
//! (`crate::supervise::docker`), the binding applied between fork and exec
//! (`crate::supervise::native`), the cgroup files (`crate::supervise::cgroup`).

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::future::BoxFuture;
use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;
use tokio::time::Instant;

use crate::launch::spec::LaunchSpec;
use crate::supervise::cgroup::{cgroup_name, CgroupFs, EngineCgroup, Usage};
use crate::supervise::engine::{
    deadline_after, EngineExit, EngineRuntime, PortHolder, RuntimeError,
};
use crate::supervise::native::NativeBinding;
use crate::supervise::pidfile::{self, Identity, Leftovers, MARKER_VAR, PID_FILE};
use crate::supervise::procs::{ProcFs, Stat};
use crate::supervise::statedir::StateDir;

/// Variables of the agent's own service that the engine must not inherit: a child that found
/// `NOTIFY_SOCKET` could tell systemd it is ready.
const AGENT_ONLY_ENV: &[&str] = &["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS"];

/// `NODEAGENT_CONTAINMENT=proc-walk` in the agent's environment: no cgroup, the `/proc` walk
/// alone (to compare, or where creating cgroups is not wanted).
pub const CONTAINMENT_ENV: &str = "NODEAGENT_CONTAINMENT";

pub struct ProcessRuntime {
    spec: LaunchSpec,
    state_dir: PathBuf,
    /// The state dir, opened and checked at the first use.
    dir: Option<StateDir>,
    proc: ProcFs,
    /// Treat the agent's own children as engine processes: orphans re-parented to the agent
    /// when it is a child subreaper (the `serve` command sets that; in-process tests do not).
    adopt_children: bool,
    /// Send the engine's stdout to the agent's stderr (`verify --compare`, `demo`: their
    /// stdout is the report).
    stdout_to_stderr: bool,
    /// Where the engine's stdout and stderr go instead of the agent's (appended).
    log: Option<PathBuf>,
    child: Option<tokio::process::Child>,
    main_pid: Option<i32>,
    /// Every engine process seen since start: pid -> start time.
    known: BTreeMap<i32, u64>,
    exit: Option<EngineExit>,
    /// Where cgroups are, and the name of the engine's (from the instance and the state dir).
    cgroup_fs: CgroupFs,
    cgroup_name: String,
    /// The engine's cgroup while it runs; `None`: the `/proc` walk alone tracks it.
    cgroup: Option<EngineCgroup>,
    /// Try cgroups at all (`false`: the `/proc` walk only).
    use_cgroup: bool,
    /// Leftovers were just killed: the next preflight gives their port a moment to be released
    /// (a listening socket inherited by a process that dies last) before calling it busy.
    removed_leftovers: bool,
}

/// How long a preflight right after a leftover cleanup waits for the engine's port to be
/// released before it reports the port busy.
pub const PORT_RELEASE_WAIT: Duration = Duration::from_secs(10);

impl ProcessRuntime {
    pub fn new(spec: LaunchSpec, state_dir: PathBuf) -> Self {
        Self {
            spec,
            dir: None,
            proc: ProcFs::default(),
            adopt_children: false,
            stdout_to_stderr: false,
            log: None,
            child: None,
            main_pid: None,
            known: BTreeMap::new(),
            exit: None,
            cgroup_fs: CgroupFs::default(),
            cgroup_name: cgroup_name("0", &state_dir),
            cgroup: None,
            use_cgroup: std::env::var_os(CONTAINMENT_ENV).is_none_or(|v| v != "proc-walk"),
            removed_leftovers: false,
            state_dir,
        }
    }

    /// The instance this agent serves: names the engine's cgroup with the state dir.
    pub fn instance(mut self, instance: &str) -> Self {
        self.cgroup_name = cgroup_name(instance, &self.state_dir);
        self
    }

    /// Puts the engine in a cgroup where one is writable (the default), or tracks it by the
    /// `/proc` walk alone (`false`).
    pub fn use_cgroup(mut self, yes: bool) -> Self {
        self.use_cgroup = yes;
        self
    }

    /// How the engine's processes are tracked: `cgroup-v2 PATH`, `cgroup-v1 PATH`, `proc-walk`.
    pub fn containment(&self) -> String {
        self.cgroup.as_ref().map_or_else(|| "proc-walk".to_string(), EngineCgroup::describe)
    }

    /// Sends the engine's stdout to the agent's stderr.
    pub fn stdout_to_stderr(mut self, yes: bool) -> Self {
        self.stdout_to_stderr = yes;
        self
    }

    /// Appends the engine's stdout and stderr to `path` (created if missing) instead of
    /// sharing the agent's: a report on the terminal is not interleaved with engine logs.
    pub fn log_to(mut self, path: Option<PathBuf>) -> Self {
        self.log = path;
        self
    }

    /// Also count the agent's own children as engine processes (use with
    /// `prctl(PR_SET_CHILD_SUBREAPER)`, so orphaned workers re-parent to the agent).
    pub fn adopt_children(mut self, yes: bool) -> Self {
        self.adopt_children = yes;
        self
    }

    /// The state dir, opened and checked (`StateDir::open`) on first use.
    fn dir(&mut self) -> Result<&StateDir, RuntimeError> {
        if self.dir.is_none() {
            self.dir = Some(StateDir::open(&self.state_dir)?);
        }
        Ok(self.dir.as_ref().expect("opened above"))
    }

    fn write_pid_file(&self) {
        let Some(dir) = &self.dir else { return };
        if let Err(e) = dir.write_atomic(PID_FILE, pidfile::render(&self.known).as_bytes()) {
            tracing::warn!("cannot write the pid file: {e}");
        }
    }

    /// Scans `/proc`: the engine's tree now, remembered processes still alive, and (with
    /// `adopt_children`) orphans re-parented to the agent. Reaps adopted zombies.
    fn scan(&mut self) -> Vec<i32> {
        let all = self.proc.all();
        let me = std::process::id() as i32;
        let my_session = nix::unistd::getsid(None).map_or(-1, |p| p.as_raw());
        let mut roots: BTreeSet<i32> = self.main_pid.into_iter().collect();
        // Everything in the engine's cgroup is the engine's, wherever it re-parented to.
        roots.extend(self.cgroup.as_ref().map(EngineCgroup::pids).unwrap_or_default());
        for s in &all {
            let known = self.known.get(&s.pid).is_some_and(|t| *t == s.start_time);
            if known || (self.adopt_children && adoptable(s, me, my_session, self.main_pid)) {
                roots.insert(s.pid);
            }
        }
        let tree = ProcFs::tree(&all, &roots);
        let mut live = Vec::new();
        let mut changed = false;
        for s in all.iter().filter(|s| tree.contains(&s.pid)) {
            if s.state == 'Z' {
                // Zombies re-parented to the agent are ours to reap; the main child is reaped
                // by tokio's `wait`, never here (that would steal its exit status).
                if s.ppid == me && Some(s.pid) != self.main_pid {
                    let _ = waitpid(Pid::from_raw(s.pid), Some(WaitPidFlag::WNOHANG));
                }
                continue;
            }
            if self.known.insert(s.pid, s.start_time) != Some(s.start_time) {
                changed = true;
            }
            live.push(s.pid);
        }
        if changed {
            self.write_pid_file();
        }
        live
    }

    fn alive_known(&self) -> Vec<i32> {
        self.known.iter().filter(|(p, t)| self.proc.alive_as(**p, **t)).map(|(p, _)| *p).collect()
    }

    /// Signals the main process group, every process in the engine's cgroup and every known
    /// process.
    fn signal_all(&mut self, sig: Signal) {
        if let Some(pid) = self.main_pid {
            if self.exit.is_none() {
                let _ = killpg(Pid::from_raw(pid), sig);
            }
        }
        if let Some(cg) = &self.cgroup {
            cg.signal(sig);
        }
        self.scan();
        for pid in self.alive_known() {
            let _ = kill(Pid::from_raw(pid), sig);
        }
    }

    /// Engine processes still alive: remembered ones and whatever is in the cgroup.
    fn left(&self) -> Vec<i32> {
        let mut left = self.alive_known();
        left.extend(self.cgroup.as_ref().map(EngineCgroup::pids).unwrap_or_default());
        left.sort_unstable();
        left.dedup();
        left
    }

    /// Kills the engine's cgroup (see `EngineCgroup::kill`) and removes it once empty.
    async fn kill_cgroup(&mut self) {
        let Some(cg) = self.cgroup.clone() else { return };
        let me = std::process::id() as i32;
        let proc = self.proc.clone();
        let main = self.main_pid;
        let reap = || reap_orphans(&proc, me, main);
        match cg.kill(Duration::from_secs(10), reap).await {
            Ok(pids) if !pids.is_empty() => {
                tracing::warn!(cgroup = %cg.path().display(), method = cg.kill_method(), ?pids, "killed the engine's cgroup")
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "killing the engine's cgroup"),
        }
    }

    /// Removes the engine's cgroup once nothing is in it.
    fn remove_cgroup(&mut self) {
        if let Some(cg) = self.cgroup.take() {
            if let Err(e) = cg.remove() {
                tracing::warn!(error = %e, "cannot remove the engine's cgroup");
                self.cgroup = Some(cg);
            }
        }
    }

    fn reap_main(&mut self) {
        if let Some(child) = &mut self.child {
            if let Ok(Some(status)) = child.try_wait() {
                self.exit = Some(exit_of(status));
            }
        }
    }

    async fn stop_tree(&mut self, grace: Duration) {
        self.signal_all(Signal::SIGTERM);
        let deadline = deadline_after(Instant::now(), grace);
        let mut killed = false;
        loop {
            self.reap_main();
            self.scan();
            let left = self.left();
            if left.is_empty() {
                break;
            }
            if !killed && Instant::now() >= deadline {
                tracing::warn!(pids = ?left, "engine did not stop within the grace period: SIGKILL");
                self.kill_cgroup().await;
                self.signal_all(Signal::SIGKILL);
                killed = true;
            } else if killed && Instant::now() >= deadline_after(deadline, Duration::from_secs(10))
            {
                tracing::error!(pids = ?left, "engine processes survive SIGKILL");
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if let Some(mut child) = self.child.take() {
            if self.exit.is_none() {
                if let Ok(status) = child.wait().await {
                    self.exit = Some(exit_of(status));
                }
            }
        }
        self.scan();
        self.remove_cgroup();
        if let Some(dir) = &self.dir {
            let _ = dir.remove(PID_FILE);
        }
    }

    fn preflight_sync(&self) -> Result<(), RuntimeError> {
        let program = &self.spec.argv[0];
        if which(program).is_none() {
            return Err(RuntimeError::ProgramNotFound { program: program.clone() });
        }
        if let Some(path) = &self.spec.model_path_host {
            if !path.exists() {
                return Err(RuntimeError::ModelPathMissing { path: path.clone() });
            }
        }
        if let Some(cpus) = &self.spec.binding.cpus {
            let online = std::fs::read_to_string("/sys/devices/system/cpu/online")
                .ok()
                .and_then(|t| crate::host::cpuset::CpuSet::parse_list(t.trim()).ok());
            if let Some(online) = online {
                if !cpus.is_subset(&online) {
                    return Err(RuntimeError::CpusOffline { cpus: cpus.clone(), online });
                }
            }
        }
        for node in self.spec.binding.memory_nodes() {
            let dir = PathBuf::from(format!("/sys/devices/system/node/node{node}"));
            if Path::new("/sys/devices/system/node").exists() && !dir.exists() {
                return Err(RuntimeError::NodeMissing { node, dir });
            }
        }
        // A memoryless node (numactl issue 165): the kernel refuses a policy that names only it,
        // and the child would die between fork and exec with a bare EINVAL.
        let has_memory = "/sys/devices/system/node/has_memory";
        if let Some(with_memory) = std::fs::read_to_string(has_memory)
            .ok()
            .and_then(|t| crate::host::cpuset::CpuSet::parse_list(t.trim()).ok())
        {
            if let Some(node) =
                self.spec.binding.memory_nodes().into_iter().find(|n| !with_memory.contains(*n))
            {
                return Err(RuntimeError::NodeWithoutMemory {
                    node,
                    file: PathBuf::from(has_memory),
                    with_memory,
                });
            }
        }
        port_free(&self.proc, self.spec.port)?;
        Ok(())
    }

    fn start_sync(&mut self) -> Result<(), RuntimeError> {
        let marker = self.dir()?.marker().to_string();
        let argv = &self.spec.argv;
        let mut cmd = std::process::Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        for k in
            AGENT_ONLY_ENV.iter().copied().chain(self.spec.unset_env.iter().map(String::as_str))
        {
            cmd.env_remove(k);
        }
        cmd.envs(&self.spec.env);
        // Set last, so `engine.env` cannot override it: how a later run recognises its leftovers.
        cmd.env(MARKER_VAR, marker);
        if let Some(dir) = &self.spec.workdir {
            cmd.current_dir(dir);
        }
        // Own process group: a stop signals the whole group, and a terminal's ^C does not reach
        // the engine behind the agent's back.
        cmd.process_group(0);
        cmd.stdin(std::process::Stdio::null());
        if let Some(path) = &self.log {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|f| Ok((f.try_clone()?, f)))
                .map_err(|source| RuntimeError::EngineLog { path: path.clone(), source })?;
            cmd.stdout(file.0).stderr(file.1);
        } else if self.stdout_to_stderr {
            use std::os::fd::AsFd;
            if let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() {
                cmd.stdout(std::process::Stdio::from(fd));
            }
        }
        if self.use_cgroup && self.cgroup.is_none() {
            match EngineCgroup::create(&self.cgroup_fs, &self.cgroup_name) {
                Ok(cg) => self.cgroup = Some(cg),
                Err(e) => {
                    tracing::warn!(error = %e, "no cgroup for the engine: tracking it through /proc")
                }
            }
        }
        if let Some(cg) = &self.cgroup {
            let joiner = cg.joiner();
            // SAFETY: `join` only makes system calls (open, write, close) on paths prepared
            // before the fork. It runs first, so nothing of the engine runs outside the cgroup
            // (and a v1 cpuset joined later could not reset the binding applied next).
            unsafe {
                cmd.pre_exec(move || joiner.join());
            }
        }
        if self.spec.native_binding {
            let native = NativeBinding::new(&self.spec.binding)?;
            // SAFETY: `apply` only makes system calls (sched_setaffinity, sched_getaffinity,
            // set_mempolicy) on values prepared before the fork; it allocates nothing and takes
            // no locks, which is what is allowed between fork and exec.
            unsafe {
                cmd.pre_exec(move || native.apply());
            }
        }
        let mut cmd = tokio::process::Command::from(cmd);
        cmd.kill_on_drop(false);
        let child = cmd
            .spawn()
            .map_err(|source| RuntimeError::Spawn { program: argv[0].clone(), source })?;
        let pid = child.id().map(|p| p as i32).ok_or(RuntimeError::NoPid)?;
        tracing::info!(pid, argv = ?argv, containment = %self.containment(), "engine started");
        self.main_pid = Some(pid);
        self.child = Some(child);
        self.exit = None;
        self.known.clear();
        self.scan();
        Ok(())
    }
}

fn exit_of(status: std::process::ExitStatus) -> EngineExit {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => EngineExit::Code(c as i64),
        (None, Some(s)) => EngineExit::Signal(s),
        (None, None) => EngineExit::Code(-1),
    }
}

/// Resolves a program like `execvp` would.
fn which(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let exec =
        |p: &Path| p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if program.contains('/') {
        let p = PathBuf::from(program);
        return exec(&p).then_some(p);
    }
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|d| d.join(program)).find(|p| exec(p)))?
}

/// Fails when something listens on `port` already, naming the holder when `/proc` tells.
/// `/proc/net/tcp{,6}` is read first: a bind test alone misses a listener on one address when
/// both sides set `SO_REUSEADDR` (Python's `http.server` does).
pub fn port_free(proc: &ProcFs, port: u16) -> Result<(), RuntimeError> {
    let busy = |who: Option<(i32, String)>| {
        let holder = who.map(|(pid, comm)| PortHolder { pid, comm });
        Err(RuntimeError::PortBusy { port, holder })
    };
    if proc.port_listening(port) {
        return busy(proc.port_owner(port));
    }
    match std::net::TcpListener::bind(("0.0.0.0", port)) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => busy(proc.port_owner(port)),
        Err(source) => Err(RuntimeError::PortCheck { port, source }),
    }
}

/// Waits up to `wait` for `port` to be free (polled every 100 ms); returns whether it is. The
/// caller's own check then reports a port still busy, with its holder.
pub async fn wait_port_released(proc: &ProcFs, port: u16, wait: Duration) -> bool {
    let deadline = deadline_after(Instant::now(), wait);
    loop {
        if port_free(proc, port).is_ok() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Kills what an earlier agent run left: the live processes of the pid file in `dir` that are
/// verified to be engines of this state dir (`pidfile::Leftovers`), every process carrying its
/// marker, and their descendants; never PID 1, the agent or its ancestors. Returns a
/// description of each process killed.
pub async fn kill_leftovers(
    proc: &ProcFs,
    dir: &StateDir,
    id: &Identity,
    grace: Duration,
) -> Result<Vec<String>, RuntimeError> {
    let found = Leftovers::find(proc, dir, id);
    let victims = pidfile::victims(proc, &found.roots);
    for (pid, _, _) in &victims {
        let _ = kill(Pid::from_raw(*pid), Signal::SIGTERM);
    }
    let deadline = deadline_after(Instant::now(), grace);
    loop {
        let left: Vec<_> = victims.iter().filter(|(p, t, _)| proc.alive_as(*p, *t)).collect();
        if left.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            for (pid, _, _) in &left {
                let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
            }
            if Instant::now() >= deadline_after(deadline, Duration::from_secs(5)) {
                return Err(RuntimeError::LeftoversSurvive {
                    pids: left.iter().map(|(p, _, _)| *p).collect(),
                });
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = dir.remove(PID_FILE);
    Ok(victims.into_iter().map(|(pid, _, comm)| format!("pid {pid} ({comm})")).collect())
}

/// Kills and removes the engine cgroups named `name` an earlier agent run left (found by path:
/// the cgroup, not a pid file, says what was the engine's). Returns a description of each
/// process killed.
pub async fn kill_leftover_cgroups(
    fs: &CgroupFs,
    name: &str,
    proc: &ProcFs,
) -> Result<Vec<String>, RuntimeError> {
    let mut removed = Vec::new();
    for cg in EngineCgroup::locate(fs, name) {
        let comms: BTreeMap<i32, String> = cg
            .pids()
            .into_iter()
            .map(|p| (p, proc.stat(p).map(|s| s.comm).unwrap_or_default()))
            .collect();
        let me = std::process::id() as i32;
        let pids = cg
            .kill(Duration::from_secs(10), || reap_orphans(proc, me, None))
            .await
            .map_err(|source| RuntimeError::Cgroup { source })?;
        removed.extend(pids.iter().map(|p| {
            format!("pid {p} ({}) in {}", comms.get(p).map_or("?", String::as_str), cg.describe())
        }));
        cg.remove().map_err(|source| RuntimeError::Cgroup { source })?;
    }
    Ok(removed)
}

/// Reaps zombies re-parented to the agent (it is a child subreaper in `serve`), except the
/// engine's main process, whose exit status tokio's `wait` takes.
fn reap_orphans(proc: &ProcFs, me: i32, main: Option<i32>) {
    for s in proc.all() {
        if s.state == 'Z' && s.ppid == me && Some(s.pid) != main {
            let _ = waitpid(Pid::from_raw(s.pid), Some(WaitPidFlag::WNOHANG));
        }
    }
}

impl EngineRuntime for ProcessRuntime {
    fn containment(&self) -> Option<String> {
        Some(ProcessRuntime::containment(self))
    }

    fn usage(&mut self) -> Usage {
        self.cgroup.as_ref().map(EngineCgroup::usage).unwrap_or_default()
    }

    fn describe(&self) -> String {
        match self.spec.mode {
            crate::config::LaunchMode::Numactl => "process (numactl)".to_string(),
            _ if self.spec.native_binding => "process (native binding)".to_string(),
            _ => "process".to_string(),
        }
    }

    fn preflight(&mut self) -> BoxFuture<'_, Result<(), RuntimeError>> {
        Box::pin(async move {
            self.dir()?;
            if std::mem::take(&mut self.removed_leftovers) {
                wait_port_released(&self.proc, self.spec.port, PORT_RELEASE_WAIT).await;
            }
            self.preflight_sync()
        })
    }

    fn cleanup_leftovers(&mut self) -> BoxFuture<'_, Result<Vec<String>, RuntimeError>> {
        Box::pin(async move {
            self.dir()?;
            let mut removed = Vec::new();
            if self.use_cgroup {
                removed =
                    kill_leftover_cgroups(&self.cgroup_fs, &self.cgroup_name, &self.proc).await?;
            }
            let dir = self.dir.as_ref().expect("opened above");
            let id = Identity::new(dir, &self.spec.engine_argv);
            removed.extend(kill_leftovers(&self.proc, dir, &id, Duration::from_secs(10)).await?);
            self.removed_leftovers = !removed.is_empty();
            Ok(removed)
        })
    }

    fn start(&mut self) -> BoxFuture<'_, Result<(), RuntimeError>> {
        Box::pin(async move { self.start_sync() })
    }

    fn pids(&mut self) -> BoxFuture<'_, Result<Vec<i32>, RuntimeError>> {
        Box::pin(async move { Ok(self.scan()) })
    }

    fn wait(&mut self) -> BoxFuture<'_, Result<EngineExit, RuntimeError>> {
        Box::pin(async move {
            if let Some(exit) = self.exit {
                return Ok(exit);
            }
            let Some(child) = &mut self.child else {
                return std::future::pending().await;
            };
            let status = child.wait().await.map_err(|source| RuntimeError::Wait { source })?;
            let exit = exit_of(status);
            self.exit = Some(exit);
            Ok(exit)
        })
    }

    fn stop(&mut self, grace: Duration) -> BoxFuture<'_, Result<(), RuntimeError>> {
        Box::pin(async move {
            self.stop_tree(grace).await;
            let left = self.left();
            if left.is_empty() {
                Ok(())
            } else {
                Err(RuntimeError::ProcessesLeft { pids: left })
            }
        })
    }
}

/// Whether a process is an engine orphan re-parented to the agent: the agent's child, and
/// either in the engine's process group (the engine's main process leads a group of its own,
/// `engine_pgrp`) or in a session of its own (Ray-like workers call `setsid`). What the agent
/// runs itself (the monitor's `mx-smi` or `nvidia-smi` every few seconds, in a group of their
/// own but in the agent's session) is not: counting it would turn every finished sample into
/// "an engine process died", and reaping it would take its exit status from the monitor.
fn adoptable(s: &Stat, me: i32, my_session: i32, engine_pgrp: Option<i32>) -> bool {
    s.ppid == me && (Some(s.pgrp) == engine_pgrp || s.session != my_session)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// After a leftover cleanup the port is given a moment: a listener that goes away within
    /// the wait is waited out; one that stays is still busy when the wait ends.
    #[tokio::test]
    async fn a_port_released_within_the_wait_is_free_one_kept_is_not() {
        let proc = ProcFs::default();
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = held.local_addr().unwrap().port();
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            drop(held);
        });
        assert!(wait_port_released(&proc, port, Duration::from_secs(10)).await);
        release.await.unwrap();
        let kept = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = kept.local_addr().unwrap().port();
        let started = std::time::Instant::now();
        assert!(!wait_port_released(&proc, port, Duration::from_millis(300)).await);
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(port_free(&proc, port).is_err());
    }

    #[test]
    fn only_engine_orphans_are_adopted_not_the_agents_own_tools() {
        let stat = |pid, ppid, pgrp, session| Stat {
            pid,
            comm: "x".into(),
            state: 'S',
            ppid,
            pgrp,
            session,
            start_time: 1,
        };
        let (me, sid, engine) = (100, 100, Some(200));
        assert!(adoptable(&stat(300, me, 300, 300), me, sid, engine), "a setsid'd worker");
        assert!(adoptable(&stat(301, me, 200, sid), me, sid, engine), "in the engine's group");
        assert!(!adoptable(&stat(302, me, 302, sid), me, sid, engine), "the monitor's mx-smi");
        assert!(
            !adoptable(&stat(303, me, me, sid), me, sid, engine),
            "a tool in the agent's group"
        );
        assert!(!adoptable(&stat(304, 1, 304, 304), me, sid, engine), "someone else's child");
    }
}
