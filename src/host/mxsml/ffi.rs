//! The C side of MetaX's management library `libmxsml.so`: structure layouts, function
//! signatures, and the table of symbols looked up one by one when the library is opened.
//!
//! Names, signatures and layouts are the vendor's, as its published Python binding `pymxsml`
//! (vendored by gpustack-runtime) declares them; units as gpustack-runtime and `metax-mxtop`
//! use them (memory in KiB, temperature in hundredths of a degree, power in mW, clocks in MHz).
//! Every symbol is optional here: a library of another version that lacks one loses that
//! reading only (`super` turns a missing symbol into a per-field error). Nothing here decides
//! what a reading means; that is `super`'s job.

use std::os::raw::{c_char, c_int, c_long, c_uint, c_ulong, c_ulonglong};

use libloading::Library;

/// `mxSmlReturn_t`: 0 is success.
pub type Ret = c_uint;
pub const SUCCESS: Ret = 0;
pub const ERROR_INSUFFICIENT_SIZE: Ret = 10;

pub const BDF_ID_SIZE: usize = 32;
pub const UUID_SIZE: usize = 96;
pub const DEVICE_NAME_SIZE: usize = 32;
pub const VERSION_INFO_SIZE: usize = 64;
pub const PROCESS_NAME_SIZE: usize = 64;
pub const MAX_GPU_NUM_USED_BY_PROCESS: usize = 64;
/// MetaXLink ports of a C-class device.
pub const METAX_LINK_NUM: usize = 7;

/// `mxSmlUsageIp_t`: the compute cores of a C-class device.
pub const USAGE_XCORE: c_uint = 4;
/// `mxSmlTemperatureSensors_t`: the chip's hottest point.
pub const TEMPERATURE_HOTSPOT: c_uint = 0;
/// `mxSmlClockIp_t`: compute cores and the two memory controllers of a C-class device.
pub const CLOCK_XCORE: c_uint = 11;
pub const CLOCK_MC0: c_uint = 3;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct DeviceInfo {
    pub device_id: c_uint,
    pub type_: c_uint,
    pub bdf_id: [c_char; BDF_ID_SIZE],
    pub gpu_id: c_uint,
    pub node_id: c_uint,
    pub uuid: [c_char; UUID_SIZE],
    pub brand: c_uint,
    pub mode: c_uint,
    pub device_name: [c_char; DEVICE_NAME_SIZE],
}

/// All sizes in KiB.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct MemoryInfo {
    pub vis_vram_total: c_long,
    pub vis_vram_use: c_long,
    pub vram_total: c_long,
    pub vram_use: c_long,
    pub xtt_total: c_long,
    pub xtt_use: c_long,
}

/// One power rail of the board: mV, mA, mW.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct BoardWayElectricInfo {
    pub voltage: c_uint,
    pub current: c_uint,
    pub power: c_uint,
}

