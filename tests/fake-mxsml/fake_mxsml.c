/*
 * A fake libmxsml.so for tests/mxsml.rs: the subset of MetaX's management library that
 * nodeagent calls, with the signatures and structure layouts of the vendor's Python binding
 * (pymxsml), and values read from a config file beside the library: "<this .so's path>.conf",
 * one "key value" a line. Each test compiles its own copy, so tests run in parallel.
 *
 * Keys (N = device index, P = port):
 *   count                  number of devices
 *   bdf.N name.N uuid.N    device info strings
 *   mem.N                  "used_kib,total_kib"
 *   util.N temp.N          XCORE usage (%), hotspot temperature (hundredths of a degree)
 *   power.N                per-rail power in mW, "a,b,..."
 *   procs.N                "pid:name:kib;pid:name:kib"
 *   clk_xcore.N clk_mc.N   MHz
 *   ecc_state.N ecc.N      0/1; "sramCE,sramUE,dramCE,dramUE,retired"
 *   pcie.N pcie_max.N      "GT/s,width"
 *   throttle.N             bit mask
 *   mxlk.N                 MetaXLink state code (0 enabled)
 *   ports.N                port state codes "1,1,5,..."
 *   peer.N.P               remote device index of port P
 *   pcievent.N.T           PCI event of type T (0 AER UE, 1 AER CE, 2 SYNFLD, 3 DBE, 4 MMIO):
 *                          "bit,count" (none: the type reports no event)
 *   numa.N                 NUMA node id
 *   maca                   MACA version
 *   fail.<function>        every call of that function returns this code
 *   fail.<function>.N      only for device N
 * The file is read again when it changes. Compiled with -DOLD_VERSION it lacks the health and link symbols (a library of another
 * version).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_KEYS 256
static char keys[MAX_KEYS][64];
static char vals[MAX_KEYS][256];
static int nkeys = -1;

/* Read again whenever the file changes (its mtime or size), so a test can change the values
 * under a running monitor. */
static void load(void) {
    Dl_info info;
    char path[4096];
    FILE *f;
    char line[512];
    struct stat st;
    static struct timespec seen_mtime;
    static off_t seen_size = -1;
    if (!dladdr((void *)load, &info) || !info.dli_fname) { nkeys = 0; return; }
    snprintf(path, sizeof path, "%s.conf", info.dli_fname);
    if (stat(path, &st) != 0) { nkeys = 0; return; }
    if (nkeys >= 0 && st.st_mtim.tv_sec == seen_mtime.tv_sec &&
        st.st_mtim.tv_nsec == seen_mtime.tv_nsec && st.st_size == seen_size)
        return;
    seen_mtime = st.st_mtim;
    seen_size = st.st_size;
    nkeys = 0;
    f = fopen(path, "r");
    if (!f) return;
    while (fgets(line, sizeof line, f) && nkeys < MAX_KEYS) {
        char *sp = strchr(line, ' ');
        char *nl = strchr(line, '\n');
        if (nl) *nl = 0;
        if (!sp) continue;
        *sp = 0;
        snprintf(keys[nkeys], sizeof keys[0], "%s", line);
        snprintf(vals[nkeys], sizeof vals[0], "%s", sp + 1);
        nkeys++;
    }
    fclose(f);
}

static const char *cfg(const char *fmt, unsigned a, unsigned b) {
    char key[64];
    int i;
    load();
    snprintf(key, sizeof key, fmt, a, b);
    for (i = 0; i < nkeys; i++)
        if (strcmp(keys[i], key) == 0) return vals[i];
    return NULL;
}

/* The code a call of `fn` on device `dev` must fail with, 0 if none. */
static unsigned failing(const char *fn, unsigned dev) {
    char key[96];
    const char *v;
    snprintf(key, sizeof key, "fail.%s.%%u", fn);
    if ((v = cfg(key, dev, 0))) return (unsigned)atoi(v);
    snprintf(key, sizeof key, "fail.%s", fn);
    if ((v = cfg(key, 0, 0))) return (unsigned)atoi(v);
    return 0;
}

static unsigned count(void) {
    const char *v = cfg("count", 0, 0);
    return v ? (unsigned)atoi(v) : 0;
}

