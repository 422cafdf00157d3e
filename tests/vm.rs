//! Real multi-NUMA kernels under QEMU: proves that probing reads a multi-node machine right and
//! that the binding nodeagent recommends really lands on the right CPUs and memory, and that the
//! engine's cgroup contains and kills it on a pure cgroup v2 kernel (`cgroup.kill`).
//!
//! Each test boots one VM (`tests/vm/run-vm.sh`: Debian's kernel, an initramfs with busybox,
//! numactl and the freshly built `nodeagent`) with a topology from docs NUMA-VM.md, runs a
//! scenario script from `tests/vm/` inside it, and judges the framed sections it prints. The
//! scenario only collects; every assertion lives here. Logs of the last run stay under
//! `target/tmp/vm/<test>/` (console.log, results.log).
//!
//! Without qemu the tests are skipped with a message, except under `CI=true`, where that is a
//! failure: CI installs qemu (`scripts/setup.sh test`), so its absence there is a broken setup.
//! Timing inside the VM means nothing (software emulation): correctness only. What the tests
//! cost is another matter: each boot's `timings.log` (next to its logs; one line per VM with
//! `--nocapture`) says where its wall time went, and CONTRIBUTING.md ("Where the time goes")
//! what was cut and what is left.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One framed section of the scenario's output.
#[derive(Debug, Clone)]
struct Section {
    stdout: String,
    stderr: String,
    rc: i32,
}

/// The results of one VM boot.
#[derive(Debug)]
struct VmRun {
    sections: BTreeMap<String, Section>,
    results: PathBuf,
}

impl VmRun {
    fn section(&self, name: &str) -> &Section {
        self.sections.get(name).unwrap_or_else(|| {
            panic!("the VM printed no section '{name}' (see {})", self.results.display())
        })
    }

    /// A section that must have succeeded; its stdout.
    fn ok(&self, name: &str) -> &str {
        let s = self.section(name);
        assert_eq!(
            s.rc,
            0,
            "section '{name}' failed in the VM (rc {}): {}\n{}",
            s.rc,
            s.stderr.trim(),
            self.results.display()
        );
        &s.stdout
    }
}

/// Parses the scenario output (`results.log`, read off the VM's second serial port):
///
/// ```text
/// @@NA-VM-START@@
/// @@NA-BEGIN numactl-hardware@@
/// available: 2 nodes (0-1)
/// @@NA-STDERR numactl-hardware@@
/// @@NA-END numactl-hardware rc=0@@
/// @@NA-VM-DONE rc=0@@
/// ```
///
/// Markers are matched anywhere in a line: a serial line may carry terminal noise before them.
fn parse_results(text: &str) -> Result<BTreeMap<String, Section>, String> {
    let mut sections = BTreeMap::new();
    let mut current: Option<(String, String, Option<String>)> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end_matches('\r');
        if let Some(pos) = line.find("@@NA-BEGIN ") {
            let name = line[pos + 11..].trim_end_matches("@@").to_string();
            current = Some((name, String::new(), None));
        } else if line.contains("@@NA-STDERR ") {
            match current.as_mut() {
                Some((_, _, err)) => *err = Some(String::new()),
                None => return Err(format!("line {}: stderr marker outside a section", i + 1)),
            }
        } else if let Some(pos) = line.find("@@NA-END ") {
            let rest = line[pos + 9..].trim_end_matches("@@");
            let (name, rc) = rest
                .rsplit_once(" rc=")
                .ok_or_else(|| format!("line {}: malformed end marker '{line}'", i + 1))?;
            let rc: i32 =
                rc.parse().map_err(|_| format!("line {}: bad exit status in '{line}'", i + 1))?;
            let (open, stdout, stderr) = current
                .take()
                .ok_or_else(|| format!("line {}: end marker outside a section", i + 1))?;
            if open != name {
                return Err(format!("line {}: section '{open}' ended as '{name}'", i + 1));
            }
            sections.insert(
                name.to_string(),
                Section { stdout, stderr: stderr.unwrap_or_default(), rc },
            );
        } else if let Some((_, out, err)) = current.as_mut() {
            let buf = err.as_mut().unwrap_or(out);
            buf.push_str(line);
            buf.push('\n');
        }
    }
    if let Some((name, ..)) = current {
        return Err(format!("section '{name}' never ended (the VM stopped in it?)"));
    }
    Ok(sections)
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Whether the VM tests can run here. Missing tools skip the test (returning false) on a
/// developer machine, and fail it under CI, where `scripts/setup.sh test` installs them.
fn vm_tools_present(test: &str) -> bool {
    let missing: Vec<&str> = ["qemu-system-x86_64", "busybox", "cpio", "numactl"]
        .into_iter()
        .filter(|tool| {
            !std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
                .unwrap_or(false)
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    let msg = format!(
        "{test}: cannot boot the NUMA VM: {} not found (install qemu-system-x86 busybox-static cpio numactl: scripts/setup.sh test)",
        missing.join(", ")
    );
    let ci =
        std::env::var("CI").map(|v| !v.is_empty() && v != "false" && v != "0").unwrap_or(false);
    assert!(!ci, "{msg}");
    eprintln!("SKIPPED {msg}");
    false
}

/// Boots `topology` with `tests/vm/<scenario>` and returns its parsed sections.
fn boot(test: &str, topology: &str, scenario: &str, extra: &[(&Path, &str)]) -> VmRun {
    boot_with(test, topology, scenario, extra, 300)
}

/// `boot` with a hard timeout of `timeout_s` seconds.
fn boot_with(
    test: &str,
    topology: &str,
    scenario: &str,
    extra: &[(&Path, &str)],
    timeout_s: u32,
) -> VmRun {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("vm").join(test);
    std::fs::create_dir_all(&out).unwrap();
    let mut cmd = Command::new(repo().join("tests/vm/run-vm.sh"));
    cmd.arg("--topology")
        .arg(topology)
        .arg("--scenario")
        .arg(repo().join("tests/vm").join(scenario))
        .arg("--bin")
        .arg(env!("CARGO_BIN_EXE_nodeagent"))
        .arg("--out")
        .arg(&out)
        .arg("--timeout")
        .arg(timeout_s.to_string());
    for (src, dest) in extra {
        cmd.arg("--file").arg(format!("{}:{dest}", src.display()));
    }
    let res = cmd.output().expect("cannot run tests/vm/run-vm.sh");
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(res.status.success(), "{test}: the {topology} VM failed: {}", stderr.trim());
    // Where the time went (`--nocapture` shows it; timings.log has it per section).
    for line in stderr.lines().filter(|l| l.contains(" timings: ")) {
        eprintln!("{test}: {line}");
    }
    let results = out.join("results.log");
    let text = std::fs::read_to_string(&results).unwrap();
    let sections = parse_results(&text).unwrap_or_else(|e| panic!("{}: {e}", results.display()));
    VmRun { sections, results }
}

/// run-vm.sh's `timings.log` accounts for the boot, the scenario and every section the VM
/// printed, each with a start, a duration and the unframed time before it.
fn assert_timings(vm: &VmRun) {
    let path = vm.results.with_file_name("timings.log");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    for phase in
        ["host  initramfs built", "host  qemu ran", "guest boot to /init", "guest scenario"]
    {
        assert!(text.lines().any(|l| l.starts_with(phase)), "no '{phase}' in {text}");
    }
    for name in vm.sections.keys() {
        let line = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name.as_str()))
            .unwrap_or_else(|| panic!("section {name} not in {text}"));
        let figures: Vec<f64> =
            line.split_whitespace().skip(1).map(|f| f.parse().unwrap()).collect();
        assert!(figures.len() == 3 && figures.iter().all(|f| *f >= 0.0), "{line}");
    }
}

