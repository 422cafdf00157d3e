//! The per-node pieces for the engines users scale out with, checked by the real engines'
//! own readers: Slurm's `slurmd -G` reads `plan --format slurm-gres` output for recorded hosts
//! (hwloc XML snapshots, loaded by slurmd's own hwloc through `HWLOC_XMLFILE`) and reports the
//! same cores; `kubernetes-validate` (the Kubernetes API schemas, offline) checks the manifests
//! in `deploy/kubernetes/`; the NFD feature file and its measured gain come from real outputs.
//!
//! Without `slurmd` or the validator's virtualenv (`scripts/setup.sh test` installs both) the
//! tests that need them are skipped with a message, except under `CI=true`, where that fails.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_nodeagent");

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

fn skip(what: &str) {
    assert!(!ci(), "{what} is missing under CI=true: scripts/setup.sh test installs it");
    eprintln!("skipped: {what} not found (scripts/setup.sh test installs it)");
}

fn plan(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).arg("plan").args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `File -> Cores` of every `Name=gpu ... File=... Cores=...` line (ours or slurmd's).
fn file_cores(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        let field =
            |k: &str| line.split_whitespace().find_map(|w| w.strip_prefix(k)).map(str::to_string);
        if let (Some(file), Some(cores)) = (field("File="), field("Cores=")) {
            out.insert(file, cores);
        }
    }
    out
}

