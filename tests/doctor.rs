//! `nodeagent doctor` end to end: the checks on fixture hosts (`testdata/doctor/`, sysfs and
//! procfs trees in the real file formats) with literal expectations, the exit status, `plan`'s
//! warning lines, the `probe --save` → `doctor --from` round trip, bad input, and this
//! machine's real files (only what holds anywhere).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

const NAMES: [&str; 8] = [
    "numa_balancing",
    "transparent_hugepages",
    "cpu_governor",
    "gpu_irq_affinity",
    "pcie_link",
    "offline_cpus",
    "memory_headroom",
    "engine_outside_plan",
];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/doctor").join(name)
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nodeagent"))
        .env("COLUMNS", "120")
        .args(args)
        .output()
        .expect("run nodeagent")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `doctor --json` → (name, status, detail, fix) in report order.
fn checks(o: &Output) -> Vec<(String, String, String, Option<String>)> {
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!("doctor --json: {e}: {}{}", String::from_utf8_lossy(&o.stdout), stderr(o))
    });
    assert_eq!(v.as_object().unwrap().keys().collect::<Vec<_>>(), ["checks"]);
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let keys: Vec<&String> = c.as_object().unwrap().keys().collect();
            assert_eq!(keys, ["detail", "fix", "name", "status"], "{c}");
            (
                c["name"].as_str().unwrap().to_string(),
                c["status"].as_str().unwrap().to_string(),
                c["detail"].as_str().unwrap().to_string(),
                c["fix"].as_str().map(str::to_string),
            )
        })
        .collect()
}

fn doctor_from(dir: &Path) -> Output {
    run(&["doctor", "--json", "--from", dir.to_str().unwrap()])
}

#[test]
fn a_tuned_host_passes_and_exits_zero() {
    let dir = fixture("tuned-2node");
    let out = doctor_from(&dir);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let c = checks(&out);
    let got: Vec<(&str, &str, &str)> =
        c.iter().map(|(n, s, d, _)| (n.as_str(), s.as_str(), d.as_str())).collect();
    let engine = format!("replaying the snapshot {}: no engine to ask", dir.display());
    assert_eq!(
        got,
        [
            ("numa_balancing", "pass", "kernel.numa_balancing = 0 (off)"),
            ("transparent_hugepages", "pass", "enabled [madvise], defrag [madvise]"),
            ("cpu_governor", "pass", "bound CPUs: performance on 4-7"),
            (
                "gpu_irq_affinity",
                "pass",
                "2 MSI interrupts of 1 GPU(s) on their node's CPUs; irqbalance not running"
            ),
            (
                "pcie_link",
                "pass",
                "GPU 0: 0000:18:00.0 x16 of x16, 32.0 GT/s PCIe of 32.0 GT/s PCIe"
            ),
            ("offline_cpus", "pass", "bound CPUs 4-7 all online (online 0-7)"),
            ("memory_headroom", "pass", "node 1 14336 of 16128 MB free"),
            ("engine_outside_plan", "unknown", engine.as_str()),
        ]
    );
    assert!(c.iter().all(|(_, _, _, fix)| fix.is_none()));
    // plan on the same host has nothing to warn about.
    let plan = run(&["plan", "--from", dir.to_str().unwrap()]);
    assert!(plan.status.success(), "{}", stderr(&plan));
    assert!(!stderr(&plan).contains("doctor:"), "{}", stderr(&plan));
}

#[test]
fn an_untuned_host_fails_with_evidence_and_fixes() {
    let dir = fixture("untuned-2node");
    let out = doctor_from(&dir);
    assert_eq!(out.status.code(), Some(1), "a failed check exits 1");
    assert_eq!(
        stderr(&out).trim_end(),
        "error: 3 check(s) failed: numa_balancing, pcie_link, offline_cpus"
    );
    let c = checks(&out);
    let status: Vec<(&str, &str)> = c.iter().map(|(n, s, _, _)| (n.as_str(), s.as_str())).collect();
    assert_eq!(
        status,
        [
            ("numa_balancing", "fail"),
            ("transparent_hugepages", "warn"),
            ("cpu_governor", "warn"),
            ("gpu_irq_affinity", "warn"),
            ("pcie_link", "fail"),
            ("offline_cpus", "fail"),
            ("memory_headroom", "warn"),
            ("engine_outside_plan", "unknown"),
        ]
    );
    let by = |name: &str| c.iter().find(|x| x.0 == name).unwrap().clone();
    assert!(by("numa_balancing").2.starts_with("kernel.numa_balancing = 1: "));
    assert_eq!(
        by("gpu_irq_affinity").2,
        "interrupts off the GPU's node: GPU 0 (0000:18:00.0, node 1 CPUs 4-7): irq 140→0-7 141→2; irqbalance runs (it moves interrupts unless banned)"
    );
    assert_eq!(
        by("gpu_irq_affinity").3.as_deref(),
        Some("systemctl stop irqbalance && for i in 140 141; do echo 4-7 > /proc/irq/$i/smp_affinity_list; done")
    );
    assert_eq!(
        by("pcie_link").2,
        "link narrower than the device's maximum: GPU 0: 0000:18:00.0 x8 of x16, 16.0 GT/s PCIe of 32.0 GT/s PCIe"
    );
    assert_eq!(
        by("offline_cpus").3.as_deref(),
        Some("for c in 7; do echo 1 > /sys/devices/system/cpu/cpu$c/online; done")
    );
    assert_eq!(
        by("cpu_governor").3.as_deref(),
        Some("cpupower -c 4-6 frequency-set -g performance")
    );
    // A memory need above what the bound node has free fails the headroom check too.
    let out = run(&["doctor", "--json", "--from", dir.to_str().unwrap(), "--host-memory-gb", "1"]);
    assert_eq!(checks(&out)[6].1, "fail");

    // plan prints one warning line per warn/fail check, and its own output is unchanged.
    let plan = run(&["plan", "--from", dir.to_str().unwrap()]);
    assert!(plan.status.success(), "{}", stderr(&plan));
    let lines: Vec<String> =
        stderr(&plan).lines().filter(|l| l.contains("doctor:")).map(str::to_string).collect();
    let names: Vec<&str> = lines.iter().map(|l| l.split_whitespace().nth(2).unwrap()).collect();
    assert_eq!(
        names,
        [
            "numa_balancing",
            "transparent_hugepages",
            "cpu_governor",
            "gpu_irq_affinity",
            "pcie_link",
            "offline_cpus",
            "memory_headroom"
        ]
    );
    assert!(lines.iter().all(|l| l.starts_with("warning: doctor: ")), "{lines:?}");
    assert!(String::from_utf8_lossy(&plan.stdout)
        .contains("numactl:          numactl --cpunodebind=1 --membind=1"));
}