/// `key: value` lines (as `proc_binding` in tests/vm/lib.sh prints them) into a map.
fn fields(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Every memory policy a process's mappings show in numa_maps, deduplicated.
fn policies(binding: &BTreeMap<String, String>) -> Vec<String> {
    binding["policies"].split_whitespace().map(str::to_string).collect()
}

/// `nodeN cpulist=... distance=a,b memtotal_kb=...` lines from the sysfs-nodes section.
fn sysfs_nodes(text: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let node = words.next()?.to_string();
            let kv = words
                .filter_map(|w| w.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()));
            Some((node, kv.collect()))
        })
        .collect()
}

/// `node N size: X MB` of `numactl --hardware`, by node.
fn numactl_sizes(hw: &str) -> BTreeMap<u64, u64> {
    hw.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("node ")?;
            let (node, size) = rest.split_once(" size: ")?;
            Some((node.parse().ok()?, size.trim_end_matches(" MB").parse().ok()?))
        })
        .collect()
}

fn json(vm: &VmRun, name: &str) -> serde_json::Value {
    serde_json::from_str(vm.ok(name)).unwrap_or_else(|e| {
        panic!("section '{name}' is not JSON ({e}): see {}", vm.results.display())
    })
}

/// `nodeagent probe --json` agrees with the kernel: the same nodes, CPUs, memory sizes as
/// numactl, the same distances as sysfs, and each named device on its sysfs node and CPUs.
fn assert_probe_matches_kernel(vm: &VmRun, gpus: &[(&str, u64, &str)]) {
    let probe = json(vm, "probe-json");
    let sysfs = sysfs_nodes(vm.ok("sysfs-nodes"));
    let sizes = numactl_sizes(vm.ok("numactl-hardware"));
    let nodes = probe["numa_nodes"].as_array().expect("probe --json has numa_nodes");
    assert_eq!(nodes.len(), sysfs.len(), "probe nodes vs sysfs: {nodes:?}");
    for n in nodes {
        let id = n["id"].as_u64().unwrap();
        let k = &sysfs[&format!("node{id}")];
        assert_eq!(n["cpus"], k["cpulist"].as_str(), "node {id} cpus");
        assert_eq!(n["memory_total_mb"].as_u64(), Some(sizes[&id]), "node {id} memory vs numactl");
        let sysfs_mb = k["memtotal_kb"].parse::<u64>().unwrap() / 1024;
        assert!(
            n["memory_total_mb"].as_u64().unwrap().abs_diff(sysfs_mb) <= 1,
            "node {id} memory {} MB vs sysfs MemTotal {sysfs_mb} MB",
            n["memory_total_mb"]
        );
        let want: Vec<u64> = k["distance"].split(',').map(|d| d.parse().unwrap()).collect();
        let got: Vec<u64> = (0..want.len())
            .map(|j| {
                n["distances"][j.to_string()]
                    .as_u64()
                    .unwrap_or_else(|| panic!("node {id} lacks distance to {j}"))
            })
            .collect();
        assert_eq!(got, want, "node {id} distances vs sysfs");
    }
    let found = probe["gpus"].as_array().expect("probe --json has gpus");
    assert_eq!(found.len(), gpus.len(), "probe gpus: {found:?}");
    for (bus, node, cpus) in gpus {
        let g = found
            .iter()
            .find(|g| g["bus_id"] == *bus)
            .unwrap_or_else(|| panic!("probe lacks {bus}: {found:?}"));
        assert_eq!(g["numa_node"].as_u64(), Some(*node), "{bus} node");
        assert_eq!(g["cpu_affinity"], *cpus, "{bus} CPUs");
    }
}

/// The `plan-prefix-runs` section: the prefix the plan printed, and the binding a process
/// started under it really got.
fn assert_prefix_runs(vm: &VmRun, prefix: &str, cpus: &str, node: u32) {
    let out = vm.ok("plan-prefix-runs");
    let b = fields(out);
    assert_eq!(b["prefix"], prefix, "the plan's printed prefix");
    assert_eq!(b["Cpus_allowed_list"], cpus, "under `{prefix}`");
    assert_eq!(policies(&b), [format!("bind:{node}")], "numa_maps policies under `{prefix}`");
}

/// Drops what changes from one second to the next (free memory) so plans taken at different
/// moments compare equal.
fn without_free_memory(mut plan: serde_json::Value) -> serde_json::Value {
    for n in plan["numa_nodes"].as_array_mut().into_iter().flatten() {
        n.as_object_mut().unwrap().remove("memory_free_mb");
    }
    plan
}

#[test]
fn parse_results_frames_sections_and_rejects_broken_output() {
    // The timing lines (tests/vm/lib.sh) sit between sections and are no part of any.
    let text = "\x1b[?7l@@NA-VM-START@@\r\n@@NA-TIME (boot) 0 9.52@@\r\n@@NA-BEGIN a@@\r\nx\r\n@@NA-STDERR a@@\r\ne\r\n@@NA-END a rc=3@@\r\n@@NA-TIME a 9.60 12.25@@\r\n";
    let s = parse_results(text).unwrap();
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!(s["a"].stdout, "x\n");
    assert_eq!(s["a"].stderr, "e\n");
    assert_eq!(s["a"].rc, 3);
    assert!(parse_results("@@NA-BEGIN a@@\nx\n").unwrap_err().contains("never ended"));
    assert!(parse_results("@@NA-BEGIN a@@\n@@NA-END b rc=0@@\n").unwrap_err().contains("ended as"));
    assert!(parse_results("@@NA-END a rc=x@@\n").unwrap_err().contains("line 1"));
}

