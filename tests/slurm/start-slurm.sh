#!/usr/bin/env bash
# Start a single-node SLURM cluster (munged, slurmctld, slurmd) for the workflow's SLURM test.
# Needs root and Debian's packages:  apt-get install -y slurm-wlm munge
# Stop it with stop-slurm.sh, which kills exactly the pids in the pidfiles this script leaves.
# Adapted from the project's test-cluster notes: node size from `slurmd -C`, no slurmdbd.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

for exe in munged slurmctld slurmd sinfo; do
  command -v "$exe" >/dev/null || { echo "start-slurm: $exe not found (apt-get install -y slurm-wlm munge)" >&2; exit 3; }
done
[[ $(id -u) == 0 ]] || { echo "start-slurm: must run as root (the daemons are started by hand)" >&2; exit 3; }

alive() { [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

install -d -m 0755 /etc/slurm /run/slurm /var/log/slurm /var/lib/slurm/slurmctld /var/lib/slurm/slurmd
# This machine's size; RealMemory a little below the reported value so the node never drains.
read -r cpus mem < <(slurmd -C | sed -n 's/.*CPUs=\([0-9]*\).*RealMemory=\([0-9]*\).*/\1 \2/p')
[[ -n "${cpus:-}" && -n "${mem:-}" ]] || { echo "start-slurm: cannot parse 'slurmd -C'" >&2; exit 1; }
mem=$(( mem * 9 / 10 ))
sed -e "s/@CPUS@/$cpus/" -e "s/@MEMORY@/$mem/" "$HERE/slurm.conf.in" > /etc/slurm/slurm.conf
install -m 0644 "$HERE/gres.conf" /etc/slurm/gres.conf
install -m 0644 "$HERE/accounting-none.conf" /etc/slurm/accounting.conf

# munge: the Debian package creates the user and usually the key.
install -d -o munge -g munge -m 0755 /run/munge
install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge /etc/munge
if [[ ! -s /etc/munge/munge.key ]]; then
  if command -v mungekey >/dev/null; then
    runuser -u munge -- mungekey --create --keyfile=/etc/munge/munge.key
  else
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
  fi
  chown munge:munge /etc/munge/munge.key; chmod 0400 /etc/munge/munge.key
fi
alive /run/munge/munged.pid || runuser -u munge -- /usr/sbin/munged
timeout 10 bash -c 'until munge -n </dev/null | unmunge >/dev/null 2>&1; do sleep 0.2; done'

# -c: clear state saved by an earlier run (old jobs, a drained node).
alive /run/slurm/slurmctld.pid || /usr/sbin/slurmctld -c
timeout 30 bash -c 'until scontrol ping 2>/dev/null | grep -q UP; do sleep 0.5; done'
alive /run/slurm/slurmd.pid || /usr/sbin/slurmd -N localhost

for _ in $(seq 120); do
  st="$(sinfo -h -N -n localhost -o %t | head -1)"
  case "$st" in
    idle|mix|alloc|comp) break ;;
    drain*|drng|down*|inval) scontrol update NodeName=localhost State=RESUME 2>/dev/null || true ;;
  esac
  sleep 0.5
done
st="$(sinfo -h -N -n localhost -o %t | head -1)"
case "$st" in idle|mix|alloc|comp) ;; *) echo "start-slurm: node state '$st'" >&2
  tail -5 /var/log/slurm/slurmctld.log >&2; exit 1;; esac
echo "slurm up: node localhost, $cpus CPUs, ${mem} MB, 1 fake GPU"