/// Runs `slurmd -G` on `gres` for the snapshot `host` (its hwloc.xml is the machine slurmd
/// sees); the node line comes from the generated file's header. Returns (exit code, output).
fn slurmd_reads(host: &Path, gres: &str, dir: &Path) -> (i32, String) {
    let node_line = gres
        .lines()
        .find_map(|l| l.strip_prefix("#   NodeName="))
        .expect("the header carries the slurm.conf node line")
        .replace("<this host>", "gpunode");
    std::fs::create_dir_all(dir.join("spool")).unwrap();
    std::fs::write(
        dir.join("slurm.conf"),
        format!(
            "ClusterName=nodeagent-test\nSlurmctldHost=localhost\nGresTypes=gpu\n\
             ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\n\
             SlurmdSpoolDir={spool}\nStateSaveLocation={spool}\nSlurmdPidFile={spool}/slurmd.pid\n\
             NodeName={node_line} State=UNKNOWN\nPartitionName=p Nodes=ALL Default=YES\n",
            spool = dir.join("spool").display()
        ),
    )
    .unwrap();
    std::fs::write(dir.join("gres.conf"), gres).unwrap();
    let out = Command::new("slurmd")
        .args(["-G", "-D", "-N", "gpunode"])
        .env("SLURM_CONF", dir.join("slurm.conf"))
        .env("HWLOC_XMLFILE", host.join("hwloc.xml"))
        .env("HWLOC_THISSYSTEM", "1")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

#[test]
fn slurmd_reads_the_generated_gres_conf_with_the_same_cores() {
    if Command::new("slurmd").arg("-V").output().is_err() {
        return skip("slurmd (Debian slurmd)");
    }
    for (host, gpus) in [
        ("hwloc-32em64t-2n8c2t-pci-normalio", 4),
        ("hwloc-96em64t-4n4d3ca2co-pci", 1),
        ("h100-2gpu-vm-live", 2),
    ] {
        let snap = repo(&format!("testdata/hosts/{host}"));
        let tmp = tempfile::tempdir().unwrap();
        // Stand-in device nodes (the snapshot's machine is not this one), given to the plan
        // with --gres-file so every line has File= (slurmd prints only those).
        let mut args = vec![
            "--from".to_string(),
            snap.display().to_string(),
            "--format".into(),
            "slurm-gres".into(),
        ];
        for i in 0..gpus {
            let node = tmp.path().join(format!("gpu{i}"));
            nix::sys::stat::mknod(
                &node,
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::from_bits_truncate(0o600),
                nix::sys::stat::makedev(1, 3),
            )
            .unwrap_or_else(|e| panic!("mknod {}: {e} (the test runs as root)", node.display()));
            args.push("--gres-file".into());
            args.push(format!("{i}={}", node.display()));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, gres, err) = plan(&args);
        assert_eq!(code, 0, "{host}: {err}");
        let ours = file_cores(&gres);
        assert_eq!(ours.len(), gpus, "{host}: one File= line per GPU:\n{gres}");

        let (rc, said) = slurmd_reads(&snap, &gres, &tmp.path().join("slurm"));
        assert_eq!(rc, 0, "{host}: slurmd -G failed:\n{said}\n{gres}");
        assert!(
            !said.contains("error") && !said.contains("fatal"),
            "{host}: slurmd complained:\n{said}\n{gres}"
        );
        assert_eq!(file_cores(&said), ours, "{host}: slurmd read other cores:\n{said}\n{gres}");
    }

    // The mistake the format guards against: the node's OS CPU numbers as Cores= (what
    // numactl prints) are refused by slurmd on the 2-socket, 2-thread host.
    let snap = repo("testdata/hosts/hwloc-32em64t-2n8c2t-pci-normalio");
    let tmp = tempfile::tempdir().unwrap();
    let node = tmp.path().join("gpu0");
    std::fs::write(&node, "").unwrap();
    let (_, gres, _) = plan(&[
        "--from",
        snap.to_str().unwrap(),
        "--format",
        "slurm-gres",
        "--gres-file",
        &format!("0={}", node.display()),
        "--gres-file",
        &format!("1={}", node.display()),
        "--gres-file",
        &format!("2={}", node.display()),
        "--gres-file",
        &format!("3={}", node.display()),
    ]);
    assert!(gres.contains("(OS CPUs 0-7,16-23)\nName=gpu Type=nvidia File="), "{gres}");
    let wrong = gres.replacen("Cores=0-7", "Cores=0-7,16-23", 1);
    let (_, said) = slurmd_reads(&snap, &wrong, &tmp.path().join("slurm"));
    assert!(said.contains("Invalid GRES data for gpu, Cores=0-7,16-23"), "{said}");
}

#[test]
fn gres_without_device_nodes_is_still_read_and_names_what_to_fill_in() {
    let snap = repo("testdata/hosts/h100-2gpu-vm-live");
    let (code, gres, err) = plan(&["--from", snap.to_str().unwrap(), "--format", "slurm-gres"]);
    assert_eq!(code, 0, "{err}");
    assert!(gres.contains(
        "#   NodeName=<this host> Sockets=1 CoresPerSocket=32 ThreadsPerCore=1 Gres=gpu:nvidia_h100_80gb_hbm3:2\n"
    ), "{gres}");
    assert!(gres.contains(
        "# device node not found: File=/dev/nvidiaN (N: \"Device Minor\" in /proc/driver/nvidia/gpus/0000:00:06.0/information)\n\
         Name=gpu Type=nvidia_h100_80gb_hbm3 Count=1 Cores=0-31\n"
    ), "{gres}");
    if Command::new("slurmd").arg("-V").output().is_err() {
        return skip("slurmd (Debian slurmd)");
    }
    let tmp = tempfile::tempdir().unwrap();
    let (rc, said) = slurmd_reads(&snap, &gres, tmp.path());
    assert_eq!(rc, 0, "{said}");
    assert!(!said.contains("error") && !said.contains("fatal"), "{said}");

    // A snapshot without hwloc's cores is refused in one line, no CPU numbers printed.
    let (code, out, err) = plan(&[
        "--from",
        repo("testdata/hosts/seed-4xmxc500").to_str().unwrap(),
        "--format",
        "slurm-gres",
    ]);
    assert_eq!(code, 2);
    assert!(out.is_empty(), "{out}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("slurm-gres needs the core topology"), "{err}");

    // Bad --gres-file values.
    let (code, _, err) = plan(&[
        "--from",
        snap.to_str().unwrap(),
        "--format",
        "slurm-gres",
        "--gres-file",
        "5=/dev/nvidia5",
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains("--gres-file \"5=/dev/nvidia5\": the host has no GPU 5 (GPUs: 0,1)"),
        "{err}"
    );
}

#[test]
fn nfd_feature_file_carries_layout_binding_and_the_measured_gain() {
    let (code, out, err) = plan(&[
        "--from",
        repo("testdata/hosts/ms-swift-8xc500").to_str().unwrap(),
        "--tp",
        "4",
        "--format",
        "nfd",
        "--compare-result",
        repo("testdata/export/compare-demo.json").to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let labels: Vec<&str> = out.lines().filter(|l| !l.starts_with('#')).collect();
    let p = "nodeagent.feature.node.kubernetes.io/";
    let want: Vec<String> = [
        "binding-best=none",
        "binding-gain-within-noise=true",
        "binding-loss-percent=6.8",
        "binding-recommended=true",
        "gpu-count=8",
        "gpu-model=metax_c500",
        "gpu-vendor=metax",
        "gpus-numa-node-0=8",
        "instance-0-gpus=0_1_2_3",
        "instance-0-numa-nodes=0",
        "instance-1-gpus=4_5_6_7",
        "instance-1-numa-nodes=0",
        "instances=2",
        "numa-nodes=1",
    ]
    .iter()
    .map(|l| format!("{p}{l}"))
    .collect();
    assert_eq!(labels, want, "{out}");
    // Every value is a valid Kubernetes label value.
    let value = regex::Regex::new(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$").unwrap();
    for l in &labels {
        let (name, v) = l.split_once('=').unwrap();
        assert!(value.is_match(v) && v.len() <= 63, "{l}");
        assert!(name.len() - p.len() <= 63, "{l}");
    }

    // A file that is not a compare summary: one line naming it, exit 2.
    let (code, _, err) = plan(&[
        "--from",
        repo("testdata/hosts/seed-4xmxc500").to_str().unwrap(),
        "--format",
        "nfd",
        "--compare-result",
        repo("testdata/hosts/seed-4xmxc500/plan.json").to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("plan.json: not a compare summary: no \"bindings\" list"), "{err}");
}

fn validator() -> Option<PathBuf> {
    let venv = std::env::var("NODEAGENT_K8S_VENV")
        .unwrap_or_else(|_| "/var/cache/nodeagent-test/k8s-venv".into());
    let bin = Path::new(&venv).join("bin/kubernetes-validate");
    bin.exists().then_some(bin)
}

#[test]
fn kubernetes_manifests_validate_against_the_api_schemas() {
    let Some(validate) = validator() else {
        return skip("kubernetes-validate (the k8s-venv)");
    };
    let dir = repo("deploy/kubernetes");
    let core = ["namespace.yaml", "serviceaccount.yaml", "daemonset.yaml", "service.yaml"];
    let out = Command::new(&validate)
        .arg("--strict")
        .args(core.iter().map(|f| dir.join(f)))
        .output()
        .unwrap();
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert_eq!(text.matches(" passed for resource ").count(), core.len(), "{text}");

    // The validator is a real check: an unknown field in the pod spec is refused.
    let tmp = tempfile::tempdir().unwrap();
    let ds = std::fs::read_to_string(dir.join("daemonset.yaml")).unwrap();
    let bad = ds.replace("      hostPID: true\n", "      hostPID: true\n      hostPIDs: true\n");
    assert_ne!(bad, ds);
    std::fs::write(tmp.path().join("bad.yaml"), bad).unwrap();
    let out =
        Command::new(&validate).arg("--strict").arg(tmp.path().join("bad.yaml")).output().unwrap();
    assert!(!out.status.success(), "an unknown field passed strict validation");

    // What the schemas cannot see: the objects refer to each other by the same names, and the
    // commands the pods run are nodeagent command lines.
    assert!(ds.contains("serviceAccountName: nodeagent"));
    let sm = std::fs::read_to_string(dir.join("servicemonitor.yaml")).unwrap();
    let svc = std::fs::read_to_string(dir.join("service.yaml")).unwrap();
    assert!(sm.contains("- port: metrics") && svc.contains("- name: metrics"), "{sm}\n{svc}");
    assert!(ds.contains("containerPort: 9400") && svc.contains("port: 9400"));
    for text in [&ds, &sm, &svc] {
        assert!(text.contains("app.kubernetes.io/name: nodeagent"));
    }
    use clap::Parser;
    let monitor = ["nodeagent", "monitor", "--listen", "0.0.0.0:9400", "--interval", "5s"];
    assert!(ds.contains(r#"args: ["monitor", "--listen", "0.0.0.0:9400", "--interval", "5s"]"#));
    nodeagent::cli::Cli::try_parse_from(monitor).expect("the DaemonSet's monitor command line");
    assert!(ds.contains("nodeagent plan --format nfd $gain > /features.d/nodeagent.tmp"));
    nodeagent::cli::Cli::try_parse_from([
        "nodeagent",
        "plan",
        "--format",
        "nfd",
        "--compare-result",
        "/var/lib/nodeagent/compare.json",
    ])
    .expect("the DaemonSet's feature-file command line");
}
