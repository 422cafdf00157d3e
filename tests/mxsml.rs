//! `host::mxsml` (libmxsml through FFI) against a fake `libmxsml.so` compiled here from
//! `tests/fake-mxsml/fake_mxsml.c` with `cc -shared -fPIC`: every field, failing calls, a
//! library that is missing, one that is not a library, one without `mxSmlInit`, and one of
//! another version (health and link symbols missing). Each test builds its own copy of the
//! library in a temp dir, with its values in `<lib>.conf` beside it, so tests run in parallel.

use std::path::{Path, PathBuf};
use std::process::Command;

use nodeagent::host::mxsml::{LinkEnable, Mxsml, MxsmlError, PcieLink, PortState, TopoLevel};

#[path = "support/metrics.rs"]
mod metrics;

fn cc(src: &Path, out: &Path, defines: &[&str]) {
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-w", "-o"])
        .arg(out)
        .args(defines)
        .arg(src)
        .status()
        .expect("cc runs");
    assert!(status.success(), "cc {}", src.display());
}

/// Builds the fake library into `dir` with `conf` as its values; `old` leaves out the
/// health and link symbols.
fn fake(dir: &Path, conf: &str, old: bool) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake-mxsml/fake_mxsml.c");
    let lib = dir.join("libmxsml.so");
    cc(&src, &lib, if old { &["-DOLD_VERSION"] } else { &[] });
    std::fs::write(dir.join("libmxsml.so.conf"), conf).unwrap();
    lib
}

const TWO_GPUS: &str = "\
count 2
maca 2.32.0.6
bdf.0 0000:0E:00.0
name.0 MetaX C500
uuid.0 GPU-aaaa
bdf.1 0000:0f:00.0
name.1 MetaX C500
mem.0 845824,67108864
mem.1 61726720,67108864
util.0 0
util.1 97
temp.0 3550
temp.1 6125
power.0 20000,37000
power.1 250500,100000
procs.1 4242:python3:60293120;4243:ray::RayWorkerW:1048576
clk_xcore.0 1600
clk_mc.0 1800
clk_xcore.1 1200
ecc_state.0 1
ecc.0 3,0,7,1,2
ecc_state.1 0
ecc.1 0,0,0,0,0
pcie.0 32.0,16
pcie_max.0 32.0,16
pcie.1 16.0,8
pcie_max.1 32.0,16
throttle.1 0x4
mxlk.0 0
mxlk.1 1
ports.0 1,2,5,5,5,5,5
ports.1 1,5,5,5,5,5,5
peer.0.0 1
peer.0.1 1
peer.1.0 0
numa.0 0
numa.1 33
";

