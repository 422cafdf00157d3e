//! Fuzzing every parser entry point and the config loader with seeded mutations of real inputs
//! (issue 12, item 6), and the regression tests of hwloc's in-process crash (defect 8).
//!
//! The harness ([`every_entry_point_survives_mutated_inputs`]) mutates every captured tool
//! output, every snapshot in `testdata/hosts` and the config files and profiles (byte flips,
//! truncation, duplicated and deleted lines, huge and negative numbers, odd CPU lists, unicode,
//! empty files, 1 MB lines: `fuzz/mutate.rs`) and feeds them to the parsers, the snapshot loader
//! with the topology build and the plan, the sysfs reader, the hwloc XML loader and the config loader. It
//! requires, per input: no panic (`catch_unwind`), no signal (the process would die: hwloc XML
//! is loaded out of process), no input over the time budget, and every refusal's Display on one
//! line, naming the line where the parser knows it and the file where the loader knows it.
//! Findings are written under `target/tmp/fuzz-findings/` and listed in the failure.
//!
//! Deterministic: case `i` of entry point `e` is generated from `(NODEAGENT_FUZZ_SEED, e, i)`
//! alone, whatever the thread count. `NODEAGENT_FUZZ_CASES` sets the number of inputs (default
//! 2,000, a bounded slice for `cargo test`; `make fuzz` runs 100,000 in a release build),
//! `NODEAGENT_FUZZ_SEED` the seed (12), `NODEAGENT_FUZZ_ONLY` a substring of the entry points
//! to run, `NODEAGENT_FUZZ_BUDGET_MS` the per-input budget (5 s release, 20 s debug).

#[path = "fuzz/mutate.rs"]
mod mutate;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nodeagent::config;
use nodeagent::host::cpuset::CpuSet;
use nodeagent::host::hwloc::{self, HwlocError, XmlLoader};
use nodeagent::host::{
    self, gputopo, mxsmi, numactl, nvsmi, rocmsmi, runner::SystemRunner, sysfs, SourceOptions,
};
use nodeagent::{plan, topology};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const NODEAGENT: &str = env!("CARGO_BIN_EXE_nodeagent");

fn root() -> PathBuf {
    PathBuf::from(ROOT)
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

// ------------------------------------------------------------------------------ entry points

/// How one entry point is driven.
#[derive(Clone, Copy)]
enum Drive {
    /// A pure parser over text.
    Text(fn(&str) -> Result<(), Refusal>),
    /// `sysfs::read` over a copy of a snapshot's `sysfs/`, one file mutated.
    Sysfs,
    /// `host::gather` from a copy of a snapshot, one file mutated, then topology and plan.
    Snapshot,
    /// The hwloc XML loader, out of process (our own `__hwloc-xml` child).
    Hwloc,
    /// `config::load_str` on a mutated config file.
    Config,
    /// `config::load_str` on a config naming a mutated profile file.
    Profile,
}

/// A refusal: its Display, and the line the parser said it was at (when it knows one).
struct Refusal {
    msg: String,
    line: Option<usize>,
}

impl Refusal {
    fn of(e: &impl std::fmt::Display, line: Option<usize>) -> Self {
        Self { msg: e.to_string(), line }
    }
}

fn text_err(e: nodeagent::host::text::ParseError) -> Refusal {
    Refusal::of(&e, Some(e.line))
}

struct Entry {
    name: &'static str,
    weight: usize,
    drive: Drive,
    /// (label, bytes) for text inputs; (host dir, file list) for the snapshot kinds.
    seeds: Vec<Seed>,
}

#[derive(Clone)]
struct Seed {
    label: String,
    bytes: Vec<u8>,
    /// For snapshot kinds: the snapshot dir and its files (relative paths).
    dir: Option<PathBuf>,
    files: Vec<PathBuf>,
}

fn text_seed(label: String, bytes: Vec<u8>) -> Seed {
    Seed { label, bytes, dir: None, files: Vec::new() }
}

fn glob(dir: &str, pred: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    out.retain(|p| p.is_file() && p.file_name().and_then(|n| n.to_str()).is_some_and(&pred));
    out.sort();
    out
}

fn hosts() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(root().join("testdata/hosts"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    out.sort();
    out
}

/// Text seeds: fixture files matching `pred` in `dirs`, plus each host's `host_file`.
fn text_seeds(dirs: &[&str], pred: impl Fn(&str) -> bool + Copy, host_file: &str) -> Vec<Seed> {
    let mut paths: Vec<PathBuf> = dirs.iter().flat_map(|d| glob(d, pred)).collect();
    paths.extend(hosts().into_iter().map(|h| h.join(host_file)).filter(|p| p.is_file()));
    let seeds: Vec<Seed> = paths
        .iter()
        .map(|p| {
            let label = p.strip_prefix(root()).unwrap_or(p).display().to_string();
            text_seed(label, std::fs::read(p).unwrap())
        })
        .collect();
    assert!(!seeds.is_empty(), "no seeds for {host_file}");
    seeds
}

/// Every file of a snapshot (relative paths), golden outputs and READMEs left out.
fn snapshot_files(dir: &Path, under: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir.join(under)) else { return };
    let mut entries: Vec<_> = rd.filter_map(|e| e.ok()).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let rel = under.join(e.file_name());
        let name = e.file_name().to_string_lossy().into_owned();
        if e.path().is_dir() {
            snapshot_files(dir, &rel, out);
        } else if !matches!(name.as_str(), "plan.json" | "probe.json" | "README.md") {
            out.push(rel);
        }
    }
}

