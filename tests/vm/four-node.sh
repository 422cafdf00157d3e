# Scenario for the four-node VM (run inside it by /init, after tests/vm/lib.sh):
# nodes 0, 1, 3 = CPUs 0-1, 2-3, 6-7 + 1 GiB each; node 2 = CPUs 4-5 and NO memory; distances
# 0-1 20, 0-2 30, 0-3 30, 1-2 30, 1-3 30, 2-3 20; display-class PCI devices at 0000:41:01.0
# (node 1) and 0000:81:01.0 (node 2). Collects facts; tests/vm.rs judges them.
. /lib.sh

section numactl-hardware numactl --hardware
section_sh sysfs-nodes 'for n in /sys/devices/system/node/node[0-9]*; do
  echo "$(basename $n) cpulist=$(cat $n/cpulist) distance=$(cat $n/distance | tr " " ,) memtotal_kb=$(awk "/MemTotal/{print \$4}" $n/meminfo)"
done'
section_sh sysfs-gpus 'for a in 0000:41:01.0 0000:81:01.0; do d=/sys/bus/pci/devices/$a
  echo "$a numa_node=$(cat $d/numa_node) local_cpulist=$(cat $d/local_cpulist) class=$(cat $d/class)"
done'
# numactl issue 165: -N of a memoryless node is refused.
section numactl-N2 numactl -N 2 true
# What works instead: CPUs by list, memory on the nearest node that has some.
section_sh numactl-phys45-mem3 'numactl --physcpubind=4-5 --membind=3 sh -c ". /lib.sh; proc_binding \$\$"'

# Live probing and planning, both emulated devices named as GPUs, one instance per device.
gpus="--gpu-pci 0000:41:01.0 --gpu-pci 0000:81:01.0"
section probe-json nodeagent probe --json $gpus
section plan-json nodeagent plan --json $gpus --instances 2
# The prefix the plan prints for the device on the memoryless node 2, run exactly as printed.
section_sh plan-prefix-runs "prefix=\$(nodeagent plan $gpus --instances 2 | sed -n 's/^ *numactl: *//p' | sed -n 2p)
  echo \"prefix: \$prefix\"
  \$prefix sh -c '. /lib.sh; proc_binding \$\$'"