#[test]
fn every_field_is_read_through_the_library() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = fake(tmp.path(), TWO_GPUS, false);
    let m = Mxsml::open_first(std::slice::from_ref(&lib)).unwrap();
    assert_eq!(m.path(), lib);
    assert!(m.missing_symbols().is_empty(), "{:?}", m.missing_symbols());
    assert_eq!(m.device_count().unwrap(), 2);
    assert_eq!(m.maca_version().unwrap(), "2.32.0.6");
    let d = m.device_info(0).unwrap();
    assert_eq!(d.bus_id.as_deref(), Some("0000:0e:00.0"));
    assert_eq!((d.name.as_str(), d.uuid.as_str()), ("MetaX C500", "GPU-aaaa"));

    let (s, warnings) = m.status().unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(s.driver_version.as_deref(), Some("MACA 2.32.0.6"));
    let g0 = &s.gpus[0];
    assert_eq!(g0.bus_id.as_deref(), Some("0000:0e:00.0"));
    assert_eq!((g0.memory_used_mib, g0.memory_total_mib), (Some(826), Some(65536)));
    assert_eq!(g0.utilization_pct, Some(0.0));
    assert_eq!(g0.temperature_c, Some(35.5));
    assert_eq!(g0.power_w, Some(57.0));
    let g1 = &s.gpus[1];
    assert_eq!((g1.memory_used_mib, g1.utilization_pct), (Some(60280), Some(97.0)));
    assert_eq!((g1.temperature_c, g1.power_w), (Some(61.25), Some(350.5)));
    assert_eq!(s.processes.len(), 2);
    assert_eq!((s.processes[0].gpu, s.processes[0].pid), (1, 4242));
    assert_eq!(s.processes[0].name, "python3");
    assert_eq!(s.processes[0].memory_mib, Some(58880));
    assert_eq!(s.processes[1].name, "ray::RayWorkerW");

    let h0 = m.health(0);
    assert!(h0.warnings.is_empty(), "{:?}", h0.warnings);
    assert_eq!(h0.ecc_enabled, Some(true));
    let ecc = h0.ecc.unwrap();
    assert_eq!(
        (ecc.sram_correctable, ecc.dram_correctable, ecc.dram_uncorrectable, ecc.retired_pages),
        (3, 7, 1, 2)
    );
    assert_eq!((h0.xcore_clock_mhz, h0.memory_clock_mhz), (Some(1600), Some(1800)));
    assert_eq!(h0.throttle_reasons, Some(0));
    assert_eq!(h0.pcie_degraded(), Some(false));
    assert_eq!(h0.metaxlink, Some(LinkEnable::Enabled));
    let mut ports = vec![PortState::Up, PortState::DownOpticalInPlace];
    ports.extend([PortState::NoUse; 5]);
    assert_eq!(h0.metaxlink_ports, Some(ports));
    let h1 = m.health(1);
    assert_eq!(h1.ecc_enabled, Some(false));
    assert_eq!(h1.throttle_reasons, Some(4));
    assert_eq!(h1.pcie, Some(PcieLink { speed_gts: 16.0, width: 8 }));
    assert_eq!(h1.pcie_degraded(), Some(true));
    assert_eq!(h1.metaxlink, Some(LinkEnable::SmiDisabled));
    // GPU 1 has no memory clock reading: that field alone is missing.
    assert_eq!(h1.memory_clock_mhz, None);
    assert_eq!(h1.warnings.len(), 1, "{:?}", h1.warnings);
    assert!(h1.warnings[0].contains("mxSmlGetClocks on GPU 1"), "{:?}", h1.warnings);

    assert_eq!(m.numa_nodes(0).unwrap(), [0]);
    assert_eq!(m.numa_nodes(1).unwrap(), [33]);
    assert_eq!(m.topology(0, 1).unwrap(), TopoLevel::MetaXLink);
}

#[test]
fn links_between_an_instances_gpus() {
    let tmp = tempfile::tempdir().unwrap();
    let m = Mxsml::open_first(&[fake(tmp.path(), TWO_GPUS, false)]).unwrap();
    let report = m.links().unwrap();
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    assert_eq!(report.ports.len(), 3, "{:?}", report.ports);
    assert_eq!(
        report.problems(&[0, 1]),
        ["MetaXLink of GPU 1 is disabled by mx-smi (needed to reach GPU 0)"]
    );
    assert!(report.problems(&[0]).is_empty());

    // Links enabled on both, the only port between them down.
    let conf = TWO_GPUS
        .replace("mxlk.1 1", "mxlk.1 0")
        .replace("ports.0 1,2,", "ports.0 2,2,")
        .replace("ports.1 1,", "ports.1 3,");
    let tmp = tempfile::tempdir().unwrap();
    let m = Mxsml::open_first(&[fake(tmp.path(), &conf, false)]).unwrap();
    let p = m.links().unwrap().problems(&[0, 1]);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].starts_with("MetaXLink between GPU 0 and GPU 1 is down (GPU 0 port 0"), "{p:?}");
}

#[test]
fn failing_calls_degrade_one_field_each() {
    let conf = format!(
        "{TWO_GPUS}fail.mxSmlGetTemperatureInfo.1 23\nfail.mxSmlGetBoardPowerInfo 12\nfail.mxSmlGetTotalEccErrors.0 8\nfail.mxSmlGetSingleGpuProcess.1 3\nfail.mxSmlGetMetaXLinkPortState.1 1\n"
    );
    let tmp = tempfile::tempdir().unwrap();
    let m = Mxsml::open_first(&[fake(tmp.path(), &conf, false)]).unwrap();
    let (s, warnings) = m.status().unwrap();
    assert_eq!(s.gpus[0].temperature_c, Some(35.5));
    assert_eq!(s.gpus[1].temperature_c, None);
    assert!(s.gpus.iter().all(|g| g.power_w.is_none()));
    assert_eq!(s.gpus[1].utilization_pct, Some(97.0), "other fields stay");
    assert!(s.processes.is_empty());
    assert!(
        warnings.contains(
            &"libmxsml: mxSmlGetTemperatureInfo on GPU 1: fake error 23 (code 23)".to_string()
        ),
        "{warnings:?}"
    );
    assert_eq!(warnings.iter().filter(|w| w.contains("mxSmlGetBoardPowerInfo")).count(), 2);
    assert!(warnings.iter().any(|w| w.contains("mxSmlGetSingleGpuProcess on GPU 1")));
    let h = m.health(0);
    assert_eq!(h.ecc, None);
    assert_eq!(h.ecc_enabled, Some(true));
    assert!(h.warnings.iter().any(|w| w.contains("mxSmlGetTotalEccErrors on GPU 0")));
    // A GPU whose ports cannot be read: the report says so, and finds no problem it cannot see.
    let r = m.links().unwrap();
    assert!(r.warnings.iter().any(|w| w.contains("mxSmlGetMetaXLinkPortState on GPU 1")));

    // Memory that makes no sense is refused for that field.
    let tmp = tempfile::tempdir().unwrap();
    let m = Mxsml::open_first(&[fake(
        tmp.path(),
        &TWO_GPUS.replace("mem.0 845824,", "mem.0 99999999999,"),
        false,
    )])
    .unwrap();
    let (s, warnings) = m.status().unwrap();
    assert_eq!(s.gpus[0].memory_used_mib, None);
    assert!(
        warnings.iter().any(|w| w.contains("mxSmlGetMemoryInfo on GPU 0: VRAM used")),
        "{warnings:?}"
    );
}

