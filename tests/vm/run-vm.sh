#!/usr/bin/env bash
# Boots a real Linux kernel under QEMU with a chosen NUMA layout and runs one scenario script in
# it, to prove live probing and binding on multi-node kernels the CI box does not have.
#
#   tests/vm/run-vm.sh --topology two-node|two-node-two-gpu|four-node --scenario FILE --bin NODEAGENT --out DIR
#                      [--file SRC[:DEST]]... [--timeout SECS]
#
# What it does:
#   1. Kernel: Debian's current linux-image-*-amd64 package, fetched with `apt-get download`
#      into the cache dir ($NODEAGENT_VM_CACHE, default /var/cache/nodeagent-test/vm) and only
#      its vmlinuz extracted (the package is never installed), and that unpacked once more into
#      the ELF `vmlinux-*` that QEMU boots directly (PVH entry; no self-decompression under
#      emulation). Reused between runs.
#      $NODEAGENT_VM_KERNEL names a kernel image to use instead.
#   2. Initramfs (uncompressed newc cpio): busybox-static, numactl, the nodeagent binary (a copy
#      without debug info and symbol table, `objcopy --strip-all`: the debug build's 275 MB, which
#      the guest would otherwise unpack and hold in memory, shrink to about 47 MB), every
#      library `ldd` lists for them, extra files (--file), the helper scripts of tests/vm/, the scenario as
#      /scenario.sh and an /init that mounts proc, sysfs, devtmpfs and tmpfs, runs the scenario
#      with its output on the second serial port, and powers off.
#   3. Boot: qemu-system-x86_64 with the topology of docs NUMA-VM.md, KVM when /dev/kvm works and
#      TCG otherwise ($NODEAGENT_VM_ACCEL overrides), under a hard timeout.
#   4. Results: DIR/console.log is the kernel console (ttyS0), DIR/results.log the scenario's
#      output (ttyS1), framed by `@@NA-VM-START@@` and `@@NA-VM-DONE@@`, DIR/timings.log where the
#      time went (building the initramfs, QEMU, the guest's boot, each section of the scenario
#      with the unframed time before it), summed up in one `run-vm: ... timings` line on stderr.
#
# Exit status: 0 the scenario ran to its end marker (its checks are judged by the caller),
# 1 the VM failed (no boot, timeout, no end marker), 2 bad usage or a missing tool/kernel.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${NODEAGENT_VM_CACHE:-/var/cache/nodeagent-test/vm}
topology=
scenario=
bin=
out=
timeout_s=180
files=()

die() { echo "run-vm: $2" >&2; exit "$1"; }

while [ $# -gt 0 ]; do
  case $1 in
    --topology) topology=${2:?}; shift 2 ;;
    --scenario) scenario=${2:?}; shift 2 ;;
    --bin) bin=${2:?}; shift 2 ;;
    --out) out=${2:?}; shift 2 ;;
    --file) files+=("${2:?}"); shift 2 ;;
    --timeout) timeout_s=${2:?}; shift 2 ;;
    -h | --help) sed -n '2,25p' "$0"; exit 0 ;;
    *) die 2 "unknown argument '$1' (see --help)" ;;
  esac
done
[ -n "$topology" ] && [ -n "$scenario" ] && [ -n "$bin" ] && [ -n "$out" ] ||
  die 2 "--topology, --scenario, --bin and --out are required (see --help)"
[ -f "$scenario" ] || die 2 "scenario script $scenario not found"
[ -x "$bin" ] || die 2 "nodeagent binary $bin not found or not executable (build it first)"

for tool in qemu-system-x86_64 busybox numactl cpio ldd timeout; do
  command -v "$tool" >/dev/null 2>&1 ||
    die 2 "$tool not found: install qemu-system-x86 busybox-static numactl cpio (scripts/setup.sh test)"
done
busybox_bin=$(command -v busybox)
# A dynamically linked busybox would need its libraries and a different /init; insist on the
# static one Debian ships in busybox-static.
if ldd "$busybox_bin" >/dev/null 2>&1; then
  die 2 "$busybox_bin is dynamically linked: install busybox-static"
fi

