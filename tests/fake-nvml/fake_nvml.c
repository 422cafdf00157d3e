/*
 * A fake NVML (libnvidia-ml.so) for nodeagent's tests: the subset of functions nodeagent calls,
 * with NVML's real signatures and struct layouts (nvml.h, as nvml-wrapper-sys 0.10 binds them),
 * values read from a config file so a test can drive every field and every failure.
 *
 * The config is `fake_nvml.conf` in the directory this library was loaded from (found with
 * dladdr), so each test copies the library into its own temp dir and writes its own config:
 * no environment variable, no races between tests of one process. It is re-read on every
 * call, so a test can change readings while the agent runs. One `key value` per line:
 *
 *   gpus 2                          number of GPUs (default 1)
 *   init_fail 9                     nvmlInit_v2 returns this code (9: DRIVER_NOT_LOADED)
 *   fail.nvmlDeviceGetPowerUsage 3  that function returns this code for every GPU (3: NOT_SUPPORTED)
 *   fail.gpu1.nvmlDeviceGetName 3   ... for GPU 1 only
 *   gpu0.mem_used_mib 1234          any per-GPU value below, else the default shown in code
 *   gpu0.link2.down 1               NVLink 2 of GPU 0 is inactive
 *   gpu0.proc.pid 4242 / gpu0.proc.mib 512   one compute process on GPU 0
 *
 * When a file `fake_nvml.calls` exists beside the config, every device call appends a line
 * `FUNCTION gpuN` to it, so a test can count what the agent asked for (`nvmlEventSetFree` is
 * logged as `nvmlEventSetFree gpu0`).
 *
 * Events (nvmlEventSetCreate, nvmlDeviceRegisterEvents, nvmlDeviceGetSupportedEventTypes,
 * nvmlEventSetWait_v2, nvmlEventSetFree): every line `gpuN.xid CODE` of the config is one XID
 * event of GPU N, in file order; a wait delivers the next one not yet delivered to that set
 * (lines of GPUs not registered for XIDs are passed over), else polls the file every 20 ms
 * until its timeout and returns NVML_ERROR_TIMEOUT. `gpuN.event_types MASK` sets what
 * nvmlDeviceGetSupportedEventTypes answers (default: ECC, P-state, XID and clock events);
 * `fail.gpuN.nvmlDeviceRegisterEvents 3` makes registration fail for GPU N.
 *
 * Build: cc -shared -fPIC -o libnvidia-ml.so.1 fake_nvml.c
 * With -DFAKE_NVML_OLD the power, NVLink and event functions are left out, as in a library of
 * another version that lacks symbols nodeagent looks up.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef int nvmlReturn_t;
typedef struct fake_device *nvmlDevice_t;
typedef unsigned int nvmlEnableState_t;

enum {
    NVML_SUCCESS = 0,
    NVML_ERROR_UNINITIALIZED = 1,
    NVML_ERROR_INVALID_ARGUMENT = 2,
    NVML_ERROR_NOT_SUPPORTED = 3,
    NVML_ERROR_INSUFFICIENT_SIZE = 7,
    NVML_ERROR_TIMEOUT = 10,
};

typedef struct {
    char busIdLegacy[16];
    unsigned int domain;
    unsigned int bus;
    unsigned int device;
    unsigned int pciDeviceId;
    unsigned int pciSubSystemId;
    char busId[32];
} nvmlPciInfo_t;

typedef struct {
    unsigned int version;
    unsigned long long total;
    unsigned long long reserved;
    unsigned long long free;
    unsigned long long used;
} nvmlMemory_v2_t;

typedef struct {
    unsigned int gpu;
    unsigned int memory;
} nvmlUtilization_t;

typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId;
    unsigned int computeInstanceId;
} nvmlProcessInfo_t;

struct fake_device {
    unsigned int index;
};

static struct fake_device devices[64];
static int initialised;

static const char *conf_path(void) {
    static char path[4096];
    Dl_info info;
    if (!dladdr((void *)&conf_path, &info) || !info.dli_fname) return NULL;
    snprintf(path, sizeof path, "%s", info.dli_fname);
    char *slash = strrchr(path, '/');
    if (!slash) return "fake_nvml.conf";
    snprintf(slash + 1, sizeof path - (size_t)(slash + 1 - path), "fake_nvml.conf");
    return path;
}

/* The value of `key` in the config, or `dflt`. */
static long long cfg(const char *key, long long dflt) {
    const char *p = conf_path();
    FILE *f = p ? fopen(p, "r") : NULL;
    if (!f) return dflt;
    char line[512];
    long long v = dflt;
    size_t n = strlen(key);
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, key, n) == 0 && (line[n] == ' ' || line[n] == '\t')) {
            v = strtoll(line + n + 1, NULL, 0);
        }
    }
    fclose(f);
    return v;
}