#[test]
fn init_failure_is_one_error() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = fake(tmp.path(), "count 1\nfail.mxSmlInit 2\n", false);
    let e = Mxsml::open_first(&[lib]).unwrap_err();
    assert!(matches!(e, MxsmlError::Call { call: "mxSmlInit", code: 2, .. }), "{e}");
    assert_eq!(e.to_string(), "mxSmlInit on the library: fake error 2 (code 2)");
}

#[test]
fn a_missing_library_or_not_a_library_is_not_found() {
    let tmp = tempfile::tempdir().unwrap();
    let nope = tmp.path().join("nope/libmxsml.so");
    let junk = tmp.path().join("junk.so");
    std::fs::write(&junk, "not an ELF file").unwrap();
    let e = Mxsml::open_first(&[nope.clone(), junk.clone()]).unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, MxsmlError::NotFound { .. }), "{text}");
    assert!(text.contains(&format!("{}: no such file", nope.display())), "{text}");
    assert!(text.contains(&junk.display().to_string()), "{text}");
    assert!(!text.contains('\n'));
    // The search goes on to the next candidate.
    let lib = fake(tmp.path(), TWO_GPUS, false);
    assert_eq!(Mxsml::open_first(&[nope, junk, lib.clone()]).unwrap().path(), lib);
}

#[test]
fn a_library_without_init_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("other.c");
    std::fs::write(&src, "unsigned mxSmlGetDeviceCount(void) { return 1; }\n").unwrap();
    let lib = tmp.path().join("libother.so");
    cc(&src, &lib, &[]);
    let e = Mxsml::open_first(&[lib]).unwrap_err();
    assert!(matches!(e, MxsmlError::MissingSymbol { symbol: "mxSmlInit", .. }), "{e}");
    assert!(e.to_string().ends_with("lacks mxSmlInit (a libmxsml of another version?)"), "{e}");
}

#[test]
fn a_library_of_another_version_loses_only_what_it_lacks() {
    let tmp = tempfile::tempdir().unwrap();
    let m = Mxsml::open_first(&[fake(tmp.path(), TWO_GPUS, true)]).unwrap();
    let missing = m.missing_symbols();
    assert_eq!(missing.len(), 12, "{missing:?}");
    assert!(
        missing.contains(&"mxSmlGetTotalEccErrors")
            && missing.contains(&"mxSmlGetMetaXLinkPortState")
    );
    // The status readings are all there.
    let (s, warnings) = m.status().unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(s.gpus[1].power_w, Some(350.5));
    assert_eq!(s.processes.len(), 2);
    // Health: every field missing, each with the symbol named.
    let h = m.health(0);
    assert_eq!((h.ecc, h.ecc_enabled, h.xcore_clock_mhz, h.pcie), (None, None, None, None));
    assert_eq!(h.metaxlink, None);
    assert!(h.warnings.iter().any(|w| w.contains("lacks mxSmlGetEccState")), "{:?}", h.warnings);
    assert!(m.numa_nodes(0).unwrap_err().to_string().contains("lacks mxSmlGetNodeAffinity"));
    // Links: nothing known, nothing claimed wrong, and the report says why.
    let r = m.links().unwrap();
    assert!(r.problems(&[0, 1]).is_empty());
    assert!(r.warnings.iter().any(|w| w.contains("lacks mxSmlGetMetaXLinkState")));
}

