/**
 * The transparent UDP listener and reply sockets against real TPROXY, in a namespace of our own
 * (test/udp/support/udp-lab.ts). The scenario (fixtures/udp-scenario.ts) runs in a child process
 * inside it, so that "closing leaves nothing that keeps the process alive" is checked the only
 * way that counts: the process exits by itself once it has printed its report.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { netnsSkip } from '../firewall/support/netns.js';
import { skipBecause } from '../support/skip.js';
import type { UdpScenarioReport, UdpScenarioSpec } from './fixtures/udp-scenario.js';
import { type Bundle, bundleScenario, LAB, UdpLab } from './support/udp-lab.js';

const execFileP = promisify(execFile);
const ON_PORT = 40_000;
/** How long the scenario may take to exit after its report: nothing should be left to wait for. */
const EXIT_GRACE_MS = 1500;

interface Run {
  report: UdpScenarioReport;
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  exitMsAfterReport: number;
  stderr: string;
}

describe('transparent UDP under TPROXY (namespace)', skipBecause(netnsSkip()), () => {
  let lab: UdpLab | undefined;
  let bundle: Bundle | undefined;

  beforeAll(async () => {
    // Built first: a failed build must not leave a namespace behind (afterAll still runs).
    bundle = await bundleScenario();
    lab = await UdpLab.create(ON_PORT);
  }, 60_000);

  afterAll(async () => {
    await lab?.delete();
    bundle?.remove();
    if (lab) {
      const { stdout } = await execFileP('ip', ['netns', 'list']);
      expect(stdout).not.toContain(lab.name);
    }
  });

  /** Runs the scenario in the namespace; kills it (by pid) if it does not exit in time. */
  async function runScenario(spec: UdpScenarioSpec): Promise<Run> {
    const child = lab!.spawn([...bundle!.argv, JSON.stringify(spec)], bundle!.env);
    let stdout = '';
    let stderr = '';
    let reportAt = 0;
    child.stdout?.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
      if (reportAt === 0 && stdout.includes('\n')) reportAt = performance.now();
    });
    child.stderr?.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    const exited = new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.on('exit', (code, signal) => resolve([code, signal])));
    const watchdog = setInterval(() => {
      if (reportAt !== 0 && performance.now() - reportAt > EXIT_GRACE_MS) child.kill('SIGKILL');
    }, 100);
    const [exitCode, signal] = await exited.finally(() => clearInterval(watchdog));
    const exitMsAfterReport = Math.round(performance.now() - reportAt);
    const line = stdout.split('\n')[0] ?? '';
    const parsed = JSON.parse(line || '{}') as UdpScenarioReport | { error: string };
    if ('error' in parsed) throw new Error(`scenario failed: ${parsed.error}\n${stderr}`);
    return { report: parsed, exitCode, signal, exitMsAfterReport, stderr };
  }

  for (const family of [4, 6] as const) {
    it(`IPv${family}: original destination and source, replies from the original destination, sizes, two flows, drops counted, clean exit`, async () => {
      const [addressA, addressB] = LAB[family].targets;
      const targets: UdpScenarioSpec['targets'] = [
        { address: addressA, port: 7001 },
        { address: addressB, port: 53 },
      ];
      const maxPayload = family === 4 ? 65_507 : 65_527;
      // 0 B is a datagram too (an empty UDP payload); 1472 B is the most one 1500 B frame carries.
      const sizes = [0, 1, 2, 100, 512, 1472, 1473, 8192, 32_768, 65_000, maxPayload];
      const { report, exitCode, signal, exitMsAfterReport, stderr } = await runScenario({
        family,
        port: ON_PORT,
        targets,
        baselineAddress: LAB[family].program,
        sizes,
        randomCount: 500,
        pingPongCount: 2000,
        burstCount: 20_000,
        burstSize: 512,
        drainCount: 3000,
      });
      const measured = { pingPong: report.pingPong, pingPongLarge: report.pingPongLarge, pingPongBaseline: report.pingPongBaseline };
      console.log(
        `IPv${family} measurements`,
        JSON.stringify({ ...measured, burst: report.burst, burstBaseline: report.burstBaseline, drain: report.drain, exitMsAfterReport }),
      );

      // The program's datagram reaches the listener with the program as source and the address
      // it wrote to as destination; the echo comes back from exactly that address.
      const programA = report.programs.a;
      expect(programA.address).toBe(LAB[family].program);
      expect(report.sizes.map((r) => r.size)).toEqual(sizes);
      for (const result of report.sizes) {
        expect(result, `size ${result.size}`).toMatchObject({
          intact: true,
          from: targets[0],
          saw: { source: programA, destination: targets[0], length: result.size },
        });
      }

      // Two flows interleaved, one of them a connected socket (which accepts only datagrams
      // from the address it connected to).
      expect(report.interleaved).toEqual({ sent: 40, intact: 40, wrongSource: 0, failures: [] });
      expect(report.replySocketsOpened).toBe(2);

      // 500 datagrams one at a time, 1 B to 65 000 B, all intact. Each flow's reply socket is
      // open the whole time: the listener still receives every datagram of the flow.
      expect(report.random).toEqual({ sent: 500, intact: 500, failures: [] });
      expect(report.pingPong.completed).toBe(2000);
      expect(report.pingPongLarge.completed).toBe(200);

      // A burst: what was not received was dropped by the kernel (a loaded machine may drop).
      expect(report.burst.received).toBeGreaterThan(0);
      expect(report.burst.received + report.burst.dropped).toBeLessThanOrEqual(report.burst.sent);
      // Nothing is lost without being counted. The count may also hold drops of the burst before:
      // the kernel reports a drop with the next datagram read, which can be the drain's first.
      expect(report.drain.received).toBeLessThanOrEqual(report.drain.queued);
      expect(report.drain.received + report.drain.dropped).toBeGreaterThanOrEqual(report.drain.queued);

      // Paused: nothing is read; the kernel queue holds what fits, the rest is dropped and counted.
      expect(report.paused.receivedWhilePaused).toBe(0);
      expect(report.paused.droppedDuringPause).toBeGreaterThan(0);
      expect(report.paused.receivedAfter + report.paused.droppedDuringPause).toBe(report.paused.sent);

      // Closed: no descriptor left open, no thread started, no Node resource left, and the
      // process exits by itself.
      expect(report.fdsAfter).toBe(report.fdsBefore);
      expect(report.threadsAfter).toBe(report.threadsBefore);
      expect(report.resourcesAfterClose).toEqual([]);
      expect({ exitCode, signal, stderr }).toEqual({ exitCode: 0, signal: null, stderr: '' });
      expect(exitMsAfterReport).toBeLessThan(EXIT_GRACE_MS);
    });
  }
});