static long long gcfg(unsigned int gpu, const char *what, long long dflt) {
    char key[256];
    snprintf(key, sizeof key, "gpu%u.%s", gpu, what);
    return cfg(key, dflt);
}

/* The failure configured for `fn` (on `gpu`, or on every GPU), else success. */
static nvmlReturn_t fail(const char *fn, int gpu) {
    char key[256];
    if (gpu >= 0) {
        snprintf(key, sizeof key, "fail.gpu%d.%s", gpu, fn);
        long long c = cfg(key, 0);
        if (c) return (nvmlReturn_t)c;
    }
    snprintf(key, sizeof key, "fail.%s", fn);
    return (nvmlReturn_t)cfg(key, 0);
}

/* Appends `fn gpuN` to fake_nvml.calls beside the config, when that file exists. */
static void log_call(const char *fn, unsigned int gpu) {
    const char *p = conf_path();
    if (!p) return;
    char path[4200];
    snprintf(path, sizeof path, "%.*s.calls", (int)(strlen(p) - strlen(".conf")), p);
    FILE *f = fopen(path, "r+");
    if (!f) return;
    fseek(f, 0, SEEK_END);
    fprintf(f, "%s gpu%u\n", fn, gpu);
    fclose(f);
}

#define DEV_CHECK(fn)                                                        \
    if (!initialised) return NVML_ERROR_UNINITIALIZED;                       \
    if (!device) return NVML_ERROR_INVALID_ARGUMENT;                         \
    log_call(fn, device->index);                                             \
    do {                                                                     \
        nvmlReturn_t r_ = fail(fn, (int)device->index);                      \
        if (r_) return r_;                                                   \
    } while (0)

static unsigned int gpu_count(void) {
    long long n = cfg("gpus", 1);
    if (n < 0) n = 0;
    if (n > 64) n = 64;
    return (unsigned int)n;
}

static void bus_id_of(unsigned int gpu, char *out, size_t len) {
    snprintf(out, len, "00000000:%02X:00.0", (unsigned int)gcfg(gpu, "bus", 0x18 + gpu));
}

