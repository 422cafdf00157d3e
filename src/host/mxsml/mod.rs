//! MetaX GPUs through the vendor's management library `libmxsml.so`, loaded at run time (no
//! link-time dependency: the binary runs where there is no MetaX driver).
//!
//! Where the library is looked for, in order: `$NODEAGENT_MXSML_LIB` (a path: only that one is
//! tried), `/opt/mxdriver/lib/libmxsml.so`, `/opt/maca/lib/libmxsml.so`, then `libmxsml.so`
//! through the dynamic loader's own search (`LD_LIBRARY_PATH`, `ld.so.cache`).
//!
//! Each symbol is looked up on its own (`ffi::Fns`): a library of another version that lacks one
//! loses that reading and nothing else. Only `mxSmlInit` and `mxSmlGetDeviceCount` are needed to
//! open it. Readings degrade field by field: [`Mxsml::status`] returns what every call gave and
//! one warning per call that failed, and [`Mxsml::health`] does the same for ECC, clocks,
//! throttle reasons, PCIe link and MetaXLink state. [`Mxsml::links`] reports the MetaXLink
//! ports between GPUs and [`LinkReport::problems`] says, purely, which pairs of an instance's
//! GPUs have a link down or not enabled (the interconnect preflight's MetaX source).
//!
//! Units follow the vendor's bindings and the tools that use them (gpustack-runtime,
//! `metax-mxtop`): memory in KiB, temperature in hundredths of a degree Celsius, board power
//! as per-rail mW, clocks in MHz, PCIe speed in GT/s. Calls are serialised through a mutex: the
//! library's thread safety is not documented. This module does not run `mx-smi` and does not
//! decide what a reading means for an alert (that is `crate::monitor`).

mod ffi;
mod types;

pub use types::*;

use std::ffi::OsString;
use std::os::raw::{c_char, c_int, c_uint, c_ulonglong};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use libloading::Library;

use super::facts::{normalize_bus_id, GpuProcess, GpuStatus, SmiStatus};

/// Environment variable naming the library to load (a path), instead of the search.
pub const LIB_ENV: &str = "NODEAGENT_MXSML_LIB";
/// Where MetaX installs the library, tried in this order before the loader's own search.
pub const DRIVER_PATHS: [&str; 2] = ["/opt/mxdriver/lib/libmxsml.so", "/opt/maca/lib/libmxsml.so"];
/// The name handed to the dynamic loader last.
pub const LIB_NAME: &str = "libmxsml.so";

