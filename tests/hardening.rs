//! `nodeagent serve` as a root daemon that must not be turned against its host (issue 12): config
//! values that would panic the agent are refused before anything starts, a panic after the start
//! still stops the engine, the state dir is checked and never followed through a symlink, a
//! forged pid file cannot make the agent kill an unrelated process (or its own parent), and files
//! other users can write are refused when running as root. Real processes, real symlinks, real
//! signals; the engine is the stand-in of `testdata/serve/fake_engine.py`.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use serde_json::Value;

#[path = "support/agent.rs"]
mod agent;

use agent::{alive, wait_for, BIN};

/// Field 22 of `/proc/PID/stat`: the start time in clock ticks since boot.
fn start_time(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = stat.rsplit_once(')').unwrap().1;
    rest.split_whitespace().nth(19).unwrap().parse().unwrap()
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A test directory with a config for the stand-in engine (plus `extra` TOML at the end of
/// `[supervise]`), the state dir `state` inside it.
struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
    state_dir: PathBuf,
}

impl Setup {
    fn new(extra: &str) -> Setup {
        let argv = agent::engine_argv("testdata/serve/fake_engine.py", &["--workers", "2"]);
        Self::with_argv(&argv, extra)
    }

    fn with_argv(argv: &[String], extra: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("state");
        let config = dir.path().join("nodeagent.toml");
        // Quick timings, each unless `extra` sets the key itself.
        let defaults = [
            "health_interval = \"200ms\"",
            "health_timeout = \"500ms\"",
            "binding_check_interval = \"200ms\"",
            "backoff_initial = \"100ms\"",
            "stop_grace = \"3s\"",
        ];
        let key = |line: &str| line.split('=').next().unwrap_or("").trim().to_string();
        let overridden: Vec<String> = extra.lines().map(key).collect();
        let supervise: String = defaults
            .iter()
            .filter(|l| !overridden.contains(&key(l)))
            .map(|l| format!("{l}\n"))
            .collect();
        agent::write_config(&config, &state_dir, argv, &format!("{supervise}{extra}"));
        Setup { dir, config, state_dir }
    }

    /// `nodeagent serve --config ... ARGS`, stderr to `agent.log`, marked so that everything it
    /// leaves behind can be found.
    fn command(&self, args: &[&str]) -> Command {
        let log = std::fs::File::create(self.dir.path().join("agent.log")).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--config"])
            .arg(&self.config)
            .args(args)
            .env("NODEAGENT_TEST_MARK", self.dir.path())
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        cmd
    }

    fn start(&self, args: &[&str]) -> Agent {
        Agent { child: Some(self.command(args).spawn().unwrap()) }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    fn status(&self) -> Option<Value> {
        agent::status(&self.state_dir, &[])
    }

    fn wait_ready(&self) -> Value {
        wait_for("state ready", Duration::from_secs(30), || {
            self.status().filter(|s| s["state"] == "ready")
        })
    }

    /// Live processes that inherited this test's environment marker: what the agent left.
    fn leftovers(&self) -> Vec<i32> {
        agent::marked(self.dir.path())
    }

    /// Kills whatever carries this test's marker (so a failing test does not leak).
    fn kill_leftovers(&self) {
        agent::kill_marked(self.dir.path());
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.kill_leftovers();
    }
}

struct Agent {
    child: Option<Child>,
}

impl Agent {
    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn signal(&self, sig: &str) {
        agent::signal(self.pid(), sig);
    }

    fn finish(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        wait_for("agent exit", timeout, || child.try_wait().unwrap())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        agent::stop_child(self.child.take(), Duration::from_secs(20));
    }
}

/// Runs `serve` to its end (it must end within 15 s) and returns (exit code, stderr).
fn serve_to_end(setup: &Setup, args: &[&str]) -> (Option<i32>, String) {
    let mut agent = setup.start(args);
    let status = agent.finish(Duration::from_secs(15));
    (status.code(), setup.log())
}

// ---------------------------------------------------------------------------------------------
// Defect 2: config values that passed validation panicked the agent after the engine started.

#[test]
fn values_that_panicked_the_agent_are_refused_before_anything_starts() {
    let huge = "18446744073709551615s";
    let cases = [
        ("health_interval", "0s"),
        ("binding_check_interval", "0s"),
        ("ready_timeout", huge),
        ("health_interval", huge),
        ("stop_grace", huge),
        ("health_timeout", "0s"),
        ("restart_window", huge),
        ("backoff_initial", huge),
    ];
    for (key, value) in cases {
        let setup = Setup::new(&format!("{key} = \"{value}\"\n"));
        let (code, err) = serve_to_end(&setup, &[]);
        assert_eq!(code, Some(2), "{key} = {value}: {err}");
        assert_eq!(err.lines().count(), 1, "{key} = {value}: one line: {err}");
        assert!(
            err.contains(&format!("supervise.{key}")) && err.contains(value),
            "{key} = {value}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(setup.leftovers(), Vec::<i32>::new(), "{key} = {value}: {err}");
    }
}

/// Audit of wave 9: a config or profile path that is a fifo (the read blocked forever) or a
/// device (`/dev/zero` filled memory until the kernel killed the agent), and container settings
/// that `--print-config` accepted though `docker run` would refuse them, are one-line errors,
/// exit 2.
#[test]
fn a_config_that_is_no_regular_file_or_has_bad_container_settings_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.toml");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let profile = dir.path().join("zero.toml");
    std::os::unix::fs::symlink("/dev/zero", &profile).unwrap();
    let uses = dir.path().join("uses.toml");
    std::fs::write(&uses, format!("host = {:?}\nmodel = \"sim\"\n", profile)).unwrap();
    let shm = dir.path().join("shm.toml");
    std::fs::write(
        &shm,
        "host = \"local\"\nmodel = \"sim\"\n[launch]\nmode = \"container\"\n\
         [container]\nimage = \"x\"\nshm_size = \"lots\"\n",
    )
    .unwrap();
    let cases = [
        (fifo.clone(), "not a regular file (a fifo)"),
        (PathBuf::from("/dev/zero"), "not a regular file (a device)"),
        (uses, "zero.toml: not a regular file (a device)"),
        (shm, "bad shm_size \"lots\""),
    ];
    for (config, says) in cases {
        let mut child = Command::new(BIN)
            .args(["serve", "--print-config", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let start = std::time::Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{}: still running after 30 s", config.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        assert_eq!(status.code(), Some(2), "{}: {err}", config.display());
        assert!(err.starts_with("error: ") && err.contains(says), "{}: {err}", config.display());
        assert_eq!(err.lines().count(), 1, "{err}");
        // Said once: the reason was repeated (`...: not a regular file: not a regular file`).
        assert_eq!(err.matches(says).count(), 1, "{err}");
    }
}

/// A panic after the engine started (forced with the hidden debug flag
/// `--debug-panic-when-ready`) stops the engine tree before the agent exits: a clean failure,
/// exit 1, never an orphan.
#[test]
fn a_panic_after_the_start_stops_the_engine_first() {
    let setup = Setup::new("");
    let mut agent = setup.start(&["--debug-panic-when-ready"]);
    let status = agent.finish(Duration::from_secs(60));
    let err = setup.log();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("--debug-panic-when-ready"), "{err}");
    assert!(err.contains("engine stopped"), "{err}");
    assert_eq!(setup.leftovers(), Vec::<i32>::new(), "{err}");
}

/// The same for a panic in a spawned task (a monitor, the status server, a signal watcher):
/// tokio would catch it and the agent would go on without that task; the panic hook stops the
/// engine tree and ends the agent with exit 1 instead.
#[test]
fn a_panic_in_a_spawned_task_stops_the_engine_first() {
    let setup = Setup::new("");
    let mut agent = setup.start(&["--debug-panic-in-task"]);
    let status = agent.finish(Duration::from_secs(30));
    let err = setup.log();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("--debug-panic-in-task"), "{err}");
    assert!(err.contains("engine stopped"), "{err}");
    assert_eq!(setup.leftovers(), Vec::<i32>::new(), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Defect 3: the state dir was trusted blindly.

#[test]
fn a_group_or_world_writable_state_dir_is_refused_and_a_missing_one_is_created_0700() {
    for mode in [0o777, 0o770, 0o1777] {
        let setup = Setup::new("");
        std::fs::create_dir(&setup.state_dir).unwrap();
        std::fs::set_permissions(&setup.state_dir, std::fs::Permissions::from_mode(mode)).unwrap();
        let (code, err) = serve_to_end(&setup, &[]);
        assert_eq!(code, Some(2), "mode {mode:o}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        let dir = setup.state_dir.display().to_string();
        assert!(err.contains(&dir) && err.contains(&format!("{:o}", mode & 0o7777)), "{err}");
        assert_eq!(setup.leftovers(), Vec::<i32>::new());
    }
    let setup = Setup::new("");
    let mut agent = setup.start(&[]);
    setup.wait_ready();
    let meta = std::fs::metadata(&setup.state_dir).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o700);
    agent.signal("-TERM");
    assert!(agent.finish(Duration::from_secs(20)).success(), "{}", setup.log());
}

#[test]
fn a_state_dir_owned_by_another_user_or_a_symlink_is_refused() {
    if !is_root() {
        eprintln!("skipped: needs root to chown");
        return;
    }
    let setup = Setup::new("");
    std::fs::create_dir(&setup.state_dir).unwrap();
    std::os::unix::fs::chown(&setup.state_dir, Some(65534), Some(65534)).unwrap();
    let (code, err) = serve_to_end(&setup, &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("owned by uid 65534"), "{err}");

    let setup = Setup::new("");
    let real = setup.dir.path().join("real-state");
    std::fs::create_dir(&real).unwrap();
    std::os::unix::fs::symlink(&real, &setup.state_dir).unwrap();
    let (code, err) = serve_to_end(&setup, &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("symlink"), "{err}");
}

/// A planted `engine.pids.tmp` symlink to a root-owned 0600 file: the agent must write its pid
/// file without following it, and never read `engine.pids` through a symlink.
#[test]
fn pid_file_writes_do_not_follow_planted_symlinks() {
    let setup = Setup::new("");
    std::fs::create_dir(&setup.state_dir).unwrap();
    std::fs::set_permissions(&setup.state_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let victim = setup.dir.path().join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink(&victim, setup.state_dir.join("engine.pids.tmp")).unwrap();
    let mut agent = setup.start(&[]);
    let st = setup.wait_ready();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    let pids = setup.state_dir.join("engine.pids");
    let meta = std::fs::symlink_metadata(&pids).unwrap();
    assert!(meta.file_type().is_file(), "engine.pids is a regular file");
    assert_eq!(meta.mode() & 0o777, 0o600);
    let main_pid = st["main_pid"].as_i64().unwrap();
    assert!(std::fs::read_to_string(&pids).unwrap().contains(&format!("{main_pid} ")));
    agent.signal("-TERM");
    assert!(agent.finish(Duration::from_secs(20)).success(), "{}", setup.log());
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");

    // engine.pids itself a symlink to a file naming a live process: not read, not followed.
    let mut bystander = Command::new("sleep").arg("1000").spawn().unwrap();
    let forged = setup.dir.path().join("forged");
    let line = format!("{} {}\n", bystander.id(), start_time(bystander.id()));
    std::fs::write(&forged, &line).unwrap();
    std::os::unix::fs::symlink(&forged, &pids).unwrap();
    let mut agent = setup.start(&[]);
    setup.wait_ready();
    assert!(alive(bystander.id() as i64), "a pid file read through a symlink was obeyed");
    assert_eq!(std::fs::read_to_string(&forged).unwrap(), line);
    agent.signal("-TERM");
    assert!(agent.finish(Duration::from_secs(20)).success(), "{}", setup.log());
    let _ = bystander.kill();
    let _ = bystander.wait();
}

/// A forged pid file line whose start time matches names an unrelated process: it survives
/// (a pid file is a hint, never an order), with a warning.
#[test]
fn a_forged_pid_file_line_does_not_kill_an_unrelated_process() {
    let setup = Setup::new("");
    std::fs::create_dir(&setup.state_dir).unwrap();
    std::fs::set_permissions(&setup.state_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let mut bystander = Command::new("sleep").arg("1000").process_group(0).spawn().unwrap();
    let pid = bystander.id();
    std::fs::write(setup.state_dir.join("engine.pids"), format!("{pid} {}\n", start_time(pid)))
        .unwrap();
    let mut agent = setup.start(&[]);
    setup.wait_ready();
    assert!(alive(pid as i64), "the agent killed an unrelated process named in its pid file");
    agent.signal("-TERM");
    assert!(agent.finish(Duration::from_secs(20)).success());
    let log = setup.log();
    assert!(log.contains("not an engine of this agent") && log.contains(&pid.to_string()), "{log}");
    assert!(alive(pid as i64));
    let _ = bystander.kill();
    let _ = bystander.wait();
}

/// A pid file line naming the agent's own parent: the parent survives, and so does the agent.
#[test]
fn a_pid_file_line_naming_the_agents_parent_is_refused() {
    let setup = Setup::new("");
    std::fs::create_dir(&setup.state_dir).unwrap();
    std::fs::set_permissions(&setup.state_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let go = setup.dir.path().join("go");
    // The parent waits for `go`, then runs the agent (not exec: it stays the agent's parent).
    let script = format!(
        "while [ ! -e {go} ]; do sleep 0.05; done; {bin} serve --config {config}; echo $? > {rc}",
        go = go.display(),
        bin = BIN,
        config = setup.config.display(),
        rc = setup.dir.path().join("rc").display(),
    );
    let log = std::fs::File::create(setup.dir.path().join("agent.log")).unwrap();
    let mut parent = Command::new("sh")
        .args(["-c", &script])
        .env("NODEAGENT_TEST_MARK", setup.dir.path())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let ppid = parent.id();
    std::fs::write(setup.state_dir.join("engine.pids"), format!("{ppid} {}\n", start_time(ppid)))
        .unwrap();
    std::fs::write(&go, "").unwrap();
    let st = setup.wait_ready();
    assert!(alive(ppid as i64), "the agent killed its own parent");
    let agent_pid = st["agent_pid"].as_i64().unwrap();
    Command::new("kill").args(["-TERM", &agent_pid.to_string()]).status().unwrap();
    let status =
        wait_for("the parent's exit", Duration::from_secs(20), || parent.try_wait().unwrap());
    assert!(status.success());
    let rc = std::fs::read_to_string(setup.dir.path().join("rc")).unwrap();
    assert_eq!(rc.trim(), "0", "{}", setup.log());
    assert!(setup.log().contains("not an engine of this agent"), "{}", setup.log());
}

// ---------------------------------------------------------------------------------------------
// Defect 10: files other users can write were executed as root without a word.

#[test]
fn as_root_a_world_writable_config_is_refused_unless_allowed() {
    if !is_root() {
        eprintln!("skipped: the check applies to root only");
        return;
    }
    let setup = Setup::new("");
    std::fs::set_permissions(&setup.config, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (code, err) = serve_to_end(&setup, &[]);
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(&setup.config.display().to_string()) && err.contains("666"), "{err}");
    assert!(err.contains("--allow-insecure-files"), "{err}");
    assert_eq!(setup.leftovers(), Vec::<i32>::new());

    let mut agent = setup.start(&["--allow-insecure-files"]);
    setup.wait_ready();
    agent.signal("-TERM");
    assert!(agent.finish(Duration::from_secs(20)).success(), "{}", setup.log());
    assert!(setup.log().contains("insecure"), "the override is logged: {}", setup.log());
}

#[test]
fn as_root_a_profile_or_engine_program_others_can_write_is_refused() {
    if !is_root() {
        eprintln!("skipped: the check applies to root only");
        return;
    }
    // A model profile given by path, writable by its group.
    let setup = Setup::new("");
    let profile = setup.dir.path().join("model.toml");
    std::fs::write(&profile, "[engine]\nserved_model_name = \"qwen2.5\"\n").unwrap();
    std::fs::set_permissions(&profile, std::fs::Permissions::from_mode(0o664)).unwrap();
    let text = std::fs::read_to_string(&setup.config).unwrap();
    std::fs::write(&setup.config, text.replace("model = \"sim\"", "model = \"./model.toml\""))
        .unwrap();
    let (code, err) = serve_to_end(&setup, &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("model.toml") && err.contains("664"), "{err}");

    // The engine program in a world-writable directory (anyone could swap it).
    let bin_dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(bin_dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let program = bin_dir.path().join("engine");
    std::fs::write(&program, "#!/bin/sh\nexec python3 \"$@\"\n").unwrap();
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    let argv = [
        &program.display().to_string(),
        &agent::crate_path("testdata/serve/fake_engine.py"),
        "--port",
        "{port}",
    ]
    .map(|s| s.to_string());
    let setup = Setup::with_argv(&argv, "");
    let (code, err) = serve_to_end(&setup, &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains(&bin_dir.path().display().to_string()) && err.contains("777"), "{err}");
    assert_eq!(setup.leftovers(), Vec::<i32>::new());
}
