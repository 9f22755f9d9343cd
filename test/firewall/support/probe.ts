/** Runs the probe fixture in a namespace and returns its connect results. */
import type { ChildProcess } from 'node:child_process';
import type { ProbeResult, ProbeSpec } from '../fixtures/probe-main.js';
import type { Bundle } from './bundle.js';
import type { Netns } from './netns.js';

export async function runProbe(ns: Netns, probe: Bundle, spec: ProbeSpec): Promise<ProbeResult[]> {
  const out = await ns.exec([...probe.argv, JSON.stringify(spec)], probe.env);
  return JSON.parse(out.trim().split('\n')[0] ?? '[]') as ProbeResult[];
}

/** Starts a long-running probe (spec.stay) and resolves once its servers listen. */
export async function startServerProbe(ns: Netns, probe: Bundle, spec: ProbeSpec): Promise<ChildProcess> {
  const child = ns.spawn([...probe.argv, JSON.stringify({ ...spec, stay: true })], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, ...probe.env },
  });
  await new Promise<void>((resolve, reject) => {
    let seen = '';
    child.stdout?.on('data', (chunk: Buffer) => {
      seen += chunk.toString();
      if (seen.includes('listening\n')) resolve();
    });
    child.on('exit', (code) => reject(new Error(`server probe exited with ${code}`)));
  });
  return child;
}
