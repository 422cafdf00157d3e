//! NVML for real through FFI, without a GPU: `tests/fake-nvml/fake_nvml.c` is compiled here with
//! `cc -shared -fPIC` into a `libnvidia-ml.so.1` that implements the NVML functions nodeagent
//! calls with NVML's signatures, its readings driven by a `fake_nvml.conf` beside the copy each
//! test loads. The library reader (`host::nvml`) is driven in-process; the monitor, its
//! `/metrics` and alerts, the fallback to `nvidia-smi` and the serve preflight through the
//! built binary with `NODEAGENT_NVML_LIB` pointing at the fake.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nodeagent::host::nvml::{NvmlError, NvmlLib};
use serde_json::Value;

#[path = "support/metrics.rs"]
mod metrics;
use metrics::{alerts, http_get, listening, scrape_clean, wait_status};

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

/// Compiles the fake library once per test binary (`variant` adds `-D` flags); the path of
/// the built `.so`.
fn built(variant: &'static str) -> PathBuf {
    static FULL: OnceLock<PathBuf> = OnceLock::new();
    static OLD: OnceLock<PathBuf> = OnceLock::new();
    let cell = if variant.is_empty() { &FULL } else { &OLD };
    cell.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("fake-nvml{variant}"));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("libnvidia-ml.so.1");
        let mut cc = Command::new("cc");
        cc.args(["-shared", "-fPIC", "-Wall", "-Werror", "-o"]).arg(&out);
        if !variant.is_empty() {
            cc.arg(format!("-D{variant}"));
        }
        let status =
            cc.arg(repo("tests/fake-nvml/fake_nvml.c")).status().expect("cc must be installed");
        assert!(status.success(), "building the fake NVML failed");
        out
    })
    .clone()
}

/// A private copy of the fake library with its config; returns the library's path.
fn fake(dir: &Path, conf: &str) -> PathBuf {
    fake_variant(dir, conf, "")
}

fn fake_variant(dir: &Path, conf: &str, variant: &'static str) -> PathBuf {
    let lib = dir.join("libnvidia-ml.so.1");
    std::fs::copy(built(variant), &lib).unwrap();
    std::fs::write(dir.join("fake_nvml.conf"), conf).unwrap();
    lib
}

fn set_conf(dir: &Path, conf: &str) {
    // Written whole and renamed, so the library never reads half a file.
    std::fs::write(dir.join("fake_nvml.conf.new"), conf).unwrap();
    std::fs::rename(dir.join("fake_nvml.conf.new"), dir.join("fake_nvml.conf")).unwrap();
}