// ------------------------------------------------- the sampler's MetaX arm (monitor::metax)

use std::time::Duration;

use nodeagent::monitor::metax::MetaxSource;
use nodeagent::monitor::sample::SampleSource;
use nodeagent::monitor::sampler::run_tool_owned;

fn fake_mx_smi() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/fake-tools/mx-smi")
}

fn mx_testdata(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/mx-smi").join(name),
    )
    .unwrap()
}

/// A step dir for the fake `mx-smi`: the 2.2.9 table (8 GPUs, 0000:0e.. 0000:38) and,
/// when `dmon`, a dmon CSV for its first two GPUs.
fn tool_dir(dmon: bool) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("1.txt"), mx_testdata("ms-swift-8xc500-2.2.9-board-layout.txt"))
        .unwrap();
    if dmon {
        std::fs::write(d.path().join("dmon.csv"), mx_testdata("dmon.written-from-mxtop.csv"))
            .unwrap();
    }
    d
}

/// A wrapper script in `dir` running the fake `mx-smi` on `dir` (tests run in parallel, so the
/// step dir cannot come from this process's environment).
fn mx_smi_in(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let w = dir.join("mx-smi");
    let script = format!(
        "#!/bin/sh\nFAKE_MXSMI_DIR='{}' exec '{}' \"$@\"\n",
        dir.display(),
        fake_mx_smi().display()
    );
    std::fs::write(&w, script).unwrap();
    std::fs::set_permissions(&w, std::fs::Permissions::from_mode(0o755)).unwrap();
    w
}

fn calls(dir: &Path, file: &str) -> u32 {
    std::fs::read_to_string(dir.join(file)).map_or(0, |s| s.trim().parse().unwrap())
}

#[tokio::test]
async fn sampler_reads_the_library_alone_when_it_has_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = Mxsml::open_first(&[fake(tmp.path(), TWO_GPUS, false)]).unwrap();
    let tools = tool_dir(true);
    let src = MetaxSource::with_library(Some(lib), &mx_smi_in(tools.path()));
    let (r, source) = src.read(Duration::from_secs(5), run_tool_owned).await;
    let s = r.unwrap();
    assert_eq!(source, SampleSource::Mxsml);
    assert_eq!(s.gpus.len(), 2);
    assert_eq!(s.gpus[1].temperature_c, Some(61.25));
    assert_eq!(s.processes.len(), 2);
    assert_eq!(
        calls(tools.path(), ".count") + calls(tools.path(), ".dmon-count"),
        0,
        "no tool run"
    );
    assert!(src.describe().starts_with("libmxsml ("), "{}", src.describe());
}

#[tokio::test]
async fn sampler_fills_what_the_library_lacks_from_dmon_then_the_table() {
    let tmp = tempfile::tempdir().unwrap();
    let conf =
        format!("{TWO_GPUS}fail.mxSmlGetTemperatureInfo.1 23\nfail.mxSmlGetSingleGpuProcess 3\n");
    let lib = Mxsml::open_first(&[fake(tmp.path(), &conf, false)]).unwrap();
    let tools = tool_dir(true);
    let src = MetaxSource::with_library(Some(lib), &mx_smi_in(tools.path()));
    let (r, source) = src.read(Duration::from_secs(5), run_tool_owned).await;
    let s = r.unwrap();
    assert_eq!(source, SampleSource::Mxsml, "the library gave the GPU list");
    // GPU 1's temperature from dmon (61.25 there), matched by bus id 0000:0f:00.0.
    assert_eq!(s.gpus[1].temperature_c, Some(61.25));
    assert_eq!(s.gpus[0].power_w, Some(57.0), "the library's own readings stay");
    // Processes from the table (the 2.2.9 capture lists none).
    assert!(s.processes.is_empty());
    assert_eq!(calls(tools.path(), ".dmon-count"), 1);
    assert_eq!(calls(tools.path(), ".count"), 1);
}

