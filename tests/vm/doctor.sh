# Scenario for the doctor (two-node VM, run inside it by /init after tests/vm/lib.sh): the real
# kernel's settings judged by `nodeagent doctor`, with kernel.numa_balancing set to 0 and to 1
# here, and a snapshot of the VM's settings brought out for `doctor --from`. tests/vm.rs judges.
. /lib.sh

section_sh balancing-default 'cat /proc/sys/kernel/numa_balancing'
section_sh doctor-off 'echo 0 > /proc/sys/kernel/numa_balancing && nodeagent doctor --json --gpu-pci 0000:41:01.0 --state-dir /tmp/no-agent'
section_sh doctor-on 'echo 1 > /proc/sys/kernel/numa_balancing && nodeagent doctor --json --gpu-pci 0000:41:01.0 --state-dir /tmp/no-agent'
section plan-warns nodeagent plan --gpu-pci 0000:41:01.0
mkdir -p /tmp/dsnap
section probe-save nodeagent probe --gpu-pci 0000:41:01.0 --save /tmp/dsnap
section_tree doctor-snapshot /tmp/dsnap