case $topology in
  two-node)
    qemu_topo=(-smp 4 -m 2048
      -object memory-backend-ram,id=m0,size=1G -object memory-backend-ram,id=m1,size=1G
      -numa node,nodeid=0,cpus=0-1,memdev=m0 -numa node,nodeid=1,cpus=2-3,memdev=m1
      -device pxb,id=pxb1,bus_nr=64,numa_node=1,bus=pci.0 -device VGA,bus=pxb1,addr=0x1)
    ;;
  two-node-two-gpu)
    # two-node with a second display-class device, 0000:21:01.0 on node 0: an instance of both
    # spans the nodes (per-rank binding, tests/vm/ranks.sh).
    qemu_topo=(-smp 4 -m 2048
      -object memory-backend-ram,id=m0,size=1G -object memory-backend-ram,id=m1,size=1G
      -numa node,nodeid=0,cpus=0-1,memdev=m0 -numa node,nodeid=1,cpus=2-3,memdev=m1
      -device pxb,id=pxb0,bus_nr=32,numa_node=0,bus=pci.0 -device VGA,bus=pxb0,addr=0x1
      -device pxb,id=pxb1,bus_nr=64,numa_node=1,bus=pci.0 -device VGA,bus=pxb1,addr=0x1)
    ;;
  four-node)
    # Node 2 has CPUs but no memory (no memdev); each pxb must sit on pci.0 or QEMU plugs the
    # second expander into the first and refuses.
    qemu_topo=(-smp 8 -m 3072
      -object memory-backend-ram,id=m0,size=1G -object memory-backend-ram,id=m1,size=1G
      -object memory-backend-ram,id=m3,size=1G
      -numa node,nodeid=0,cpus=0-1,memdev=m0 -numa node,nodeid=1,cpus=2-3,memdev=m1
      -numa node,nodeid=2,cpus=4-5 -numa node,nodeid=3,cpus=6-7,memdev=m3
      -numa dist,src=0,dst=1,val=20 -numa dist,src=0,dst=2,val=30 -numa dist,src=0,dst=3,val=30
      -numa dist,src=1,dst=2,val=30 -numa dist,src=1,dst=3,val=30 -numa dist,src=2,dst=3,val=20
      -device pxb,id=pxb1,bus_nr=64,numa_node=1,bus=pci.0 -device VGA,bus=pxb1,addr=0x1
      -device pxb,id=pxb2,bus_nr=128,numa_node=2,bus=pci.0 -device VGA,bus=pxb2,addr=0x1)
    ;;
  *) die 2 "unknown topology '$topology' (two-node, two-node-two-gpu or four-node)" ;;
esac

# ---------------------------------------------------------------------------------------------
# 1. Kernel, from the cache or Debian's archive.
mkdir -p "$cache" || die 2 "cannot create cache dir $cache"
kernel=${NODEAGENT_VM_KERNEL:-}
if [ -n "$kernel" ]; then
  [ -f "$kernel" ] || die 2 "NODEAGENT_VM_KERNEL=$kernel not found"
