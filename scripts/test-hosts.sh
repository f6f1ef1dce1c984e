#!/usr/bin/env bash
# Emulated multi-host cluster on one machine, for Open MPI tests.
#
# Each "host" lt-hI is a network namespace with its own eth0 (10.77.0.(10+I)/24) on a bridge.
# The bridge lives in its own namespace lt-sw, so the root namespace gets no interface, no
# address and no route on the test subnet: traffic can only flow between namespaces made here.
# The namespaces share the file system, users and PIDs with the root namespace, so node, the
# project tree, /tmp and /dev/shm are the same everywhere (like a cluster with a shared FS).
#
# Usage (root):
#   scripts/test-hosts.sh up N [--rate RATE] [--burst B] [--latency L] [--slots S]
#   scripts/test-hosts.sh down
#   scripts/test-hosts.sh status
#   scripts/test-hosts.sh mpirun ARGS...      # mpirun inside lt-h0 over the test hosts
#   scripts/test-hosts.sh exec HOST CMD...    # run CMD "on" HOST (netns + its hostname)
#   scripts/test-hosts.sh agent [OPTS] HOST CMD...   # the plm_rsh_agent (same as test-hosts-agent.sh)
#
# Requires: iproute2 (ip, tc), util-linux (unshare), Open MPI 4.1 (mpirun) for `mpirun`.
set -euo pipefail

SELF="$(readlink -f "${BASH_SOURCE[0]}")"
SCRIPT_DIR="$(dirname "$SELF")"
AGENT="$SCRIPT_DIR/test-hosts-agent.sh"

STATE_DIR=/tmp/loongtrain-test-hosts     # hostfile + record of what `up` made
HOSTFILE="$STATE_DIR/hostfile"
PREFIX=lt-h                              # host namespaces lt-h0, lt-h1, ...
SW_NS=lt-sw                              # namespace that holds the bridge
BRIDGE=br0                               # bridge name (inside $SW_NS only)
SUBNET=10.77.0.0/24
NET3=10.77.0                             # host I has $NET3.$((10+I))
MAX_HOSTS=200

die() { echo "test-hosts: $*" >&2; exit 1; }

need_root() { [ "$(id -u)" -eq 0 ] || die "must run as root (network namespaces)"; }

# All namespaces this script may have made (from a previous `up` of any size).
our_namespaces() {
  ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^(${PREFIX}[0-9]+|${SW_NS})\$" || true
}

host_addr() { echo "$NET3.$((10 + $1))"; }

# tc rate -> bytes per second (tc's units: bit, kbit, mbit, gbit, tbit = SI bits/s;
# bps, kbps, mbps, gbps = SI bytes/s; kibit/mibit/gibit and kibps... = binary multiples).
rate_to_bytes_per_s() {
  awk -v r="$1" 'BEGIN {
    if (match(r, /^[0-9]+(\.[0-9]+)?/) == 0) exit 1
    n = substr(r, 1, RLENGTH); u = tolower(substr(r, RLENGTH + 1))
    m["bit"]=1/8; m["kbit"]=1e3/8; m["mbit"]=1e6/8; m["gbit"]=1e9/8; m["tbit"]=1e12/8
    m["kibit"]=1024/8; m["mibit"]=1048576/8; m["gibit"]=1073741824/8; m["tibit"]=1099511627776/8
    m["bps"]=1; m["kbps"]=1e3; m["mbps"]=1e6; m["gbps"]=1e9; m["tbps"]=1e12
    m["kibps"]=1024; m["mibps"]=1048576; m["gibps"]=1073741824; m["tibps"]=1099511627776
    m[""]=1/8   # tc treats a bare number as bits per second
    if (!(u in m)) exit 1
    printf "%d\n", n * m[u]
  }'
}

cmd_down() {
  need_root
  local ns
  # Deleting a namespace destroys its veth ends (and with them the peer in the other
  # namespace), the bridge and every qdisc: nothing is left in the root namespace.
  for ns in $(our_namespaces); do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true  # only processes inside our namespaces
    ip netns del "$ns" 2>/dev/null || true
  done
  for ns in /etc/netns/${PREFIX}[0-9]*; do
    [ -d "$ns" ] && rm -rf -- "$ns"
  done
  rmdir /etc/netns 2>/dev/null || true   # only if empty (i.e. we made it)
  rm -rf -- "$STATE_DIR"
  # Open MPI leftovers of jobs that were killed (kill -9 of mpirun skips its cleanup): session
  # dirs and 4 MiB vader segments, both named after the (test) hostname, so only ours match.
  rm -rf -- /tmp/ompi.${PREFIX}[0-9]*.* /dev/shm/vader_segment.${PREFIX}[0-9]*.* 2>/dev/null || true
}

