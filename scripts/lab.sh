#!/usr/bin/env bash
# Brings up a throwaway e2e lab outside vitest — the same harness as the tests
# (test/e2e/lab.ts, bundled on the fly with esbuild) — and keeps it until
# SIGINT/SIGTERM/SIGHUP, then tears it down (namespaces, sshd, services).
#
# usage (as root): bash scripts/lab.sh [--env FILE] [--dns] [--ipv6]
#   --env FILE  also write the lab's shell variables to FILE (atomically, once
#               the lab is up): LAB_PREFIX LAB_CLI LAB_SRV LAB_TGT
#               LAB_SSH_CONFIG LAB_SSH_CMD LAB_STATE_DIR
#   then e.g.: ip netns exec "$LAB_CLI" ssh -F "$LAB_SSH_CONFIG" lab node -v
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
env_file=''
dns=false
ipv6=false
while [ $# -gt 0 ]; do
  case "$1" in
    --env) env_file=${2:?--env needs a file}; shift 2 ;;
    --dns) dns=true; shift ;;
    --ipv6) ipv6=true; shift ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "lab.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "lab.sh: must run as root (network namespaces)" >&2; exit 1; }
command -v node >/dev/null || { echo "lab.sh: node not found" >&2; exit 1; }
esbuild="$root/node_modules/.bin/esbuild"
[ -x "$esbuild" ] || { echo "lab.sh: $esbuild missing — run npm ci" >&2; exit 1; }

build=$(mktemp -d "${TMPDIR:-/tmp}/rxshuttle-labjs.XXXXXX")
"$esbuild" "$root/test/e2e/lab.ts" --bundle --packages=external --format=esm --platform=node \
  --target=node20 --log-level=warning --outfile="$build/lab.mjs"

# The holder: the lab lives as long as this node process.
read -r -d '' runner <<'JS' || true
const [modPath, serverScript, envFile, dns, ipv6, buildDir] = process.argv.slice(1);
const fs = await import('node:fs');
const { TestLab } = await import(modPath);
const lab = new TestLab({ targetServerScript: serverScript, dns: dns === 'true', ipv6: ipv6 === 'true' });
let stopping = false;
const stop = async (code) => {
  if (stopping) return;
  stopping = true;
  await lab.down().catch((e) => console.error(`lab.sh: down: ${e.message}`));
  fs.rmSync(buildDir, { recursive: true, force: true });
  if (envFile) fs.rmSync(envFile, { force: true });
  console.error(`lab.sh: lab ${lab.prefix} is down`);
  process.exit(code);
};
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(sig, () => stop(0));
try {
  await lab.up();
} catch (e) {
  console.error(`lab.sh: ${e.message}`);
  await stop(1);
}
const q = (v) => `'${String(v).replace(/'/g, `'\\''`)}'`;
const vars = {
  LAB_PREFIX: lab.prefix, LAB_CLI: lab.ns.cli, LAB_SRV: lab.ns.srv, LAB_TGT: lab.ns.tgt,
  LAB_SSH_CONFIG: lab.sshConfigPath, LAB_SSH_CMD: lab.sshCommand, LAB_STATE_DIR: lab.stateDir,
};
const text = Object.entries(vars).map(([k, v]) => `${k}=${q(v)}`).join('\n') + '\n';
if (envFile) {
  fs.writeFileSync(`${envFile}.tmp`, text);
  fs.renameSync(`${envFile}.tmp`, envFile);
}
process.stdout.write(text);
console.error(`lab.sh: lab ${lab.prefix} is up; Ctrl-C (or SIGTERM) tears it down`);
setInterval(() => {}, 1 << 30);
JS

exec node --input-type=module -e "$runner" -- "$build/lab.mjs" "$root/test/e2e/target-server.mjs" \
  "$env_file" "$dns" "$ipv6" "$build"