fn snapshot_seeds(only_sysfs: bool) -> Vec<Seed> {
    hosts()
        .into_iter()
        .filter_map(|h| {
            let mut files = Vec::new();
            let start = if only_sysfs { PathBuf::from("sysfs") } else { PathBuf::new() };
            snapshot_files(&h, &start, &mut files);
            if files.is_empty() {
                return None;
            }
            let label = h.file_name().unwrap().to_string_lossy().into_owned();
            Some(Seed { label, bytes: Vec::new(), dir: Some(h), files })
        })
        .collect()
}

/// `mx-smi -j` as its notes describe it (no capture exists).
const MX_SMI_JSON: &str = r#"warning: mx-smi -j is experimental
{"maca_version": "2.23.0.1018", "driver_version": "2.5.014", "attached_gpus": 4,
 "0000:05:00.0": {"device_id": 0, "unavailable_reason": "", "name": "MXC500", "temperature": 51, "power": 71, "memory_used": 60982, "memory_total": 65536, "utilization": 0},
 "0000:08:00.0": {"device_id": 1, "unavailable_reason": "", "name": "MXC500", "temperature": 51, "power": 76, "memory_used": 60534, "memory_total": 65536, "utilization": 0},
 "0000:0e:00.0": {"device_id": 2, "unavailable_reason": "", "name": "MXC500", "temperature": 50, "power": 74, "memory_used": 60534, "memory_total": 65536, "utilization": 0},
 "0000:0f:00.0": {"device_id": 3, "unavailable_reason": "", "name": "MXC500", "temperature": 50, "power": 71, "memory_used": 60534, "memory_total": 65536, "utilization": 0}}
"#;

/// Config files touching every section, built-in profiles by name and by path.
const CONFIGS: &[&str] = &[
    "host = \"metax-mxc500-4x64g\"\nmodel = \"qwen2.5-72b\"\n[engine]\nport = 8001\n[container]\nshm_size = \"64gb\"\nmemlock = -1\n[supervise]\nready_timeout = \"5m\"\nhealth_interval = \"5s\"\nstop_grace = \"60s\"\n",
    "host = \"local\"\nmodel = \"sim\"\nstate_dir = \"/var/lib/nodeagent\"\n[binding]\ncpus = \"0-15,32-47\"\nmem_policy = \"bind\"\nmem_nodes = [0, 1]\non_escape = \"warn\"\n[launch]\nmode = \"numactl\"\ninstance = 0\ngpus = [0, 1]\ntp = 2\n",
    "host = \"nvidia\"\nmodel = \"deepseek-r1-distill-qwen-32b\"\n[engine]\nargv = [\"vllm\", \"serve\", \"/models/x\", \"--port\", \"{port}\"]\nhost = \"0.0.0.0\"\nunset_env = [\"CUDA_VISIBLE_DEVICES\"]\n[engine.env]\nA = \"1\"\n[supervise]\nhealth_failures = 3\nrestart_budget = 5\nrestart_window = \"10m\"\nbackoff_initial = \"1s\"\nbackoff_max = \"30s\"\nstable_after = \"2m\"\nstall_timeout = \"2m\"\nbinding_check_interval = \"10s\"\nhealth_timeout = \"5s\"\n",
    "model = \"sim\"\n[binding]\ncpu_nodes = [0]\nmem_policy = \"interleave\"\nmem_nodes = [0]\n[container]\nimage = \"vllm:latest\"\ndevices = [\"/dev/dri\"]\nvolumes = [\"/models:/models:ro\"]\nsecurity_opt = [\"seccomp=unconfined\"]\nnetwork = \"host\"\nipc = \"host\"\ninit = true\nstop_timeout_s = 30\n",
];