nvmlReturn_t nvmlInit_v2(void) {
    nvmlReturn_t r = (nvmlReturn_t)cfg("init_fail", 0);
    if (r) return r;
    initialised = 1;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlShutdown(void) {
    initialised = 0;
    return NVML_SUCCESS;
}

const char *nvmlErrorString(nvmlReturn_t result) {
    (void)result;
    return "fake NVML error";
}

nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    nvmlReturn_t r = fail("nvmlSystemGetDriverVersion", -1);
    if (r) return r;
    snprintf(version, length, "580.159.04-fake");
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *deviceCount) {
    if (!initialised) return NVML_ERROR_UNINITIALIZED;
    nvmlReturn_t r = fail("nvmlDeviceGetCount_v2", -1);
    if (r) return r;
    *deviceCount = gpu_count();
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    if (!initialised) return NVML_ERROR_UNINITIALIZED;
    if (index >= gpu_count()) return NVML_ERROR_INVALID_ARGUMENT;
    nvmlReturn_t r = fail("nvmlDeviceGetHandleByIndex_v2", (int)index);
    if (r) return r;
    devices[index].index = index;
    *device = &devices[index];
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length) {
    DEV_CHECK("nvmlDeviceGetName");
    snprintf(name, length, "Fake H100 80GB HBM3");
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length) {
    DEV_CHECK("nvmlDeviceGetUUID");
    snprintf(uuid, length, "GPU-fake-%04u", device->index);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t device, nvmlPciInfo_t *pci) {
    DEV_CHECK("nvmlDeviceGetPciInfo_v3");
    memset(pci, 0, sizeof *pci);
    bus_id_of(device->index, pci->busId, sizeof pci->busId);
    snprintf(pci->busIdLegacy, sizeof pci->busIdLegacy, "0000:%02X:00.0",
             (unsigned int)gcfg(device->index, "bus", 0x18 + device->index));
    pci->bus = (unsigned int)gcfg(device->index, "bus", 0x18 + device->index);
    pci->pciDeviceId = 0x233010de;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device, nvmlMemory_v2_t *memory) {
    DEV_CHECK("nvmlDeviceGetMemoryInfo_v2");
    const unsigned long long mib = 1024ULL * 1024ULL;
    memory->total = (unsigned long long)gcfg(device->index, "mem_total_mib", 81559) * mib;
    memory->used = (unsigned long long)gcfg(device->index, "mem_used_mib", 1000 + device->index) * mib;
    memory->reserved = 0;
    memory->free = memory->total - memory->used;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t device, nvmlUtilization_t *u) {
    DEV_CHECK("nvmlDeviceGetUtilizationRates");
    u->gpu = (unsigned int)gcfg(device->index, "util", 40 + device->index);
    u->memory = (unsigned int)gcfg(device->index, "mem_util", 10);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t device, int sensorType, unsigned int *temp) {
    DEV_CHECK("nvmlDeviceGetTemperature");
    if (sensorType != 0) return NVML_ERROR_INVALID_ARGUMENT;
    *temp = (unsigned int)gcfg(device->index, "temp", 50 + device->index);
    return NVML_SUCCESS;
}

#ifndef FAKE_NVML_OLD
nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t device, unsigned int *power) {
    DEV_CHECK("nvmlDeviceGetPowerUsage");
    *power = (unsigned int)gcfg(device->index, "power_mw", 123456);
    return NVML_SUCCESS;
}
#endif

nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t device, unsigned int *infoCount,
                                                     nvmlProcessInfo_t *infos) {
    DEV_CHECK("nvmlDeviceGetComputeRunningProcesses_v3");
    long long pid = gcfg(device->index, "proc.pid", 0);
    unsigned int n = pid > 0 ? 1 : 0;
    if (infos == NULL || *infoCount < n) {
        *infoCount = n;
        return n ? NVML_ERROR_INSUFFICIENT_SIZE : NVML_SUCCESS;
    }
    if (n) {
        infos[0].pid = (unsigned int)pid;
        infos[0].usedGpuMemory = (unsigned long long)gcfg(device->index, "proc.mib", 100) * 1024ULL * 1024ULL;
        infos[0].gpuInstanceId = 0xFFFFFFFF;
        infos[0].computeInstanceId = 0xFFFFFFFF;
    }
    *infoCount = n;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetEccMode(nvmlDevice_t device, nvmlEnableState_t *current, nvmlEnableState_t *pending) {
    DEV_CHECK("nvmlDeviceGetEccMode");
    *current = *pending = (nvmlEnableState_t)gcfg(device->index, "ecc_enabled", 1);
    return NVML_SUCCESS;
}

/* errorType: 0 corrected, 1 uncorrected; counterType: 0 volatile, 1 aggregate. */
nvmlReturn_t nvmlDeviceGetTotalEccErrors(nvmlDevice_t device, int errorType, int counterType,
                                         unsigned long long *eccCounts) {
    DEV_CHECK("nvmlDeviceGetTotalEccErrors");
    if (counterType != 0) return NVML_ERROR_NOT_SUPPORTED;
    *eccCounts = (unsigned long long)gcfg(device->index, errorType ? "ecc_uncorrected" : "ecc_corrected", 0);
    return NVML_SUCCESS;
}

/* type: 0 graphics, 1 SM, 2 memory, 3 video. */
nvmlReturn_t nvmlDeviceGetClockInfo(nvmlDevice_t device, int type, unsigned int *clock) {
    DEV_CHECK("nvmlDeviceGetClockInfo");
    *clock = (unsigned int)(type == 2 ? gcfg(device->index, "mem_clock", 2619) : gcfg(device->index, "sm_clock", 1980));
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMaxClockInfo(nvmlDevice_t device, int type, unsigned int *clock) {
    DEV_CHECK("nvmlDeviceGetMaxClockInfo");
    *clock = type == 2 ? 2619u : 1980u;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetCurrentClocksThrottleReasons(nvmlDevice_t device, unsigned long long *reasons) {
    DEV_CHECK("nvmlDeviceGetCurrentClocksThrottleReasons");
    *reasons = (unsigned long long)gcfg(device->index, "throttle", 0);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetPerformanceState(nvmlDevice_t device, int *pState) {
    DEV_CHECK("nvmlDeviceGetPerformanceState");
    *pState = (int)gcfg(device->index, "pstate", 0);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetCurrPcieLinkGeneration(nvmlDevice_t device, unsigned int *v) {
    DEV_CHECK("nvmlDeviceGetCurrPcieLinkGeneration");
    *v = (unsigned int)gcfg(device->index, "pcie_gen", 5);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMaxPcieLinkGeneration(nvmlDevice_t device, unsigned int *v) {
    DEV_CHECK("nvmlDeviceGetMaxPcieLinkGeneration");
    *v = (unsigned int)gcfg(device->index, "pcie_gen_max", 5);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetCurrPcieLinkWidth(nvmlDevice_t device, unsigned int *v) {
    DEV_CHECK("nvmlDeviceGetCurrPcieLinkWidth");
    *v = (unsigned int)gcfg(device->index, "pcie_width", 16);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMaxPcieLinkWidth(nvmlDevice_t device, unsigned int *v) {
    DEV_CHECK("nvmlDeviceGetMaxPcieLinkWidth");
    *v = (unsigned int)gcfg(device->index, "pcie_width_max", 16);
    return NVML_SUCCESS;
}

#ifndef FAKE_NVML_OLD
/* `nvlinks N` links per GPU (default 0: no NVLink, NOT_SUPPORTED). Link l of GPU i leads to
 * GPU (i + 1 + l % (gpus - 1)) % gpus, or to a switch at bus 0xF0 when `nvswitch 1`. */
nvmlReturn_t nvmlDeviceGetNvLinkState(nvmlDevice_t device, unsigned int link, nvmlEnableState_t *isActive) {
    DEV_CHECK("nvmlDeviceGetNvLinkState");
    if (link >= (unsigned int)cfg("nvlinks", 0)) return NVML_ERROR_NOT_SUPPORTED;
    char what[64];
    snprintf(what, sizeof what, "link%u.down", link);
    *isActive = gcfg(device->index, what, 0) ? 0 : 1;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetNvLinkRemotePciInfo_v2(nvmlDevice_t device, unsigned int link, nvmlPciInfo_t *pci) {
    DEV_CHECK("nvmlDeviceGetNvLinkRemotePciInfo_v2");
    unsigned int n = gpu_count();
    if (link >= (unsigned int)cfg("nvlinks", 0) || n < 2) return NVML_ERROR_NOT_SUPPORTED;
    memset(pci, 0, sizeof *pci);
    if (cfg("nvswitch", 0)) {
        snprintf(pci->busId, sizeof pci->busId, "00000000:F0:00.0");
        return NVML_SUCCESS;
    }
    unsigned int remote = (device->index + 1 + link % (n - 1)) % n;
    bus_id_of(remote, pci->busId, sizeof pci->busId);
    return NVML_SUCCESS;
}
#endif

nvmlReturn_t nvmlDeviceGetNumaNodeId(nvmlDevice_t device, unsigned int *node) {
    DEV_CHECK("nvmlDeviceGetNumaNodeId");
    *node = (unsigned int)gcfg(device->index, "numa", device->index);
    return NVML_SUCCESS;
}

/* CPUs 8*i .. 8*i+7 unless `gpuN.cpumask` gives the first word. */
nvmlReturn_t nvmlDeviceGetCpuAffinity(nvmlDevice_t device, unsigned int cpuSetSize, unsigned long *cpuSet) {
    DEV_CHECK("nvmlDeviceGetCpuAffinity");
    if (cpuSetSize == 0) return NVML_ERROR_INSUFFICIENT_SIZE;
    memset(cpuSet, 0, cpuSetSize * sizeof *cpuSet);
    cpuSet[0] = (unsigned long)gcfg(device->index, "cpumask", 0xFFUL << (8 * (device->index % 8)));
    return NVML_SUCCESS;
}

#ifndef FAKE_NVML_OLD
/* nvml.h nvmlEventTypeXidCriticalError, and the default supported mask (single and double bit
 * ECC, P-state, XID, clock). */
#define XID_EVENT 0x8ULL
#define DEFAULT_EVENT_TYPES (0x1ULL | 0x2ULL | 0x4ULL | 0x8ULL | 0x10ULL)

typedef struct fake_set {
    unsigned long long registered[64];
    long long delivered; /* `gpuN.xid` lines of the config passed to this set so far */
} *nvmlEventSet_t;

/* nvml.h nvmlEventData_t (nvml-wrapper-sys 0.10 nvmlEventData_st). */
typedef struct {
    nvmlDevice_t device;
    unsigned long long eventType;
    unsigned long long eventData;
    unsigned int gpuInstanceId;
    unsigned int computeInstanceId;
} nvmlEventData_t;

nvmlReturn_t nvmlEventSetCreate(nvmlEventSet_t *set) {
    if (!initialised) return NVML_ERROR_UNINITIALIZED;
    nvmlReturn_t r = fail("nvmlEventSetCreate", -1);
    if (r) return r;
    *set = calloc(1, sizeof **set);
    return *set ? NVML_SUCCESS : 999;
}

nvmlReturn_t nvmlEventSetFree(nvmlEventSet_t set) {
    log_call("nvmlEventSetFree", 0);
    free(set);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetSupportedEventTypes(nvmlDevice_t device, unsigned long long *eventTypes) {
    DEV_CHECK("nvmlDeviceGetSupportedEventTypes");
    *eventTypes = (unsigned long long)gcfg(device->index, "event_types", (long long)DEFAULT_EVENT_TYPES);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceRegisterEvents(nvmlDevice_t device, unsigned long long eventTypes, nvmlEventSet_t set) {
    DEV_CHECK("nvmlDeviceRegisterEvents");
    if (!set) return NVML_ERROR_INVALID_ARGUMENT;
    unsigned long long supported = (unsigned long long)gcfg(device->index, "event_types", (long long)DEFAULT_EVENT_TYPES);
    if (eventTypes & ~supported) return NVML_ERROR_NOT_SUPPORTED;
    set->registered[device->index % 64] |= eventTypes;
    return NVML_SUCCESS;
}

/* The next `gpuN.xid CODE` line past the set's `delivered` ones for a GPU registered for XIDs:
 * 1 and the event filled in, else 0. Lines passed over count as delivered. */
static int next_xid(nvmlEventSet_t set, nvmlEventData_t *data) {
    const char *p = conf_path();
    FILE *f = p ? fopen(p, "r") : NULL;
    if (!f) return 0;
    char line[512];
    long long seen = 0;
    int found = 0;
    unsigned int gpu;
    long long code;
    while (!found && fgets(line, sizeof line, f)) {
        if (sscanf(line, "gpu%u.xid %lli", &gpu, &code) != 2) continue;
        if (++seen <= set->delivered) continue;
        set->delivered = seen;
        if (gpu >= 64 || gpu >= gpu_count() || !(set->registered[gpu] & XID_EVENT)) continue;
        devices[gpu].index = gpu;
        memset(data, 0, sizeof *data);
        data->device = &devices[gpu];
        data->eventType = XID_EVENT;
        data->eventData = (unsigned long long)code;
        data->gpuInstanceId = 0xFFFFFFFF;
        data->computeInstanceId = 0xFFFFFFFF;
        found = 1;
    }
    fclose(f);
    return found;
}

nvmlReturn_t nvmlEventSetWait_v2(nvmlEventSet_t set, nvmlEventData_t *data, unsigned int timeoutms) {
    if (!initialised) return NVML_ERROR_UNINITIALIZED;
    if (!set || !data) return NVML_ERROR_INVALID_ARGUMENT;
    nvmlReturn_t r = fail("nvmlEventSetWait_v2", -1);
    if (r) return r;
    for (unsigned int waited = 0;; waited += 20) {
        if (next_xid(set, data)) return NVML_SUCCESS;
        if (waited >= timeoutms) return NVML_ERROR_TIMEOUT;
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
#endif