cmd_up() {
  need_root
  local n="" rate="" burst="" latency="50ms" slots=2
  while [ $# -gt 0 ]; do
    case "$1" in
      --rate) rate="${2:?--rate needs a value}"; shift 2 ;;
      --rate=*) rate="${1#*=}"; shift ;;
      --burst) burst="${2:?--burst needs a value}"; shift 2 ;;
      --burst=*) burst="${1#*=}"; shift ;;
      --latency) latency="${2:?--latency needs a value}"; shift 2 ;;
      --latency=*) latency="${1#*=}"; shift ;;
      --slots) slots="${2:?--slots needs a value}"; shift 2 ;;
      --slots=*) slots="${1#*=}"; shift ;;
      -*) die "up: unknown option $1" ;;
      *) [ -z "$n" ] || die "up: unexpected argument $1"; n="$1"; shift ;;
    esac
  done
  [[ "$n" =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] && [ "$n" -le "$MAX_HOSTS" ] || die "up: N must be 1..$MAX_HOSTS"
  [[ "$slots" =~ ^[0-9]+$ ]] && [ "$slots" -ge 1 ] || die "up: --slots must be a positive integer"

  if [ -n "$rate" ] && [ -z "$burst" ]; then
    # Burst (token bucket size): enough for ~1 ms at RATE, but never below 64 KiB.
    # - tbf must be able to hold the largest packet it will see; veth does GSO/TSO, so
    #   one skb can be up to 64 KiB. A smaller burst forces tbf to re-segment every
    #   super-packet in software (costly, and the reference's 32kbit=4 KB only works
    #   because of that segmentation).
    # - ~1 ms of tokens smooths timer granularity, so the long-run rate is RATE, while the
    #   short-run overshoot stays tiny (1 ms) compared with any transfer we measure.
    local bps
    bps="$(rate_to_bytes_per_s "$rate")" || die "up: cannot parse rate '$rate' (use tc units, e.g. 1gbit, 200mbit)"
    local b=$(( bps / 1000 ))
    [ "$b" -lt 65536 ] && b=65536
    burst="$b"   # bytes
  fi
  # latency: longest a packet may wait in tbf's queue (sets its byte limit = rate*latency+burst).
  # 50 ms keeps TCP from seeing tail drops at the start of a transfer; the standing queue it
  # allows shows up as extra RTT only while the link is saturated.

  cmd_down
  mkdir -p "$STATE_DIR"

  # IPv6 off on the test links (lo keeps ::1): no router solicitations, MLD or DAD chatter
  # on the test net, so tc counters show only real traffic, and Open MPI's tcp BTL/OOB
  # see one IPv4 address per host. Set as the namespace default before the links exist.
  ip netns add "$SW_NS"
  ip netns exec "$SW_NS" sysctl -qw net.ipv6.conf.default.disable_ipv6=1
  ip -n "$SW_NS" link set lo up
  ip -n "$SW_NS" link add "$BRIDGE" type bridge
  ip -n "$SW_NS" link set "$BRIDGE" up

  local i h
  : > "$HOSTFILE.tmp"
  for ((i = 0; i < n; i++)); do
    h="$PREFIX$i"
    ip netns add "$h"
    ip netns exec "$h" sysctl -qw net.ipv6.conf.default.disable_ipv6=1
    # veth pair created directly in the switch namespace, the host end moved into the host:
    # the root namespace never holds either end.
    ip -n "$SW_NS" link add "p$i" type veth peer name eth0 netns "$h"
    ip -n "$SW_NS" link set "p$i" master "$BRIDGE"
    ip -n "$SW_NS" link set "p$i" up
    ip -n "$h" link set lo up
    ip -n "$h" addr add "$(host_addr "$i")/24" dev eth0
    ip -n "$h" link set eth0 up
    if [ -n "$rate" ]; then
      # Shapes what this host sends to other hosts (its eth0 egress). Each direction of a
      # link is shaped by its sender, so every host-to-host path is held to RATE.
      # Traffic between processes of one host never reaches eth0 (loopback / shared memory).
      tc -n "$h" qdisc add dev eth0 root tbf rate "$rate" burst "$burst" latency "$latency"
    fi
    echo "$h slots=$slots" >> "$HOSTFILE.tmp"
  done
  mv "$HOSTFILE.tmp" "$HOSTFILE"

  # Name resolution inside the hosts: `ip netns exec NAME` bind-mounts /etc/netns/NAME/* over
  # /etc/*. Each host gets a hosts file naming all test hosts, and a resolv.conf without a
  # nameserver (glibc then asks 127.0.0.1 = the namespace's own loopback): a lookup of an
  # unknown name can never leave the test network.
  {
    echo "127.0.0.1 localhost"
    for ((i = 0; i < n; i++)); do echo "$(host_addr "$i") $PREFIX$i"; done
  } > "$STATE_DIR/hosts"
  for ((i = 0; i < n; i++)); do
    mkdir -p "/etc/netns/$PREFIX$i"
    cp "$STATE_DIR/hosts" "/etc/netns/$PREFIX$i/hosts"
    echo "# test host $PREFIX$i: no DNS" > "/etc/netns/$PREFIX$i/resolv.conf"
  done

  {
    echo "hosts=$n"; echo "slots=$slots"; echo "rate=${rate:-none}"
    echo "burst=${burst:-none}"; if [ -n "$rate" ]; then echo "latency=$latency"; else echo "latency=none"; fi
  } > "$STATE_DIR/config"
  echo "$HOSTFILE"
}