else
  # One fetch at a time when several tests start together.
  exec 9>"$cache/.lock"
  flock 9
  resolve() { apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}' || true; }
  pkg=$(resolve)
  if [ -z "$pkg" ] && ! ls "$cache"/vmlinuz-* >/dev/null 2>&1; then
    # A fresh machine whose package lists were never fetched: fetch them once.
    echo "run-vm: apt-cache knows no linux-image-amd64; running apt-get update" >&2
    apt-get update -qq >/dev/null 2>&1 || true
    pkg=$(resolve)
  fi
  if [ -n "$pkg" ] && [ -f "$cache/vmlinuz-$pkg" ]; then
    kernel=$cache/vmlinuz-$pkg
  elif [ -n "$pkg" ]; then
    echo "run-vm: fetching kernel package $pkg into $cache" >&2
    fetch=$(mktemp -d "$cache/fetch.XXXXXX")
    if ! (cd "$fetch" && apt-get download "$pkg" >/dev/null 2>"$fetch/apt.err"); then
      # Stale package lists name a version the archive no longer has: refresh them once.
      apt-get update -qq >/dev/null 2>&1 || true
      (cd "$fetch" && apt-get download "$pkg" >/dev/null 2>"$fetch/apt.err") ||
        { err=$(tail -1 "$fetch/apt.err"); rm -rf "$fetch"; die 2 "apt-get download $pkg failed: $err"; }
    fi
    deb=$(ls "$fetch"/*.deb)
    dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$fetch" --wildcards './boot/vmlinuz-*' ||
      { rm -rf "$fetch"; die 2 "no boot/vmlinuz-* in $deb"; }
    mv "$fetch"/boot/vmlinuz-* "$cache/vmlinuz-$pkg"
    rm -rf "$fetch"
    kernel=$cache/vmlinuz-$pkg
  else
    # No package lists (offline, or apt-get update never ran): any kernel cached before will do.
    kernel=$(ls -t "$cache"/vmlinuz-* 2>/dev/null | head -1 || true)
    [ -n "$kernel" ] ||
      die 2 "no kernel: apt-cache knows no linux-image-amd64 (run apt-get update) and $cache holds none"
  fi
  # Debian's vmlinuz unpacks itself (xz) before the kernel's clock starts: 20-30 s of emulated
  # CPU on every boot. Its payload, unpacked once here into the cache, is an ELF with a PVH entry
  # note, which QEMU boots directly. The vmlinuz stays in use when that cannot be made.
  elf=$cache/vmlinux-${kernel##*/vmlinuz-}
  if [ ! -s "$elf" ] && command -v xz >/dev/null 2>&1 && command -v readelf >/dev/null 2>&1; then
    off=$(LC_ALL=C grep -abo $'\xfd7zXZ\x00' "$kernel" | head -1 | cut -d: -f1 || true)
    if [ -n "$off" ]; then
      tmp=$(mktemp "$cache/elf.XXXXXX")
      tail -c +$((off + 1)) "$kernel" | xz -dc >"$tmp" 2>/dev/null || true
      if readelf -n "$tmp" 2>/dev/null | grep -qE '0x00000012|PHYS32_ENTRY'; then
        chmod 644 "$tmp" && mv "$tmp" "$elf"
      else
        rm -f "$tmp"
      fi
    fi
  fi
  [ -s "$elf" ] && kernel=$elf
  flock -u 9
fi