#[test]
fn every_field_is_read_through_the_ffi() {
    let dir = tempfile::tempdir().unwrap();
    let me = std::process::id();
    let lib = fake(
        dir.path(),
        &format!(
            "gpus 2\nnvlinks 2\ngpu0.mem_used_mib 21653\ngpu0.util 97\ngpu0.temp 62\n\
             gpu0.power_mw 685350\ngpu0.proc.pid {me}\ngpu0.proc.mib 4682\ngpu1.bus 0x2a\n\
             gpu1.sm_clock 1410\ngpu1.throttle 0x44\ngpu1.pstate 2\ngpu1.ecc_corrected 7\n\
             gpu1.ecc_uncorrected 1\ngpu1.pcie_gen 4\ngpu1.pcie_width 8\ngpu1.link1.down 1\n\
             gpu1.numa 1\ngpu1.cpumask 0xf00\n"
        ),
    );
    let nvml = NvmlLib::open(lib.as_os_str()).unwrap();
    assert_eq!(nvml.driver_version(), Some("580.159.04-fake"));
    let r = nvml.read(Path::new("/proc")).unwrap();
    assert_eq!(r.degraded, Vec::<String>::new());
    assert_eq!(r.gpus.len(), 2);
    let g0 = &r.gpus[0];
    assert_eq!(g0.name.as_deref(), Some("Fake H100 80GB HBM3"));
    assert_eq!(g0.bus_id.as_deref(), Some("0000:18:00.0"));
    assert_eq!((g0.memory_used_mib, g0.memory_total_mib), (Some(21653), Some(81559)));
    assert_eq!(g0.utilization_pct, Some(97.0));
    assert_eq!(g0.temperature_c, Some(62.0));
    assert_eq!(g0.power_w, Some(685.35));
    assert_eq!(r.gpus[1].bus_id.as_deref(), Some("0000:2a:00.0"));
    // The process, named from /proc like nvidia-smi does.
    assert_eq!(r.processes.len(), 1);
    let p = &r.processes[0];
    assert_eq!((p.gpu, p.pid, p.memory_mib), (0, me, Some(4682)));
    assert!(!p.name.is_empty());

    let h0 = &r.health[0];
    assert_eq!(
        (h0.sm_clock_mhz, h0.mem_clock_mhz, h0.sm_clock_max_mhz),
        (Some(1980), Some(2619), Some(1980))
    );
    assert_eq!((h0.throttle_reasons, h0.performance_state), (Some(0), Some(0)));
    assert_eq!(
        (h0.ecc_enabled, h0.ecc_corrected, h0.ecc_uncorrected),
        (Some(true), Some(0), Some(0))
    );
    let links0 = h0.links.as_ref().unwrap();
    assert_eq!(links0.len(), 2);
    assert!(links0.iter().all(|l| l.up && l.remote_bus_id.as_deref() == Some("0000:2a:00.0")));
    let h1 = &r.health[1];
    assert_eq!(h1.sm_clock_mhz, Some(1410));
    assert_eq!(h1.throttle_reasons, Some(0x44));
    assert_eq!(h1.performance_state, Some(2));
    assert_eq!((h1.ecc_corrected, h1.ecc_uncorrected), (Some(7), Some(1)));
    assert_eq!(
        (h1.pcie.gen, h1.pcie.gen_max, h1.pcie.width, h1.pcie.width_max),
        (Some(4), Some(5), Some(8), Some(16))
    );
    let links1 = h1.links.as_ref().unwrap();
    assert_eq!((links1[0].up, links1[1].up), (true, false));
    assert_eq!(links1[1].remote_bus_id, None, "an inactive link names no far end");

    let (facts, notes) = nvml.facts().unwrap();
    assert!(notes.is_empty(), "{notes:?}");
    assert_eq!(facts[0].uuid.as_deref(), Some("GPU-fake-0000"));
    assert_eq!((facts[0].numa_node, facts[1].numa_node), (Some(0), Some(1)));
    assert_eq!(facts[0].cpu_affinity.as_ref().unwrap().to_list(), "0-7");
    assert_eq!(facts[1].cpu_affinity.as_ref().unwrap().to_list(), "8-11");
    assert_eq!(facts[1].bus_id.as_deref(), Some("0000:2a:00.0"));
}