#define CHECK(fn, dev)                                  \
    do {                                                \
        unsigned rc_ = failing(fn, dev);                \
        if (rc_) return rc_;                            \
        if ((dev) >= count()) return 6; /* INVALID_DEVICE_ID */ \
    } while (0)

typedef struct {
    unsigned deviceId, type;
    char bdfId[32];
    unsigned gpuId, nodeId;
    char uuid[96];
    unsigned brand, mode;
    char deviceName[32];
} mxSmlDeviceInfo_t;
typedef struct { long visVramTotal, visVramUse, vramTotal, vramUse, xttTotal, xttUse; } mxSmlMemoryInfo_t;
typedef struct { unsigned voltage, current, power; } mxSmlBoardWayElectricInfo_t;
typedef struct { float speed; unsigned width; } mxSmlPcieInfo_t;
typedef struct { unsigned sramCE, sramUE, dramCE, dramUE, retiredPage; } mxSmlEccErrorCount_t;
typedef struct { char bdfId[32]; unsigned gpuId; unsigned long gpuMemoryUsage; } mxSmlProcessGpuInfo_t;
typedef struct {
    unsigned processId;
    char processName[64];
    unsigned gpuNumber;
    mxSmlProcessGpuInfo_t processGpuInfo[64];
} mxSmlProcessInfo_t;
typedef struct { int deviceId; char bdfId[32]; } mxSmlMetaXLinkRemoteInfo_t;
typedef struct { int bitNumber; int count; char firstTime[20]; char name[64]; } mxSmlPciEventInfo_t;

unsigned mxSmlInit(void) { return failing("mxSmlInit", 0); }
unsigned mxSmlShutdown(void) { return 0; }
const char *mxSmlGetErrorString(unsigned rc) {
    static char buf[64];
    snprintf(buf, sizeof buf, "fake error %u", rc);
    return buf;
}
unsigned mxSmlGetDeviceCount(void) { return count(); }

unsigned mxSmlGetMacaVersion(char *out, unsigned *size) {
    const char *v = cfg("maca", 0, 0);
    if (failing("mxSmlGetMacaVersion", 0)) return failing("mxSmlGetMacaVersion", 0);
    snprintf(out, *size, "%s", v ? v : "");
    return 0;
}

unsigned mxSmlGetDeviceInfo(unsigned dev, mxSmlDeviceInfo_t *info) {
    const char *v;
    CHECK("mxSmlGetDeviceInfo", dev);
    memset(info, 0, sizeof *info);
    info->deviceId = dev;
    if ((v = cfg("bdf.%u", dev, 0))) snprintf(info->bdfId, sizeof info->bdfId, "%s", v);
    if ((v = cfg("name.%u", dev, 0))) snprintf(info->deviceName, sizeof info->deviceName, "%s", v);
    if ((v = cfg("uuid.%u", dev, 0))) snprintf(info->uuid, sizeof info->uuid, "%s", v);
    return 0;
}

unsigned mxSmlGetMemoryInfo(unsigned dev, mxSmlMemoryInfo_t *m) {
    const char *v;
    CHECK("mxSmlGetMemoryInfo", dev);
    memset(m, 0, sizeof *m);
    if (!(v = cfg("mem.%u", dev, 0))) return 3;
    sscanf(v, "%ld,%ld", &m->vramUse, &m->vramTotal);
    return 0;
}

static unsigned int_reading(const char *fn, const char *key, unsigned dev, int *out) {
    const char *v;
    CHECK(fn, dev);
    if (!(v = cfg(key, dev, 0))) return 3; /* OPERATION_NOT_SUPPORT */
    *out = atoi(v);
    return 0;
}

unsigned mxSmlGetDeviceIpUsage(unsigned dev, unsigned ip, int *usage) {
    if (ip != 4) return 9;
    return int_reading("mxSmlGetDeviceIpUsage", "util.%u", dev, usage);
}

unsigned mxSmlGetTemperatureInfo(unsigned dev, unsigned sensor, int *t) {
    if (sensor != 0) return 9;
    return int_reading("mxSmlGetTemperatureInfo", "temp.%u", dev, t);
}

