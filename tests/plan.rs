//! `nodeagent probe` / `plan` end to end: golden JSON for every host snapshot in
//! `testdata/hosts/`, the seed's expected binding, clean errors for bad input, `--save` then
//! `--from` round trip, and live probing of this machine (the sources must agree).
//!
//! `UPDATE_GOLDEN=1 cargo test --test plan` rewrites the golden files after a deliberate change.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_nodeagent"))
}

fn hosts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/hosts")
}

fn run(args: &[&str]) -> Output {
    // Help text wraps at the terminal width: pin it.
    bin().env("COLUMNS", "100").args(args).output().expect("run nodeagent")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Compares `actual` with the golden file, or rewrites it under `UPDATE_GOLDEN=1`.
fn golden(path: &Path, actual: &str) -> Result<(), String> {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(path, actual).unwrap();
        return Ok(());
    }
    let expected = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: {e} (run with UPDATE_GOLDEN=1 to create it)", path.display()))?;
    if expected != actual {
        let line = expected.lines().zip(actual.lines()).position(|(a, b)| a != b).unwrap_or(0);
        return Err(format!(
            "{} differs from the output (first difference at line {}); UPDATE_GOLDEN=1 rewrites it",
            path.display(),
            line + 1
        ));
    }
    Ok(())
}