#[test]
fn a_failing_call_degrades_its_field_alone() {
    let dir = tempfile::tempdir().unwrap();
    let lib = fake(
        dir.path(),
        "gpus 2\nfail.nvmlDeviceGetPowerUsage 3\nfail.gpu1.nvmlDeviceGetTemperature 3\n\
         fail.gpu0.nvmlDeviceGetTotalEccErrors 999\nfail.gpu1.nvmlDeviceGetComputeRunningProcesses_v3 3\n\
         fail.gpu0.nvmlDeviceGetCurrPcieLinkWidth 3\n",
    );
    let nvml = NvmlLib::open(lib.as_os_str()).unwrap();
    let r = nvml.read(Path::new("/proc")).unwrap();
    assert_eq!((r.gpus[0].power_w, r.gpus[1].power_w), (None, None));
    assert_eq!((r.gpus[0].temperature_c, r.gpus[1].temperature_c), (Some(50.0), None));
    // Everything else stands.
    assert_eq!(r.gpus[1].memory_used_mib, Some(1001));
    assert_eq!(r.gpus[1].utilization_pct, Some(41.0));
    assert_eq!(r.health[0].ecc_uncorrected, None);
    assert_eq!(r.health[1].ecc_uncorrected, Some(0));
    assert_eq!((r.health[0].pcie.width, r.health[0].pcie.gen), (None, Some(5)));
    assert_eq!(
        r.degraded,
        // The status fields' notes first, then the health fields' (read apart: see
        // `NvmlLib::read_with`).
        [
            "gpu 0 power: not supported",
            "gpu 1 temperature: not supported",
            "gpu 1 power: not supported",
            "gpu 1 processes: not supported",
            "gpu 0 ecc corrected: an internal driver error occurred",
            "gpu 0 ecc uncorrected: an internal driver error occurred",
            "gpu 0 pcie width: not supported",
        ]
    );
    // No NVLink on these boards: `None`, no note.
    assert_eq!(r.health[0].links, None);
}

/// The health fields fixed while the driver is loaded (max SM clock, ECC mode, the link's
/// maximum generation and width) are asked once per GPU, not on every health reading: on a
/// real H100 the max-clock call alone costs 1.25 ms of CPU (BENCHMARKS.md). The changing
/// fields are asked every time; a failed static call is asked again; a GPU that comes back at
/// another bus id is read afresh.
#[test]
fn fixed_health_fields_are_read_once_per_gpu() {
    let dir = tempfile::tempdir().unwrap();
    let lib = fake(dir.path(), "gpus 2\nfail.gpu1.nvmlDeviceGetMaxClockInfo 999\n");
    let calls = dir.path().join("fake_nvml.calls");
    std::fs::write(&calls, "").unwrap();
    let count = |f: &str| -> Vec<usize> {
        let log = std::fs::read_to_string(&calls).unwrap();
        (0..2).map(|g| log.lines().filter(|l| *l == format!("{f} gpu{g}")).count()).collect()
    };
    let nvml = NvmlLib::open(lib.as_os_str()).unwrap();
    let mut readings = Vec::new();
    for _ in 0..3 {
        readings.push(nvml.read(Path::new("/proc")).unwrap());
    }
    assert_eq!(count("nvmlDeviceGetClockInfo"), [6, 6], "SM and memory clocks, every time");
    assert_eq!(count("nvmlDeviceGetEccMode"), [1, 1]);
    assert_eq!(count("nvmlDeviceGetMaxPcieLinkGeneration"), [1, 1]);
    assert_eq!(count("nvmlDeviceGetMaxPcieLinkWidth"), [1, 1]);
    // GPU 1's max clock failed: asked again each time, and said each time.
    assert_eq!(count("nvmlDeviceGetMaxClockInfo"), [1, 3]);
    for r in &readings {
        assert_eq!(r.health[0].sm_clock_max_mhz, Some(1980));
        assert_eq!(r.health[1].sm_clock_max_mhz, None);
        assert_eq!((r.health[0].ecc_enabled, r.health[0].pcie.width_max), (Some(true), Some(16)));
        assert_eq!(r.degraded, ["gpu 1 sm clock max: an internal driver error occurred"]);
    }
    // The cached values are the ones read, not defaults: the second reading equals the first.
    assert_eq!(readings[1].health, readings[0].health);
    // GPU 0 answers at another bus id (it fell off and came back as another device): read again.
    set_conf(dir.path(), "gpus 2\nfail.gpu1.nvmlDeviceGetMaxClockInfo 999\ngpu0.bus 0x40\n");
    nvml.read(Path::new("/proc")).unwrap();
    assert_eq!(count("nvmlDeviceGetEccMode"), [2, 1]);
}