fn entries() -> Vec<Entry> {
    let txt = |n: &str| n.ends_with(".txt");
    let any = |_: &str| true;
    let mut cpulists: Vec<Seed> = Vec::new();
    for s in snapshot_seeds(true) {
        let dir = s.dir.clone().unwrap();
        for f in &s.files {
            let name = f.file_name().unwrap().to_string_lossy();
            if name.contains("cpulist") || name.contains("cpumap") {
                let label = format!("{}/{}", s.label, f.display());
                cpulists.push(text_seed(label, std::fs::read(dir.join(f)).unwrap()));
            }
        }
    }
    for lit in ["0-15,32-47", "0", "", "0-7,16-23\n", "0x0000ffff,ffff0000", "ff"] {
        cpulists.push(text_seed(format!("literal {lit:?}"), lit.as_bytes().to_vec()));
    }
    let profiles: Vec<Seed> = ["profiles/hosts", "profiles/models"]
        .iter()
        .flat_map(|d| glob(d, |n| n.ends_with(".toml")))
        .map(|p| text_seed(p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    let mut configs: Vec<Seed> = CONFIGS
        .iter()
        .enumerate()
        .map(|(i, c)| text_seed(format!("config {i}"), c.as_bytes().to_vec()))
        .collect();
    configs.extend(profiles.iter().cloned());
    vec![
        Entry {
            name: "mx-smi",
            weight: 9,
            drive: Drive::Text(|t| mxsmi::parse(t).map(drop).map_err(text_err)),
            seeds: text_seeds(&["testdata/fixtures/mx-smi", "testdata/mx-smi"], txt, "mx-smi.txt"),
        },
        Entry {
            name: "mx-smi -j",
            weight: 5,
            drive: Drive::Text(|t| mxsmi::parse_json(t).map(drop).map_err(text_err)),
            seeds: vec![text_seed("mx-smi -j sample".into(), MX_SMI_JSON.as_bytes().to_vec())],
        },
        Entry {
            name: "mx-smi topo",
            weight: 7,
            drive: Drive::Text(|t| gputopo::parse(t).map(drop).map_err(text_err)),
            seeds: text_seeds(&["testdata/fixtures/mx-smi-topo"], txt, "mx-smi-topo-m.txt"),
        },
        Entry {
            name: "nvidia-smi",
            weight: 9,
            drive: Drive::Text(|t| nvsmi::parse_table(t).map(drop).map_err(text_err)),
            seeds: text_seeds(
                &["testdata/fixtures/nvidia-smi", "testdata/captures/h100-2gpu-vm"],
                |n| n.starts_with("nvidia-smi.") || n.starts_with("stelline"),
                "nvidia-smi.txt",
            ),
        },
        Entry {
            name: "nvidia-smi --query-gpu",
            weight: 5,
            drive: Drive::Text(|t| nvsmi::parse_query_csv(t).map(drop).map_err(text_err)),
            seeds: text_seeds(
                &["testdata/captures/h100-2gpu-vm"],
                |n| n.starts_with("nvidia-smi-query"),
                "nvidia-smi-query.csv",
            ),
        },
        Entry {
            name: "nvidia-smi --query-compute-apps",
            weight: 4,
            drive: Drive::Text(|t| nvsmi::parse_apps_csv(t).map(drop).map_err(text_err)),
            seeds: text_seeds(
                &["testdata/captures/h100-2gpu-vm"],
                |n| n.starts_with("nvidia-smi-apps"),
                "-",
            ),
        },
        Entry {
            name: "nvidia-smi topo",
            weight: 9,
            drive: Drive::Text(|t| {
                let nodes =
                    [CpuSet::parse_list("0-15").unwrap(), CpuSet::parse_list("16-31").unwrap()];
                gputopo::parse(t).map_err(text_err)?;
                gputopo::parse_with_nodes(t, &nodes).map(drop).map_err(text_err)
            }),
            seeds: text_seeds(&["testdata/fixtures/nvidia-smi-topo"], txt, "nvidia-smi-topo-m.txt"),
        },
        Entry {
            name: "numactl --hardware",
            weight: 8,
            drive: Drive::Text(|t| {
                numactl::parse(t).map(drop).map_err(|e| Refusal::of(&e, e.line()))
            }),
            seeds: text_seeds(&["testdata/fixtures/numactl"], txt, "numactl-hardware.txt"),
        },
        Entry {
            name: "rocm-smi --showtopo",
            weight: 4,
            drive: Drive::Text(|t| rocmsmi::parse_showtopo(t).map(drop).map_err(text_err)),
            seeds: text_seeds(&["testdata/fixtures/rocm-smi"], any, "rocm-smi-showtopo.txt"),
        },
        Entry {
            name: "cpulist",
            weight: 6,
            drive: Drive::Text(|t| {
                // Both forms sysfs uses: `local_cpulist` (ranges) and `local_cpus` (masks).
                let list = CpuSet::parse_list(t.trim());
                let mask = CpuSet::parse_mask(t.trim());
                match (list, mask) {
                    (Err(e), _) | (_, Err(e)) => Err(Refusal::of(&e, None)),
                    _ => Ok(()),
                }
            }),
            seeds: cpulists,
        },
        Entry { name: "sysfs", weight: 6, drive: Drive::Sysfs, seeds: snapshot_seeds(true) },
        Entry {
            name: "snapshot + topology + plan",
            weight: 12,
            drive: Drive::Snapshot,
            seeds: snapshot_seeds(false),
        },
        Entry {
            name: "hwloc xml (out of process)",
            weight: 3,
            drive: Drive::Hwloc,
            seeds: text_seeds(&[], any, "hwloc.xml"),
        },
        Entry { name: "config", weight: 8, drive: Drive::Config, seeds: configs },
        Entry { name: "profile", weight: 5, drive: Drive::Profile, seeds: profiles },
    ]
}

// ------------------------------------------------------------------------------ one input

/// What one input did.
enum Outcome {
    Ok,
    Refused(Refusal),
    /// The hwloc child crashed and the loader reported it (contained, not a finding).
    ContainedCrash(String),
}

/// A worker's private copies of snapshots (mutated in place, restored after each input).
struct Scratch {
    dir: tempfile::TempDir,
    copied: Vec<String>,
}

impl Scratch {
    fn new() -> Self {
        Self { dir: tempfile::tempdir().unwrap(), copied: Vec::new() }
    }

    /// The worker's copy of `seed`'s snapshot.
    fn snapshot(&mut self, seed: &Seed) -> PathBuf {
        let dst = self.dir.path().join(&seed.label);
        if !self.copied.contains(&seed.label) {
            let src = seed.dir.as_ref().unwrap();
            for f in &seed.files {
                let to = dst.join(f);
                std::fs::create_dir_all(to.parent().unwrap()).unwrap();
                std::fs::copy(src.join(f), &to).unwrap();
            }
            self.copied.push(seed.label.clone());
        }
        dst
    }
}

/// One generated input: the bytes, what was done to the seed, and (for file-based entry
/// points) which file of the seed's snapshot it replaces or which file it stands for.
struct Case {
    input: Vec<u8>,
    what: String,
    file: Option<PathBuf>,
}

fn prepare(entry: &Entry, seed: &Seed, rng: &mut StdRng) -> Case {
    match entry.drive {
        Drive::Sysfs | Drive::Snapshot => {
            let rel = seed.files[rng.random_range(0..seed.files.len())].clone();
            let original = std::fs::read(seed.dir.as_ref().unwrap().join(&rel)).unwrap();
            let (input, what) = mutate::mutate(&original, rng);
            Case { input, what: format!("{}: {what}", rel.display()), file: Some(rel) }
        }
        _ => {
            let (input, what) = mutate::mutate(&seed.bytes, rng);
            let file = match entry.drive {
                Drive::Config => Some("fuzz.toml".into()),
                Drive::Profile => Some("profile.toml".into()),
                _ => None,
            };
            Case { input, what, file }
        }
    }
}

fn execute(entry: &Entry, seed: &Seed, case: &Case, scratch: &mut Scratch) -> Outcome {
    let text = || String::from_utf8_lossy(&case.input).into_owned();
    match entry.drive {
        Drive::Text(parse) => match parse(&text()) {
            Ok(()) => Outcome::Ok,
            Err(r) => Outcome::Refused(r),
        },
        Drive::Hwloc => {
            let loader = XmlLoader {
                helper: Some(NODEAGENT.into()),
                lstopo: None,
                timeout: hwloc::LOAD_TIMEOUT,
            };
            match loader.load(&text()) {
                Ok(_) => Outcome::Ok,
                Err(e @ HwlocError::Crashed { .. }) => Outcome::ContainedCrash(e.to_string()),
                Err(e) => Outcome::Refused(Refusal::of(&e, None)),
            }
        }
        Drive::Sysfs | Drive::Snapshot => {
            let dir = scratch.snapshot(seed);
            std::fs::write(dir.join(case.file.as_ref().unwrap()), &case.input).unwrap();
            if matches!(entry.drive, Drive::Sysfs) {
                match sysfs::read(&dir.join("sysfs"), &[]) {
                    Ok(_) => Outcome::Ok,
                    Err(e) => {
                        let line = match &e {
                            sysfs::SysfsError::Parse { line, .. } => Some(*line),
                            sysfs::SysfsError::Read { .. } => None,
                        };
                        Outcome::Refused(Refusal::of(&e, line))
                    }
                }
            } else {
                snapshot_plan(&dir)
            }
        }
        Drive::Config => load_config(&text(), &root()),
        Drive::Profile => {
            std::fs::write(scratch.dir.path().join("profile.toml"), &case.input).unwrap();
            load_config("host = \"profile.toml\"\nmodel = \"sim\"\n", scratch.dir.path())
        }
    }
}

/// Puts the seed's file back in the worker's snapshot copy (also after a panic).
fn restore(entry: &Entry, seed: &Seed, case: &Case, scratch: &mut Scratch) {
    if let (Drive::Sysfs | Drive::Snapshot, Some(rel)) = (entry.drive, &case.file) {
        let original = std::fs::read(seed.dir.as_ref().unwrap().join(rel)).unwrap();
        std::fs::write(scratch.snapshot(seed).join(rel), original).unwrap();
    }
}

fn load_config(text: &str, base: &Path) -> Outcome {
    match config::load_str("fuzz.toml", text, base) {
        Ok(l) => {
            let _ = l.config.policy();
            match l.config.explicit_binding() {
                Ok(_) => Outcome::Ok,
                Err(e) => Outcome::Refused(Refusal::of(&e, None)),
            }
        }
        Err(e) => {
            let line = match &e {
                config::ConfigError::Syntax { line, .. } => Some(*line),
                _ => None,
            };
            Outcome::Refused(Refusal::of(&e, line))
        }
    }
}

fn snapshot_plan(dir: &Path) -> Outcome {
    let opts = SourceOptions { from: Some(dir.to_path_buf()), ..SourceOptions::default() };
    let facts = match host::gather(&opts, &SystemRunner) {
        Ok(f) => f,
        Err(e @ host::HostError::Invalid { .. }) if e.to_string().contains("crashed") => {
            return Outcome::ContainedCrash(e.to_string())
        }
        Err(e) => {
            let line = match &e {
                host::HostError::Parse { line, .. } => Some(*line),
                _ => None,
            };
            return Outcome::Refused(Refusal::of(&e, line));
        }
    };
    let topo = topology::build(&facts);
    match plan::plan(&topo, &plan::PlanRequest::default()) {
        Ok(_) => Outcome::Ok,
        // A plan refusal is about the host, not a file: it names no file.
        Err(e) => Outcome::Refused(Refusal { msg: e.to_string(), line: None }),
    }
}

// ------------------------------------------------------------------------------ the harness

thread_local! {
    /// Set while a fuzz input runs: its panic is recorded here instead of printed.
    static CAUGHT: RefCell<Option<Option<String>>> = const { RefCell::new(None) };
}

/// Silences (and records) panics of fuzz inputs; any other thread's panic prints as usual.
fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let recorded = CAUGHT.with(|c| {
            let mut c = c.borrow_mut();
            match c.as_mut() {
                Some(slot) => {
                    *slot = Some(format!("{info}").replace('\n', " "));
                    true
                }
                None => false,
            }
        });
        if !recorded {
            previous(info);
        }
    }));
}

