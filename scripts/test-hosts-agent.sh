#!/usr/bin/env bash
# plm_rsh_agent for the test hosts made by scripts/test-hosts.sh: an "ssh" that "logs in" to a
# test host by entering its network namespace (and a UTS namespace named after it).
#
# Open MPI 4.1's rsh launcher runs  AGENT [plm_rsh_args...] HOST WORD...  where the WORDs are
# one shell command line cut at spaces, with its own quoting left in for the remote shell
# (measured: `AGENT lt-h1 ' orted' -mca ess '"env"' ... -mca orte_hnp_uri '"...;tcp://..."'`).
# With an agent not named ssh/rsh/qrsh it adds no options of its own (no -x); options only
# appear if someone sets plm_rsh_args, so ssh-style options are skipped here just in case.
# Like ssh, the WORDs are joined with single spaces and handed to `sh -c`.
# The command inherits this process's environment and working directory (ssh would give a
# login environment); both are what mpirun had, and the file system is shared.
# With --tree-spawn (Open MPI's default) an orted on one test host calls this agent to start
# orteds on others, so it must work from inside any test namespace: it does, since `ip netns
# exec` only needs /run/netns, which every namespace here shares.
set -euo pipefail

SCRIPT_DIR="$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")"

# Skip ssh-style options. These ssh options take a value; all others are flags.
while [ $# -gt 0 ]; do
  case "$1" in
    --) shift; break ;;
    -[bcDEeFIiJLlmOopQRSWw]) shift 2 ;;          # option with separate value (-p 22)
    -[bcDEeFIiJLlmOopQRSWw]?*) shift ;;          # option with attached value (-p22)
    -?*) shift ;;                                # flags (-x, -T, -n, -q, -4, -xT...)
    *) break ;;
  esac
done

[ $# -ge 1 ] || { echo "test-hosts-agent: usage: $0 [options] HOST COMMAND..." >&2; exit 255; }
host="${1#*@}"   # drop user@ if given
shift
[ $# -ge 1 ] || { echo "test-hosts-agent: no command for $host (interactive login not supported)" >&2; exit 255; }

# ssh semantics: the remote shell parses the words joined by spaces.
cmd="$*"
if [ -n "${LT_AGENT_LOG:-}" ]; then
  printf '%s agent from=%s host=%s cmd=%s\n' "$(date +%T.%N)" "$(ip netns identify $$ 2>/dev/null || true)" "$host" "$cmd" >> "$LT_AGENT_LOG"
fi
exec "$SCRIPT_DIR/test-hosts.sh" exec "$host" sh -c "$cmd"