#[test]
fn probe_save_records_what_doctor_replays() {
    let tmp = tempfile::tempdir().unwrap();
    let snap = tmp.path().join("snap");
    let src = fixture("untuned-2node");
    let out = run(&["probe", "--from", src.to_str().unwrap(), "--save", snap.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    for rel in [
        "procfs/sys/kernel/numa_balancing",
        "procfs/irq/141/smp_affinity_list",
        "procfs/812/comm",
        "sysfs/bus/pci/devices/0000:18:00.0/msi_irqs/140",
        "sysfs/bus/pci/devices/0000:18:00.0/current_link_width",
        "sysfs/kernel/mm/transparent_hugepage/defrag",
        "sysfs/devices/system/cpu/cpu4/cpufreq/scaling_governor",
        "sysfs/devices/system/cpu/online",
    ] {
        assert!(snap.join(rel).is_file(), "{rel} not saved");
    }
    let strip = |o: &Output| -> Vec<(String, String, String)> {
        checks(o).into_iter().take(7).map(|(n, s, d, _)| (n, s, d)).collect()
    };
    assert_eq!(strip(&doctor_from(&snap)), strip(&doctor_from(&src)));

    // A live save records numa_balancing where the kernel has it, and replays to valid checks.
    let live = tmp.path().join("live");
    let out = run(&["probe", "--save", live.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let has = Path::new("/proc/sys/kernel/numa_balancing").exists();
    assert_eq!(live.join("procfs/sys/kernel/numa_balancing").is_file(), has);
    let replay = checks(&doctor_from(&live));
    assert_eq!(replay.iter().map(|c| c.0.as_str()).collect::<Vec<_>>(), NAMES);
}

/// A real H100 host (testdata/captures/h100-host/, `scripts/device/host-check.sh` on the GPU
/// machine): the snapshot its `probe --save` wrote replays to the verdicts `doctor` gave live
/// there (the PCIe link trained at x16 32 GT/s, the GPU's eight MSI interrupts on its node, no
/// cpufreq in that VM). Free memory moved between the two runs, and a replay has no engine.
#[test]
fn a_real_h100_snapshot_replays_to_the_verdicts_doctor_gave_live() {
    let cap = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/captures/h100-host");
    let live: Value =
        serde_json::from_str(&std::fs::read_to_string(cap.join("doctor-json.txt")).unwrap())
            .unwrap();
    let out = doctor_from(&cap.join("snapshot"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let replay = checks(&out);
    assert_eq!(replay.iter().map(|c| c.0.as_str()).collect::<Vec<_>>(), NAMES);
    for ((name, status, detail, _), l) in replay.iter().zip(live["checks"].as_array().unwrap()) {
        assert_eq!(
            (name.as_str(), status.as_str()),
            (l["name"].as_str().unwrap(), {
                if name == "engine_outside_plan" {
                    "unknown"
                } else {
                    l["status"].as_str().unwrap()
                }
            })
        );
        if !matches!(name.as_str(), "memory_headroom" | "engine_outside_plan") {
            assert_eq!(detail, l["detail"].as_str().unwrap(), "{name}");
        }
    }
    let got = |n: &str| replay.iter().find(|c| c.0 == n).unwrap().2.clone();
    assert_eq!(
        got("pcie_link"),
        "GPU 0: 0000:00:06.0 x16 of x16, 32.0 GT/s PCIe of 32.0 GT/s PCIe"
    );
    assert_eq!(
        got("gpu_irq_affinity"),
        "8 MSI interrupts of 1 GPU(s) on their node's CPUs; irqbalance not running"
    );
}

#[test]
fn garbled_settings_are_one_line_errors_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixture("tuned-2node");
    let snap = tmp.path().join("snap");
    let out = run(&["probe", "--from", src.to_str().unwrap(), "--save", snap.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::write(snap.join("procfs/irq/140/smp_affinity_list"), "4-x\n").unwrap();
    let out = doctor_from(&snap);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("procfs/irq/140/smp_affinity_list:1: bad cpu list: \"4-x\""), "{err}");
    std::fs::write(snap.join("procfs/irq/140/smp_affinity_list"), "4\n").unwrap();
    std::fs::write(snap.join("sysfs/kernel/mm/transparent_hugepage/defrag"), "madvise\n").unwrap();
    let err = stderr(&doctor_from(&snap));
    assert!(err.contains("transparent_hugepage/defrag:1: no [bracketed] choice"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// This machine's real files: every check answers with a valid status, in order, and the exit
/// status follows the fails. Nothing here depends on how this host is tuned.
#[test]
fn live_host_gives_a_valid_report() {
    let state = tempfile::tempdir().unwrap();
    let out = run(&["doctor", "--json", "--state-dir", state.path().to_str().unwrap()]);
    let c = checks(&out);
    assert_eq!(c.iter().map(|x| x.0.as_str()).collect::<Vec<_>>(), NAMES);
    for (name, status, detail, fix) in &c {
        assert!(["pass", "warn", "fail", "unknown"].contains(&status.as_str()), "{name}: {status}");
        assert!(!detail.is_empty() && !detail.contains('\n'), "{name}: {detail:?}");
        if status == "pass" || status == "unknown" {
            assert!(fix.is_none(), "{name} {status} with a fix");
        }
    }
    let any_fail = c.iter().any(|x| x.1 == "fail");
    assert_eq!(out.status.code(), Some(if any_fail { 1 } else { 0 }), "{}", stderr(&out));
    // No agent in an empty state dir: the engine check cannot know.
    assert_eq!(c[7].1, "unknown");
    assert!(c[7].2.starts_with("no serve status: "), "{}", c[7].2);
    // numa_balancing agrees with the kernel's own file.
    match std::fs::read_to_string("/proc/sys/kernel/numa_balancing") {
        Ok(v) if v.trim() == "0" => assert_eq!(c[0].1, "pass"),
        Ok(_) => assert!(c[0].1 == "warn" || c[0].1 == "fail"),
        Err(_) => assert_eq!(c[0].1, "unknown"),
    }
    // The table form carries the same names.
    let text = run(&["doctor", "--state-dir", state.path().to_str().unwrap()]);
    let text = String::from_utf8_lossy(&text.stdout);
    for name in NAMES {
        assert!(text.contains(name), "{name} missing from\n{text}");
    }
}

#[path = "support/agent.rs"]
mod agent;

/// A real `nodeagent serve` of the simulator, bound to CPU 0 (this machine has no GPU, so the
/// plan has no binding to hold it against): doctor asks it over its socket and finds every
/// engine process inside the binding, and the status record carries the placement audit.
#[test]
fn engine_check_asks_a_running_serve() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let config = dir.path().join("nodeagent.toml");
    let argv: Vec<String> = [
        "{self}",
        "simulate",
        "--host",
        "127.0.0.1",
        "--port",
        "{port}",
        "--served-model-name",
        "{served_model_name}",
        "--workers",
        "1",
        "--worker-memory-mb",
        "16",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    agent::write_config(
        &config,
        &state,
        &argv,
        "binding_check_interval = \"200ms\"\nstop_grace = \"3s\"\n\n[binding]\ncpus = \"0\"\nmem_policy = \"bind\"\nmem_nodes = [0]\n",
    );
    let err = std::fs::File::create(dir.path().join("serve.err")).unwrap();
    let child = Command::new(agent::BIN)
        .args(["serve", "--config", config.to_str().unwrap()])
        .env("NODEAGENT_TEST_MARK", dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(err)
        .spawn()
        .unwrap();
    let st = agent::wait_for("serve ready with a placement audit", Duration::from_secs(60), || {
        let s = agent::status(&state, &[])?;
        (s["state"] == "ready" && s["memory_by_node"]["0"].as_u64()? >= 16 << 20).then_some(s)
    });
    assert_eq!(st["memory_off_node_share"].as_f64(), Some(0.0), "{st}");
    assert_eq!(st["memory_off_node_alert"], false);
    let out = run(&["doctor", "--json", "--state-dir", state.to_str().unwrap()]);
    let c = checks(&out);
    agent::stop_child(Some(child), Duration::from_secs(10));
    agent::kill_marked(dir.path());
    let engine = c.iter().find(|x| x.0 == "engine_outside_plan").unwrap();
    assert_eq!(
        (engine.1.as_str(), engine.2.as_str()),
        ("pass", "engine inside its binding (CPUs 0 memory 0)"),
        "{}",
        std::fs::read_to_string(dir.path().join("serve.err")).unwrap_or_default()
    );
}