# ---------------------------------------------------------------------------------------------
# 2. Initramfs.
mkdir -p "$out"
t_begin=$(date +%s.%N)
work=$(mktemp -d "${TMPDIR:-/tmp}/nodeagent-vm.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,lib,lib64,proc,sys,dev,tmp,run,etc,out}

# Copy a file and keep its path, so ldd's absolute paths resolve in the guest unchanged.
put() {
  local src=$1 dest=${2:-$1}
  mkdir -p "$root$(dirname "$dest")"
  cp -L "$src" "$root$dest"
}
put_with_libs() {
  local prog=$1 dest=$2 lib
  put "$prog" "$dest"
  # `ldd` prints "name => /path (addr)" and the loader as "/lib64/ld-linux-x86-64.so.2 (addr)".
  for lib in $(ldd "$prog" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
    [ -e "$root$lib" ] || put "$lib"
  done
}

cp "$busybox_bin" "$root/bin/busybox"
# The guest never reads the debug info or the symbol table: pack a copy without them (the binary
# itself as it is when objcopy is missing or fails).
guest_bin=$bin
if command -v objcopy >/dev/null 2>&1 && objcopy --strip-all "$bin" "$work/nodeagent" 2>/dev/null; then
  guest_bin=$work/nodeagent
fi
put_with_libs "$guest_bin" /usr/bin/nodeagent
put_with_libs "$(command -v numactl)" /usr/bin/numactl
for f in "${files[@]}"; do
  src=${f%%:*}
  dest=${f#*:}
  [ "$dest" = "$f" ] && dest=/usr/bin/$(basename "$src")
  [ -e "$src" ] || die 2 "--file $src not found"
  if [ -x "$src" ] && [ -f "$src" ] && ldd "$src" >/dev/null 2>&1; then
    put_with_libs "$src" "$dest"
  else
    put "$src" "$dest"
  fi
done
# The scenario helpers (lib.sh, serve.sh, engine-wrapper.sh...) sit at / in the guest.
for helper in "$here"/*.sh; do
  [ "$(basename "$helper")" = run-vm.sh ] || cp "$helper" "$root/"
done
cp "$scenario" "$root/scenario.sh"

cat >"$root/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/usr/bin:/usr/sbin:/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up
# Results go to the second serial port so kernel messages on the console never interleave.
stty -F /dev/ttyS1 raw -echo 2>/dev/null
exec >/dev/ttyS1 2>&1
echo "@@NA-VM-START@@"
read -r up _ </proc/uptime
echo "@@NA-TIME (boot) 0 $up@@"
cd /tmp
sh /scenario.sh
rc=$?
read -r end _ </proc/uptime
echo "@@NA-TIME (scenario) $up $end@@"
echo "@@NA-VM-DONE rc=$rc@@"
# Give the UART a moment to drain before the machine goes away.
sync
sleep 1
poweroff -f
EOF
chmod +x "$root/init" "$root/scenario.sh"

(cd "$root" && find . -print0 | cpio --null -o -H newc --quiet) >"$work/initrd.cpio" ||
  die 2 "cpio failed to build the initramfs"
t_initrd=$(date +%s.%N)
initrd_mb=$(($(stat -c %s "$work/initrd.cpio") / 1048576))

# ---------------------------------------------------------------------------------------------
# 3. Boot.
# TCG by default: nested KVM on CI runners often hangs the guest silently (seen here), and
# timing inside the VM means nothing anyway. NODEAGENT_VM_ACCEL=kvm opts in.
accel=${NODEAGENT_VM_ACCEL:-tcg}
console=$out/console.log
results=$out/results.log
: >"$console"
: >"$results"
echo "run-vm: booting $topology ($accel, $(basename "$kernel"), timeout ${timeout_s}s)" >&2
set +e
timeout --kill-after=10 "$timeout_s" qemu-system-x86_64 -M pc -accel "$accel" "${qemu_topo[@]}" \
  -kernel "$kernel" -initrd "$work/initrd.cpio" \
  -append "console=ttyS0 quiet loglevel=3 panic=-1 rdinit=/init" \
  -display none -vga none -monitor none -no-reboot \
  -serial "file:$console" -serial "file:$results" 2>"$out/qemu.err"
rc=$?
set -e
t_qemu=$(date +%s.%N)
# DIR/timings.log: host phases, then the guest's (uptime seconds) from the @@NA-TIME lines.
tr -d '\r' <"$results" | awk -v topo="$topology" -v b="$t_begin" -v i="$t_initrd" -v q="$t_qemu" -v mb="$initrd_mb" '
  BEGIN {
    printf "%s VM: host seconds, then guest uptime seconds\n", topo
    printf "host  initramfs built  %8.1f s  (%d MB)\n", i - b, mb
    printf "host  qemu ran         %8.1f s\n", q - i
    last = -1
  }
  {
    p = index($0, "@@NA-TIME ")
    if (!p) next
    n = split(substr($0, p + 10), f, " ")
    sub(/@@$/, "", f[3])
    if (f[1] == "(boot)") { printf "guest boot to /init  %8.1f s\n", f[3]; last = f[3]; next }
    if (f[1] == "(scenario)") { printf "guest scenario       %8.1f s\n", f[3] - f[2]; next }
    if (!head++) printf "%-32s %9s %9s %9s\n", "section", "start", "took", "before"
    printf "%-32s %9.1f %9.1f %9.1f\n", f[1], f[2], f[3] - f[2], (last < 0 ? 0 : f[2] - last)
    last = f[3]
  }' >"$out/timings.log" 2>/dev/null || true
secs() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.1f", b - a}'; }
boot=$(tr -d '\r' <"$results" | sed -n 's/.*@@NA-TIME (boot) 0 \([0-9.]*\)@@.*/\1/p' | head -1)
scenario=$(tr -d '\r' <"$results" | sed -n 's/.*@@NA-TIME (scenario) \([0-9.]*\) \([0-9.]*\)@@.*/\1 \2/p' | head -1)
echo "run-vm: $topology timings: initramfs $(secs "$t_begin" "$t_initrd") s ($initrd_mb MB), qemu $(secs "$t_initrd" "$t_qemu") s, guest boot ${boot:-?} s, scenario $([ -n "$scenario" ] && secs $scenario || echo ?) s (see $out/timings.log)" >&2
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
  die 1 "$topology VM timed out after ${timeout_s}s (console: $console, results: $results)"
fi
if [ "$rc" -ne 0 ]; then
  die 1 "qemu-system-x86_64 exited with status $rc: $(tail -1 "$out/qemu.err") (console: $console)"
fi
grep -q '@@NA-VM-START@@' "$results" ||
  die 1 "$topology VM never started the scenario: last console line: $(tr -d '\r' <"$console" | grep -v '^\s*$' | tail -1)"
grep -q '@@NA-VM-DONE' "$results" ||
  die 1 "$topology VM stopped before the scenario's end marker (results: $results, console: $console)"
exit 0
