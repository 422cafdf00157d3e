//! The Debian package and the DaemonSet's image (issue 18, item 5).
//!
//! The package is made by `pkg/build-deb.sh` (cargo-deb) from this build's binary, or taken from
//! `NODEAGENT_DEB` (CI points it at `make deb`'s release package). On the host, `dpkg-deb`
//! reads what it holds: the binary, both units with `ExecStart` on `/usr/bin`, the example
//! config as a conffile, a man page per command, the completions, maintainer scripts that
//! neither enable nor start the unit. Under a REAL systemd (the container of
//! `scripts/systemd-test-image.sh`, no network): `apt install ./nodeagent_*.deb` resolves its
//! `Depends` from the node's installed packages only, `systemctl enable --now nodeagent` with
//! the simulator as the engine comes up ready, and `apt purge` leaves no unit, binary, config,
//! state or process. The image of `deploy/image/` is built from the same package with no
//! registry, runs the DaemonSet's own arguments and serves `/metrics`, and carries the tag the
//! DaemonSet names.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

#[path = "support/docker.rs"]
mod support;
#[path = "support/systemd_box.rs"]
mod systemd_box;

use systemd_box::{docker, docker_ok, text, SystemdBox, SYSTEMD_IMAGE};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run_ok(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(o.status.success(), "{cmd:?} failed: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// Whether this is a CI run, where a missing packaging tool is a broken setup.
fn under_ci() -> bool {
    std::env::var("CI").map(|v| !v.is_empty() && v != "false" && v != "0").unwrap_or(false)
}

/// The package under test: `NODEAGENT_DEB`, or one built once per test run from this build's
/// (debug) binary into `target/package-test/`. `None` (the test is skipped, with a line saying
/// why) when cargo-deb is missing outside CI.
fn deb() -> Option<&'static Path> {
    static DEB: OnceLock<Option<PathBuf>> = OnceLock::new();
    let deb = DEB.get_or_init(|| {
        if let Ok(p) = std::env::var("NODEAGENT_DEB") {
            return Some(PathBuf::from(p));
        }
        let cached = Path::new("/var/cache/nodeagent-test/cargo-deb/bin/cargo-deb");
        let on_path = Command::new("cargo-deb").arg("--version").output().is_ok();
        if !on_path && !cached.exists() {
            let msg = "cargo-deb is not installed (scripts/setup.sh test installs it)";
            assert!(!under_ci(), "{msg}");
            eprintln!("SKIPPED: {msg}");
            return None;
        }
        let out = repo().join("target/package-test");
        let _ = std::fs::remove_dir_all(&out);
        let printed = run_ok(
            Command::new(repo().join("pkg/build-deb.sh"))
                .arg("--bin")
                .arg(env!("CARGO_BIN_EXE_nodeagent"))
                .arg("--out")
                .arg(&out)
                // xz at its fastest: the debug binary is large, and this package is thrown away.
                .args(["--", "--fast"]),
        );
        let deb = std::fs::read_dir(&out)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "deb"))
            .unwrap_or_else(|| panic!("no .deb in {}: {printed}", out.display()));
        Some(deb)
    });
    deb.as_deref()
}

fn dpkg_deb(args: &[&str], deb: &Path) -> String {
    run_ok(Command::new("dpkg-deb").args(args).arg(deb))
}

/// The man pages the binary writes (`nodeagent man`): one per visible command.
fn man_pages() -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    run_ok(Command::new(env!("CARGO_BIN_EXE_nodeagent")).arg("man").arg("--out").arg(dir.path()));
    let mut pages: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    pages
}