fn host_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(hosts_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn golden_plan_and_probe_json_for_every_host() {
    let mut failures = Vec::new();
    let dirs = host_dirs();
    assert!(dirs.len() >= 10, "expected the fixture hosts, found {dirs:?}");
    for dir in dirs {
        let d = dir.to_str().unwrap();
        for (cmd, file) in [("plan", "plan.json"), ("probe", "probe.json")] {
            let out = run(&[cmd, "--from", d, "--json"]);
            assert!(out.status.success(), "{cmd} --from {d}: {}", stderr(&out));
            if let Err(e) = golden(&dir.join(file), &stdout(&out)) {
                failures.push(e);
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn seed_host_plan_is_the_reports_binding_with_reasons() {
    let dir = hosts_dir().join("seed-4xmxc500");
    let out = run(&["plan", "--from", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("numactl --cpunodebind=0 --membind=0"), "{text}");
    assert!(text.contains("numactl -N0 -m0"), "{text}");
    assert!(text.contains("--cpuset-cpus=0-15 --cpuset-mems=0"), "{text}");
    assert!(
        text.contains("GPU0 (0000:05:00.0) hangs off NUMA node 0: mx-smi-topo-m.txt line 4"),
        "{text}"
    );
    assert!(text.contains("node 0 has CPUs 0-15: numactl-hardware.txt line 2"), "{text}");

    // The JSON contract.
    let out = run(&["plan", "--from", dir.to_str().unwrap(), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let inst = &v["instances"][0];
    assert_eq!(inst["gpus"], serde_json::json!([0, 1, 2, 3]));
    assert_eq!(inst["cpunodebind"], serde_json::json!([0]));
    assert_eq!(inst["membind"], serde_json::json!([0]));
    assert_eq!(inst["cpus"], "0-15");
    assert_eq!(inst["numactl"], "numactl --cpunodebind=0 --membind=0");
    assert_eq!(inst["docker_args"], serde_json::json!(["--cpuset-cpus=0-15", "--cpuset-mems=0"]));
    assert_eq!(v["gpus"][2]["bus_id"], "0000:0e:00.0");
    assert_eq!(v["gpus"][2]["numa_node"], 0);
    assert_eq!(v["gpus"][2]["cpu_affinity"], "0-15");
    assert_eq!(v["numa_nodes"][0]["memory_free_mb"], 4950);
    assert_eq!(v["numa_nodes"][7]["cpus"], "112-127");
    assert!(v["warnings"].is_array());

    // The seed's node 0 had 4.9 GB free: a 16 GB need switches to --preferred.
    let out = run(&["plan", "--from", dir.to_str().unwrap(), "--host-memory-gb", "16"]);
    assert!(stdout(&out).contains("numactl --cpunodebind=0 --preferred=0"), "{}", stdout(&out));
}

/// The expected node of every fixture, as its source states it (`testdata/hosts/README.md`).
#[test]
fn every_fixture_host_gives_the_expected_nodes() {
    type Case<'a> = (&'a str, &'a [&'a str], &'a [(&'a str, &'a str)]);
    let cases: &[Case<'_>] = &[
        ("ms-swift-8xc500", &[], &[("0,1,2,3,4,5,6,7", "numactl --cpunodebind=0 --membind=0")]),
        (
            "dgxa100-8gpu",
            &["--tp", "2"],
            &[
                ("0,1", "numactl --cpunodebind=3 --membind=3"),
                ("2,3", "numactl --cpunodebind=1 --membind=1"),
                ("4,5", "numactl --cpunodebind=7 --membind=7"),
                ("6,7", "numactl --cpunodebind=5 --membind=5"),
            ],
        ),
        (
            "h200-hgx-8gpu",
            &["--instances", "2"],
            &[
                ("0,1,2,3", "numactl --cpunodebind=0 --membind=0"),
                ("4,5,6,7", "numactl --cpunodebind=1 --membind=1"),
            ],
        ),
        ("club3090-2x5090", &[], &[("0,1", "numactl --cpunodebind=0 --membind=0")]),
        (
            "stelline-4xrtx6000ada",
            &["--tp", "2"],
            &[
                ("0,1", "numactl --cpunodebind=0 --membind=0"),
                ("2,3", "numactl --cpunodebind=1 --membind=1"),
            ],
        ),
        (
            "threadripper-nps4-memoryless",
            &[],
            &[("0", "numactl --physcpubind=0-5,24-29 --membind=2")],
        ),
        ("grace-hopper-9node", &[], &[("0", "numactl --cpunodebind=0 --membind=0")]),
        ("h100-2gpu-vm", &[], &[("0,1", "numactl --cpunodebind=0 --membind=0")]),
        (
            "hwloc-32em64t-2n8c2t-pci-normalio",
            &["--gpus", "1,2"],
            &[("1,2", "numactl --cpunodebind=1 --membind=1")],
        ),
    ];
    for (host, extra, expected) in cases {
        let dir = hosts_dir().join(host);
        let mut args = vec!["plan", "--json", "--from", dir.to_str().unwrap()];
        args.extend_from_slice(extra);
        let out = run(&args);
        assert!(out.status.success(), "{host}: {}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let got: Vec<(String, String)> = v["instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                let gpus: Vec<String> =
                    i["gpus"].as_array().unwrap().iter().map(|g| g.to_string()).collect();
                (gpus.join(","), i["numactl"].as_str().unwrap_or("none").to_string())
            })
            .collect();
        let want: Vec<(String, String)> =
            expected.iter().map(|(g, n)| (g.to_string(), n.to_string())).collect();
        assert_eq!(got, want, "{host}");
    }
    // Unknown affinity: no binding, and the JSON says so with null.
    let dir = hosts_dir().join("ernie-8xc550");
    let out = run(&["plan", "--json", "--from", dir.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["instances"][0]["numactl"].is_null());
    assert_eq!(v["gpus"][0]["numa_node"], serde_json::Value::Null);
    // rocm-smi: GPU i on node i.
    let dir = hosts_dir().join("rocm-4gpu-xgmi");
    let out = run(&["probe", "--json", "--from", dir.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let nodes: Vec<i64> =
        v["gpus"].as_array().unwrap().iter().map(|g| g["numa_node"].as_i64().unwrap()).collect();
    assert_eq!(nodes, [0, 1, 2, 3]);
}

fn assert_bad_input(out: &Output, needle: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert!(err.starts_with("error: "), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains(needle), "expected {needle:?} in {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_inputs_give_one_line_errors_with_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope");
    assert_bad_input(
        &run(&["plan", "--from", missing.to_str().unwrap()]),
        "not a readable directory",
    );
    assert_bad_input(
        &run(&["probe", "--from", tmp.path().to_str().unwrap()]),
        "none of the snapshot files",
    );

    // Garbage in numactl output: file and line.
    let snap = tmp.path().join("garbled");
    std::fs::create_dir(&snap).unwrap();
    std::fs::write(
        snap.join("numactl-hardware.txt"),
        "available: 1 nodes (0)\nnode 0 cpus: 0 1 x\n",
    )
    .unwrap();
    assert_bad_input(&run(&["plan", "--from", snap.to_str().unwrap()]), "numactl-hardware.txt:2:");

    // Truncated topology output.
    let seed = hosts_dir().join("seed-4xmxc500");
    let snap = tmp.path().join("truncated");
    std::fs::create_dir(&snap).unwrap();
    let topo = std::fs::read_to_string(seed.join("mx-smi-topo-m.txt")).unwrap();
    std::fs::write(snap.join("mx-smi-topo-m.txt"), &topo[..40]).unwrap();
    assert_bad_input(&run(&["plan", "--from", snap.to_str().unwrap()]), "mx-smi-topo-m.txt:");

    // Garbage in a sysfs file.
    let snap = tmp.path().join("badsysfs");
    let node = snap.join("sysfs/devices/system/node/node0");
    std::fs::create_dir_all(&node).unwrap();
    std::fs::write(node.join("cpulist"), "0-zz\n").unwrap();
    assert_bad_input(&run(&["probe", "--from", snap.to_str().unwrap()]), "node0/cpulist:1:");

    // Plan requests that cannot be met.
    assert_bad_input(
        &run(&["plan", "--from", seed.to_str().unwrap(), "--gpus", "9"]),
        "there is no GPU 9",
    );
    assert_bad_input(&run(&["plan", "--from", seed.to_str().unwrap(), "--tp", "3"]), "--tp 3");
    assert_bad_input(
        &run(&["plan", "--from", seed.to_str().unwrap(), "--gpu-pci", "zz"]),
        "--gpu-pci",
    );
}

#[test]
fn live_tools_missing_failing_or_hanging() {
    let tmp = tempfile::tempdir().unwrap();
    let hang = tmp.path().join("hang-smi");
    std::fs::write(&hang, "#!/bin/sh\nexec sleep 30\n").unwrap();
    let fail = tmp.path().join("fail-smi");
    std::fs::write(&fail, "#!/bin/sh\necho 'driver not loaded' >&2\nexit 9\n").unwrap();
    for p in [&hang, &fail] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let base = ["probe", "--no-hwloc", "--tool-timeout", "300ms"];
    let with = |flag: &str, p: &Path| {
        let mut a: Vec<String> = base.iter().map(|s| s.to_string()).collect();
        a.push(flag.into());
        a.push(p.to_str().unwrap().into());
        bin().args(&a).output().unwrap()
    };
    assert_bad_input(&with("--mx-smi", &hang), "no answer within 300ms");
    assert_bad_input(&with("--nvidia-smi", &fail), "exited with status 9: driver not loaded");
    // A tool named by path must exist.
    assert_bad_input(
        &with("--numactl", Path::new("/nonexistent/numactl")),
        "/nonexistent/numactl: not found",
    );
    // numactl is optional: absent from PATH is a warning, the probe goes on from sysfs.
    let out = bin().args(base).env("PATH", tmp.path()).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("numactl: not found"), "{}", stdout(&out));
}

/// A GPU of a vendor nodeagent does not know, named by `--gpu-pci`, read live from an injected
/// sysfs root (QEMU's layout: a display device on node 1 of a two-node guest).
#[test]
fn gpu_pci_names_an_unknown_device_in_an_injected_sysfs() {
    let tmp = tempfile::tempdir().unwrap();
    let w = |rel: &str, text: &str| {
        let p = tmp.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    for (id, cpus, dist) in [(0, "0-1", "10 20"), (1, "2-3", "20 10")] {
        let d = format!("devices/system/node/node{id}");
        w(&format!("{d}/cpulist"), cpus);
        w(&format!("{d}/distance"), dist);
        w(
            &format!("{d}/meminfo"),
            &format!("Node {id} MemTotal: 1048576 kB\nNode {id} MemFree: 900000 kB\n"),
        );
    }
    let dev = "bus/pci/devices/0000:41:01.0";
    w(&format!("{dev}/class"), "0x030000\n");
    w(&format!("{dev}/vendor"), "0x1234\n");
    w(&format!("{dev}/numa_node"), "1\n");
    w(&format!("{dev}/local_cpulist"), "2-3\n");
    let root = tmp.path().to_str().unwrap();
    let base = ["--sysfs-root", root, "--no-hwloc"];
    // No GPU tool and no numactl on PATH: this machine's own numactl would describe this
    // machine, not the injected tree.
    let run =
        |args: &[&str]| bin().env("PATH", tmp.path().join("empty")).args(args).output().unwrap();
    // Vendor 0x1234 is no GPU vendor: without --gpu-pci there is nothing to plan.
    let mut args = vec!["plan"];
    args.extend_from_slice(&base);
    assert_bad_input(&run(&args), "no GPUs found");
    let mut missing = args.clone();
    missing.extend_from_slice(&["--gpu-pci", "0000:99:00.0"]);
    assert_bad_input(&run(&missing), "--gpu-pci 0000:99:00.0: no such PCI device");
    // Regression: a typo next to a real device used to plan for the real one with exit 0.
    missing.extend_from_slice(&["--gpu-pci", "0000:41:01.0"]);
    assert_bad_input(&run(&missing), "--gpu-pci 0000:99:00.0: no such PCI device");
    args.extend_from_slice(&["--gpu-pci", "41:01.0", "--json"]);
    let out = run(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["gpus"][0]["bus_id"], "0000:41:01.0");
    assert_eq!(v["instances"][0]["numactl"], "numactl --cpunodebind=1 --membind=1");
    assert_eq!(
        v["instances"][0]["docker_args"],
        serde_json::json!(["--cpuset-cpus=2-3", "--cpuset-mems=1"])
    );
    // And --save writes the sysfs files read, at their paths.
    let snap = tmp.path().join("snap");
    let mut args = vec!["probe", "--save", snap.to_str().unwrap(), "--gpu-pci", "0000:41:01.0"];
    args.extend_from_slice(&base);
    assert!(run(&args).status.success());
    let saved = std::fs::read_to_string(snap.join("sysfs").join(dev).join("numa_node")).unwrap();
    assert_eq!(saved, "1\n");
    // ... and the --gpu-pci list, so the replay needs no flag and plans the same.
    assert_eq!(std::fs::read_to_string(snap.join("gpu-pci.txt")).unwrap(), "0000:41:01.0\n");
    let replay = run(&["plan", "--json", "--from", snap.to_str().unwrap()]);
    assert!(replay.status.success(), "{}", stderr(&replay));
    let r: serde_json::Value = serde_json::from_slice(&replay.stdout).unwrap();
    assert_eq!(r["instances"][0]["numactl"], "numactl --cpunodebind=1 --membind=1");
    assert!(!r["sources"].to_string().contains("gpu-pci"), "the user's list is no host source");
    // A damaged list is a one-line error naming the file and line.
    std::fs::write(snap.join("gpu-pci.txt"), "# GPUs\n0000:41:01.0\nnot-a-bus\n").unwrap();
    let bad = run(&["plan", "--from", snap.to_str().unwrap()]);
    assert_bad_input(&bad, "gpu-pci.txt:3: \"not-a-bus\" is not a PCI bus id");
}

#[test]
fn save_then_replay_gives_the_same_model() {
    let tmp = tempfile::tempdir().unwrap();
    let snap = tmp.path().join("snap");
    let live = run(&["probe", "--json", "--save", snap.to_str().unwrap()]);
    assert!(live.status.success(), "{}", stderr(&live));
    for f in ["numactl-hardware.txt", "hwloc.xml", "sysfs/devices/system/node/node0/cpulist"] {
        assert!(snap.join(f).is_file(), "{f} missing from the snapshot");
    }
    let replay = run(&["probe", "--json", "--from", snap.to_str().unwrap()]);
    assert!(replay.status.success(), "{}", stderr(&replay));
    let a: serde_json::Value = serde_json::from_slice(&live.stdout).unwrap();
    let b: serde_json::Value = serde_json::from_slice(&replay.stdout).unwrap();
    assert_eq!(a["numa_nodes"], b["numa_nodes"]);
    assert_eq!(a["gpus"], b["gpus"]);
}

/// This machine: one NUMA node, no GPU. sysfs, numactl and hwloc must all be read and agree.
#[test]
fn live_probe_sources_agree_on_this_machine() {
    let out = run(&["probe", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sources: Vec<&str> =
        v["sources"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    for s in ["numactl-hardware.txt", "sysfs/", "hwloc.xml"] {
        assert!(sources.contains(&s), "{s} not among {sources:?}");
    }
    let warnings = v["warnings"].as_array().unwrap();
    assert!(warnings.is_empty(), "sources disagree: {warnings:?}");
    let online = std::fs::read_to_string("/sys/devices/system/node/online").unwrap();
    let n_nodes = nodeagent::host::cpuset::CpuSet::parse_list(online.trim()).unwrap().len();
    assert_eq!(v["numa_nodes"].as_array().unwrap().len(), n_nodes);
    let cpus = v["numa_nodes"][0]["cpus"].as_str().unwrap();
    assert!(!cpus.is_empty());
}

#[test]
fn instances_on_one_node_get_disjoint_cores_unless_shared() {
    let from = hosts_dir().join("ms-swift-8xc500");
    let cpus_and_reason = |extra: &[&str]| -> Vec<(String, String)> {
        let mut args = vec!["plan", "--from", from.to_str().unwrap(), "--tp", "4", "--json"];
        args.extend(extra);
        let out = run(&args);
        let plan: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        plan["instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                let reasons = i["reasons"].as_array().unwrap();
                let last = reasons.last().unwrap().as_str().unwrap().to_string();
                (i["cpus"].as_str().unwrap().to_string(), last)
            })
            .collect()
    };
    let split = cpus_and_reason(&[]);
    assert_eq!(split[0].0, "0-15,64-79");
    assert_eq!(split[1].0, "16-31,80-95");
    assert!(
        split[0].1.contains("split by GPU count") && split[0].1.contains("SMT siblings unknown"),
        "{}",
        split[0].1
    );
    let shared = cpus_and_reason(&["--share-cores"]);
    assert_eq!(shared[0].0, "0-31,64-95");
    assert_eq!(shared[1].0, "0-31,64-95");
    assert!(shared[1].1.contains("share cores: the union is kept"), "{}", shared[1].1);
}

/// The JSON `instances[].cpus` and reasons of `plan --from HOST --json ARGS`.
fn instance_cpus(host: &str, args: &[&str]) -> Vec<(String, Vec<String>)> {
    let from = hosts_dir().join(host);
    let mut all = vec!["plan", "--from", from.to_str().unwrap(), "--json"];
    all.extend(args);
    let out = run(&all);
    assert!(out.status.success(), "{}", stderr(&out));
    let plan: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    plan["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let reasons = i["reasons"].as_array().unwrap();
            let reasons = reasons.iter().map(|r| r.as_str().unwrap().to_string()).collect();
            (i["cpus"].as_str().unwrap().to_string(), reasons)
        })
        .collect()
}

/// hwloc-32em64t-2n8c2t: 2 threads per core, siblings `n` and `n + 16`; GPUs 1-3 share node
/// 1's CPUs 8-15,24-31. Each instance's part holds both threads of each of its cores.
#[test]
fn smt_siblings_stay_together_when_a_node_is_split_by_hwloc_cores() {
    let host = "hwloc-32em64t-2n8c2t-pci-normalio";
    let plan = instance_cpus(host, &["--tp", "1"]);
    let cpus: Vec<&str> = plan.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(cpus, ["0-7,16-23", "8-9,24-25", "10-12,26-28", "13-15,29-31"]);
    let why = plan[1].1.last().unwrap();
    assert!(
        why.contains("split by GPU count in whole cores (SMT siblings together, from hwloc.xml (Core objects))"),
        "{why}"
    );

    // A reserve of 1 CPU takes each node's first whole core (0,16 and 8,24), then node 1's
    // other 7 cores are split.
    let plan = instance_cpus(host, &["--tp", "1", "--reserve-cpus", "1"]);
    let cpus: Vec<&str> = plan.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(cpus, ["1-7,17-23", "9-10,25-26", "11-12,27-28", "13-15,29-31"]);
    assert!(plan[0].1.iter().any(|r| r.contains("CPUs 0,16 are left out")), "{:?}", plan[0].1);
    assert!(plan[3].1.iter().any(|r| r.contains("CPUs 8,24 are left out")), "{:?}", plan[3].1);
}

#[test]
fn a_reserve_that_leaves_an_instance_no_cpu_is_refused() {
    let from = hosts_dir().join("hwloc-32em64t-2n8c2t-pci-normalio");
    let out = run(&["plan", "--from", from.to_str().unwrap(), "--reserve-cpus", "16"]);
    assert_bad_input(&out, "--reserve-cpus 16: a reserve of 16 CPU(s) per NUMA node leaves the instance of GPUs 0,1,2,3 no CPU");
    // Without known cores (mx-smi only), the reserve presumes 0,64 one core.
    let plan = instance_cpus("ms-swift-8xc500", &["--tp", "4", "--reserve-cpus", "2"]);
    let cpus: Vec<&str> = plan.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(cpus, ["1-15,65-79", "16-31,80-95"]);
    assert!(plan[0].1.iter().any(|r| r.contains("SMT siblings unknown")), "{:?}", plan[0].1);
}

#[test]
fn plan_help_is_pinned() {
    let out = run(&["plan", "--help"]);
    let help = stdout(&out);
    for flag in [
        "--from",
        "--gpus",
        "--instances",
        "--tp",
        "--host-memory-gb",
        "--share-cores",
        "--reserve-cpus",
        "--json",
        "--gpu-pci",
        "--tool-timeout",
    ] {
        assert!(help.contains(flag), "{flag} missing from plan --help");
    }
    golden(&Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/plan-help.txt"), &help).unwrap();
}

mod pipeline {
    use super::hosts_dir;
    use nodeagent::host::runner::SystemRunner;
    use nodeagent::host::{gather, SourceOptions};
    use nodeagent::plan::{plan, PlanRequest};
    use nodeagent::topology;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Whatever a snapshot holds, gather -> model -> plan returns a value or an error, never
        /// a panic.
        #[test]
        fn mangled_snapshot_never_panics(which in 0usize..3, at in 0usize..1200, junk in "\\PC{0,12}", cut in any::<bool>()) {
            let seed = hosts_dir().join("seed-4xmxc500");
            let tmp = tempfile::tempdir().unwrap();
            let names = ["mx-smi.txt", "mx-smi-topo-m.txt", "numactl-hardware.txt"];
            for (i, name) in names.iter().enumerate() {
                let mut text = std::fs::read_to_string(seed.join(name)).unwrap();
                if i == which {
                    let mut at = at.min(text.len());
                    while !text.is_char_boundary(at) { at -= 1; }
                    if cut { text.truncate(at); } else { text.insert_str(at, &junk); }
                }
                std::fs::write(tmp.path().join(name), text).unwrap();
            }
            let opts = SourceOptions { from: Some(tmp.path().to_path_buf()), ..SourceOptions::default() };
            if let Ok(facts) = gather(&opts, &SystemRunner) {
                let topo = topology::build(&facts);
                let _ = plan(&topo, &PlanRequest::default());
            }
        }
    }
}

/// MetaX installs `mx-smi` under `/opt/mxdriver/bin`, which is often not on PATH: live probing
/// finds it there (the driver path is injectable; here a script that prints the seed's output).
#[test]
fn mx_smi_is_found_at_the_driver_path_when_not_on_path() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let seed = hosts_dir().join("seed-4xmxc500");
    let script = tmp.path().join("mx-smi");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nif [ \"$1\" = topo ]; then cat {}; else cat {}; fi\n",
            seed.join("mx-smi-topo-m.txt").display(),
            seed.join("mx-smi.txt").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let opts = nodeagent::host::SourceOptions {
        mx_smi: "nodeagent-test-no-such-mx-smi".into(),
        mx_smi_driver: script.clone(),
        sysfs_root: seed.join("sysfs"),
        hwloc: false,
        ..Default::default()
    };
    let runner = nodeagent::host::runner::SystemRunner;
    // A non-default name that is missing is an error; the driver path is only a fallback for
    // the default name.
    assert!(nodeagent::host::gather(&opts, &runner).is_err());
    let opts = nodeagent::host::SourceOptions { mx_smi: "mx-smi".into(), ..opts };
    let facts = nodeagent::host::gather(&opts, &runner).unwrap();
    assert_eq!(facts.vendor, nodeagent::host::facts::Vendor::Metax, "{}", facts.vendor_evidence);
    assert!(facts.vendor_evidence.contains(script.to_str().unwrap()), "{}", facts.vendor_evidence);
    assert_eq!(
        facts.raw.mx_smi.as_deref().map(str::len),
        Some(std::fs::read_to_string(seed.join("mx-smi.txt")).unwrap().len())
    );
}

/// Issue 15 item 6: TP8 over the DGX A100's four GPU nodes gets a per-rank layout, two ranks
/// per node on disjoint halves of it; one instance per node (`--tp 2`) gets none.
#[test]
fn an_instance_over_several_nodes_gets_a_per_rank_layout() {
    let from = hosts_dir().join("dgxa100-8gpu");
    let ranks = |extra: &[&str]| -> Vec<serde_json::Value> {
        let mut args = vec!["plan", "--from", from.to_str().unwrap(), "--json"];
        args.extend(extra);
        let out = run(&args);
        assert!(out.status.success(), "{}", stderr(&out));
        let plan: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        plan["instances"].as_array().unwrap().iter().map(|i| i["ranks"].clone()).collect()
    };
    let tp8 = ranks(&[]);
    let got: Vec<(u64, u64, u64, String, u64)> = tp8[0]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["rank"].as_u64().unwrap(),
                r["gpu"].as_u64().unwrap(),
                r["node"].as_u64().unwrap(),
                r["cpus"].as_str().unwrap().to_string(),
                r["memory_node"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got[0], (0, 0, 3, "48-55,176-183".into(), 3));
    assert_eq!(got[1], (1, 1, 3, "56-63,184-191".into(), 3));
    assert_eq!(got[2], (2, 2, 1, "16-23,144-151".into(), 1));
    assert_eq!(got[7], (7, 7, 5, "88-95,216-223".into(), 5));
    assert_eq!(got.len(), 8);
    assert!(ranks(&["--tp", "2"]).iter().all(|r| r.is_null()), "one node per instance: no ranks");
    let text = stdout(&run(&["plan", "--from", from.to_str().unwrap()]));
    assert!(
        text.contains("  rank 2:           GPU2 node 1 CPUs 16-23,144-151 memory node 1\n"),
        "{text}"
    );
    assert!(text.contains("per-rank binding: the instance spans nodes 1,3,5,7"), "{text}");
}

/// Audit of wave 9: a snapshot file or a `--compare-result` that is a device (`/dev/zero` filled
/// memory until the kernel killed nodeagent) or a fifo (the read blocked forever) is a one-line
/// error naming the file, exit 2.
#[test]
fn snapshot_files_and_compare_results_that_are_no_regular_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("snap");
    std::fs::create_dir(&snap).unwrap();
    let seed = hosts_dir().join("seed-4xmxc500");
    for f in ["mx-smi.txt", "mx-smi-topo-m.txt"] {
        std::fs::copy(seed.join(f), snap.join(f)).unwrap();
    }
    std::os::unix::fs::symlink("/dev/zero", snap.join("numactl-hardware.txt")).unwrap();
    let fifo = dir.path().join("compare.json");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let seed = seed.to_str().unwrap();
    let cases: [(Vec<&str>, &str); 3] = [
        (
            vec!["plan", "--from", snap.to_str().unwrap()],
            "numactl-hardware.txt: unreadable: not a regular file (a device)",
        ),
        (vec!["doctor", "--from", snap.to_str().unwrap()], "not a regular file (a device)"),
        (
            vec![
                "plan",
                "--from",
                seed,
                "--format",
                "nfd",
                "--compare-result",
                fifo.to_str().unwrap(),
            ],
            "compare.json: cannot read: not a regular file (a fifo)",
        ),
    ];
    for (args, says) in cases {
        let mut child = bin()
            .args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let start = std::time::Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if start.elapsed() > std::time::Duration::from_secs(30) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{args:?}: still running after 30 s");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        assert_eq!(status.code(), Some(2), "{args:?}: {err}");
        assert!(err.starts_with("error: ") && err.contains(says), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    }
}