#[tokio::test]
async fn sampler_without_library_uses_dmon_and_the_table_and_drops_a_missing_dmon() {
    let tools = tool_dir(false);
    let src = MetaxSource::with_library(None, &mx_smi_in(tools.path()));
    let (r, source) = src.read(Duration::from_secs(5), run_tool_owned).await;
    // No dmon in this mx-smi: the table alone, and dmon is not asked again.
    assert_eq!(source, SampleSource::MxSmi);
    assert_eq!(r.unwrap().gpus.len(), 8);
    let _ = src.read(Duration::from_secs(5), run_tool_owned).await;
    assert_eq!(calls(tools.path(), ".dmon-count"), 1);
    assert_eq!(calls(tools.path(), ".count"), 2);

    let tools = tool_dir(true);
    let src = MetaxSource::with_library(None, &mx_smi_in(tools.path()));
    let (r, source) = src.read(Duration::from_secs(5), run_tool_owned).await;
    assert_eq!(source, SampleSource::MxSmiDmon);
    let s = r.unwrap();
    // dmon knows two GPUs; the table's other six are not invented into the list.
    assert_eq!(s.gpus.len(), 2);
    assert_eq!(s.gpus[1].memory_used_mib, Some(60280));
    assert_eq!(s.gpus[0].name.as_deref(), Some("MetaX C500"), "the name from the table");
}

#[tokio::test]
async fn sampler_with_nothing_working_says_why() {
    let tools = tempfile::tempdir().unwrap();
    std::fs::write(tools.path().join("1.fail"), "").unwrap();
    let src = MetaxSource::with_library(None, &mx_smi_in(tools.path()));
    let (r, _) = src.read(Duration::from_secs(5), run_tool_owned).await;
    let e = r.unwrap_err();
    assert!(e.contains("unrecognized option 'dmon'") && e.contains("device busy"), "{e}");
}

// ------------------------------------------------- health through the library (issue 16)

#[tokio::test]
async fn sampler_reads_metax_health_through_the_library_field_by_field() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = Mxsml::open_first(&[fake(tmp.path(), TWO_GPUS, false)]).unwrap();
    let tools = tool_dir(true);
    let src = MetaxSource::with_library(Some(lib), &mx_smi_in(tools.path()));
    let r = src.read_all(Duration::from_secs(5), run_tool_owned, true).await;
    assert_eq!(r.source, SampleSource::Mxsml);
    let h = r.health.expect("health read");
    assert_eq!(h.len(), 2);
    let (h0, h1) = (&h[0], &h[1]);
    assert_eq!((h0.sm_clock_mhz, h0.mem_clock_mhz), (Some(1600), Some(1800)));
    assert_eq!(h0.ecc_enabled, Some(true));
    // SRAM 3 + DRAM 7 corrected, SRAM 0 + DRAM 1 uncorrected.
    assert_eq!((h0.ecc_corrected, h0.ecc_uncorrected), (Some(10), Some(1)));
    assert_eq!(
        (h0.pcie.gen, h0.pcie.gen_max, h0.pcie.width, h0.pcie.width_max),
        (Some(5), Some(5), Some(16), Some(16))
    );
    let links = |h: &nodeagent::host::health::GpuHealth| {
        h.links.iter().flatten().map(|l| (l.link, l.up)).collect::<Vec<_>>()
    };
    assert_eq!(links(h0), [(0, true), (1, false)]);
    assert_eq!((h0.throttle_reasons, h0.vendor_throttle_reasons), (None, Some(0)));
    assert_eq!(h1.vendor_throttle_reasons, Some(4));
    assert_eq!((h1.pcie.gen, h1.pcie.width), (Some(4), Some(8)));
    assert!(h1.pcie.width_degraded());
    assert_eq!(links(h1), [(0, true)]);
    // GPU 1 has no memory clock: that field alone is missing, with one note.
    assert_eq!((h1.sm_clock_mhz, h1.mem_clock_mhz), (Some(1200), None));
    assert_eq!(r.health_notes.len(), 1, "{:?}", r.health_notes);
    assert!(r.health_notes[0].contains("mxSmlGetClocks on GPU 1"), "{:?}", r.health_notes);

    // Without asking for health: none read.
    let r = src.read_all(Duration::from_secs(5), run_tool_owned, false).await;
    assert!(r.health.is_none() && r.status.is_ok());
}