#[test]
fn two_node_vm_probe_plan_prefix_and_snapshot_replay() {
    let test = "two_node";
    if !vm_tools_present(test) {
        return;
    }
    let vm = boot(test, "two-node", "two-node.sh", &[]);
    assert_timings(&vm);

    let hw = vm.ok("numactl-hardware");
    assert!(hw.contains("available: 2 nodes (0-1)"), "numactl --hardware:\n{hw}");
    assert!(hw.contains("node 0 cpus: 0 1\n"), "numactl --hardware:\n{hw}");
    assert!(hw.contains("node 1 cpus: 2 3\n"), "numactl --hardware:\n{hw}");

    let nodes = sysfs_nodes(vm.ok("sysfs-nodes"));
    assert_eq!(nodes.keys().collect::<Vec<_>>(), ["node0", "node1"]);
    assert_eq!(nodes["node0"]["cpulist"], "0-1");
    assert_eq!(nodes["node1"]["cpulist"], "2-3");
    assert_eq!(nodes["node0"]["distance"], "10,20");
    assert_eq!(nodes["node1"]["distance"], "20,10");
    for node in nodes.values() {
        let kb: u64 = node["memtotal_kb"].parse().unwrap();
        assert!((900_000..=1_048_576).contains(&kb), "1 GiB per node, got {kb} kB");
    }

    let gpu = sysfs_nodes(&format!("gpu {}", vm.ok("sysfs-gpu")));
    assert_eq!(gpu["gpu"]["numa_node"], "1");
    assert_eq!(gpu["gpu"]["local_cpulist"], "2-3");
    assert_eq!(gpu["gpu"]["class"], "0x030000");

    let b = fields(vm.ok("numactl-node1"));
    assert_eq!(b["Cpus_allowed_list"], "2-3");
    assert_eq!(policies(&b), ["bind:1"], "numa_maps policies of a process under --membind=1");

    // nodeagent's live view of this kernel, and its plan for the device on node 1.
    assert_probe_matches_kernel(&vm, &[("0000:41:01.0", 1, "2-3")]);
    let plan = json(&vm, "plan-json");
    let instances = plan["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 1, "{plan:#}");
    assert_eq!(instances[0]["numactl"], "numactl --cpunodebind=1 --membind=1", "{plan:#}");
    assert_eq!(instances[0]["cpus"], "2-3");
    assert_prefix_runs(&vm, "numactl --cpunodebind=1 --membind=1", "2-3", 1);

    // The snapshot taken in the VM replays to the same plan here, on a one-node host.
    let snap = tempfile::tempdir().unwrap();
    let b64 = snap.path().join("snapshot.b64");
    std::fs::write(&b64, vm.ok("snapshot")).unwrap();
    let dir = snap.path().join("snap");
    std::fs::create_dir(&dir).unwrap();
    let untar = Command::new("sh")
        .arg("-c")
        .arg(format!("base64 -d < '{}' | tar -xz -C '{}'", b64.display(), dir.display()))
        .status()
        .unwrap();
    assert!(untar.success(), "the snapshot did not come out of the VM intact");
    let replay = Command::new(env!("CARGO_BIN_EXE_nodeagent"))
        // No --gpu-pci: the snapshot keeps the list it was taken with (gpu-pci.txt).
        .args(["plan", "--json", "--from"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(replay.status.success(), "replay failed: {}", String::from_utf8_lossy(&replay.stderr));
    let replayed: serde_json::Value = serde_json::from_slice(&replay.stdout).unwrap();
    assert_eq!(without_free_memory(replayed), without_free_memory(plan), "replayed plan differs");

    // A device the machine does not have: bad input, one `error:` line. (The message should name
    // the address; today the "no such PCI device" warning is lost when no other GPU is found and
    // the error says only "no GPUs found ... name them with --gpu-pci".)
    let missing = vm.section("plan-missing-gpu");
    assert_eq!(missing.rc, 2, "plan --gpu-pci of a missing device: {}", missing.stderr);
    assert!(
        missing.stderr.lines().any(|l| l.starts_with("error: ")),
        "plan --gpu-pci of a missing device gave no error line: {}",
        missing.stderr
    );
}

#[test]
fn four_node_vm_memoryless_node_plan_prefix_and_serve_bindings() {
    let test = "four_node";
    if !vm_tools_present(test) {
        return;
    }
    let vm = boot(test, "four-node", "four-node.sh", &[]);

    let hw = vm.ok("numactl-hardware");
    assert!(hw.contains("available: 4 nodes (0-3)"), "numactl --hardware:\n{hw}");
    assert!(hw.contains("node 2 cpus: 4 5\n"), "numactl --hardware:\n{hw}");
    assert!(hw.contains("node 2 size: 0 MB\n"), "node 2 must be memoryless:\n{hw}");

    let nodes = sysfs_nodes(vm.ok("sysfs-nodes"));
    assert_eq!(nodes.len(), 4, "{nodes:?}");
    assert_eq!(nodes["node2"]["cpulist"], "4-5");
    assert_eq!(nodes["node2"]["memtotal_kb"], "0");
    assert_eq!(nodes["node0"]["distance"], "10,20,30,30");
    assert_eq!(nodes["node2"]["distance"], "30,30,10,20");
    assert_eq!(nodes["node3"]["distance"], "30,30,20,10");

    let gpus = sysfs_nodes(vm.ok("sysfs-gpus"));
    assert_eq!(gpus["0000:41:01.0"]["numa_node"], "1");
    assert_eq!(gpus["0000:81:01.0"]["numa_node"], "2");
    assert_eq!(gpus["0000:81:01.0"]["local_cpulist"], "4-5");

    // numactl issue 165, reproduced on a real kernel: the reason plans never use -N there.
    let n2 = vm.section("numactl-N2");
    assert_ne!(n2.rc, 0, "numactl -N 2 on a memoryless node must fail");
    assert!(n2.stderr.contains("out of range"), "numactl -N 2 said: {}", n2.stderr);

    let b = fields(vm.ok("numactl-phys45-mem3"));
    assert_eq!(b["Cpus_allowed_list"], "4-5");
    assert_eq!(policies(&b), ["bind:3"], "numa_maps policies under --membind=3");

    // nodeagent sees the same machine and plans around the memoryless node.
    assert_probe_matches_kernel(&vm, &[("0000:41:01.0", 1, "2-3"), ("0000:81:01.0", 2, "4-5")]);
    let plan = json(&vm, "plan-json");
    let instances = plan["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 2, "{plan:#}");
    assert_eq!(instances[0]["numactl"], "numactl --cpunodebind=1 --membind=1", "{plan:#}");
    let memless = &instances[1];
    assert_eq!(memless["gpus"], serde_json::json!([1]), "{plan:#}");
    assert_eq!(memless["numactl"], "numactl --physcpubind=4-5 --membind=3", "{plan:#}");
    assert_eq!(memless["cpus"], "4-5");
    assert_eq!(memless["membind"], serde_json::json!([3]));
    assert_eq!(memless["docker_args"], serde_json::json!(["--cpuset-cpus=4-5", "--cpuset-mems=3"]));
    assert_prefix_runs(&vm, "numactl --physcpubind=4-5 --membind=3", "4-5", 3);

    // The plan's binding for the device on node 2, taken by `nodeagent serve` (binding.auto)
    // and applied natively and through numactl.
    for name in ["serve-bare", "serve-numactl"] {
        let status = json(&vm, &format!("{name}-status"));
        assert_eq!(status["binding"], memless["binding"], "{name}: serve's binding vs the plan's");
        assert_serve_bound(&vm, name, "4-5", 3);
    }
    assert_serve_refused(&vm, "serve-node7", Some(2), "node 7");
    assert_serve_refused(&vm, "serve-cpu12", Some(2), "cpus 12-13");
    // Memory bound to the memoryless node 2, which set_mempolicy and numactl refuse: a
    // preflight error naming node 2, exit 2, natively and through numactl (regression: serve
    // used to find out only when the spawn failed with a bare EINVAL, exit 1).
    assert_serve_refused(&vm, "serve-memless", Some(2), "memory node 2 has no memory");
    assert_serve_refused(&vm, "serve-memless-numactl", Some(2), "memory node 2 has no memory");
}

/// The processes `proc_binding` described in a `-tree` section, blank-line separated.
fn tree(text: &str) -> Vec<BTreeMap<String, String>> {
    text.split("\n\n").map(fields).filter(|f| f.contains_key("pid")).collect()
}

/// `nodeagent serve` in `mode` under CPUs `cpus` and memory bound to `node`: every process of the
/// engine (wrapper, its helper, the simulator and its two workers) carries the binding as the
/// kernel shows it, the agent's own check says the same about the same processes, and the agent
/// stops them all on SIGTERM.
fn assert_serve_bound(vm: &VmRun, name: &str, cpus: &str, node: u32) {
    let policy = format!("bind:{node}");
    let status: serde_json::Value = serde_json::from_str(vm.ok(&format!("{name}-status")))
        .unwrap_or_else(|e| panic!("{name}: status --json is not JSON: {e}"));
    assert_eq!(status["state"], "ready", "{name}: {status:#}");

    let procs = tree(vm.ok(&format!("{name}-tree")));
    let names: Vec<&str> = procs.iter().map(|p| p["Name"].as_str()).collect();
    assert_eq!(procs.len(), 5, "{name}: wrapper, helper, simulator and 2 workers, got {names:?}");
    assert!(names.contains(&"sleep"), "{name}: the wrapper's own child is missing: {names:?}");
    assert_eq!(
        names.iter().filter(|n| n.contains("Worker")).count(),
        2,
        "{name}: the simulator's workers are missing: {names:?}"
    );
    for p in &procs {
        assert_eq!(p["Cpus_allowed_list"], cpus, "{name}: pid {} ({})", p["pid"], p["Name"]);
        assert_eq!(policies(p), [policy.as_str()], "{name}: pid {} ({})", p["pid"], p["Name"]);
    }

    // The agent's binding check covers exactly those processes and agrees with the kernel.
    let check = &status["binding_check"];
    assert_eq!(check["ok"], true, "{name}: agent's binding check: {check:#}");
    let mut seen: Vec<i64> = procs.iter().map(|p| p["pid"].parse().unwrap()).collect();
    let mut checked: Vec<i64> =
        check["processes"].as_array().unwrap().iter().map(|p| p["pid"].as_i64().unwrap()).collect();
    seen.sort_unstable();
    checked.sort_unstable();
    assert_eq!(checked, seen, "{name}: the agent checked other processes than the engine's");
    for p in check["processes"].as_array().unwrap() {
        assert_eq!(p["cpus_allowed"], cpus, "{name}: agent saw {p}");
        assert_eq!(p["mempolicy"], policy.as_str(), "{name}: agent saw {p}");
    }

    // The manual's recipe (tests/vm/check-binding.sh, docs/FAQ.md) sees the same from the main pid down.
    let recipe = vm.ok(&format!("{name}-check-binding"));
    let lines: Vec<&str> = recipe.lines().collect();
    assert_eq!(lines.len(), procs.len(), "{name}: check-binding.sh:\n{recipe}");
    for l in &lines {
        let words: Vec<&str> = l.split_whitespace().collect();
        assert!(words.contains(&format!("cpus={cpus}").as_str()), "{name}: {l}");
        assert_eq!(words.last(), Some(&format!("policy={policy}").as_str()), "{name}: {l}");
    }

    let stop = vm.ok(&format!("{name}-stop"));
    assert!(
        stop.contains("serve-exit=0"),
        "{name}: serve did not stop cleanly on SIGTERM:\n{stop}"
    );
    assert!(!stop.contains("leftover"), "{name}: engine processes outlived serve:\n{stop}");
}

/// `nodeagent serve` refused to start: non-zero exit, the engine never ran, one clear error.
fn assert_serve_refused(vm: &VmRun, name: &str, code: Option<i32>, error_names: &str) {
    let s = vm.section(&format!("{name}-refused"));
    let error = s.stderr.lines().find(|l| l.starts_with("error: ")).unwrap_or_else(|| {
        panic!("{name}: serve printed no `error:` line (rc {}):\n{}", s.rc, s.stderr)
    });
    match code {
        Some(code) => assert_eq!(s.rc, code, "{name}: exit status; error was: {error}"),
        None => assert_ne!(s.rc, 0, "{name}: serve must fail; it said: {error}"),
    }
    assert!(s.stdout.contains("engine-started=no"), "{name}: the engine ran:\n{}", s.stdout);
    assert!(error.contains(error_names), "{name}: the error must name {error_names:?}: {error}");
}

/// The harness's own bad-input paths: one line naming what is wrong, exit 2, no boot.
/// The engine's cgroup on a pure cgroup v2 kernel (cgroup2 mounted at `/sys/fs/cgroup`, the
/// `memory`, `cpu` and `pids` controllers enabled): the engine, its workers and a helper that
/// escaped by double fork + `setsid` are all in `nodeagent-0-<hash>` under the v2 root; status
/// reports its memory and CPU; a stop ends the helper, which ignores SIGTERM, by `cgroup.kill`,
/// leaves nothing and removes the cgroup.
#[test]
fn cgroup_v2_vm_contains_a_double_forked_setsid_helper_and_kills_it_by_cgroup_kill() {
    let test = "cgroup_v2";
    if !vm_tools_present(test) {
        return;
    }
    let vm = boot(test, "two-node", "cgroup-v2.sh", &[]);
    let mount = vm.ok("cgroup-mount");
    assert!(mount.contains(" /sys/fs/cgroup cgroup2 "), "{mount}");
    let controllers = mount.lines().find_map(|l| l.strip_prefix("controllers: ")).unwrap_or("");
    for c in ["cpu", "memory", "pids"] {
        assert!(controllers.split_whitespace().any(|w| w == c), "{c} not enabled: {mount}");
    }

    let st = json(&vm, "cgroup-status");
    assert_eq!(st["state"], "ready", "{st:#}");
    let containment = st["containment"].as_str().unwrap_or_default();
    let cg = containment
        .strip_prefix("cgroup-v2 /sys/fs/cgroup/nodeagent-0-")
        .unwrap_or_else(|| panic!("containment {containment:?}"));
    assert_eq!(cg.len(), 8, "{containment}");
    assert!(st["engine_memory_bytes"].as_u64().is_some_and(|m| m > 0), "{st:#}");
    assert!(st["engine_cpu_seconds"].as_f64().is_some_and(|c| c > 0.0), "{st:#}");

    // The wrapper exec'd the simulator (main) with 2 workers; the helper is in the cgroup too,
    // although it re-parented and left the session.
    let procs = vm.ok("cgroup-procs");
    let lines: Vec<&str> = procs.lines().skip(1).filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.iter().any(|l| l.contains("sleep 7777")), "helper not in the cgroup:\n{procs}");
    assert_eq!(lines.iter().filter(|l| l.contains(" simulate ")).count(), 1, "{procs}");
    assert_eq!(lines.iter().filter(|l| l.contains(" simulate-worker ")).count(), 2, "{procs}");
    let status_pids: Vec<i64> =
        st["pids"].as_array().unwrap().iter().filter_map(|p| p.as_i64()).collect();
    for l in &lines {
        let pid: i64 = l.split_whitespace().next().unwrap().parse().unwrap();
        assert!(status_pids.contains(&pid), "cgroup pid {pid} not in status pids {status_pids:?}");
    }
    let agent_cg = vm.ok("agent-cgroup");
    assert_eq!(agent_cg.trim(), "0::/", "the agent stays where it was started");

    let stop = vm.section("cgroup-stop");
    assert!(stop.stdout.contains("serve-exit=0"), "{}\n{}", stop.stdout, stop.stderr);
    assert!(!stop.stdout.contains("leftover"), "leftovers after stop:\n{}", stop.stdout);
    assert!(!stop.stdout.contains("cgroup-left="), "cgroup not removed:\n{}", stop.stdout);
    assert!(
        stop.stderr.contains("killed the engine's cgroup") && stop.stderr.contains("cgroup.kill"),
        "the helper that ignores SIGTERM was not killed by cgroup.kill:\n{}",
        stop.stderr
    );
}

#[test]
fn run_vm_rejects_bad_input_with_one_line_errors() {
    let out = tempfile::tempdir().unwrap();
    let run = |topology: Option<&str>, kernel: Option<&str>, timeout: &str| {
        let mut cmd = Command::new(repo().join("tests/vm/run-vm.sh"));
        cmd.arg("--timeout").arg(timeout);
        cmd.arg("--topology").arg(topology.unwrap_or("two-node"));
        if topology.is_some() {
            cmd.arg("--scenario")
                .arg(repo().join("tests/vm/two-node.sh"))
                .arg("--bin")
                .arg(env!("CARGO_BIN_EXE_nodeagent"))
                .arg("--out")
                .arg(out.path());
        }
        if let Some(k) = kernel {
            cmd.env("NODEAGENT_VM_KERNEL", k);
        }
        let res = cmd.output().unwrap();
        (res.status.code(), String::from_utf8_lossy(&res.stderr).trim().to_string())
    };

    let (code, err) = run(None, None, "300");
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(err, "run-vm: --topology, --scenario, --bin and --out are required (see --help)");

    let (code, err) = run(Some("three-node"), None, "300");
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(
        err,
        "run-vm: unknown topology 'three-node' (two-node, two-node-two-gpu or four-node)"
    );

    if vm_tools_present("run_vm_rejects_bad_input") {
        let (code, err) = run(Some("two-node"), Some("/nonexistent/vmlinuz"), "300");
        assert_eq!(code, Some(2), "{err}");
        assert_eq!(err, "run-vm: NODEAGENT_VM_KERNEL=/nonexistent/vmlinuz not found");

        // A VM that does not finish in time is killed and reported, exit 1.
        let (code, err) = run(Some("two-node"), None, "1");
        assert_eq!(code, Some(1), "{err}");
        let last = err.lines().last().unwrap_or_default();
        assert!(last.starts_with("run-vm: two-node VM timed out after 1s (console: "), "{err}");
    }
}

/// Issue 13: two `nodeagent serve --instance N` of one config on the four-node VM (the
/// simulator as the engine, one GPU-class PCI device per instance: 0000:41:01.0 on node 1,
/// 0000:81:01.0 on the memoryless node 2): each engine's environment has its visibility
/// variables (`/proc/PID/environ`), its port and binding are the plan's, the cores are
/// disjoint, both pass a short `nodeagent verify`, `status` lists both, and stopping instance 0
/// leaves instance 1 serving.
#[test]
fn two_instances_on_the_four_node_vm_get_their_gpu_cores_and_port() {
    let test = "two_instance";
    if !vm_tools_present(test) {
        return;
    }
    let vm = boot_for(test, "four-node", "two-instance.sh", 900);
    let plan = json(&vm, "plan-json");
    let instances = plan["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 2, "{plan:#}");
    assert_eq!(vm.ok("ready-flags"), "ready-0=0\nready-1=0\n");

    // (instance, GPU, CPUs, memory node, port): node 1's device, then node 2's (CPUs 4-5,
    // memory on node 3, the nearest with memory).
    let want = [(0u64, 0u64, "2-3", 1u64, 8000u64), (1, 1, "4-5", 3, 8001)];
    let all = json(&vm, "status-all");
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), 2, "{all:?}");
    let mut cores = Vec::new();
    for (n, gpu, cpus, node, port) in want {
        let idx = n as usize;
        let printed = json(&vm, &format!("print-config-{n}"));
        let launch = &printed["launch"];
        assert_eq!(launch["gpus"], serde_json::json!([gpu]), "instance {n}: {launch:#}");
        assert_eq!(launch["cpus"], cpus, "instance {n}: {launch:#}");
        assert_eq!(launch["mems"], serde_json::json!([node]), "instance {n}");
        assert_eq!(launch["port"], port, "instance {n}");
        let st = &all[idx];
        assert_eq!(st["instance"], n);
        assert_eq!(st["state"], "ready", "instance {n}: {st:#}");
        assert_eq!(st["port"], port);
        assert_eq!(st["gpus"], serde_json::json!([gpu]));
        assert_eq!(st["binding"], instances[idx]["binding"], "instance {n}: serve vs plan");
        assert_eq!(st["binding_check"]["ok"], true, "instance {n}: {st:#}");
        let env = vm.ok(&format!("engine-{n}-environ"));
        assert!(env.contains(&format!("CUDA_VISIBLE_DEVICES={gpu}\n")), "instance {n}: {env}");
        assert!(env.contains(&format!("MACA_VISIBLE_DEVICES={gpu}\n")), "instance {n}: {env}");
        assert!(env.contains("NODEAGENT_ENGINE="), "instance {n}: {env}");
        let cmd = vm.ok(&format!("engine-{n}-cmdline"));
        assert!(cmd.contains(&format!("--port {port} ")), "instance {n}: {cmd}");
        let procs = tree(vm.ok(&format!("engine-{n}-tree")));
        assert!(procs.len() >= 2, "instance {n}: engine and worker expected: {procs:?}");
        for p in &procs {
            assert_eq!(p["Cpus_allowed_list"], cpus, "instance {n}: pid {}", p["pid"]);
            assert_eq!(policies(p), [format!("bind:{node}")], "instance {n}: pid {}", p["pid"]);
        }
        cores.push(cpus);
        vm.ok(&format!("verify-{n}"));
    }
    assert_ne!(cores[0], cores[1]);
    // Distinct markers: each engine belongs to its own state dir.
    let marker = |n: u64| -> String {
        vm.ok(&format!("engine-{n}-environ"))
            .lines()
            .find(|l| l.starts_with("NODEAGENT_ENGINE="))
            .unwrap_or_default()
            .to_string()
    };
    assert_ne!(marker(0), marker(1));
    let text = vm.ok("status-text");
    assert!(text.starts_with("INSTANCE STATE      PORT   GPUS"), "{text}");
    assert!(text.contains("== instance 1 (/run/na/1)"), "{text}");
    let dirs = vm.ok("state-dirs");
    assert!(
        dirs.contains("drwx------ /run/na\n") && dirs.contains("drwx------ /run/na/1\n"),
        "{dirs}"
    );

    // Instance 0 stopped: instance 1 still serves and is the one `status` finds.
    assert_eq!(vm.ok("stop-0"), "serve-0-exit=0\n");
    let after = json(&vm, "after-stop-status");
    assert_eq!((after["instance"].as_u64(), after["state"].as_str()), (Some(1), Some("ready")));
    vm.ok("after-stop-health-1");
    assert!(vm.ok("after-stop-port-0").trim_end().ends_with("rc=1"), "port 8000 still answers");
    let stop = vm.ok("stop-1");
    assert_eq!(stop, "serve-1-exit=0\n", "leftovers after the stop: {stop}");
}

/// `boot` with a longer hard timeout: two agents, two engines and two `verify` runs under
/// software emulation on a loaded 2-core box take longer than `boot`'s 300 s.
fn boot_for(test: &str, topology: &str, scenario: &str, timeout_s: u32) -> VmRun {
    boot_with(test, topology, scenario, &[], timeout_s)
}

/// `doctor --json` statuses by check name.
fn doctor_statuses(stdout: &str) -> BTreeMap<String, (String, String)> {
    let v: serde_json::Value = serde_json::from_str(stdout)
        .unwrap_or_else(|e| panic!("doctor --json is no JSON ({e}): {stdout}"));
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
            (s("name"), (s("status"), s("detail")))
        })
        .collect()
}

#[test]
fn two_node_vm_doctor_flags_numa_balancing_and_replays_the_host() {
    let test = "doctor_two_node";
    if !vm_tools_present(test) {
        return;
    }
    let vm = boot(test, "two-node", "doctor.sh", &[]);
    let default = vm.ok("balancing-default").trim().to_string();
    assert!(["0", "1"].contains(&default.as_str()), "numa_balancing file: {default:?}");

    let off = vm.ok("doctor-off");
    let off = doctor_statuses(off);
    assert_eq!(off.len(), 8, "{off:?}");
    assert_eq!(off["numa_balancing"].0, "pass", "{off:?}");
    // The plan binds node 1 (CPUs 2-3): both online in the VM.
    assert_eq!(
        off["offline_cpus"],
        ("pass".into(), "bound CPUs 2-3 all online (online 0-3)".into())
    );
    assert!(off["memory_headroom"].1.starts_with("node 1 "), "{off:?}");

    let on = vm.section("doctor-on");
    assert_eq!(on.rc, 1, "a failed check exits 1: {}", on.stderr);
    assert!(on.stderr.contains("error: 1 check(s) failed: numa_balancing"), "{}", on.stderr);
    let on = doctor_statuses(&on.stdout);
    assert_eq!(on["numa_balancing"].0, "fail");
    assert!(on["numa_balancing"].1.starts_with("kernel.numa_balancing = 1: "), "{on:?}");

    let plan = vm.section("plan-warns");
    assert_eq!(plan.rc, 0, "{}", plan.stderr);
    assert!(
        plan.stderr.lines().any(|l| l.starts_with("warning: doctor: numa_balancing fail: ")),
        "plan did not warn: {}",
        plan.stderr
    );

    // The VM's settings replayed outside it: the same verdict on numa_balancing.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("vm").join(test).join("snap");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let b64 = dir.with_extension("b64");
    std::fs::write(&b64, vm.ok("doctor-snapshot")).unwrap();
    let untar = Command::new("sh")
        .arg("-c")
        .arg(format!("base64 -d < '{}' | tar -xz -C '{}'", b64.display(), dir.display()))
        .status()
        .unwrap();
    assert!(untar.success(), "the snapshot did not come out of the VM intact");
    assert_eq!(
        std::fs::read_to_string(dir.join("procfs/sys/kernel/numa_balancing")).unwrap(),
        "1\n"
    );
    let replay = Command::new(env!("CARGO_BIN_EXE_nodeagent"))
        .args(["doctor", "--json", "--from"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(replay.status.code(), Some(1), "{}", String::from_utf8_lossy(&replay.stderr));
    let replayed = doctor_statuses(&String::from_utf8_lossy(&replay.stdout));
    assert_eq!(replayed["numa_balancing"], on["numa_balancing"]);
    assert_eq!(replayed["offline_cpus"], off["offline_cpus"]);
    assert_eq!(replayed["transparent_hugepages"], on["transparent_hugepages"]);
}

/// `memory_by_node` of a `status --json` section, node id → bytes, and the off-node share.
fn memory_by_node(vm: &VmRun, name: &str) -> (BTreeMap<u32, u64>, Option<f64>, bool) {
    let v = json(vm, name);
    let by_node = v["memory_by_node"]
        .as_object()
        .unwrap_or_else(|| panic!("{name}: no memory_by_node in {v}"))
        .iter()
        .map(|(k, b)| (k.parse().unwrap(), b.as_u64().unwrap()))
        .collect();
    (by_node, v["memory_off_node_share"].as_f64(), v["memory_off_node_alert"] == true)
}

#[test]
fn two_node_vm_memory_audit_follows_the_binding() {
    let test = "placement_two_node";
    if !vm_tools_present(test) {
        return;
    }
    let vm = boot(test, "two-node", "placement.sh", &[]);
    let mib = 1u64 << 20;
    // Two workers hold 64 MiB each: their anonymous pages land on the bound node.
    for (name, node, other) in [("node1-status", 1u32, 0u32), ("node0-status", 0, 1)] {
        let (by_node, share, _) = memory_by_node(&vm, name);
        let on = by_node.get(&node).copied().unwrap_or(0);
        let off = by_node.get(&other).copied().unwrap_or(0);
        assert!(on >= 128 * mib, "{name}: {on} bytes on node {node}: {by_node:?}");
        assert!(off < on, "{name}: more on node {other} than on the bound node: {by_node:?}");
        let share = share.unwrap_or_else(|| panic!("{name}: no off-node share"));
        assert!((0.0..0.5).contains(&share), "{name}: off-node share {share}");
        let exact = off as f64 / (on + off) as f64;
        assert!((share - exact).abs() < 1e-9, "{name}: share {share} vs {exact}");
        let text = vm.ok(&name.replace("-status", "-status-text"));
        assert!(text.contains("memory/node"), "{text}");
    }
    // Unbound: the bytes are there, on whichever node, and there is no share to judge.
    let (by_node, share, alert) = memory_by_node(&vm, "unbound-status");
    assert!(by_node.values().sum::<u64>() >= 128 * mib, "{by_node:?}");
    assert_eq!((share, alert), (None, false));
    for stop in ["node1-stop", "node0-stop", "unbound-stop"] {
        assert!(vm.ok(stop).contains("serve-exit=0"), "{stop}: {}", vm.ok(stop));
    }
}

/// `verify --compare none,nodes=0,nodes=1` in the two-node VM (tests/vm/compare-placement.sh):
/// each binding's sub-run finds the engine's memory on its own node and its threads on its own
/// CPUs; unbound, the memory is off at least one of the two nodes by half or more; the NUMA
/// counters moved on both nodes; the report says it per binding.
#[test]
fn two_node_vm_compare_reports_memory_numa_and_threads_per_binding() {
    let test = "compare_placement_two_node";
    if !vm_tools_present(test) {
        return;
    }
    let vm = boot_for(test, "two-node", "compare-placement.sh", 900);
    let report = vm.ok("compare");
    let cmp = json(&vm, "compare-json");
    let runs = cmp["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3, "{cmp}");
    let mib = 1u64 << 20;
    for r in runs {
        assert!(r["error"].is_null(), "{r}");
        let by_node: BTreeMap<u32, u64> = r["memory_by_node"]
            .as_object()
            .unwrap_or_else(|| panic!("no memory_by_node: {r}"))
            .iter()
            .map(|(k, v)| (k.parse().unwrap(), v.as_u64().unwrap()))
            .collect();
        // The two workers' 128 MiB are in, wherever they are.
        assert!(by_node.values().sum::<u64>() >= 128 * mib, "{by_node:?}");
        let total = &r["numa"]["total"];
        assert!(total["numa_hit"].as_u64().unwrap() > 0, "{r}");
        assert!(r["numa"]["per_node"].as_object().unwrap().len() == 2, "{r}");
        let t = &r["threads"];
        assert!(t["threads"].as_u64().unwrap() >= 3, "{r}");
        let last: Vec<u64> =
            t["last_cpus"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap()).collect();
        let (node, cpus) = match r["binding"].as_str().unwrap() {
            "none" => {
                assert!(t["outside_share"].is_null() && r["memory_off_node_share"].is_null());
                continue;
            }
            "nodes=0" => (0u32, [0u64, 1]),
            "nodes=1" => (1, [2, 3]),
            other => panic!("unexpected binding {other}"),
        };
        // Bound: the memory sits mostly on the binding's node, the threads ran on its CPUs.
        let on = by_node.get(&node).copied().unwrap_or(0);
        let off: u64 = by_node.iter().filter(|(n, _)| **n != node).map(|(_, b)| b).sum();
        assert!(on >= 128 * mib && off < on, "{}: {by_node:?}", r["binding"]);
        let share = r["memory_off_node_share"].as_f64().unwrap();
        assert!((share - off as f64 / (on + off) as f64).abs() < 1e-9, "{r}");
        assert!(last.iter().all(|c| cpus.contains(c)), "{}: last CPUs {last:?}", r["binding"]);
        assert!(t["last_cpus_outside"].as_array().unwrap().is_empty(), "{r}");
        if t["cpu_seconds"].as_f64().unwrap() > 0.0 {
            assert_eq!(t["outside_share"].as_f64(), Some(0.0), "{r}");
        }
    }
    // Per binding: its own share small, and `none` measured against the two nodes adds up to
    // all of its memory, so against one of them it is half or more.
    let bindings = cmp["bindings"].as_array().unwrap();
    let none_off: Vec<f64> =
        bindings[1..].iter().map(|b| b["none_memory_off_node_pct"].as_f64().unwrap()).collect();
    assert!((none_off[0] + none_off[1] - 100.0).abs() < 1.0, "{none_off:?}");
    for b in &bindings[1..] {
        let own = b["memory_off_node_pct"].as_f64().unwrap();
        assert!(own < 50.0, "{b}");
        assert!(b["placement"].is_string(), "{b}");
        assert_eq!(b["cpu_outside_pct"].as_f64().unwrap_or(0.0), 0.0, "{b}");
    }
    assert!(none_off.iter().any(|p| *p >= 50.0), "{none_off:?}");
    // One sentence per binding, next to its throughput; the page cache of the binary (on the
    // node where it was first read) is what keeps the other binding from its node: said by name.
    for b in &bindings[1..] {
        let label = format!("{}: ", b["label"].as_str().unwrap());
        let line = report
            .lines()
            .map(str::trim_start)
            .find(|l| l.starts_with(&label) && l.contains("engine memory on remote nodes "))
            .unwrap_or_else(|| panic!("no placement line for {label} in the report:\n{report}"));
        assert!(line.contains(" under none; numa_miss "), "{line}");
        assert!(line.contains("; thread migrations "), "{line}");
        assert!(line.contains("; CPU time outside the binding 0.0 %"), "{line}");
        let did_not_follow = b["placement"] == "memory_did_not_follow";
        assert_eq!(
            line.ends_with("held in /proc but memory did not follow"),
            did_not_follow,
            "{line}"
        );
        assert_eq!(did_not_follow, b["memory_off_node_pct"].as_f64().unwrap() > 10.0, "{b}");
        if !did_not_follow {
            assert_eq!(b["placement"], "held", "{b}");
        }
    }
    // The binary's page cache lies on the node where it was first read (by the unbound `none`
    // sub-run or the verify process itself, on either node): the binding to that node holds,
    // the other may be `memory_did_not_follow` (checked against its share above). Asserting
    // `held` for nodes=0 alone failed once in CI when the cache had landed on node 1.
    assert!(
        bindings[1..].iter().any(|b| b["placement"] == "held"),
        "neither node binding held: {bindings:?}"
    );
    assert!(report.contains("threads: "), "{report}");
    // The bound sub-run's summary.json carries the same figures per level.
    let sub = json(&vm, "node1-summary");
    let level = &sub["levels"][0];
    assert!(level["memory_by_node"]["1"].as_u64().unwrap_or(0) >= 128 * mib, "{level}");
    assert!(level["numa"]["per_node"]["1"]["numa_hit"].is_u64(), "{level}");
    assert!(level["threads"]["threads"].as_u64().unwrap() >= 3, "{level}");
}

/// Per-rank binding on a real 2-node kernel (pure cgroup v2, cpuset delegated): one instance of
/// a GPU on node 0 and a GPU on node 1, the simulator's two workers (64 MiB each) listed by the
/// fake `nvidia-smi` on one GPU each, served in bare and in numactl mode. Each worker must end
/// in its own `rank-N` cgroup under the engine's with its node's CPUs and memory node, its
/// resident pages mostly on that node and the memory it touched
/// (mappings of no file) all but entirely (from `numa_maps` in the VM and from `status`), and
/// `status` must show both ranks with no problem.
#[test]
fn two_node_vm_binds_each_rank_worker_to_its_gpus_node() {
    let test = "ranks_two_node";
    if !vm_tools_present(test) {
        return;
    }
    let tool = repo().join("testdata/fake-tools/nvidia-smi");
    let vm = boot_with(test, "two-node-two-gpu", "ranks.sh", &[(&tool, "/nvidia-smi")], 600);

    // The plan: one instance over both GPUs, rank 0 on node 0 (CPUs 0-1), rank 1 on node 1.
    let plan = json(&vm, "plan-json");
    let ranks = plan["instances"][0]["ranks"].as_array().expect("the plan has ranks");
    let layout: Vec<(u64, u64, &str, u64)> = ranks
        .iter()
        .map(|r| {
            (
                r["gpu"].as_u64().unwrap(),
                r["node"].as_u64().unwrap(),
                r["cpus"].as_str().unwrap(),
                r["memory_node"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(layout, [(0, 0, "0-1", 0), (1, 1, "2-3", 1)], "{plan}");

    let mib = 1u64 << 20;
    for mode in ["bare", "numactl"] {
        let status = json(&vm, &format!("{mode}-status"));
        let ranks = status["ranks"].as_array().unwrap_or_else(|| panic!("{mode}: {status}"));
        assert_eq!(ranks.len(), 2, "{mode}: {status}");
        let engine = fields(vm.ok(&format!("{mode}-engine-cgroup")));
        for (r, (node, cpus, other)) in [(0u32, "0-1", 1u32), (1, "2-3", 0)].into_iter().enumerate()
        {
            let st = &ranks[r];
            let what = format!("{mode} rank {r}");
            assert_eq!(st["problem"], serde_json::Value::Null, "{what}: {st}");
            assert_eq!(st["node"], node, "{what}: {st}");
            assert_eq!(st["cpus"], cpus, "{what}: {st}");
            let w = fields(vm.ok(&format!("{mode}-worker-{r}")));
            let pid: i64 = w["pid"].parse().unwrap();
            assert_eq!(st["pids"], serde_json::json!([pid]), "{what}: {st}");
            // The kernel's view of the worker: its cgroup, CPUs and memory nodes.
            let cg = st["cgroup"].as_str().unwrap_or_else(|| panic!("{what}: no cgroup: {st}"));
            assert!(cg.ends_with(&format!("/rank-{r}")), "{what}: {cg}");
            assert_eq!(format!("/sys/fs/cgroup{}", w["cgroup"].trim_start_matches("0::")), cg);
            assert_eq!(w["Cpus_allowed_list"], cpus, "{what}: {w:?}");
            assert_eq!(w["Mems_allowed_list"], node.to_string(), "{what}: {w:?}");
            assert_eq!(engine[&format!("rank-{r} procs")], pid.to_string(), "{what}: {engine:?}");
            assert_eq!(engine[&format!("rank-{r} cpus")], cpus, "{what}: {engine:?}");
            assert_eq!(engine[&format!("rank-{r} mems")], node.to_string(), "{what}: {engine:?}");
            // Resident memory: the 64 MiB the worker touched (mappings of no file), moved to its
            // node by the migration; all its resident pages mostly there. File pages of the
            // binary, which the VM holds in its initramfs, may stay where they were first read.
            let pages = |kind: &str, n: u32| -> u64 {
                w.get(&format!("{kind}pages_on_node{n}")).map_or(0, |p| p.parse().unwrap())
            };
            let (on, off) = (pages("anon_", node), pages("anon_", other));
            assert!(on * 4096 >= 64 * mib, "{what}: {on} anon pages on node {node}: {w:?}");
            assert!(off * 20 < on, "{what}: {off} anon pages on node {other} vs {on}: {w:?}");
            let (on, off) = (pages("", node), pages("", other));
            assert!(off * 2 < on, "{what}: {off} pages on node {other} vs {on}: {w:?}");
            let by_node = &st["memory_by_node"];
            let bytes = |n: u32| by_node[n.to_string()].as_u64().unwrap_or(0);
            assert!(bytes(node) >= 64 * mib, "{what}: memory_by_node {by_node}");
            assert!(bytes(other) * 2 < bytes(node), "{what}: memory_by_node {by_node}");
        }
        // The engine's other processes sit in its `main` leaf, not in a rank.
        assert!(!engine["main procs"].is_empty(), "{mode}: {engine:?}");
        let text = vm.ok(&format!("{mode}-status-text"));
        assert!(text.contains("rank 0") && text.contains("rank 1"), "{mode}: {text}");
        let stop = vm.ok(&format!("{mode}-stop"));
        assert!(stop.contains("serve-exit=0"), "{mode}: {stop}");
        assert!(!stop.contains("leftover"), "{mode}: {stop}");
    }
}