#[derive(Debug, thiserror::Error)]
pub enum MxsmlError {
    #[error("libmxsml not loaded: {tried}")]
    NotFound { tried: String },
    #[error("{path}: lacks {symbol} (a libmxsml of another version?)")]
    MissingSymbol { path: String, symbol: &'static str },
    #[error("{call} on {target}: {message} (code {code})")]
    Call { call: &'static str, target: String, code: u32, message: String },
    #[error("{call} on {target}: {what}")]
    Invalid { call: &'static str, target: String, what: String },
}

/// The paths tried, in order, given the value of [`LIB_ENV`].
pub fn candidates(env: Option<OsString>) -> Vec<PathBuf> {
    match env.filter(|v| !v.is_empty()) {
        Some(path) => vec![PathBuf::from(path)],
        None => DRIVER_PATHS.iter().map(PathBuf::from).chain([PathBuf::from(LIB_NAME)]).collect(),
    }
}

/// An open, initialised `libmxsml`.
pub struct Mxsml {
    path: PathBuf,
    fns: ffi::Fns,
    lock: Mutex<()>,
    // Kept last: the function pointers in `fns` are valid only while this is loaded.
    _lib: Library,
}

impl std::fmt::Debug for Mxsml {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mxsml").field("path", &self.path).finish_non_exhaustive()
    }
}

impl Drop for Mxsml {
    fn drop(&mut self) {
        if let Some(shutdown) = self.fns.shutdown {
            let _guard = self.lock.lock();
            // SAFETY: a symbol of the still-loaded library, with the binding's signature.
            unsafe { shutdown() };
        }
    }
}

type R<T> = Result<T, MxsmlError>;

fn gpu(index: u32) -> String {
    format!("GPU {index}")
}

impl Mxsml {
    /// Opens the first library that loads among [`candidates`] of `$NODEAGENT_MXSML_LIB`.
    pub fn open_default() -> R<Self> {
        Self::open_first(&candidates(std::env::var_os(LIB_ENV)))
    }

    /// Opens the first of `paths` that loads; a library that loads but cannot be used (missing
    /// `mxSmlInit`, init failing) is an error at once, not a reason to try the next.
    pub fn open_first(paths: &[PathBuf]) -> R<Self> {
        let mut tried = Vec::new();
        for path in paths {
            // A bare name goes to the loader's search; a path that does not exist is skipped.
            if path.components().count() > 1 && !path.exists() {
                tried.push(format!("{}: no such file", path.display()));
                continue;
            }
            // SAFETY: loading runs the library's initialisers; this is the vendor's management
            // library from the driver's own directories (or the one the user named), trusted
            // as the vendor tools we run are.
            match unsafe { Library::new(path) } {
                Ok(lib) => return Self::from_library(path, lib),
                Err(e) => tried.push(format!("{}: {}", path.display(), one_line(&e.to_string()))),
            }
        }
        Err(MxsmlError::NotFound { tried: tried.join("; ") })
    }

    fn from_library(path: &Path, lib: Library) -> R<Self> {
        let fns = ffi::Fns::load(&lib);
        let me = Self { path: path.to_path_buf(), fns, lock: Mutex::new(()), _lib: lib };
        let init = me.sym(me.fns.init, "mxSmlInit")?;
        me.sym(me.fns.device_count, "mxSmlGetDeviceCount")?;
        // SAFETY: a symbol of the loaded library, with the binding's signature (no arguments).
        let ret = me.locked(|| unsafe { init() });
        me.check("mxSmlInit", "the library".into(), ret)?;
        Ok(me)
    }

    /// The file that was loaded (as given: a bare name when the loader found it).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Symbols this library lacks, by name (a library of another version).
    pub fn missing_symbols(&self) -> Vec<&'static str> {
        let f = &self.fns;
        let have = [
            f.init.is_some(),
            f.shutdown.is_some(),
            f.error_string.is_some(),
            f.maca_version.is_some(),
            f.device_count.is_some(),
            f.device_info.is_some(),
            f.memory_info.is_some(),
            f.ip_usage.is_some(),
            f.temperature.is_some(),
            f.board_power.is_some(),
            f.board_power_limit.is_some(),
            f.single_gpu_process.is_some(),
            f.clocks.is_some(),
            f.throttle_reason.is_some(),
            f.ecc_state.is_some(),
            f.total_ecc_errors.is_some(),
            f.pcie_info.is_some(),
            f.pcie_max_link.is_some(),
            f.node_affinity.is_some(),
            f.cpu_affinity.is_some(),
            f.device_topology.is_some(),
            f.metaxlink_state.is_some(),
            f.metaxlink_port_state.is_some(),
            f.metaxlink_remote.is_some(),
        ];
        ffi::NAMES.iter().zip(have).filter(|(_, h)| !h).map(|((_, n), _)| *n).collect()
    }

    fn locked<T>(&self, f: impl FnOnce() -> T) -> T {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        f()
    }

    fn sym<T>(&self, f: Option<T>, symbol: &'static str) -> R<T> {
        f.ok_or_else(|| MxsmlError::MissingSymbol { path: self.path.display().to_string(), symbol })
    }

    fn check(&self, call: &'static str, target: String, ret: ffi::Ret) -> R<()> {
        if ret == ffi::SUCCESS {
            return Ok(());
        }
        Err(MxsmlError::Call { call, target, code: ret, message: self.error_string(ret) })
    }

    fn error_string(&self, ret: ffi::Ret) -> String {
        let Some(f) = self.fns.error_string else { return "no mxSmlGetErrorString".into() };
        // SAFETY: the binding declares `const char *mxSmlGetErrorString(mxSmlReturn_t)`; the
        // result is checked for NULL and read as a NUL-terminated string at once.
        let p = unsafe { f(ret) };
        if p.is_null() {
            return "unknown error".into();
        }
        // SAFETY: non-NULL, NUL-terminated per the library's contract; copied before returning.
        one_line(&unsafe { std::ffi::CStr::from_ptr(p) }.to_string_lossy())
    }

    /// `mxSmlGetMacaVersion`.
    pub fn maca_version(&self) -> R<String> {
        let f = self.sym(self.fns.maca_version, "mxSmlGetMacaVersion")?;
        let mut buf = [0 as c_char; ffi::VERSION_INFO_SIZE];
        let mut size = buf.len() as c_uint;
        // SAFETY: `buf` holds `size` bytes, as the call's contract requires.
        let ret = self.locked(|| unsafe { f(buf.as_mut_ptr(), &mut size) });
        self.check("mxSmlGetMacaVersion", "the library".into(), ret)?;
        Ok(ffi::text(&buf))
    }

    /// `mxSmlGetDeviceCount`.
    pub fn device_count(&self) -> R<u32> {
        let f = self.sym(self.fns.device_count, "mxSmlGetDeviceCount")?;
        // SAFETY: no arguments; returns the count.
        Ok(self.locked(|| unsafe { f() }))
    }

    /// Calls `f(index, &mut out)` for a fixed-size out structure.
    fn get<T: Copy>(
        &self,
        f: Option<unsafe extern "C" fn(c_uint, *mut T) -> ffi::Ret>,
        call: &'static str,
        index: u32,
    ) -> R<T> {
        let f = self.sym(f, call)?;
        let mut out: T = ffi::zeroed();
        // SAFETY: `out` is a valid, writable `T`, the structure the call fills.
        let ret = self.locked(|| unsafe { f(index, &mut out) });
        self.check(call, gpu(index), ret)?;
        Ok(out)
    }

    /// `mxSmlGetDeviceInfo`.
    pub fn device_info(&self, index: u32) -> R<DeviceInfo> {
        let d = self.get(self.fns.device_info, "mxSmlGetDeviceInfo", index)?;
        Ok(DeviceInfo {
            index,
            bus_id: normalize_bus_id(&ffi::text(&d.bdf_id)),
            name: ffi::text(&d.device_name),
            uuid: ffi::text(&d.uuid),
        })
    }

    /// `mxSmlGetMemoryInfo`: (used, total) VRAM in MiB.
    pub fn memory_mib(&self, index: u32) -> R<(u64, u64)> {
        let m = self.get(self.fns.memory_info, "mxSmlGetMemoryInfo", index)?;
        if m.vram_use < 0 || m.vram_total <= 0 || m.vram_use > m.vram_total {
            return Err(MxsmlError::Invalid {
                call: "mxSmlGetMemoryInfo",
                target: gpu(index),
                what: format!("VRAM used {} KiB of {} KiB", m.vram_use, m.vram_total),
            });
        }
        Ok((m.vram_use as u64 / 1024, m.vram_total as u64 / 1024))
    }

    fn int_reading(
        &self,
        f: Option<unsafe extern "C" fn(c_uint, c_uint, *mut c_int) -> ffi::Ret>,
        call: &'static str,
        index: u32,
        what: c_uint,
    ) -> R<i32> {
        let f = self.sym(f, call)?;
        let mut v: c_int = 0;
        // SAFETY: `v` is a valid, writable int.
        let ret = self.locked(|| unsafe { f(index, what, &mut v) });
        self.check(call, gpu(index), ret)?;
        Ok(v)
    }

    /// `mxSmlGetDeviceIpUsage(XCORE)`: compute utilization in percent.
    pub fn utilization_pct(&self, index: u32) -> R<f64> {
        let v =
            self.int_reading(self.fns.ip_usage, "mxSmlGetDeviceIpUsage", index, ffi::USAGE_XCORE)?;
        if !(0..=100).contains(&v) {
            return Err(MxsmlError::Invalid {
                call: "mxSmlGetDeviceIpUsage",
                target: gpu(index),
                what: format!("utilization {v}%"),
            });
        }
        Ok(f64::from(v))
    }

    /// `mxSmlGetTemperatureInfo(HOTSPOT)`: degrees Celsius (the library gives hundredths).
    pub fn temperature_c(&self, index: u32) -> R<f64> {
        let v = self.int_reading(
            self.fns.temperature,
            "mxSmlGetTemperatureInfo",
            index,
            ffi::TEMPERATURE_HOTSPOT,
        )?;
        Ok(f64::from(v) / 100.0)
    }

    /// `mxSmlGetBoardPowerInfo`: the board's power in W, the sum of its rails.
    pub fn power_w(&self, index: u32) -> R<f64> {
        const CALL: &str = "mxSmlGetBoardPowerInfo";
        let f = self.sym(self.fns.board_power, CALL)?;
        let mut size: c_uint = 0;
        let mut probe = [ffi::BoardWayElectricInfo::default(); 1];
        // SAFETY: with size 0 the call writes no element, only the size it needs.
        let ret = self.locked(|| unsafe { f(index, &mut size, probe.as_mut_ptr()) });
        if ret != ffi::ERROR_INSUFFICIENT_SIZE && ret != ffi::SUCCESS {
            self.check(CALL, gpu(index), ret)?;
        }
        if size == 0 || size > 64 {
            return Err(MxsmlError::Invalid {
                call: CALL,
                target: gpu(index),
                what: format!("{size} power rails"),
            });
        }
        let mut rails = vec![ffi::BoardWayElectricInfo::default(); size as usize];
        // SAFETY: `rails` holds `size` elements.
        let ret = self.locked(|| unsafe { f(index, &mut size, rails.as_mut_ptr()) });
        self.check(CALL, gpu(index), ret)?;
        let mw: u64 = rails.iter().take(size as usize).map(|r| u64::from(r.power)).sum();
        Ok(mw as f64 / 1000.0)
    }

    /// `mxSmlGetSingleGpuProcess`: processes on one GPU, with the memory each holds there
    /// (`gpuMemoryUsage`, read in KiB like `mxSmlGetMemoryInfo`; the bindings state no unit).
    pub fn processes(&self, index: u32) -> R<Vec<GpuProcess>> {
        const CALL: &str = "mxSmlGetSingleGpuProcess";
        let f = self.sym(self.fns.single_gpu_process, CALL)?;
        let mut number: c_uint = 0;
        let mut probe: Vec<ffi::ProcessInfo> = vec![ffi::zeroed()];
        // SAFETY: with number 0 the call only reports how many processes there are.
        let ret = self.locked(|| unsafe { f(index, &mut number, probe.as_mut_ptr()) });
        self.check(CALL, gpu(index), ret)?;
        if number == 0 {
            return Ok(Vec::new());
        }
        // Room for processes started between the two calls, as the binding allows.
        let cap = number.saturating_mul(2).saturating_add(5).min(4096);
        let mut procs: Vec<ffi::ProcessInfo> = vec![ffi::zeroed(); cap as usize];
        number = cap;
        // SAFETY: `procs` holds `number` elements.
        let ret = self.locked(|| unsafe { f(index, &mut number, procs.as_mut_ptr()) });
        self.check(CALL, gpu(index), ret)?;
        let mut out = Vec::new();
        for p in procs.iter().take(number.min(cap) as usize) {
            let used = p.process_gpu_info.iter().take((p.gpu_number as usize).min(64));
            let kib: Option<u64> = used
                .clone()
                .find(|g| g.gpu_id == index)
                .or_else(|| used.clone().next())
                .map(|g| g.gpu_memory_usage);
            out.push(GpuProcess {
                gpu: index,
                pid: p.process_id,
                name: ffi::text(&p.process_name),
                memory_mib: kib.map(|k| k / 1024),
                line: 0,
            });
        }
        Ok(out)
    }

    /// `mxSmlGetClocks`: the current clocks of one clock domain, in MHz.
    fn clocks_mhz(&self, index: u32, ip: c_uint) -> R<Vec<u32>> {
        const CALL: &str = "mxSmlGetClocks";
        let f = self.sym(self.fns.clocks, CALL)?;
        let mut size: c_uint = 1;
        let mut buf = vec![0 as c_uint; 1];
        // SAFETY: `buf` holds `size` elements.
        let mut ret = self.locked(|| unsafe { f(index, ip, &mut size, buf.as_mut_ptr()) });
        if ret == ffi::ERROR_INSUFFICIENT_SIZE && (1..=64).contains(&size) {
            buf = vec![0; size as usize];
            // SAFETY: `buf` now holds `size` elements.
            ret = self.locked(|| unsafe { f(index, ip, &mut size, buf.as_mut_ptr()) });
        }
        self.check(CALL, gpu(index), ret)?;
        buf.truncate(size as usize);
        Ok(buf)
    }

    fn uint_out(
        &self,
        f: Option<unsafe extern "C" fn(c_uint, *mut c_uint) -> ffi::Ret>,
        call: &'static str,
        index: u32,
    ) -> R<u32> {
        self.get(f, call, index)
    }

    /// `mxSmlGetNodeAffinity`: the NUMA nodes the GPU is close to (32 nodes per mask word).
    pub fn numa_nodes(&self, index: u32) -> R<Vec<u32>> {
        const CALL: &str = "mxSmlGetNodeAffinity";
        const WORDS: usize = 8;
        let f = self.sym(self.fns.node_affinity, CALL)?;
        let mut set = [0 as c_uint; WORDS];
        // SAFETY: `set` holds WORDS mask words, the size passed.
        let ret = self.locked(|| unsafe { f(index, WORDS as c_uint, set.as_mut_ptr()) });
        self.check(CALL, gpu(index), ret)?;
        Ok(set
            .iter()
            .enumerate()
            .flat_map(|(w, bits)| {
                (0..32).filter(move |b| bits >> b & 1 == 1).map(move |b| w as u32 * 32 + b)
            })
            .collect())
    }

    /// `mxSmlGetDeviceTopology` between two GPUs.
    pub fn topology(&self, a: u32, b: u32) -> R<TopoLevel> {
        const CALL: &str = "mxSmlGetDeviceTopology";
        let f = self.sym(self.fns.device_topology, CALL)?;
        let mut level: c_uint = 0;
        // SAFETY: `level` is a valid, writable uint.
        let ret = self.locked(|| unsafe { f(a, b, &mut level) });
        self.check(CALL, format!("GPU {a} and GPU {b}"), ret)?;
        Ok(TopoLevel::from_code(level))
    }

    /// `mxSmlGetMetaXLinkState`: whether MetaXLink is enabled on the GPU.
    pub fn metaxlink_enable(&self, index: u32) -> R<LinkEnable> {
        const CALL: &str = "mxSmlGetMetaXLinkState";
        let f = self.sym(self.fns.metaxlink_state, CALL)?;
        let mut code: c_uint = 0;
        let mut text = [0 as c_char; 128];
        let mut size: c_uint = text.len() as c_uint;
        // SAFETY: `text` holds `size` bytes; `code` is writable.
        let ret = self.locked(|| unsafe { f(index, &mut code, text.as_mut_ptr(), &mut size) });
        self.check(CALL, gpu(index), ret)?;
        Ok(LinkEnable::from_code(code))
    }

    /// `mxSmlGetMetaXLinkPortState`: the state of each of the GPU's MetaXLink ports.
    pub fn metaxlink_ports(&self, index: u32) -> R<Vec<PortState>> {
        const CALL: &str = "mxSmlGetMetaXLinkPortState";
        let f = self.sym(self.fns.metaxlink_port_state, CALL)?;
        let mut states = [0 as c_uint; ffi::METAX_LINK_NUM];
        let mut size: c_uint = states.len() as c_uint;
        // SAFETY: `states` holds `size` elements.
        let ret = self.locked(|| unsafe { f(index, states.as_mut_ptr(), &mut size) });
        self.check(CALL, gpu(index), ret)?;
        let n = (size as usize).min(states.len());
        Ok(states[..n].iter().map(|&c| PortState::from_code(c)).collect())
    }

    /// `mxSmlGetMetaXLinkRemoteInfo`: the GPU at the other end of a port (its library index).
    pub fn metaxlink_peer(&self, index: u32, port: u32) -> R<Option<u32>> {
        const CALL: &str = "mxSmlGetMetaXLinkRemoteInfo";
        let f = self.sym(self.fns.metaxlink_remote, CALL)?;
        let mut r: ffi::MetaXLinkRemoteInfo = ffi::zeroed();
        // SAFETY: `r` is a valid, writable structure of the binding's layout.
        let ret = self.locked(|| unsafe { f(index, port, &mut r) });
        self.check(CALL, format!("GPU {index} port {port}"), ret)?;
        Ok(u32::try_from(r.device_id).ok())
    }

    /// The status every sampler reading needs, field by field: the device count must be
    /// readable (else an error); any other failed call leaves its field `None` and adds one
    /// warning naming the call and the GPU.
    pub fn status(&self) -> R<(SmiStatus, Vec<String>)> {
        let count = self.device_count()?;
        let mut warnings = Vec::new();
        let mut status = SmiStatus {
            tool_version: None,
            driver_version: self.maca_version().ok().map(|v| format!("MACA {v}")),
            ..SmiStatus::default()
        };
        let mut warn = |e: MxsmlError| warnings.push(format!("libmxsml: {e}"));
        for index in 0..count {
            let mut g = GpuStatus { index, ..GpuStatus::default() };
            match self.device_info(index) {
                Ok(d) => {
                    g.bus_id = d.bus_id;
                    g.name = (!d.name.is_empty()).then_some(d.name);
                }
                Err(e) => warn(e),
            }
            match self.memory_mib(index) {
                Ok((used, total)) => {
                    (g.memory_used_mib, g.memory_total_mib) = (Some(used), Some(total))
                }
                Err(e) => warn(e),
            }
            g.utilization_pct = self.utilization_pct(index).map_err(&mut warn).ok();
            g.temperature_c = self.temperature_c(index).map_err(&mut warn).ok();
            g.power_w = self.power_w(index).map_err(&mut warn).ok();
            match self.processes(index) {
                Ok(p) => status.processes.extend(p),
                Err(e) => warn(e),
            }
            status.gpus.push(g);
        }
        Ok((status, warnings))
    }

    /// Facts for `probe`: each GPU's bus id, name and NUMA nodes, plus a warning per failed call.
    pub fn probe(&self) -> R<(Vec<GpuFacts>, Vec<String>)> {
        let count = self.device_count()?;
        let mut warnings = Vec::new();
        let mut out = Vec::new();
        for index in 0..count {
            let mut g = GpuFacts { index, ..GpuFacts::default() };
            match self.device_info(index) {
                Ok(d) => {
                    g.bus_id = d.bus_id;
                    g.name = (!d.name.is_empty()).then_some(d.name);
                }
                Err(e) => warnings.push(format!("libmxsml: {e}")),
            }
            match self.numa_nodes(index) {
                Ok(n) => g.numa_nodes = n,
                Err(e) => warnings.push(format!("libmxsml: {e}")),
            }
            out.push(g);
        }
        Ok((out, warnings))
    }

    /// `mxSmlGetPciEventInfo` for every event type: the counts of each type's events (the
    /// sum over the entries returned), keyed `aer_ue`, `aer_ce`, `synfld`, `dbe`, `mmio`.
    pub fn pci_events(&self, index: u32) -> R<std::collections::BTreeMap<String, u64>> {
        const CALL: &str = "mxSmlGetPciEventInfo";
        let f = self.sym(self.fns.pci_event_info, CALL)?;
        let mut out = std::collections::BTreeMap::new();
        for (ty, name) in ffi::PCI_EVENT_TYPES {
            let mut infos = [ffi::zeroed::<ffi::PciEventInfo>(); ffi::PCI_EVENT_ROOM];
            let mut size = ffi::PCI_EVENT_ROOM as c_uint;
            // SAFETY: `infos` has room for `size` entries of the binding's layout; `size` is
            // a valid, writable count.
            let ret = self.locked(|| unsafe { f(index, ty, infos.as_mut_ptr(), &mut size) });
            self.check(CALL, format!("GPU {index} type {name}"), ret)?;
            let n = (size as usize).min(ffi::PCI_EVENT_ROOM);
            let total = infos[..n].iter().map(|e| u64::try_from(e.count).unwrap_or(0)).sum();
            out.insert(name.to_string(), total);
        }
        Ok(out)
    }

    /// Health readings of one GPU, each degrading on its own.
    pub fn health(&self, index: u32) -> GpuHealth {
        let mut h = GpuHealth { index, ..GpuHealth::default() };
        let mut warn = |e: MxsmlError| h.warnings.push(format!("libmxsml: {e}"));
        let ecc_enabled =
            self.uint_out(self.fns.ecc_state, "mxSmlGetEccState", index).map_err(&mut warn).ok();
        let ecc = self
            .get(self.fns.total_ecc_errors, "mxSmlGetTotalEccErrors", index)
            .map(|c: ffi::EccErrorCount| EccCounts {
                sram_correctable: c.sram_ce,
                sram_uncorrectable: c.sram_ue,
                dram_correctable: c.dram_ce,
                dram_uncorrectable: c.dram_ue,
                retired_pages: c.retired_page,
            })
            .map_err(&mut warn)
            .ok();
        let max = |v: Vec<u32>| v.into_iter().max();
        let xcore = self.clocks_mhz(index, ffi::CLOCK_XCORE).map_err(&mut warn).ok().and_then(max);
        let mc = self.clocks_mhz(index, ffi::CLOCK_MC0).map_err(&mut warn).ok().and_then(max);
        let throttle = self
            .get::<c_ulonglong>(
                self.fns.throttle_reason,
                "mxSmlGetCurrentClocksThrottleReason",
                index,
            )
            .map_err(&mut warn)
            .ok();
        let link = |p: ffi::PcieInfo| PcieLink { speed_gts: p.speed, width: p.width };
        let pcie = self
            .get(self.fns.pcie_info, "mxSmlGetPcieInfo", index)
            .map(link)
            .map_err(&mut warn)
            .ok();
        let pcie_max = self
            .get(self.fns.pcie_max_link, "mxSmlGetPcieMaxLinkInfo", index)
            .map(link)
            .map_err(&mut warn)
            .ok();
        let metaxlink = self.metaxlink_enable(index).map_err(&mut warn).ok();
        let ports = self.metaxlink_ports(index).map_err(&mut warn).ok();
        h.pci_events = self.pci_events(index).map_err(&mut warn).ok();
        h.ecc_enabled = ecc_enabled.map(|s| s == 1);
        h.ecc = ecc;
        h.xcore_clock_mhz = xcore;
        h.memory_clock_mhz = mc;
        h.throttle_reasons = throttle;
        h.pcie = pcie;
        h.pcie_max = pcie_max;
        h.metaxlink = metaxlink;
        h.metaxlink_ports = ports;
        h
    }

    /// The MetaXLink picture of every GPU: enable state, ports and their peers. Failed calls
    /// become warnings in the report (the preflight then knows it could not check).
    pub fn links(&self) -> R<LinkReport> {
        let count = self.device_count()?;
        let mut report = LinkReport::default();
        for index in 0..count {
            match self.metaxlink_enable(index) {
                Ok(e) => {
                    report.enable.insert(index, e);
                }
                Err(e) => report.warnings.push(format!("libmxsml: {e}")),
            }
            let ports = match self.metaxlink_ports(index) {
                Ok(p) => p,
                Err(e) => {
                    report.warnings.push(format!("libmxsml: {e}"));
                    continue;
                }
            };
            for (port, state) in ports.into_iter().enumerate() {
                let port = port as u32;
                if matches!(state, PortState::NoUse) {
                    continue;
                }
                let peer = match self.metaxlink_peer(index, port) {
                    Ok(p) => p,
                    Err(e) => {
                        report.warnings.push(format!("libmxsml: {e}"));
                        None
                    }
                };
                report.ports.push(PortLink { gpu: index, port, state, peer });
            }
        }
        Ok(report)
    }
}

/// The interconnect preflight's MetaX source: opens the library where it is installed and
/// returns what is wrong with the MetaXLinks between `gpus` (see [`LinkReport::problems`]) and
/// the warnings of calls that failed. `Err` when the library is not there or cannot be used:
/// the caller then has no MetaXLink knowledge (and says so), rather than a pass.
pub fn metaxlink_problems(gpus: &[u32]) -> Result<(Vec<String>, Vec<String>), MxsmlError> {
    let report = Mxsml::open_default()?.links()?;
    Ok((report.problems(gpus), report.warnings))
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_order() {
        let c = candidates(None);
        assert_eq!(
            c,
            [
                PathBuf::from("/opt/mxdriver/lib/libmxsml.so"),
                PathBuf::from("/opt/maca/lib/libmxsml.so"),
                PathBuf::from("libmxsml.so")
            ]
        );
        assert_eq!(candidates(Some("/x/libmxsml.so".into())), [PathBuf::from("/x/libmxsml.so")]);
        assert_eq!(candidates(Some("".into())).len(), 3);
    }
}