/// PCIe link: speed in GT/s, width in lanes.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct PcieInfo {
    pub speed: f32,
    pub width: c_uint,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct EccErrorCount {
    pub sram_ce: c_uint,
    pub sram_ue: c_uint,
    pub dram_ce: c_uint,
    pub dram_ue: c_uint,
    pub retired_page: c_uint,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct ProcessGpuInfo {
    pub bdf_id: [c_char; BDF_ID_SIZE],
    pub gpu_id: c_uint,
    pub gpu_memory_usage: c_ulong,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct ProcessInfo {
    pub process_id: c_uint,
    pub process_name: [c_char; PROCESS_NAME_SIZE],
    pub gpu_number: c_uint,
    pub process_gpu_info: [ProcessGpuInfo; MAX_GPU_NUM_USED_BY_PROCESS],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct MetaXLinkRemoteInfo {
    pub device_id: c_int,
    pub bdf_id: [c_char; BDF_ID_SIZE],
}

/// `mxSmlPciEventInfo_t`: one PCI event of a type, as `mxSmlGetPciEventInfo` fills it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PciEventInfo {
    pub bit_number: c_int,
    pub count: c_int,
    pub first_time: [c_char; 20],
    pub name: [c_char; 64],
}

/// `mxSmlPciEventType_t`: AER uncorrectable, AER correctable, sync flood, double-bit ECC,
/// MMIO; with the names the monitor exports them under.
pub const PCI_EVENT_TYPES: [(c_uint, &str); 5] =
    [(0, "aer_ue"), (1, "aer_ce"), (2, "synfld"), (3, "dbe"), (4, "mmio")];
/// Entries offered per call (the binding offers 2; more room costs nothing).
pub const PCI_EVENT_ROOM: usize = 16;

/// A zeroed value of a plain C structure (all fields integers, floats or arrays of them).
pub fn zeroed<T: Copy>() -> T {
    // SAFETY: only used with the `repr(C)` structures above, whose fields are all integers,
    // floats or arrays of them, for which the all-zero bit pattern is a valid value.
    unsafe { std::mem::zeroed() }
}

/// Text of a fixed-size C string field, up to its first NUL (the whole field if none).
pub fn text(field: &[c_char]) -> String {
    let bytes: Vec<u8> = field.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).trim().to_string()
}

macro_rules! symbols {
    ($( $field:ident : $name:literal => fn($($arg:ty),*) -> $ret:ty; )*) => {
        /// The library's functions, each `None` when this version lacks the symbol.
        #[derive(Default, Clone, Copy)]
        pub struct Fns {
            $( pub $field: Option<unsafe extern "C" fn($($arg),*) -> $ret>, )*
        }

        impl Fns {
            /// Looks every symbol up by name; a missing one stays `None`.
            pub fn load(lib: &Library) -> Self {
                let mut f = Fns::default();
                $(
                    // SAFETY: the symbol is declared with the signature the vendor's binding
                    // gives it; the pointer is used only while `lib` (kept beside it) is loaded.
                    f.$field = unsafe {
                        lib.get::<unsafe extern "C" fn($($arg),*) -> $ret>(
                            concat!($name, "\0").as_bytes(),
                        )
                    }
                    .ok()
                    .map(|s| *s);
                )*
                f
            }
        }

        /// `(field, symbol name)` of every function, for messages.
        pub const NAMES: &[(&str, &str)] = &[$( (stringify!($field), $name), )*];
    };
}

symbols! {
    init: "mxSmlInit" => fn() -> Ret;
    shutdown: "mxSmlShutdown" => fn() -> Ret;
    error_string: "mxSmlGetErrorString" => fn(Ret) -> *const c_char;
    maca_version: "mxSmlGetMacaVersion" => fn(*mut c_char, *mut c_uint) -> Ret;
    device_count: "mxSmlGetDeviceCount" => fn() -> c_uint;
    device_info: "mxSmlGetDeviceInfo" => fn(c_uint, *mut DeviceInfo) -> Ret;
    memory_info: "mxSmlGetMemoryInfo" => fn(c_uint, *mut MemoryInfo) -> Ret;
    ip_usage: "mxSmlGetDeviceIpUsage" => fn(c_uint, c_uint, *mut c_int) -> Ret;
    temperature: "mxSmlGetTemperatureInfo" => fn(c_uint, c_uint, *mut c_int) -> Ret;
    board_power: "mxSmlGetBoardPowerInfo" => fn(c_uint, *mut c_uint, *mut BoardWayElectricInfo) -> Ret;
    board_power_limit: "mxSmlGetBoardPowerLimit" => fn(c_uint, *mut c_uint) -> Ret;
    single_gpu_process: "mxSmlGetSingleGpuProcess" => fn(c_uint, *mut c_uint, *mut ProcessInfo) -> Ret;
    clocks: "mxSmlGetClocks" => fn(c_uint, c_uint, *mut c_uint, *mut c_uint) -> Ret;
    throttle_reason: "mxSmlGetCurrentClocksThrottleReason" => fn(c_uint, *mut c_ulonglong) -> Ret;
    ecc_state: "mxSmlGetEccState" => fn(c_uint, *mut c_uint) -> Ret;
    total_ecc_errors: "mxSmlGetTotalEccErrors" => fn(c_uint, *mut EccErrorCount) -> Ret;
    pcie_info: "mxSmlGetPcieInfo" => fn(c_uint, *mut PcieInfo) -> Ret;
    pcie_max_link: "mxSmlGetPcieMaxLinkInfo" => fn(c_uint, *mut PcieInfo) -> Ret;
    node_affinity: "mxSmlGetNodeAffinity" => fn(c_uint, c_uint, *mut c_uint) -> Ret;
    cpu_affinity: "mxSmlGetCpuAffinity" => fn(c_uint, c_uint, *mut c_uint) -> Ret;
    device_topology: "mxSmlGetDeviceTopology" => fn(c_uint, c_uint, *mut c_uint) -> Ret;
    metaxlink_state: "mxSmlGetMetaXLinkState" => fn(c_uint, *mut c_uint, *mut c_char, *mut c_uint) -> Ret;
    metaxlink_port_state: "mxSmlGetMetaXLinkPortState" => fn(c_uint, *mut c_uint, *mut c_uint) -> Ret;
    metaxlink_remote: "mxSmlGetMetaXLinkRemoteInfo" => fn(c_uint, c_uint, *mut MetaXLinkRemoteInfo) -> Ret;
    pci_event_info: "mxSmlGetPciEventInfo" => fn(c_uint, c_uint, *mut PciEventInfo, *mut c_uint) -> Ret;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Layouts as ctypes lays out pymxsml's structures on a 64-bit Linux (LP64).
    #[test]
    fn layouts_match_the_binding() {
        assert_eq!(std::mem::size_of::<DeviceInfo>(), 4 + 4 + 32 + 4 + 4 + 96 + 4 + 4 + 32);
        assert_eq!(std::mem::size_of::<MemoryInfo>(), 48);
        assert_eq!(std::mem::size_of::<ProcessGpuInfo>(), 48);
        assert_eq!(std::mem::size_of::<ProcessInfo>(), 72 + 64 * 48);
        assert_eq!(std::mem::size_of::<MetaXLinkRemoteInfo>(), 36);
        assert_eq!(std::mem::size_of::<EccErrorCount>(), 20);
        assert_eq!(std::mem::size_of::<PciEventInfo>(), 4 + 4 + 20 + 64);
        assert_eq!(NAMES.len(), 25);
    }

    #[test]
    fn c_strings_stop_at_nul() {
        let mut f = [0 as c_char; 8];
        for (i, b) in b"ab c".iter().enumerate() {
            f[i] = *b as c_char;
        }
        assert_eq!(text(&f), "ab c");
        assert_eq!(text(&[b'x' as c_char; 3]), "xxx");
    }
}