#[derive(Default, Clone)]
struct Counts {
    inputs: usize,
    ok: usize,
    refused: usize,
    cite_line: usize,
    contained_crashes: usize,
    panics: usize,
    multi_line: usize,
    no_line: usize,
    no_file: usize,
    slow: usize,
    max: Duration,
    total: Duration,
}

struct Finding {
    entry: &'static str,
    case: usize,
    seed: String,
    what: String,
    problem: String,
}

/// The input being run by each worker, for the watchdog.
type Running = Arc<Mutex<Vec<Option<(&'static str, usize, Instant, Vec<u8>)>>>>;

fn findings_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fuzz-findings")
}

fn save_input(entry: &str, case: usize, ext: &str, input: &[u8]) -> PathBuf {
    let dir = findings_dir();
    let _ = std::fs::create_dir_all(&dir);
    let name: String =
        entry.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    let path = dir.join(format!("{name}-{case}.{ext}"));
    let _ = std::fs::write(&path, input);
    path
}

fn case_rng(base: u64, entry: &str, case: usize) -> StdRng {
    // FNV-1a of the entry point's name, then SplitMix-style mixing: independent streams per
    // (entry, case), the same whichever entry points run.
    let entry = entry
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    let mut z = base
        ^ entry.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (case as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    StdRng::seed_from_u64(z ^ (z >> 31))
}

/// Spreads `total` inputs over the entry points by weight (each gets at least 10).
fn plan_cases(entries: &[Entry], total: usize) -> Vec<usize> {
    let weights: usize = entries.iter().map(|e| e.weight).sum();
    entries.iter().map(|e| (total * e.weight / weights.max(1)).max(10)).collect()
}

#[test]
fn every_entry_point_survives_mutated_inputs() {
    let total = env_num("NODEAGENT_FUZZ_CASES", 2000) as usize;
    let base = env_num("NODEAGENT_FUZZ_SEED", 12);
    // Per-input budget: the slowest real input takes milliseconds; a 1 MB line goes through
    // unoptimised regexes in a debug build for seconds on a 2-core machine.
    let default_budget = if cfg!(debug_assertions) { 20_000 } else { 5_000 };
    let budget = Duration::from_millis(env_num("NODEAGENT_FUZZ_BUDGET_MS", default_budget));
    let only = std::env::var("NODEAGENT_FUZZ_ONLY").unwrap_or_default();
    let mut entries = entries();
    entries.retain(|e| e.name.contains(only.as_str()));
    let per_entry = plan_cases(&entries, total);
    let tasks: Vec<(usize, usize)> = {
        // Interleaved, so slow entry points spread over the run.
        let max = per_entry.iter().copied().max().unwrap_or(0);
        let mut tasks = Vec::new();
        for c in 0..max {
            for (e, &n) in per_entry.iter().enumerate() {
                if c < n {
                    tasks.push((e, c));
                }
            }
        }
        tasks
    };
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    install_panic_hook();
    let next = AtomicUsize::new(0);
    let counts: Mutex<Vec<Counts>> = Mutex::new(vec![Counts::default(); entries.len()]);
    let findings: Mutex<Vec<Finding>> = Mutex::new(Vec::new());
    let running: Running = Arc::new(Mutex::new(vec![None; threads]));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Watchdog: an input that runs past 10 budgets (at least 120 s) is a hang that would stall
    // CI forever: save it, say which it is, and end the process.
    let watchdog = {
        let running = running.clone();
        let done = done.clone();
        let limit = (budget * 10).max(Duration::from_secs(120));
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(500));
                for slot in running.lock().unwrap().iter().flatten() {
                    if slot.2.elapsed() > limit {
                        let path = save_input(slot.0, slot.1, "hang", &slot.3);
                        eprintln!(
                            "fuzz: HANG: {} case {} still running after {limit:?}; input saved to {}",
                            slot.0,
                            slot.1,
                            path.display()
                        );
                        std::process::exit(3);
                    }
                }
            }
        })
    };
    let started = Instant::now();
    std::thread::scope(|s| {
        for worker in 0..threads {
            let (entries, tasks, next, counts, findings, running) =
                (&entries, &tasks, &next, &counts, &findings, &running);
            s.spawn(move || {
                let mut scratch = Scratch::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(e, case)) = tasks.get(i) else { break };
                    let entry = &entries[e];
                    let mut rng = case_rng(base, entry.name, case);
                    let seed = entry.seeds[rng.random_range(0..entry.seeds.len())].clone();
                    let prepared = prepare(entry, &seed, &mut rng);
                    running.lock().unwrap()[worker] =
                        Some((entry.name, case, Instant::now(), prepared.input.clone()));
                    CAUGHT.with(|c| *c.borrow_mut() = Some(None));
                    let t0 = Instant::now();
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        execute(entry, &seed, &prepared, &mut scratch)
                    }));
                    let took = t0.elapsed();
                    let panic_msg = CAUGHT.with(|c| c.borrow_mut().take().flatten());
                    restore(entry, &seed, &prepared, &mut scratch);
                    running.lock().unwrap()[worker] = None;
                    let mut problems = Vec::new();
                    let mut c = Counts { inputs: 1, total: took, max: took, ..Counts::default() };
                    match result {
                        Err(_) => {
                            c.panics = 1;
                            let msg = panic_msg.unwrap_or_else(|| "unknown".into());
                            problems.push(format!("panic: {msg}"));
                        }
                        Ok(Outcome::Ok) => c.ok = 1,
                        Ok(Outcome::ContainedCrash(msg)) => {
                            c.contained_crashes = 1;
                            if msg.contains('\n') {
                                c.multi_line = 1;
                                problems.push(format!("multi-line error: {msg:?}"));
                            }
                            save_input(entry.name, case, "crash.xml", &prepared.input);
                        }
                        Ok(Outcome::Refused(r)) => {
                            c.refused = 1;
                            if r.msg.contains('\n') || r.msg.contains('\r') {
                                c.multi_line = 1;
                                problems.push(format!("multi-line error: {:?}", r.msg));
                            }
                            if let Some(line) = r.line {
                                c.cite_line = 1;
                                let cited = r.msg.contains(&format!("line {line}"))
                                    || r.msg.contains(&format!(":{line}:"));
                                if !cited {
                                    c.no_line = 1;
                                    problems.push(format!(
                                        "knows line {line} but does not say it: {}",
                                        r.msg
                                    ));
                                }
                            }
                            if let Some(file) = &prepared.file {
                                let name = file.file_name().unwrap().to_string_lossy();
                                if !is_plan_or_semantic(&r.msg) && !r.msg.contains(name.as_ref()) {
                                    c.no_file = 1;
                                    problems.push(format!("does not name {name}: {}", r.msg));
                                }
                            }
                        }
                    }
                    if took > budget {
                        c.slow = 1;
                        problems.push(format!("took {took:?} (budget {budget:?})"));
                    }
                    {
                        let mut all = counts.lock().unwrap();
                        let a = &mut all[e];
                        a.inputs += c.inputs;
                        a.ok += c.ok;
                        a.refused += c.refused;
                        a.cite_line += c.cite_line;
                        a.contained_crashes += c.contained_crashes;
                        a.panics += c.panics;
                        a.multi_line += c.multi_line;
                        a.no_line += c.no_line;
                        a.no_file += c.no_file;
                        a.slow += c.slow;
                        a.total += c.total;
                        a.max = a.max.max(c.max);
                    }
                    if !problems.is_empty() {
                        save_input(entry.name, case, "input", &prepared.input);
                        findings.lock().unwrap().push(Finding {
                            entry: entry.name,
                            case,
                            seed: seed.label.clone(),
                            what: prepared.what.clone(),
                            problem: problems.join("; "),
                        });
                    }
                }
            });
        }
    });
    done.store(true, Ordering::Relaxed);
    let _ = watchdog.join();
    let elapsed = started.elapsed();
    let counts = counts.into_inner().unwrap();
    let findings = findings.into_inner().unwrap();

    println!(
        "{:<32} {:>7} {:>7} {:>7} {:>6} {:>6} {:>6} {:>6} {:>6} {:>9} {:>9}",
        "entry point",
        "inputs",
        "ok",
        "refused",
        "line",
        "crash*",
        "panic",
        "multi",
        "slow",
        "mean ms",
        "max ms"
    );
    let mut sum = Counts::default();
    for (e, c) in entries.iter().zip(&counts) {
        println!(
            "{:<32} {:>7} {:>7} {:>7} {:>6} {:>6} {:>6} {:>6} {:>6} {:>9.2} {:>9.1}",
            e.name,
            c.inputs,
            c.ok,
            c.refused,
            c.cite_line,
            c.contained_crashes,
            c.panics,
            c.multi_line,
            c.slow,
            c.total.as_secs_f64() * 1000.0 / c.inputs.max(1) as f64,
            c.max.as_secs_f64() * 1000.0
        );
        sum.inputs += c.inputs;
        sum.refused += c.refused;
        sum.cite_line += c.cite_line;
        sum.contained_crashes += c.contained_crashes;
        sum.panics += c.panics;
        sum.multi_line += c.multi_line;
        sum.no_line += c.no_line;
        sum.no_file += c.no_file;
        sum.slow += c.slow;
    }
    let mut by_problem: BTreeMap<&str, usize> = BTreeMap::new();
    for f in &findings {
        *by_problem.entry(f.entry).or_default() += 1;
        eprintln!(
            "fuzz: FINDING {} case {} (seed {}; {}): {}",
            f.entry, f.case, f.seed, f.what, f.problem
        );
    }
    println!(
        "(line: refusals citing a line; crash*: hwloc child crashes contained as one-line errors; refusals of a loader not naming the mutated file: {})",
        sum.no_file
    );
    println!(
        "fuzz total: {} inputs over {} entry points (seed {base}, {threads} threads): {} panics, 0 signals, {} hangs over {budget:?}, {} refusals ({} multi-line, {} missing their line), {} contained hwloc crashes, {:.1}s",
        sum.inputs,
        entries.len(),
        sum.panics,
        sum.slow,
        sum.refused,
        sum.multi_line,
        sum.no_line,
        sum.contained_crashes,
        elapsed.as_secs_f64()
    );
    assert!(
        findings.is_empty(),
        "{} findings ({by_problem:?}); inputs saved under {}",
        findings.len(),
        findings_dir().display()
    );
}

