/**
 * Throwaway network namespaces for tests that need real iptables. Nothing here touches the
 * host's own tables: every command runs inside a namespace (`ip netns exec` / `ip -n`).
 */
import { type ChildProcess, execFile, execFileSync, type SpawnOptions, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { execWithInput } from '../../support/exec-with-input.js';

const execFileP = promisify(execFile);

/** Why namespace tests cannot run here, or null when they can. */
export function netnsUnavailable(): string | null {
  if (process.getuid?.() !== 0) return 'needs root';
  try {
    execFileSync('ip', ['netns', 'list'], { stdio: 'ignore' });
    execFileSync('iptables-restore', ['--version'], { stdio: 'ignore' });
  } catch {
    return 'needs ip (iproute2) and iptables';
  }
  return null;
}

/**
 * Why the namespace tests are skipped here (for skipBecause), or null when they run. Root-only
 * tests must not skip silently in CI (STYLE.md): with CI=true a missing prerequisite is a
 * failure, elsewhere a skip.
 */
export function netnsSkip(): string | null {
  const missing = netnsUnavailable();
  if (missing && process.env.CI === 'true') throw new Error(`namespace tests ${missing}`);
  return missing;
}

export class Netns {
  readonly #children = new Set<ChildProcess>();

  private constructor(readonly name: string) {}

  /** Creates `name` (default `rxs-fwtest-<random>`) with loopback up. */
  static async create(name = `rxs-fwtest-${randomBytes(4).toString('hex')}`): Promise<Netns> {
    const ns = new Netns(name);
    await execFileP('ip', ['netns', 'add', ns.name]);
    await ns.ip('link', 'set', 'lo', 'up');
    return ns;
  }

  /** `ip -n NAME args…` */
  async ip(...args: string[]): Promise<void> {
    await execFileP('ip', ['-n', this.name, ...args]);
  }

  /** Runs a program inside the namespace; resolves with its stdout. */
  async exec(argv: string[], env?: NodeJS.ProcessEnv): Promise<string> {
    const { stdout } = await execFileP('ip', ['netns', 'exec', this.name, ...argv], {
      env: { ...process.env, ...env },
    });
    return stdout;
  }

  /** Starts a program inside the namespace (`ip netns exec` execs it: the pid is the program's). */
  spawn(argv: string[], opts: SpawnOptions = {}): ChildProcess {
    const child = spawn('ip', ['netns', 'exec', this.name, ...argv], opts);
    // A failed spawn or a write after the program ended shows in the test's own assertions.
    child.on('error', () => undefined);
    child.stdin?.on('error', () => undefined);
    this.#children.add(child);
    child.on('exit', () => this.#children.delete(child));
    return child;
  }

  /** `iptables-restore --noflush` inside the namespace, with `script` on stdin. */
  async natRestore(script: string, family: 4 | 6 = 4): Promise<void> {
    await execWithInput('ip', ['netns', 'exec', this.name, family === 4 ? 'iptables-restore' : 'ip6tables-restore', '--noflush'], script);
  }

  async natSave(family: 4 | 6 = 4): Promise<string> {
    return this.exec([family === 4 ? 'iptables-save' : 'ip6tables-save', '-t', 'nat']);
  }

  /** Kills what we started in it (by pid), then deletes the namespace. Never throws. */
  async delete(): Promise<void> {
    for (const child of this.#children) if (child.pid !== undefined) child.kill('SIGKILL');
    try {
      const { stdout } = await execFileP('ip', ['netns', 'pids', this.name]);
      for (const pid of stdout.split(/\s+/).filter(Boolean)) {
        try {
          process.kill(Number(pid), 'SIGKILL');
        } catch {
          // already gone
        }
      }
    } catch {
      // namespace already gone
    }
    await execFileP('ip', ['netns', 'del', this.name]).catch(() => undefined);
  }
}

/**
 * Two namespaces joined by a veth pair: `client` (10.123.0.2/16, fd00:123::2/64) runs the
 * helper and the probes, `target` (10.123.0.1/16 and 10.123.1.1/16, fd00:123::1/64) plays the
 * real destinations. IPv6 addresses skip duplicate address detection so they work at once.
 */
export async function createLab(): Promise<{ client: Netns; target: Netns; delete(): Promise<void> }> {
  const client = await Netns.create();
  const target = await Netns.create().catch(async (e) => {
    await client.delete();
    throw e;
  });
  const lab = {
    client,
    target,
    async delete() {
      await client.delete();
      await target.delete();
    },
  };
  try {
    await client.ip('link', 'add', 'v0', 'type', 'veth', 'peer', 'name', 'v1', 'netns', target.name);
    await client.ip('addr', 'add', '10.123.0.2/16', 'dev', 'v0');
    await client.ip('addr', 'add', 'fd00:123::2/64', 'dev', 'v0', 'nodad');
    await client.ip('link', 'set', 'v0', 'up');
    await target.ip('addr', 'add', '10.123.0.1/16', 'dev', 'v1');
    await target.ip('addr', 'add', '10.123.1.1/16', 'dev', 'v1');
    await target.ip('addr', 'add', 'fd00:123::1/64', 'dev', 'v1', 'nodad');
    await target.ip('link', 'set', 'v1', 'up');
  } catch (e) {
    await lab.delete();
    throw e;
  }
  return lab;
}
