/**
 * A namespace for the transparent UDP tests, `rxsudp-<pid>`, wired the way `--method tproxy`
 * wires a host: programs in it write to a captured subnet (routed to a veth link), mangle OUTPUT
 * marks those datagrams so they are rerouted to lo (fwmark 1 -> table 100 -> `local` route),
 * where mangle PREROUTING's TPROXY hands them to the listener on `port`. Everything lives in the
 * namespace, so deleting it removes every rule, ip rule and route; nothing touches the host's.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { build } from 'esbuild';
import { execWithInput } from '../../support/exec-with-input.js';

const execFileP = promisify(execFile);
const PROJECT_NODE_MODULES = resolve(import.meta.dirname, '../../../node_modules');

export const LAB = {
  4: { program: '10.77.0.1', programPrefix: 24, captured: '10.77.1.0/24', targets: ['10.77.1.5', '10.77.1.9'], listener: '127.0.0.1' },
  6: { program: 'fd00:77::1', programPrefix: 64, captured: 'fd00:78::/64', targets: ['fd00:78::5', 'fd00:78::9'], listener: '::1' },
} as const;

const TABLE = '100';
const MARK = '0x1';

export class UdpLab {
  readonly name = `rxsudp-${process.pid}`;
  readonly #children = new Set<ChildProcess>();

  private constructor(readonly port: number) {}

  static async create(port: number): Promise<UdpLab> {
    const lab = new UdpLab(port);
    // A namespace of the same name can only be left over by an earlier process with our pid.
    await execFileP('ip', ['netns', 'del', lab.name]).catch(() => undefined);
    await execFileP('ip', ['netns', 'add', lab.name]);
    try {
      await lab.#wire();
    } catch (error) {
      await lab.delete();
      throw error;
    }
    return lab;
  }

  async #wire(): Promise<void> {
    const ip = (...args: string[]) => execFileP('ip', ['-n', this.name, ...args]);
    await ip('link', 'set', 'lo', 'up');
    // A veth pair with both ends here stands in for the uplink (no dummy driver on every kernel).
    await ip('link', 'add', 'rxsudp0', 'type', 'veth', 'peer', 'name', 'rxsudp1');
    await ip('link', 'set', 'rxsudp1', 'up');
    await ip('addr', 'add', `${LAB[4].program}/${LAB[4].programPrefix}`, 'dev', 'rxsudp0');
    await ip('addr', 'add', `${LAB[6].program}/${LAB[6].programPrefix}`, 'dev', 'rxsudp0', 'nodad');
    await ip('link', 'set', 'rxsudp0', 'up');
    for (const family of [4, 6] as const) {
      const v = `-${family}`;
      // The captured subnet needs a route for a program to pick a source address and send at all.
      await ip(v, 'route', 'add', LAB[family].captured, 'dev', 'rxsudp0');
      await ip(v, 'rule', 'add', 'fwmark', MARK, 'lookup', TABLE);
      await ip(v, 'route', 'add', 'local', family === 4 ? '0.0.0.0/0' : '::/0', 'dev', 'lo', 'table', TABLE);
      const { captured, listener } = LAB[family];
      await this.restore(
        family,
        [
          '*mangle',
          `-A PREROUTING -d ${captured} -p udp -j TPROXY --on-ip ${listener} --on-port ${this.port} --tproxy-mark ${MARK}/${MARK}`,
          `-A OUTPUT -d ${captured} -p udp -j MARK --set-mark ${MARK}`,
          'COMMIT',
          '',
        ].join('\n'),
      );
    }
  }

  async restore(family: 4 | 6, script: string): Promise<void> {
    await execWithInput('ip', ['netns', 'exec', this.name, family === 4 ? 'iptables-restore' : 'ip6tables-restore', '--noflush'], script);
  }

  async exec(argv: string[]): Promise<string> {
    return (await execFileP('ip', ['netns', 'exec', this.name, ...argv])).stdout;
  }

  /** Starts a program in the namespace (`ip netns exec` execs it: the pid is the program's). */
  spawn(argv: string[], env: NodeJS.ProcessEnv = {}): ChildProcess {
    const child = spawn('ip', ['netns', 'exec', this.name, ...argv], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    // A failed spawn or a write after the program ended shows in the test's own assertions.
    child.on('error', () => undefined);
    child.stdin?.on('error', () => undefined);
    this.#children.add(child);
    child.on('exit', () => this.#children.delete(child));
    return child;
  }

  /** Kills what we started (by pid) and deletes the namespace with all its rules. Never throws. */
  async delete(): Promise<void> {
    for (const child of this.#children) child.kill('SIGKILL');
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
      // the namespace is already gone
    }
    await execFileP('ip', ['netns', 'del', this.name]).catch(() => undefined);
  }
}

export interface Bundle {
  argv: string[];
  env: NodeJS.ProcessEnv;
  remove(): void;
}

/** The scenario fixture as one CommonJS file plain `node` runs (Node 20 cannot run .ts). */
export async function bundleScenario(): Promise<Bundle> {
  const dir = mkdtempSync(join(tmpdir(), 'rxsudp-'));
  const file = join(dir, 'udp-scenario.cjs');
  const remove = () => rmSync(dir, { recursive: true, force: true });
  try {
    await build({
      entryPoints: [resolve(import.meta.dirname, '../fixtures/udp-scenario.ts')],
      outfile: file,
      bundle: true,
      platform: 'node',
      format: 'cjs',
      target: 'node20',
      // koffi loads its native module relative to its own directory: resolve it from node_modules.
      external: ['koffi'],
      logLevel: 'silent',
    });
  } catch (error) {
    remove();
    throw error;
  }
  return { argv: [process.execPath, file], env: { NODE_PATH: PROJECT_NODE_MODULES }, remove };
}