/// Refusals that come from the plan or the effective config, not from reading a file.
fn is_plan_or_semantic(msg: &str) -> bool {
    msg.starts_with("no GPUs found")
        || msg.starts_with("--")
        || msg.contains("GPUs cannot be split")
        || msg.starts_with("invalid effective config")
        || msg.starts_with("unknown ")
        || msg.starts_with("cannot read config")
}

// ------------------------------------------------------------------------------ hwloc (defect 8)

/// A mutation of `hwloc-32em64t-2n8c2t-pci-normalio/hwloc.xml` found by this harness (seed 12,
/// `hwloc xml` case 188: a PU whose `complete_cpuset` attribute is misspelt): libhwloc 2.9
/// dereferences the missing cpuset and dies of SIGSEGV.
const CRASH_REPRODUCER: &str = "testdata/fuzz/hwloc-crash.xml";

fn crash_snapshot() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(root().join(CRASH_REPRODUCER), dir.path().join("hwloc.xml")).unwrap();
    dir
}

/// A directory to be `PATH`: `lstopo` is not in it.
fn path_without_lstopo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    assert!(!dir.path().join("lstopo").exists());
    dir
}

fn probe(from: &Path, path: Option<&Path>) -> std::process::Output {
    let mut cmd = Command::new(NODEAGENT);
    cmd.args(["probe", "--from"]).arg(from);
    if let Some(p) = path {
        cmd.env("PATH", p).env_remove(hwloc::HELPER_ENV);
    }
    cmd.output().unwrap()
}