#[tokio::test]
async fn failing_health_calls_degrade_one_field_each_and_an_old_library_has_none() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = format!(
        "{TWO_GPUS}fail.mxSmlGetTotalEccErrors.0 3\nfail.mxSmlGetPcieMaxLinkInfo 2\nfail.mxSmlGetMetaXLinkPortState.1 9\n"
    );
    let lib = Mxsml::open_first(&[fake(tmp.path(), &conf, false)]).unwrap();
    let src = MetaxSource::with_library(Some(lib), &mx_smi_in(tool_dir(true).path()));
    let r = src.read_all(Duration::from_secs(5), run_tool_owned, true).await;
    let h = r.health.unwrap();
    assert_eq!((h[0].ecc_corrected, h[0].ecc_uncorrected), (None, None));
    assert_eq!(h[0].ecc_enabled, Some(true), "the ECC mode stands");
    assert_eq!((h[0].pcie.width, h[0].pcie.width_max), (Some(16), None));
    assert_eq!(h[1].ecc_uncorrected, Some(0));
    assert_eq!(h[1].links, None);
    assert_eq!(h[0].sm_clock_mhz, Some(1600));
    let notes = r.health_notes.join("\n");
    for want in [
        "mxSmlGetTotalEccErrors on GPU 0",
        "mxSmlGetPcieMaxLinkInfo on GPU 0",
        "mxSmlGetPcieMaxLinkInfo on GPU 1",
        "mxSmlGetMetaXLinkPortState on GPU 1",
    ] {
        assert!(notes.contains(want), "missing {want} in {notes}");
    }

    let old = tempfile::tempdir().unwrap();
    let lib = Mxsml::open_first(&[fake(old.path(), TWO_GPUS, true)]).unwrap();
    let src = MetaxSource::with_library(Some(lib), &mx_smi_in(tool_dir(true).path()));
    let r = src.read_all(Duration::from_secs(5), run_tool_owned, true).await;
    let h = r.health.unwrap();
    assert!(h
        .iter()
        .all(|h| h.sm_clock_mhz.is_none() && h.links.is_none() && h.ecc_uncorrected.is_none()));
    assert!(
        r.health_notes.iter().any(|n| n.contains("lacks mxSmlGetClocks")),
        "{:?}",
        r.health_notes
    );
    assert!(r.status.is_ok(), "the status stands without the health symbols");
}