#[test]
fn package_holds_the_binary_units_conffile_man_pages_and_completions() {
    let Some(deb) = deb() else { return };
    let fields = dpkg_deb(&["-f"], deb);
    let field = |name: &str| {
        fields
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no {name} in the control file:\n{fields}"))
            .to_string()
    };
    assert_eq!(field("Package"), "nodeagent");
    assert_eq!(field("Version"), format!("{}-1", env!("CARGO_PKG_VERSION")));
    // Depends: what the binary links (dpkg-shlibdeps) and numactl; nothing a node lacks.
    let depends: Vec<String> = field("Depends")
        .split(',')
        .map(|d| d.split_whitespace().next().unwrap_or_default().to_string())
        .collect();
    for want in ["libc6", "libhwloc15", "numactl"] {
        assert!(depends.iter().any(|d| d == want), "Depends lacks {want}: {depends:?}");
    }
    for d in &depends {
        assert!(
            ["libc6", "libgcc-s1", "libhwloc15", "libudev1", "numactl"].contains(&d.as_str()),
            "Depends has {d}, which the test images (and many nodes) lack: {depends:?}"
        );
    }

    let listing = dpkg_deb(&["-c"], deb);
    let files: Vec<String> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(|p| p.trim_start_matches('.').to_string())
        .collect();
    let has = |path: &str| files.iter().any(|f| f == path);
    let unit_dir = "/usr/lib/systemd/system";
    let mut want = vec![
        "/usr/bin/nodeagent".to_string(),
        format!("{unit_dir}/nodeagent.service"),
        format!("{unit_dir}/nodeagent@.service"),
        "/etc/nodeagent/nodeagent.toml".to_string(),
        "/usr/share/doc/nodeagent/README.md".to_string(),
        "/usr/share/doc/nodeagent/copyright".to_string(),
        "/usr/share/doc/nodeagent/changelog.Debian.gz".to_string(),
        "/usr/share/doc/nodeagent/docs/systemd.md".to_string(),
        "/usr/share/bash-completion/completions/nodeagent".to_string(),
        "/usr/share/zsh/vendor-completions/_nodeagent".to_string(),
        "/usr/share/fish/vendor_completions.d/nodeagent.fish".to_string(),
    ];
    let pages = man_pages();
    assert!(pages.len() > 10 && pages.contains(&"nodeagent-serve.1".to_string()), "{pages:?}");
    want.extend(pages.iter().map(|p| format!("/usr/share/man/man1/{p}.gz")));
    for w in &want {
        assert!(has(w), "{w} is not in the package:\n{listing}");
    }

    // The maintainer scripts: the example config is a conffile; the units are installed but
    // neither enabled nor started (the config must be edited first), and stopped on removal.
    let control = tempfile::tempdir().unwrap();
    run_ok(Command::new("dpkg-deb").arg("-e").arg(deb).arg(control.path()));
    let script =
        |name: &str| std::fs::read_to_string(control.path().join(name)).unwrap_or_default();
    assert_eq!(script("conffiles").trim(), "/etc/nodeagent/nodeagent.toml");
    let postinst = script("postinst");
    assert!(!postinst.contains("deb-systemd-invoke start"), "postinst starts a unit:\n{postinst}");
    // cargo-deb's "don't enable" form: links are re-made on upgrade only for a unit that was
    // installed and enabled before (`debian-installed`, then `was-enabled`).
    assert!(
        postinst.contains("if deb-systemd-helper debian-installed nodeagent.service; then"),
        "postinst enables the unit on a first install:\n{postinst}"
    );
    let prerm = script("prerm");
    assert!(prerm.contains("deb-systemd-invoke stop nodeagent.service"), "prerm:\n{prerm}");
    assert!(prerm.contains("systemctl stop 'nodeagent@*.service'"), "prerm:\n{prerm}");
    assert!(script("postrm").contains("rm -rf /var/lib/nodeagent"), "{}", script("postrm"));

    // The packaged units are the repository's, ExecStart on /usr/bin; the packaged binary is
    // this version's and runs.
    let root = tempfile::tempdir().unwrap();
    run_ok(Command::new("dpkg-deb").arg("-x").arg(deb).arg(root.path()));
    for unit in ["nodeagent.service", "nodeagent@.service"] {
        let shipped = std::fs::read_to_string(root.path().join(&unit_dir[1..]).join(unit)).unwrap();
        let source = std::fs::read_to_string(repo().join("systemd").join(unit)).unwrap();
        assert_eq!(
            shipped,
            source.replace("ExecStart=/usr/local/bin/nodeagent ", "ExecStart=/usr/bin/nodeagent "),
            "{unit}"
        );
        assert!(shipped.contains("\nExecStart=/usr/bin/nodeagent serve "), "{unit}");
    }
    let version = run_ok(Command::new(root.path().join("usr/bin/nodeagent")).arg("--version"));
    assert_eq!(version.trim(), format!("nodeagent {}", env!("CARGO_PKG_VERSION")));
    let changelog = std::fs::read_to_string(repo().join("pkg/debian/changelog")).unwrap();
    let top = format!("nodeagent ({}-1) ", env!("CARGO_PKG_VERSION"));
    assert!(changelog.starts_with(&top), "pkg/debian/changelog does not start with {top:?}");
    let config = std::fs::read(root.path().join("etc/nodeagent/nodeagent.toml")).unwrap();
    assert_eq!(config, std::fs::read(repo().join("systemd/nodeagent.toml.example")).unwrap());
}