#[test]
fn hwloc_crash_reproducer_kills_libhwloc_in_process() {
    // The reproducer is real: the library, loading it in the process that asked, dies of a
    // signal. Before issue 12 that process was the agent whenever lstopo was not on PATH.
    use std::os::unix::process::ExitStatusExt;
    let out = Command::new(NODEAGENT)
        .args([hwloc::HELPER_SUBCOMMAND])
        .arg(root().join(CRASH_REPRODUCER))
        .output()
        .unwrap();
    assert!(out.status.signal().is_some(), "libhwloc no longer crashes on it: {:?}", out.status);
}

// Regression (issue 12, defect 8): without lstopo on PATH the agent loaded the XML itself and
// died of SIGSEGV; now the child dies and the agent reports it on one line, file and signal.
#[test]
fn hwloc_crash_without_lstopo_is_one_line_naming_file_and_signal() {
    use std::os::unix::process::ExitStatusExt;
    let snap = crash_snapshot();
    let path = path_without_lstopo();
    let out = probe(snap.path(), Some(path.path()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.signal(), None, "the agent itself crashed: {stderr}");
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    let line = lines[0];
    assert!(line.contains(&snap.path().join("hwloc.xml").display().to_string()), "{line}");
    assert!(line.contains("SIGSEGV") || line.contains("SIGABRT"), "{line}");
    assert!(line.contains("crashed"), "{line}");
}

#[test]
fn hwloc_crash_in_process_api_is_a_crashed_error() {
    let text = std::fs::read_to_string(root().join(CRASH_REPRODUCER)).unwrap();
    let loader =
        XmlLoader { helper: Some(NODEAGENT.into()), lstopo: None, timeout: hwloc::LOAD_TIMEOUT };
    let e = loader.load(&text).unwrap_err();
    assert!(matches!(e, HwlocError::Crashed { .. }), "{e}");
    assert!(!e.to_string().contains('\n'), "{e}");
}

#[test]
fn hwloc_valid_snapshot_loads_without_lstopo() {
    let path = path_without_lstopo();
    let host = root().join("testdata/hosts/hwloc-32em64t-2n8c2t-pci-normalio");
    let out = probe(&host, Some(path.path()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("0000:84:00.0"), "{stdout}");
}

// Regression (issue 12, defect 8): lstopo's re-export of this document (a PU with os_index
// 2^31, which hwloc keeps in the machine's complete cpuset) is 67 MB of XML and takes 15 s,
// while the library loads it in 0.3 s; the old pre-check gave up at 10 s and rejected it.
#[test]
fn hwloc_document_slow_for_lstopo_but_fast_for_the_library_is_not_rejected() {
    let fixture = std::fs::read_to_string(
        root().join("testdata/hosts/hwloc-32em64t-2n8c2t-pci-normalio/hwloc.xml"),
    )
    .unwrap();
    let text =
        fixture.replacen("type=\"PU\" os_index=\"22\"", "type=\"PU\" os_index=\"2147483648\"", 1);
    assert_ne!(text, fixture);
    let loader =
        XmlLoader { helper: Some(NODEAGENT.into()), lstopo: None, timeout: hwloc::LOAD_TIMEOUT };
    let start = Instant::now();
    let facts = loader.load(&text).unwrap();
    assert_eq!(facts.nodes.len(), 2);
    assert!(start.elapsed() < Duration::from_secs(10), "{:?}", start.elapsed());
    // And through the agent, with lstopo on PATH as a user has it.
    let snap = tempfile::tempdir().unwrap();
    std::fs::write(snap.path().join("hwloc.xml"), &text).unwrap();
    let start = Instant::now();
    let out = probe(snap.path(), None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(start.elapsed() < Duration::from_secs(10), "{:?}", start.elapsed());
}