cmd_status() {
  local ns
  if [ -z "$(our_namespaces)" ]; then echo "no test hosts"; return 0; fi
  [ -f "$STATE_DIR/config" ] && sed 's/^/# /' "$STATE_DIR/config"
  [ -f "$HOSTFILE" ] && { echo "# hostfile $HOSTFILE:"; sed 's/^/#   /' "$HOSTFILE"; }
  for ns in $(our_namespaces | sort -V); do
    [ "$ns" = "$SW_NS" ] && continue
    echo "== $ns: $(ip -n "$ns" -br -4 addr show dev eth0 2>/dev/null | awk '{print $2, $3}')"
    tc -n "$ns" -s qdisc show dev eth0 | sed 's/^/   /'
  done
  echo "== $SW_NS (bridge): $(ip -n "$SW_NS" -br link show master "$BRIDGE" | awk '{print $1}' | tr '\n' ' ')"
}

# Run a command as if on HOST: its network namespace (+ /etc/netns/HOST files) and a private
# UTS namespace whose hostname is HOST. The distinct hostname matters to Open MPI: its session
# directories (/tmp/ompi.HOSTNAME.UID) and vader shared-memory files (/dev/shm/
# vader_segment.HOSTNAME.JOBID.LOCALRANK) are named by hostname, so two "hosts" with one
# hostname on one file system would collide; it also lets mpirun see that lt-h0 is itself.
cmd_exec() {
  local h="${1:?exec: HOST}"; shift
  [ $# -gt 0 ] || die "exec: missing command"
  ip netns list | awk '{print $1}' | grep -qx -- "$h" || die "no such test host: $h"
  exec ip netns exec "$h" unshare --uts -- sh -c 'hostname "$0" && exec "$@"' "$h" "$@"
}

cmd_mpirun() {
  [ -f "$HOSTFILE" ] || die "no hostfile: run '$0 up N' first"
  # Default MCA parameters, and why:
  #   plm_rsh_agent        start orted on the other hosts with our agent instead of ssh
  #   pml ob1 + btl        the BTL stack (not UCX or libfabric, which Debian's build also has):
  #                        vader (shared memory) between ranks of one host, tcp between hosts,
  #                        self for a rank itself
  #   btl_tcp_if_include   MPI traffic only on the test subnet (else tcp also tries lo)
  #   oob_tcp_if_include   runtime (mpirun<->orted<->rank) traffic only on the test subnet
  #   osc ^ucx             one-sided MPI without UCX (osc rdma/pt2pt over the same BTLs)
  #   mpi_yield_when_idle  all "hosts" share this machine's few cores: busy-polling ranks
  #                        starve the kernel's softirq work that moves packets over the veths
  #                        and the ranks of the other hosts (measured on 2 cores: 1-byte
  #                        MPI ping-pong between hosts 2-12 ms busy-polling, ~25 us yielding)
  # Open MPI refuses a parameter given twice on the command line, so a default is left out
  # when ARGS give it (--mca/-mca NAME VALUE) or the environment has OMPI_MCA_NAME (which a
  # command-line value would silently override).
  # No orte_tmpdir_base / session-dir setting is needed: with distinct hostnames (see
  # cmd_exec) each host's session dir and vader files have distinct names.
  local -a defaults=(
    plm_rsh_agent "$AGENT"
    pml ob1
    btl self,vader,tcp
    btl_tcp_if_include "$SUBNET"
    oob_tcp_if_include "$SUBNET"
    osc '^ucx'
    mpi_yield_when_idle 1
  )
  local -A given=()
  local -a args=("$@") opts=()
  local i name
  for ((i = 0; i < ${#args[@]}; i++)); do
    case "${args[i]}" in
      --mca|-mca|--gmca|-gmca) [ $((i + 1)) -lt ${#args[@]} ] && given["${args[i+1]}"]=1 ;;
    esac
  done
  for ((i = 0; i < ${#defaults[@]}; i += 2)); do
    name="${defaults[i]}"
    [ -n "${given[$name]:-}" ] && continue
    [ -n "$(printenv "OMPI_MCA_$name" || true)" ] && continue
    opts+=(--mca "$name" "${defaults[i+1]}")
  done
  cmd_exec "${PREFIX}0" mpirun --allow-run-as-root --oversubscribe --hostfile "$HOSTFILE" \
    "${opts[@]}" "$@"
}

case "${1:-}" in
  up) shift; cmd_up "$@" ;;
  down) shift; cmd_down ;;
  status) shift; cmd_status ;;
  exec) shift; cmd_exec "$@" ;;
  mpirun) shift; cmd_mpirun "$@" ;;
  agent) shift; exec "$AGENT" "$@" ;;
  ""|-h|--help|help) sed -n '2,/^set -euo/p' "$SELF" | sed '$d' | sed 's/^# \{0,1\}//' ;;
  *) die "unknown command '$1' (up|down|status|mpirun|exec|agent)" ;;
esac