/// What lintian may still say, and why each is accepted:
/// - `bogus-mail-host*`: Cargo.toml's maintainer is a placeholder; a packager sets theirs
///   (`NODEAGENT_DEB_MAINTAINER`);
/// - `initial-upload-closes-no-bugs`: about uploads to Debian's archive, which this is not;
/// - `maintainer-script-calls-systemctl`: the prerm stops every `nodeagent@N` instance by
///   pattern, which `deb-systemd-invoke` (unit names only) cannot do.
const LINTIAN_ACCEPTED: &[&str] = &[
    "bogus-mail-host",
    "bogus-mail-host-in-debian-changelog",
    "initial-upload-closes-no-bugs",
    "maintainer-script-calls-systemctl",
];

/// `lintian` (Debian's package checker; `scripts/setup.sh test` installs it) finds nothing but
/// the tags of `LINTIAN_ACCEPTED`.
#[test]
fn lintian_finds_nothing_but_the_accepted_tags() {
    let Some(deb) = deb() else { return };
    if Command::new("lintian").arg("--version").output().is_err() {
        let msg = "lintian is not installed (scripts/setup.sh test installs it)";
        assert!(!under_ci(), "{msg}");
        eprintln!("SKIPPED: {msg}");
        return;
    }
    let out = Command::new("lintian").arg(deb).output().unwrap();
    let all = text(&out);
    // `E: nodeagent: bogus-mail-host Maintainer ...`: the tag is the third field.
    let tags: Vec<&str> = all
        .lines()
        .filter(|l| l.starts_with("E: ") || l.starts_with("W: "))
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    let unexpected: Vec<&&str> = tags.iter().filter(|t| !LINTIAN_ACCEPTED.contains(t)).collect();
    assert!(unexpected.is_empty(), "lintian: {unexpected:?}\n{all}");
}

// ------------------------------------------------------------------------------------------
// Under a real systemd

/// The Debian packages nodeagent depends on that the minimal images lack, downloaded once
/// (`pkg/dep-debs.sh`): what a node gets from its mirror.
fn dep_debs() -> Vec<PathBuf> {
    let dir = run_ok(&mut Command::new(repo().join("pkg/dep-debs.sh")));
    let mut debs: Vec<PathBuf> = std::fs::read_dir(dir.trim())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    debs.sort();
    debs
}

/// The simulator as the engine, bound to CPU 0 and memory node 0 through numactl (the package's
/// dependency), with a load time so that an `enable --now` that returned early would show.
fn simulator_config(port: u16) -> String {
    format!(
        r#"# nodeagent config for tests/package.rs
host = "local"
model = "sim"

[engine]
port = {port}
argv = ["{{self}}", "simulate", "--port", "{{port}}", "--served-model-name", "{{served_model_name}}",
        "--startup-delay-ms", "1000"]

[binding]
auto = false
cpus = "0"
mem_policy = "bind"
mem_nodes = [0]

[supervise]
health_interval = "500ms"
stop_grace = "5s"
"#
    )
}

