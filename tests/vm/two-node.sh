# Scenario for the two-node VM (run inside it by /init, after tests/vm/lib.sh):
# node 0 = CPUs 0-1 + 1 GiB, node 1 = CPUs 2-3 + 1 GiB, a display-class PCI device at
# 0000:41:01.0 on node 1. Collects what the kernel and numactl say; tests/vm.rs judges it.
. /lib.sh

section numactl-hardware numactl --hardware
section_sh sysfs-nodes 'for n in /sys/devices/system/node/node[0-9]*; do
  echo "$(basename $n) cpulist=$(cat $n/cpulist) distance=$(cat $n/distance | tr " " ,) memtotal_kb=$(awk "/MemTotal/{print \$4}" $n/meminfo)"
done'
section_sh sysfs-gpu 'd=/sys/bus/pci/devices/0000:41:01.0
  echo "numa_node=$(cat $d/numa_node) local_cpulist=$(cat $d/local_cpulist) class=$(cat $d/class) vendor=$(cat $d/vendor)"'
# The binding a plan for that device recommends, applied by numactl to a real process.
section_sh numactl-node1 'numactl --cpunodebind=1 --membind=1 sh -c ". /lib.sh; proc_binding \$\$"'

# Live probing of this kernel, with the emulated device named as a GPU (vendor 0x1234 is no GPU
# vendor nodeagent knows).
section probe-json nodeagent probe --json --gpu-pci 0000:41:01.0
section plan-json nodeagent plan --json --gpu-pci 0000:41:01.0
# The plan's own numactl prefix, run exactly as printed.
section_sh plan-prefix-runs 'prefix=$(nodeagent plan --gpu-pci 0000:41:01.0 | sed -n "s/^ *numactl: *//p")
  echo "prefix: $prefix"
  $prefix sh -c ". /lib.sh; proc_binding \$\$"'
# A snapshot taken here, brought out to be replayed outside the VM.
mkdir -p /tmp/snap
section probe-save nodeagent probe --gpu-pci 0000:41:01.0 --save /tmp/snap
section_tree snapshot /tmp/snap
# Negative: a device this machine does not have.
section plan-missing-gpu nodeagent plan --gpu-pci 0000:99:00.0