unsigned mxSmlGetBoardPowerInfo(unsigned dev, unsigned *size, mxSmlBoardWayElectricInfo_t *rails) {
    const char *v;
    unsigned n = 0, want = 0, mw[16];
    char buf[256], *tok, *save;
    CHECK("mxSmlGetBoardPowerInfo", dev);
    if (!(v = cfg("power.%u", dev, 0))) return 3;
    snprintf(buf, sizeof buf, "%s", v);
    for (tok = strtok_r(buf, ",", &save); tok && want < 16; tok = strtok_r(NULL, ",", &save))
        mw[want++] = (unsigned)atoi(tok);
    if (*size < want) { *size = want; return 10; /* INSUFFICIENT_SIZE */ }
    for (n = 0; n < want; n++) { rails[n].voltage = 12000; rails[n].current = 1; rails[n].power = mw[n]; }
    *size = want;
    return 0;
}

unsigned mxSmlGetBoardPowerLimit(unsigned dev, unsigned *mw) { CHECK("mxSmlGetBoardPowerLimit", dev); *mw = 350000; return 0; }

unsigned mxSmlGetSingleGpuProcess(unsigned dev, unsigned *number, mxSmlProcessInfo_t *procs) {
    const char *v;
    unsigned n = 0, cap = *number;
    char buf[256], *tok, *save;
    CHECK("mxSmlGetSingleGpuProcess", dev);
    v = cfg("procs.%u", dev, 0);
    snprintf(buf, sizeof buf, "%s", v ? v : "");
    for (tok = strtok_r(buf, ";", &save); tok; tok = strtok_r(NULL, ";", &save)) {
        /* pid:name:kib, where the name may hold colons (ray::RayWorkerW) */
        unsigned pid;
        char name[64];
        unsigned long kib;
        char *first = strchr(tok, ':'), *last = strrchr(tok, ':');
        if (!first || first == last) continue;
        pid = (unsigned)atoi(tok);
        kib = strtoul(last + 1, NULL, 10);
        snprintf(name, sizeof name, "%.*s", (int)(last - first - 1), first + 1);
        if (n < cap) {
            memset(&procs[n], 0, sizeof procs[n]);
            procs[n].processId = pid;
            snprintf(procs[n].processName, sizeof procs[n].processName, "%s", name);
            procs[n].gpuNumber = 1;
            procs[n].processGpuInfo[0].gpuId = dev;
            procs[n].processGpuInfo[0].gpuMemoryUsage = kib;
        }
        n++;
    }
    *number = n;
    return 0;
}

#ifndef OLD_VERSION
unsigned mxSmlGetClocks(unsigned dev, unsigned ip, unsigned *size, unsigned *clocks) {
    const char *v;
    CHECK("mxSmlGetClocks", dev);
    v = cfg(ip == 11 ? "clk_xcore.%u" : ip == 3 ? "clk_mc.%u" : "none.%u", dev, 0);
    if (!v) return 3;
    if (*size < 1) { *size = 1; return 10; }
    clocks[0] = (unsigned)atoi(v);
    *size = 1;
    return 0;
}

unsigned mxSmlGetCurrentClocksThrottleReason(unsigned dev, unsigned long long *r) {
    const char *v;
    CHECK("mxSmlGetCurrentClocksThrottleReason", dev);
    v = cfg("throttle.%u", dev, 0);
    *r = v ? strtoull(v, NULL, 0) : 0;
    return 0;
}

unsigned mxSmlGetEccState(unsigned dev, unsigned *s) {
    return int_reading("mxSmlGetEccState", "ecc_state.%u", dev, (int *)s);
}

unsigned mxSmlGetTotalEccErrors(unsigned dev, mxSmlEccErrorCount_t *c) {
    const char *v;
    CHECK("mxSmlGetTotalEccErrors", dev);
    if (!(v = cfg("ecc.%u", dev, 0))) return 3;
    memset(c, 0, sizeof *c);
    sscanf(v, "%u,%u,%u,%u,%u", &c->sramCE, &c->sramUE, &c->dramCE, &c->dramUE, &c->retiredPage);
    return 0;
}