#[test]
fn package_installs_offline_starts_ready_under_systemd_and_purges_clean() {
    let Some(deb) = deb() else { return };
    if !support::docker_ready() {
        return;
    }
    let name = format!("nodeagent-test-package-apt-{}", std::process::id());
    let b = SystemdBox::boot(name, &["--network", "none"]);
    let journal = || b.exec(&["journalctl", "-u", "nodeagent", "--no-pager", "-n", "60"]).0;

    // The node's own packages first (its mirror would give them), then the package exactly as
    // a user installs it, with no network: its Depends must all be satisfied already.
    b.exec_ok(&["mkdir", "-p", "/var/tmp/deps", "/var/tmp/pkg"]);
    for dep in dep_debs() {
        let name = dep.file_name().unwrap().to_str().unwrap();
        b.copy_in(&dep, &format!("/var/tmp/deps/{name}"));
    }
    b.exec_ok(&["sh", "-c", "dpkg -i /var/tmp/deps/*.deb"]);
    let file = deb.file_name().unwrap().to_str().unwrap();
    b.copy_in(deb, &format!("/var/tmp/pkg/{file}"));
    let install =
        b.exec_ok(&["sh", "-c", "cd /var/tmp/pkg && apt-get install -y ./nodeagent_*.deb"]);
    eprintln!("$ apt install ./{file}\n{install}");

    // Installed, neither enabled nor started: the shipped config is an example to edit.
    for path in [
        "/usr/bin/nodeagent",
        "/etc/nodeagent/nodeagent.toml",
        "/usr/share/man/man1/nodeagent-serve.1.gz",
        "/usr/share/bash-completion/completions/nodeagent",
    ] {
        assert!(b.exists(path), "{path} missing after install");
    }
    assert_eq!(b.exec(&["systemctl", "is-enabled", "nodeagent"]).0.trim(), "disabled");
    assert_eq!(b.exec(&["systemctl", "is-active", "nodeagent"]).0.trim(), "inactive");
    let complete = b.exec_ok(&[
        "bash",
        "-c",
        ". /usr/share/bash-completion/completions/nodeagent && complete -p nodeagent",
    ]);
    assert!(complete.contains("nodeagent"), "bash completion not registered: {complete}");

    // The user's config, then enable --now: returns once the engine is ready (Type=notify).
    let port = 18321;
    b.write("/etc/nodeagent/nodeagent.toml", &simulator_config(port));
    let (out, ok) = b.exec(&["systemctl", "enable", "--now", "nodeagent"]);
    assert!(ok, "systemctl enable --now failed: {out}\n{}", journal());
    assert_eq!(b.exec(&["systemctl", "is-enabled", "nodeagent"]).0.trim(), "enabled");
    let json = b.exec_ok(&["nodeagent", "status", "--json"]);
    let st: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(st["state"], "ready", "{json}\n{}", journal());
    assert_eq!(st["port"], port, "{json}");
    let main_pid = b.exec_ok(&["systemctl", "show", "nodeagent", "-p", "MainPID", "--value"]);
    let exe = b.exec_ok(&["readlink", &format!("/proc/{}/exe", main_pid.trim())]);
    assert_eq!(exe.trim(), "/usr/bin/nodeagent");
    // And a second engine from the template, instance 1 (engine.port + 1): the package's own
    // prerm must stop it too, cargo-deb's snippets know only nodeagent.service.
    let (out, ok) = b.exec(&["systemctl", "enable", "--now", "nodeagent@1"]);
    let journal1 = || b.exec(&["journalctl", "-u", "nodeagent@1", "--no-pager", "-n", "40"]).0;
    assert!(ok, "systemctl enable --now nodeagent@1 failed: {out}\n{}", journal1());
    let json = b.exec_ok(&["nodeagent", "status", "--instance", "1", "--json"]);
    let st: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!((st["state"].as_str(), st["port"].as_u64()), (Some("ready"), Some(port as u64 + 1)));

    // Purge: the unit stops and every file of the package goes, the edited conffile and the
    // state directory included; no process is left.
    let purge = b.exec_ok(&["apt-get", "purge", "-y", "nodeagent"]);
    eprintln!("$ apt purge nodeagent\n{purge}");
    for path in [
        "/usr/bin/nodeagent",
        "/lib/systemd/system/nodeagent.service",
        "/lib/systemd/system/nodeagent@.service",
        "/usr/lib/systemd/system/nodeagent.service",
        "/etc/systemd/system/multi-user.target.wants/nodeagent.service",
        "/etc/systemd/system/multi-user.target.wants/nodeagent@1.service",
        "/etc/nodeagent",
        "/var/lib/nodeagent",
        "/var/cache/nodeagent",
        "/usr/share/doc/nodeagent",
    ] {
        assert!(!b.exists(path), "{path} left after purge");
    }
    assert!(!b.exec(&["dpkg", "-s", "nodeagent"]).1, "dpkg still knows nodeagent");
    let units = b.exec(&["systemctl", "list-unit-files", "nodeagent*", "--no-legend"]).0;
    assert!(!units.contains("nodeagent"), "unit files left: {units}");
    let top = docker_ok(&["top", &b.name, "-eo", "pid,args"]);
    assert!(!top.contains("nodeagent"), "processes left after purge:\n{top}");
}

// ------------------------------------------------------------------------------------------
// The DaemonSet's image

/// The `image:` of every container of the DaemonSet.
fn daemonset_images() -> Vec<String> {
    let ds = std::fs::read_to_string(repo().join("deploy/kubernetes/daemonset.yaml")).unwrap();
    ds.lines()
        .filter_map(|l| l.trim().strip_prefix("image: "))
        .map(|i| i.trim().to_string())
        .collect()
}

