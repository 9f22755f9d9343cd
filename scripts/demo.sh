#!/usr/bin/env bash
# `npm run demo` (as root): a throwaway lab (scripts/lab.sh, the e2e harness),
# then rxshuttle from the lab's client namespace through its sshd to the
# target subnet, which the client cannot reach otherwise:
#   ip netns exec <cli> node dist/cli.js -v -r lab -e "ssh -F <cfg>" 10.98.0.0/24
# Shows the firewall rules, fetches http://10.98.0.3/ through the tunnel, stops
# rxshuttle with SIGINT and shows the rules are gone. Everything is torn down
# on exit, failure or Ctrl-C.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
TARGET=10.98.0.3
SUBNET=10.98.0.0/24

if [ -t 1 ]; then bold=$'\033[1m'; off=$'\033[0m'; else bold=''; off=''; fi
step() { printf '\n%s== %s%s\n' "$bold" "$*" "$off"; }
die() { printf 'demo: FAILED: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (network namespaces, iptables): sudo npm run demo"
[ -f dist/cli.js ] || die "dist/cli.js missing: run npm run build"
node=$(command -v node) || die "node not found"

work=$(mktemp -d "${TMPDIR:-/tmp}/rxshuttle-demo.XXXXXX")
lab_pid='' rx_pid='' tail_pid=''
LAB_CLI='' LAB_SRV='' LAB_TGT=''

alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }
# wait_gone PID SECONDS: wait for a child to exit, true if it did in time
wait_gone() {
  local i
  for ((i = 0; i < $2 * 10; i++)); do alive "$1" || return 0; sleep 0.1; done
  return 1
}

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM HUP
  if alive "$rx_pid"; then
    kill -INT "$rx_pid"; wait_gone "$rx_pid" 5 || kill -KILL "$rx_pid"
  fi
  alive "$tail_pid" && kill "$tail_pid"
  if alive "$lab_pid"; then
    step "tearing the lab down"
    kill -TERM "$lab_pid"; wait_gone "$lab_pid" 20 || kill -KILL "$lab_pid"
    wait "$lab_pid" 2>/dev/null
    cat "$work/lab.log" 2>/dev/null | grep -v '^LAB_' >&2
  fi
  # Last resort, if the lab holder could not clean up (it was killed).
  for n in "$LAB_CLI" "$LAB_SRV" "$LAB_TGT"; do
    [ -n "$n" ] && ip netns list | grep -qw "^$n" || continue
    for p in $(ip netns pids "$n" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
    ip netns del "$n" 2>/dev/null
  done
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

step "building a throwaway lab (cli -- srv[sshd, no forwarding] -- tgt)"
bash scripts/lab.sh --env "$work/lab.env" >"$work/lab.log" 2>&1 &
lab_pid=$!
for ((i = 0; i < 600; i++)); do
  [ -f "$work/lab.env" ] && break
  alive "$lab_pid" || { cat "$work/lab.log" >&2; die "the lab did not come up"; }
  sleep 0.1
done
[ -f "$work/lab.env" ] || { cat "$work/lab.log" >&2; die "the lab did not come up in 60 s"; }
# shellcheck disable=SC1091
. "$work/lab.env"
echo "namespaces: $LAB_CLI $LAB_SRV $LAB_TGT"
echo "ssh config: $LAB_SSH_CONFIG"
in_cli() { ip netns exec "$LAB_CLI" "$@"; }

step "without a tunnel, the client cannot reach $TARGET"
if in_cli curl -sS --max-time 2 "http://$TARGET/" >/dev/null 2>"$work/curl.err"; then
  die "$TARGET is reachable from the client without a tunnel: the lab is broken"
fi
echo "curl http://$TARGET/ -> $(cat "$work/curl.err") (expected)"
echo "ssh to the server works: $(in_cli ssh -F "$LAB_SSH_CONFIG" lab node -v)"

step "starting: rxshuttle -v -r lab -e \"ssh -F $LAB_SSH_CONFIG\" $SUBNET"
: >"$work/rxshuttle.log"
ip netns exec "$LAB_CLI" "$node" dist/cli.js -v -r lab -e "ssh -F $LAB_SSH_CONFIG" "$SUBNET" \
  </dev/null >"$work/rxshuttle.log" 2>&1 &
rx_pid=$!
tail -n +1 -f --pid="$rx_pid" "$work/rxshuttle.log" | sed -u 's/^/  | /' &
tail_pid=$!

connected=''
for ((i = 0; i < 40; i++)); do
  alive "$rx_pid" || { sleep 0.3; die "rxshuttle exited early (see its output above)"; }
  if grep -qi 'rxshuttle: connected' "$work/rxshuttle.log" ||
    in_cli curl -s -o /dev/null --connect-timeout 1 --max-time 2 "http://$TARGET/"; then
    connected=yes
    break
  fi
  sleep 0.5
done
[ -n "$connected" ] || die "rxshuttle did not connect within 20 s"
sleep 0.3

step "firewall rules in the client namespace (iptables-save -t nat | grep rxshuttle)"
in_cli iptables-save -t nat | grep rxshuttle || die "no rxshuttle rules in the nat table"

step "GET http://$TARGET/ from the client, through the tunnel"
page=$(in_cli curl -sS --max-time 10 "http://$TARGET/") || die "curl through the tunnel failed"
printf '%s\n' "$page"
grep -q rxshuttle-lab-target-ok <<<"$page" || die "unexpected page"
echo "whoami (as seen by the target): $(in_cli curl -sS --max-time 10 "http://$TARGET/whoami")"

step "stopping rxshuttle (SIGINT)"
kill -INT "$rx_pid"
wait_gone "$rx_pid" 10 || die "rxshuttle did not exit within 10 s of SIGINT"
rx_status=0
wait "$rx_pid" || rx_status=$?
rx_pid=''
wait "$tail_pid" 2>/dev/null || true
tail_pid=''
echo "rxshuttle exited with status $rx_status"

step "rules after stop"
left=$(in_cli iptables-save -t nat | grep -c rxshuttle || true)
in_cli iptables-save -t nat | grep rxshuttle || true
[ "$left" = 0 ] || die "$left rxshuttle rule(s) left behind"
echo "none left"
if in_cli curl -sS --max-time 2 "http://$TARGET/" >/dev/null 2>&1; then
  die "$TARGET still reachable after rxshuttle stopped"
fi
echo "and $TARGET is unreachable again"

step "demo OK"