/// `monitor` on the fake libmxsml: the health becomes the same `/metrics` series as NVIDIA's
/// (DCGM names, link states) and the same alerts, raised after two readings hold a fault and
/// cleared after two without; the readings come every tick here (`NODEAGENT_HEALTH_PERIOD=0s`).
#[test]
fn monitor_exports_metax_health_and_alerts_with_hysteresis() {
    use std::process::Stdio;
    let libdir = tempfile::tempdir().unwrap();
    // GPU 1 healthy: its ports all unused, full PCIe link.
    let good = TWO_GPUS
        .replace("pcie.1 16.0,8", "pcie.1 32.0,16")
        .replace("ecc.0 3,0,7,1,2", "ecc.0 3,0,7,0,2")
        .replace("ports.0 1,2,5,5,5,5,5", "ports.0 1,1,5,5,5,5,5");
    let lib = fake(libdir.path(), &good, false);
    let tools = tool_dir(true);
    let mut child = Command::new(env!("CARGO_BIN_EXE_nodeagent"))
        .args(["monitor", "--tool", "metax", "--interval", "200ms", "--listen", "127.0.0.1:0"])
        .arg("--mx-smi")
        .arg(mx_smi_in(tools.path()))
        .env("NODEAGENT_MXSML_LIB", &lib)
        .env("NODEAGENT_HEALTH_PERIOD", "0s")
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (addr, _) = metrics::listening(&mut child);
    let wait = |what: &str, pred: &dyn Fn(&serde_json::Value) -> bool| {
        metrics::wait_status(&addr, what, pred)
    };
    let v = wait("samples", &|v| v["samples_total"].as_u64() >= Some(3));
    assert_eq!(v["source"], "mxsml");
    assert!(metrics::alerts(&v).is_empty(), "{v:#}");
    let text = metrics::scrape_clean(
        &addr,
        &[
            "nodeagent_gpu_sample_source{source=\"mxsml\"} 1",
            "DCGM_FI_DEV_SM_CLOCK{gpu=\"0\",pci_bus_id=\"0000:0e:00.0\",model_name=\"MetaX C500\"} 1600",
            "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL{gpu=\"0\",pci_bus_id=\"0000:0e:00.0\",model_name=\"MetaX C500\"} 10",
            "DCGM_FI_DEV_PCIE_LINK_GEN{gpu=\"1\",pci_bus_id=\"0000:0f:00.0\",model_name=\"MetaX C500\"} 5",
            "nodeagent_gpu_link_up{gpu=\"0\",pci_bus_id=\"0000:0e:00.0\",link=\"1\"} 1",
            "nodeagent_gpu_vendor_throttle_reasons{gpu=\"1\",pci_bus_id=\"0000:0f:00.0\"} 4",
        ],
    );
    assert!(!text.contains("DCGM_FI_DEV_CLOCK_THROTTLE_REASONS{"), "MetaX bits are not NVML's");

    // The faults of TWO_GPUS: GPU 0 an uncorrected ECC error and port 1 down, GPU 1 at x8.
    std::fs::write(libdir.path().join("libmxsml.so.conf"), TWO_GPUS).unwrap();
    let v = wait("the health alerts", &|v| metrics::alerts(v).len() == 3);
    assert_eq!(metrics::alerts(&v), ["ecc-uncorrected", "pcie-degraded", "link-down"]);
    let msgs: Vec<&str> =
        v["alerts"].as_array().unwrap().iter().map(|a| a["message"].as_str().unwrap()).collect();
    assert!(msgs.contains(&"GPU 1 PCIe link at gen 4 x8 (maximum gen 5 x16)"), "{msgs:?}");
    assert!(
        msgs.contains(&"GPU 0: 1 uncorrectable ECC errors since the driver loaded"),
        "{msgs:?}"
    );
    let text = metrics::http_get(&addr, "/metrics").1;
    assert!(
        text.contains("nodeagent_gpu_link_up{gpu=\"0\",pci_bus_id=\"0000:0e:00.0\",link=\"1\"} 0"),
        "{text}"
    );
    std::fs::write(libdir.path().join("libmxsml.so.conf"), &good).unwrap();
    wait("the alerts to clear", &|v| metrics::alerts(v).is_empty());

    // PCI events (mxSmlGetPciEventInfo): correctable AER errors are counted, not alerted; an
    // increase of double-bit ECC events raises `xid` on the first reading that shows it.
    let pci = |ce: u32, dbe: u32| format!("{good}pcievent.0.1 1,{ce}\npcievent.0.3 3,{dbe}\n");
    std::fs::write(libdir.path().join("libmxsml.so.conf"), pci(5, 0)).unwrap();
    let v = wait("the AER CE count", &|v| v["health"][0]["pcie_events_total"]["aer_ce"] == 5);
    assert!(metrics::alerts(&v).is_empty(), "{v:#}");
    std::fs::write(libdir.path().join("libmxsml.so.conf"), pci(9, 2)).unwrap();
    let v = wait("the xid alert", &|v| metrics::alerts(v) == ["xid"]);
    assert_eq!(v["alerts"][0]["message"], "GPU 0: PCI events dbe +2");
    metrics::scrape_clean(
        &addr,
        &[
            "nodeagent_gpu_pcie_events_total{gpu=\"0\",pci_bus_id=\"0000:0e:00.0\",type=\"dbe\"} 2",
            "nodeagent_gpu_pcie_events_total{gpu=\"0\",pci_bus_id=\"0000:0e:00.0\",type=\"aer_ce\"} 9",
            "nodeagent_alerts_active{check=\"xid\"} 1",
        ],
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// `mxSmlGetPciEventInfo` per type through the fake: each type's count (the sum of its
/// entries), zero for a type without events; a library without the symbol degrades to a note.
#[test]
fn pci_event_counters_are_read_per_type() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = format!("{TWO_GPUS}pcievent.1.0 7,3\npcievent.1.4 2,1\n");
    let m = Mxsml::open_first(&[fake(tmp.path(), &conf, false)]).unwrap();
    let got = m.pci_events(1).unwrap();
    let want: std::collections::BTreeMap<String, u64> =
        [("aer_ue", 3), ("aer_ce", 0), ("synfld", 0), ("dbe", 0), ("mmio", 1)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
    assert_eq!(got, want);
    assert_eq!(m.health(1).common().pcie_events_total, want);
    let tmp = tempfile::tempdir().unwrap();
    let m = Mxsml::open_first(&[fake(tmp.path(), TWO_GPUS, true)]).unwrap();
    let h = m.health(0);
    assert_eq!(h.pci_events, None);
    assert!(h.warnings.iter().any(|w| w.contains("mxSmlGetPciEventInfo")), "{:?}", h.warnings);
}

// ------------------------------------------------------------- probe: -j and the library

/// Live `probe` on MetaX: `mx-smi -j` is read first (and saved as mx-smi.txt, which replays),
/// and libmxsml is listed as a source.
#[test]
fn probe_reads_mx_smi_json_and_lists_the_library() {
    let tools = tempfile::tempdir().unwrap();
    std::fs::write(tools.path().join("json.txt"), mx_testdata("mx-smi-j.2.2.12.json.txt")).unwrap();
    std::fs::write(
        tools.path().join("1.txt"),
        mx_testdata("ms-swift-8xc500-2.2.9-board-layout.txt"),
    )
    .unwrap();
    let topo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/fixtures/mx-smi-topo/ms-swift-8xc500-node-affinity.txt");
    std::fs::copy(topo, tools.path().join("topo.txt")).unwrap();
    let libdir = tempfile::tempdir().unwrap();
    // GPU 1 at another bus id than the tool's: a disagreement the cross-check names.
    let lib =
        fake(libdir.path(), &TWO_GPUS.replace("bdf.1 0000:0f:00.0", "bdf.1 0000:99:00.0"), false);
    let sys = tempfile::tempdir().unwrap();
    let save = tools.path().join("snap");
    let out = Command::new(env!("CARGO_BIN_EXE_nodeagent"))
        .args(["probe", "--no-hwloc", "--mx-smi"])
        .arg(mx_smi_in(tools.path()))
        .arg("--sysfs-root")
        .arg(sys.path())
        .arg("--save")
        .arg(&save)
        .env("NODEAGENT_MXSML_LIB", &lib)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains(&format!("libmxsml ({})", lib.display())), "{stdout}");
    let saved = std::fs::read_to_string(save.join("mx-smi.txt")).unwrap();
    assert!(saved.contains("\"attached_gpus\": 2"), "{saved}");
    assert_eq!(calls(tools.path(), ".count"), 0, "the table was not needed");
    // The unavailable device is named.
    assert!(
        stdout.contains("device is being reset") || stderr.contains("device is being reset"),
        "{stdout}\n{stderr}"
    );

    // What the library reported is in the snapshot, with where it came from...
    let rec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(save.join("mxsml.json")).unwrap()).unwrap();
    assert_eq!(rec["library"], lib.display().to_string());
    assert_eq!(rec["gpus"][0]["bus_id"], "0000:0e:00.0");
    assert_eq!(rec["gpus"][1]["numa_nodes"], serde_json::json!([33]));
    assert_eq!(rec["links"]["enable"]["1"], "smi-disabled");
    assert_eq!(
        rec["links"]["ports"][0],
        serde_json::json!({"gpu": 0, "port": 0, "state": "up", "peer": 1})
    );
    // ...and a replay shows the same source, saying it was recorded, with no library loaded.
    let out = Command::new(env!("CARGO_BIN_EXE_nodeagent"))
        .args(["probe", "--json", "--from"])
        .arg(&save)
        .env("NODEAGENT_MXSML_LIB", "/nonexistent/libmxsml.so")
        .output()
        .unwrap();
    let replay = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{replay}\n{}", String::from_utf8_lossy(&out.stderr));
    let want = format!("libmxsml ({}, recorded in mxsml.json)", lib.display());
    assert!(replay.contains(&want), "missing {want} in {replay}");
    let live = Command::new(env!("CARGO_BIN_EXE_nodeagent"))
        .args(["probe", "--json", "--no-hwloc", "--mx-smi"])
        .arg(mx_smi_in(tools.path()))
        .arg("--sysfs-root")
        .arg(sys.path())
        .env("NODEAGENT_MXSML_LIB", &lib)
        .output()
        .unwrap();
    let live = String::from_utf8_lossy(&live.stdout);
    let lib_warnings = |t: &str| -> Vec<String> {
        let v: serde_json::Value = serde_json::from_str(t).unwrap();
        v["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|w| w.as_str().filter(|w| w.contains("libmxsml")).map(String::from))
            .collect()
    };
    assert_eq!(
        lib_warnings(&live),
        ["libmxsml puts GPU 1 at 0000:99:00.0, mx-smi at 0000:0f:00.0"]
    );
    assert_eq!(lib_warnings(&replay), lib_warnings(&live), "the replay cross-checks the same");
}

/// A recorded `mxsml.json` that is not the record: one line naming the file, exit 2.
#[test]
fn a_broken_mxsml_record_in_a_snapshot_is_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("mx-smi.txt"),
        mx_testdata("ms-swift-8xc500-2.2.9-board-layout.txt"),
    )
    .unwrap();
    std::fs::write(dir.path().join("mxsml.json"), "{\"library\": 3}").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_nodeagent"))
        .args(["probe", "--from"])
        .arg(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("mxsml.json: not a libmxsml record"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}