static unsigned pcie(const char *fn, const char *key, unsigned dev, mxSmlPcieInfo_t *p) {
    const char *v;
    CHECK(fn, dev);
    if (!(v = cfg(key, dev, 0))) return 3;
    sscanf(v, "%f,%u", &p->speed, &p->width);
    return 0;
}
unsigned mxSmlGetPcieInfo(unsigned dev, mxSmlPcieInfo_t *p) { return pcie("mxSmlGetPcieInfo", "pcie.%u", dev, p); }
unsigned mxSmlGetPcieMaxLinkInfo(unsigned dev, mxSmlPcieInfo_t *p) { return pcie("mxSmlGetPcieMaxLinkInfo", "pcie_max.%u", dev, p); }

unsigned mxSmlGetNodeAffinity(unsigned dev, unsigned words, unsigned *set) {
    const char *v;
    unsigned node;
    CHECK("mxSmlGetNodeAffinity", dev);
    if (!(v = cfg("numa.%u", dev, 0))) return 3;
    node = (unsigned)atoi(v);
    memset(set, 0, words * sizeof *set);
    if (node / 32 >= words) return 10;
    set[node / 32] = 1u << (node % 32);
    return 0;
}

unsigned mxSmlGetCpuAffinity(unsigned dev, unsigned words, unsigned *set) {
    CHECK("mxSmlGetCpuAffinity", dev);
    memset(set, 0, words * sizeof *set);
    return 3;
}

unsigned mxSmlGetDeviceTopology(unsigned a, unsigned b, unsigned *level) {
    CHECK("mxSmlGetDeviceTopology", a);
    if (b >= count()) return 6;
    *level = 5;
    return 0;
}

unsigned mxSmlGetMetaXLinkState(unsigned dev, unsigned *code, char *text, unsigned *size) {
    const char *v;
    CHECK("mxSmlGetMetaXLinkState", dev);
    if (!(v = cfg("mxlk.%u", dev, 0))) return 3;
    *code = (unsigned)atoi(v);
    snprintf(text, *size, "%s", *code ? "disabled" : "enabled");
    return 0;
}

unsigned mxSmlGetMetaXLinkPortState(unsigned dev, unsigned *states, unsigned *size) {
    const char *v;
    unsigned n = 0;
    char buf[128], *tok, *save;
    CHECK("mxSmlGetMetaXLinkPortState", dev);
    if (!(v = cfg("ports.%u", dev, 0))) return 3;
    snprintf(buf, sizeof buf, "%s", v);
    for (tok = strtok_r(buf, ",", &save); tok && n < *size; tok = strtok_r(NULL, ",", &save))
        states[n++] = (unsigned)atoi(tok);
    *size = n;
    return 0;
}

unsigned mxSmlGetMetaXLinkRemoteInfo(unsigned dev, unsigned port, mxSmlMetaXLinkRemoteInfo_t *r) {
    const char *v;
    CHECK("mxSmlGetMetaXLinkRemoteInfo", dev);
    if (!(v = cfg("peer.%u.%u", dev, port))) return 3;
    memset(r, 0, sizeof *r);
    r->deviceId = atoi(v);
    return 0;
}

/* infos: room for *size entries; *size returns the entries filled. */
unsigned mxSmlGetPciEventInfo(unsigned dev, unsigned type, mxSmlPciEventInfo_t *infos, unsigned *size) {
    static const char *names[] = {"AER_UE", "AER_CE", "SYNFLD", "DBE", "MMIO"};
    const char *v;
    CHECK("mxSmlGetPciEventInfo", dev);
    if (type > 4) return 2; /* INVALID_ARGUMENT */
    if (!(v = cfg("pcievent.%u.%u", dev, type))) { *size = 0; return 0; }
    if (*size < 1) return 10; /* INSUFFICIENT_SIZE */
    memset(infos, 0, sizeof *infos);
    sscanf(v, "%d,%d", &infos->bitNumber, &infos->count);
    snprintf(infos->firstTime, sizeof infos->firstTime, "2026-12-06 22:00:00");
    snprintf(infos->name, sizeof infos->name, "%s", names[type]);
    *size = 1;
    return 0;
}
#endif