#[test]
fn missing_library_init_failure_and_missing_symbols() {
    let err = NvmlLib::open(std::ffi::OsStr::new("/nonexistent/libnvidia-ml.so.1")).unwrap_err();
    assert!(
        matches!(&err, NvmlError::Load { lib, .. } if lib == "/nonexistent/libnvidia-ml.so.1"),
        "{err}"
    );
    assert!(
        err.to_string().starts_with("NVML not loaded from /nonexistent/libnvidia-ml.so.1: "),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let lib = fake(dir.path(), "init_fail 9\n");
    let err = NvmlLib::open(lib.as_os_str()).unwrap_err();
    assert!(err.to_string().contains("driver"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let lib = fake(dir.path(), "fail.nvmlDeviceGetCount_v2 999\n");
    let nvml = NvmlLib::open(lib.as_os_str()).unwrap();
    let err = nvml.read(Path::new("/proc")).unwrap_err();
    assert!(matches!(err, NvmlError::Count { .. }), "{err}");

    // An older library without some symbols: those fields degrade, the rest is read.
    let dir = tempfile::tempdir().unwrap();
    let lib = fake_variant(dir.path(), "gpus 1\nnvlinks 4\n", "FAKE_NVML_OLD");
    let nvml = NvmlLib::open(lib.as_os_str()).unwrap();
    let r = nvml.read(Path::new("/proc")).unwrap();
    assert_eq!(r.gpus[0].power_w, None);
    assert_eq!(r.gpus[0].memory_used_mib, Some(1000));
    assert_eq!(r.health[0].links, None);
    assert!(
        r.degraded.iter().any(|d| d.starts_with("gpu 0 power: symbol missing in this library")),
        "{:?}",
        r.degraded
    );
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nodeagent"));
    c.env("NO_COLOR", "1").env_remove("RUST_LOG");
    c
}

#[test]
fn monitor_reads_nvml_and_falls_back_to_nvidia_smi_saying_so_once() {
    let dir = tempfile::tempdir().unwrap();
    let lib = fake(dir.path(), "gpus 2\ngpu1.power_mw 73150\nfail.nvmlDeviceGetPowerUsage 0\nfail.gpu0.nvmlDeviceGetPowerUsage 3\n");
    let out = bin()
        .args([
            "monitor",
            "--once",
            "--json",
            "--tool",
            "nvidia",
            "--nvidia-smi",
            "/nonexistent/nvidia-smi",
        ])
        .env("NODEAGENT_NVML_LIB", &lib)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["source"], "nvml");
    assert_eq!(v["sampler"], format!("nvml ({})", lib.display()));
    assert_eq!(v["gpus"][1]["power_w"], 73.15);
    assert!(v["gpus"][0]["power_w"].is_null());
    assert_eq!(v["degraded"], serde_json::json!(["gpu 0 power: not supported"]));
    assert_eq!(v["health"][0]["sm_clock_mhz"], 1980);
    assert_eq!(v["gpus"][1]["numa_node"], 1, "NUMA node from NVML");

    // No NVML: nvidia-smi, said once on stderr and in the sampler's description.
    let fake_smi = repo("testdata/fake-tools/nvidia-smi");
    let out = bin()
        .args(["monitor", "--once", "--json", "--tool", "nvidia", "--nvidia-smi"])
        .arg(&fake_smi)
        .env("NODEAGENT_NVML_LIB", "/nonexistent/libnvidia-ml.so.1")
        .env("FAKE_NVSMI_DIR", repo("testdata/monitor/h100-load"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["source"], "nvidia-smi");
    let sampler = v["sampler"].as_str().unwrap();
    assert!(
        sampler.starts_with("nvidia-smi (")
            && sampler.contains("; NVML not loaded from /nonexistent/libnvidia-ml.so.1"),
        "{sampler}"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("NVML not used").count(), 1, "{err}");
    assert_eq!(v["gpus"][1]["memory_used_mib"], 4691);

    // Neither: one line naming both.
    let out = bin()
        .args(["monitor", "--once", "--tool", "nvidia", "--nvidia-smi", "/nonexistent/nvidia-smi"])
        .env("NODEAGENT_NVML_LIB", "off")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/nvidia-smi: not found or not executable, and NVML is off (NODEAGENT_NVML_LIB=off)"), "{err}");
}

#[test]
fn health_alerts_with_hysteresis_and_dcgm_series_in_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let good = "gpus 2\nnvlinks 2\n";
    let lib = fake(dir.path(), good);
    let mut child = bin()
        .args([
            "monitor",
            "--tool",
            "nvidia",
            "--interval",
            "200ms",
            "--nvidia-smi",
            "/nonexistent/nvidia-smi",
            "--listen",
            "127.0.0.1:0",
        ])
        .env("NODEAGENT_NVML_LIB", &lib)
        // Health every tick: the hysteresis below counts readings.
        .env("NODEAGENT_HEALTH_PERIOD", "0s")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (addr, _) = listening(&mut child);
    let wait = |what: &str, pred: &dyn Fn(&Value) -> bool| wait_status(&addr, what, pred);
    let v = wait("a sample", &|v| v["samples_total"].as_u64() >= Some(3));
    assert_eq!(v["source"], "nvml");
    assert!(alerts(&v).is_empty(), "{v:#}");

    scrape_clean(
        &addr,
        &[
            "nodeagent_gpu_sample_source{source=\"nvml\"} 1",
            "nodeagent_gpu_link_up{gpu=\"1\",pci_bus_id=\"0000:19:00.0\",link=\"1\"} 1",
            "DCGM_FI_DEV_SM_CLOCK{gpu=\"0\",pci_bus_id=\"0000:18:00.0\",model_name=\"Fake H100 80GB HBM3\"} 1980",
            "DCGM_FI_DEV_PCIE_MAX_LINK_WIDTH{gpu=\"1\",pci_bus_id=\"0000:19:00.0\",model_name=\"Fake H100 80GB HBM3\"} 16",
            "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL{gpu=\"0\",pci_bus_id=\"0000:18:00.0\",model_name=\"Fake H100 80GB HBM3\"} 0",
            "nodeagent_alerts_active{check=\"link-down\"} 0",
        ],
    );

    // Faults on GPU 1: raised only after two ticks hold them, all four, each named.
    set_conf(
        dir.path(),
        "gpus 2\nnvlinks 2\ngpu1.link0.down 1\ngpu1.ecc_uncorrected 3\ngpu1.throttle 0x20\ngpu1.pcie_width 4\n",
    );
    let v = wait("the health alerts", &|v| alerts(v).len() == 4);
    assert_eq!(alerts(&v), ["ecc-uncorrected", "clocks-throttled", "pcie-degraded", "link-down"]);
    assert!(v["alerts"].as_array().unwrap().iter().all(|a| a["gpu"] == 1));
    let metrics = http_get(&addr, "/metrics").1;
    assert!(metrics.contains("nodeagent_alerts_active{check=\"pcie-degraded\"} 1"), "{metrics}");
    assert!(
        metrics
            .contains("nodeagent_gpu_link_up{gpu=\"1\",pci_bus_id=\"0000:19:00.0\",link=\"0\"} 0"),
        "{metrics}"
    );
    // Cleared once the faults are gone for two ticks.
    set_conf(dir.path(), good);
    wait("the alerts to clear", &|v| alerts(v).is_empty());
    let _ = child.kill();
    let _ = child.wait();
}

/// The health readings (most of a tick's NVML calls) are taken on the first tick and then once
/// a period; the ticks between repeat them with their age, and read the rest afresh.
#[test]
fn monitor_reads_health_once_a_period_and_the_rest_every_tick() {
    let dir = tempfile::tempdir().unwrap();
    let lib = fake(dir.path(), "gpus 1\n");
    let run = |period: &str| {
        let out = bin()
            .args(["monitor", "--json", "--tool", "nvidia", "--interval", "100ms", "--count", "6"])
            .args(["--nvidia-smi", "/nonexistent/nvidia-smi"])
            .env("NODEAGENT_NVML_LIB", &lib)
            .env("NODEAGENT_HEALTH_PERIOD", period)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let ticks: Vec<Value> = serde_json::Deserializer::from_slice(&out.stdout)
            .into_iter::<Value>()
            .map(Result::unwrap)
            .collect();
        assert_eq!(ticks.len(), 6);
        assert!(ticks
            .iter()
            .all(|t| t["health"][0]["sm_clock_mhz"] == 1980
                && t["gpus"][0]["memory_used_mib"].is_u64()));
        ticks.iter().map(|t| t["health"][0]["age_ticks"].as_u64().unwrap_or(0)).collect::<Vec<_>>()
    };
    // A period far longer than the run: read once, then repeated, one tick older each time.
    assert_eq!(run("1h"), [0, 1, 2, 3, 4, 5]);
    assert_eq!(run("0s"), [0; 6]);
    let out = bin()
        .args(["monitor", "--once", "--tool", "nvidia", "--nvidia-smi", "/nonexistent/nvidia-smi"])
        .env("NODEAGENT_NVML_LIB", &lib)
        .env("NODEAGENT_HEALTH_PERIOD", "often")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("NODEAGENT_HEALTH_PERIOD=\"often\": not a duration"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// `serve` of a 2-GPU instance on the fake NVML: links down refuse the start in one line
/// (nothing started, exit 1); `--skip-link-check` starts anyway with a warning; links up start.
#[test]
fn serve_preflight_refuses_an_instance_whose_links_are_down() {
    let dir = tempfile::tempdir().unwrap();
    const DOWN: &str =
        "gpus 2\nnvlinks 2\ngpu0.link0.down 1\ngpu0.link1.down 1\ngpu1.link0.down 1\ngpu1.link1.down 1\n";
    let lib = fake(dir.path(), DOWN);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let marker = dir.path().join("engine-started");
    let config = dir.path().join("nodeagent.toml");
    std::fs::write(
        &config,
        format!(
            "host = \"local\"\nmodel = \"sim\"\nstate_dir = {:?}\n[launch]\nmode = \"bare\"\ngpus = [0, 1]\n\
             [engine]\nport = {port}\nargv = [\"sh\", \"-c\", \"touch {}; exec sleep 30\"]\n",
            dir.path().join("state").display().to_string(),
            marker.display()
        ),
    )
    .unwrap();
    let serve = |extra: &[&str]| {
        bin()
            .args(["serve", "--config"])
            .arg(&config)
            .args(extra)
            .env("NODEAGENT_NVML_LIB", &lib)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let out = serve(&[]).wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err.lines().find(|l| l.contains("interconnect preflight")).unwrap_or_default();
    assert!(
        line.contains("GPU 0 (0000:18:00.0) and GPU 1 (0000:19:00.0): no active NVLink between them (GPU 0 NVLink 0, 1 inactive; GPU 1 NVLink 0, 1 inactive)"),
        "{err}"
    );
    assert!(!marker.exists(), "the engine must not start");

    for (conf, extra, want) in [
        (DOWN, &["--skip-link-check"][..], "--skip-link-check: starting anyway"),
        ("gpus 2\nnvlinks 2\n", &[][..], "interconnect preflight passed"),
    ] {
        set_conf(dir.path(), conf);
        let child = serve(extra);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !marker.exists() {
            assert!(Instant::now() < deadline, "the engine did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        // Past the engine's registration (pid, cgroup), then stop the agent.
        std::thread::sleep(Duration::from_millis(500));
        let _ = nix_signal(child.id(), libc::SIGINT);
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{err}");
        std::fs::remove_file(&marker).unwrap();
    }
}

fn nix_signal(pid: u32, sig: i32) -> i32 {
    // SAFETY: kill(2) with a pid this test spawned and a valid signal number.
    unsafe { libc::kill(pid as i32, sig) }
}

/// XID events through the NVML event set, in process: every line `gpuN.xid CODE` the fake's
/// config gains is one event. A GPU whose registration is refused, or that does not support
/// XID events, is not watched, with the reason; the others are (the wrapper frees the set on a
/// refused registration: it is built again with the GPUs registered before). Stopping the
/// watcher ends its thread and frees the set.
#[test]
fn xid_events_are_counted_per_gpu_and_an_unwatched_gpu_says_why() {
    use nodeagent::host::health::XidEvent;
    let dir = tempfile::tempdir().unwrap();
    let conf = "gpus 4\nfail.gpu1.nvmlDeviceRegisterEvents 3\ngpu2.event_types 0x3\n";
    let lib = fake(dir.path(), conf);
    let calls = dir.path().join("fake_nvml.calls");
    std::fs::write(&calls, "").unwrap();
    let count = |line: &str| {
        std::fs::read_to_string(&calls).unwrap().lines().filter(|l| *l == line).count()
    };
    let nvml = std::sync::Arc::new(NvmlLib::open(lib.as_os_str()).unwrap());
    let watcher = nvml.watch_xids();
    let wait = |what: &str, pred: &dyn Fn(&nodeagent::host::health::XidLog) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = watcher.log();
            if pred(&log) {
                return log;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}: {log:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let log = wait("registration", &|l| l.gpus.len() == 4);
    let reasons: Vec<_> = log.gpus.values().map(|g| g.not_watched.clone()).collect();
    assert_eq!(
        reasons,
        [
            None,
            Some("register events: not supported".into()),
            Some("xid events not supported".into()),
            None
        ]
    );
    // GPU 0 was registered again after GPU 1's refusal freed the set.
    assert_eq!(count("nvmlDeviceRegisterEvents gpu0"), 2);
    assert_eq!(count("nvmlEventSetFree gpu0"), 1);

    let before = nodeagent::monitor::sample::now_unix_ms();
    set_conf(dir.path(), &format!("{conf}gpu3.xid 79\ngpu1.xid 48\ngpu3.xid 13\ngpu3.xid 13\n"));
    let log = wait("three events", &|l| l.gpus[&3].totals.values().sum::<u64>() == 3);
    let g3 = &log.gpus[&3];
    assert_eq!(g3.totals, [(13, 2), (79, 1)].into());
    assert_eq!(g3.last.map(|x| x.code), Some(13));
    let XidEvent { code, at_unix_ms } = g3.last_fault.unwrap();
    assert_eq!(code, 79);
    assert!(at_unix_ms >= before, "stamped when received");
    assert!(log.gpus[&1].totals.is_empty(), "GPU 1 is not registered: its event is not seen");
    assert!(log.gpus[&0].totals.is_empty());

    let started = Instant::now();
    watcher.stop();
    assert!(started.elapsed() < Duration::from_secs(2), "the thread ends within one wait");
    assert_eq!(count("nvmlEventSetFree gpu0"), 2, "the set is freed when the watcher stops");

    // A library without the event functions: nothing is watched, each GPU says why.
    let dir = tempfile::tempdir().unwrap();
    let lib = fake_variant(dir.path(), "gpus 2\n", "FAKE_NVML_OLD");
    let nvml = std::sync::Arc::new(NvmlLib::open(lib.as_os_str()).unwrap());
    let watcher = nvml.watch_xids();
    let deadline = Instant::now() + Duration::from_secs(10);
    while watcher.log().gpus.len() < 2 {
        assert!(Instant::now() < deadline, "{:?}", watcher.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    for g in watcher.log().gpus.values() {
        let why = g.not_watched.as_deref().unwrap();
        assert!(why.starts_with("event types: symbol missing in this library"), "{why}");
    }
}

/// The monitor binary end to end: an XID event becomes the GPU's `last_xid` in `/status`, a
/// counter and DCGM's gauge in `/metrics` (promtool-clean) and, for a fault XID, the `xid`
/// alert; an application XID is counted, not alerted; a GPU whose registration is refused is
/// reported not watched (logged once); SIGINT ends the monitor and its event thread cleanly.
#[test]
fn monitor_turns_an_xid_event_into_fields_series_and_an_alert() {
    let dir = tempfile::tempdir().unwrap();
    let conf = "gpus 2\nfail.gpu1.nvmlDeviceRegisterEvents 3\n";
    let lib = fake(dir.path(), conf);
    let calls = dir.path().join("fake_nvml.calls");
    std::fs::write(&calls, "").unwrap();
    let mut child = bin()
        .args(["monitor", "--tool", "nvidia", "--interval", "200ms"])
        .args(["--nvidia-smi", "/nonexistent/nvidia-smi", "--listen", "127.0.0.1:0"])
        .env("NODEAGENT_NVML_LIB", &lib)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Every line, those before the address too (the watcher logs as it starts).
    let (addr, stderr) = listening(&mut child);
    let wait = |what: &str, pred: &dyn Fn(&Value) -> bool| wait_status(&addr, what, pred);
    let v = wait("the watch state", &|v| v["health"][1]["xid_watched"] == false);
    assert_eq!(v["health"][0]["xid_watched"], true);
    assert_eq!(v["health"][1]["xid_not_watched"], "register events: not supported");
    assert!(v["health"][0].get("last_xid").is_none(), "{v:#}");
    assert!(alerts(&v).is_empty(), "{v:#}");

    set_conf(dir.path(), &format!("{conf}gpu0.xid 79\n"));
    let v = wait("the xid alert", &|v| alerts(v) == ["xid"]);
    assert_eq!(v["health"][0]["last_xid"]["code"], 79);
    assert_eq!(v["health"][0]["xid_events_total"]["79"], 1);
    let alert = &v["alerts"][0];
    assert_eq!(alert["gpu"], 0);
    assert_eq!(
        alert["message"],
        "GPU 0: XID 79 (GPU has fallen off the bus), 1 since the monitor started"
    );
    // An application XID: counted, the alert stays the fault's.
    set_conf(dir.path(), &format!("{conf}gpu0.xid 79\ngpu0.xid 13\n"));
    let v = wait("the second event", &|v| v["health"][0]["last_xid"]["code"] == 13);
    assert_eq!(alerts(&v), ["xid"]);
    scrape_clean(
        &addr,
        &[
            "nodeagent_gpu_xid_events_total{gpu=\"0\",pci_bus_id=\"0000:18:00.0\",xid=\"79\"} 1",
            "nodeagent_gpu_xid_events_total{gpu=\"0\",pci_bus_id=\"0000:18:00.0\",xid=\"13\"} 1",
            "DCGM_FI_DEV_XID_ERRORS{gpu=\"0\",pci_bus_id=\"0000:18:00.0\",model_name=\"Fake H100 80GB HBM3\"} 13",
            "nodeagent_gpu_xid_watched{gpu=\"0\",pci_bus_id=\"0000:18:00.0\"} 1",
            "nodeagent_gpu_xid_watched{gpu=\"1\",pci_bus_id=\"0000:19:00.0\"} 0",
            "nodeagent_alerts_active{check=\"xid\"} 1",
        ],
    );

    assert_eq!(nix_signal(child.id(), libc::SIGINT), 0);
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    let stderr = stderr.join().unwrap();
    assert_eq!(stderr.matches("XID events of this GPU not watched").count(), 1, "{stderr}");
    let log = std::fs::read_to_string(&calls).unwrap();
    // One free when GPU 1's registration was refused, one when the monitor stopped.
    assert_eq!(log.lines().filter(|l| *l == "nvmlEventSetFree gpu0").count(), 2, "{log}");
}