/// The monitor container's `args:` (`args: ["monitor", "--listen", ...]`).
fn daemonset_monitor_args() -> Vec<String> {
    let ds = std::fs::read_to_string(repo().join("deploy/kubernetes/daemonset.yaml")).unwrap();
    let line = ds
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("args: [\"monitor\""))
        .expect("the monitor container's args line");
    serde_json::from_str(line.strip_prefix("args: ").unwrap()).unwrap()
}

/// `deploy/image/build.sh` tags `nodeagent:<version>` by default: the DaemonSet's image.
#[test]
fn daemonset_names_the_image_build_sh_tags() {
    let want = format!("nodeagent:{}", env!("CARGO_PKG_VERSION"));
    let images = daemonset_images();
    assert_eq!(images.len(), 2, "{images:?}");
    assert!(images.iter().all(|i| *i == want), "DaemonSet images {images:?}, not {want}");
    let Some(deb) = deb() else { return };
    let tag =
        run_ok(Command::new(repo().join("deploy/image/build.sh")).arg(deb).arg("--print-tag"));
    assert_eq!(tag.trim(), want, "deploy/image/build.sh's default tag");
}

#[test]
fn image_from_the_package_runs_the_daemonsets_monitor_and_serves_metrics() {
    let Some(deb) = deb() else { return };
    if !support::docker_ready() {
        return;
    }
    // No registry: the base is the Debian bookworm image already in the store (the systemd
    // test image), the dependencies the downloaded packages.
    systemd_box::build_image();
    let deps = run_ok(&mut Command::new(repo().join("pkg/dep-debs.sh")));
    let tag = format!("nodeagent-test-image:{}", std::process::id());
    let printed = run_ok(Command::new(repo().join("deploy/image/build.sh")).arg(deb).args([
        "--base",
        SYSTEMD_IMAGE,
        "--deps",
        deps.trim(),
        "--tag",
        &tag,
    ]));
    assert_eq!(printed.trim(), tag);
    struct Cleanup(String, String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = docker(&["rm", "-f", &self.1]);
            let _ = docker(&["rmi", "-f", &self.0]);
        }
    }
    let name = format!("nodeagent-test-image-{}", std::process::id());
    let _cleanup = Cleanup(tag.clone(), name.clone());

    // A tag of its own, so that a `make image` release image is left alone; the default tag
    // is checked by `daemonset_names_the_image_build_sh_tags`.
    let entry = docker_ok(&["image", "inspect", "-f", "{{json .Config.Entrypoint}}", &tag]);
    assert_eq!(entry.trim(), r#"["/usr/bin/nodeagent"]"#);

    // The DaemonSet's arguments, verbatim, read-only, on Docker's bridge network (the test
    // reaches the container's own address). The GPU tool comes from the node, as the NVIDIA
    // container toolkit mounts nvidia-smi: here the fake one playing a recorded 2 x H100 load.
    let args = daemonset_monitor_args();
    let fake = format!(
        "{}:/usr/bin/nvidia-smi:ro",
        repo().join("testdata/fake-tools/nvidia-smi").display()
    );
    let recorded = format!("{}:/fake:ro", repo().join("testdata/monitor/h100-load").display());
    let mut run = vec!["run", "-d", "--name", name.as_str(), "--read-only", "-v", fake.as_str()];
    run.extend(["-v", recorded.as_str(), "-e", "FAKE_NVSMI_DIR=/fake", tag.as_str()]);
    run.extend(args.iter().map(String::as_str));
    docker_ok(&run);
    let ip = docker_ok(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        &name,
    ]);
    let port = args
        .iter()
        .find_map(|a| a.strip_prefix("0.0.0.0:"))
        .expect("the DaemonSet listens on 0.0.0.0:PORT");
    let url = format!("http://{}:{port}/metrics", ip.trim());
    // GPU 1 of the recording: 4691 MiB in use, once the first sample is in (the endpoint
    // answers before it).
    let want = r#"nodeagent_gpu_memory_used_bytes{gpu="1",bus_id="0000:00:07.0",numa_node="0"} 4918870016"#;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let o = Command::new("curl").args(["-sf", "--max-time", "5", &url]).output().unwrap();
        let body = String::from_utf8_lossy(&o.stdout).to_string();
        if o.status.success() && body.lines().any(|l| l.starts_with(want)) {
            assert!(body.contains("# TYPE nodeagent_gpu_sample_up gauge"), "{body}");
            break;
        }
        let logs = text(&docker(&["logs", &name]));
        assert!(Instant::now() < deadline, "no {want} at {url}:\n{body}\n{logs}");
        std::thread::sleep(Duration::from_millis(300));
    }
}
