// What the client says when sudo is missing or refuses to start the firewall helper. A stand-in
// `sudo` (a shell script of that name) plays the refusal; the real one is in test/e2e/sudo.test.ts.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { firstValueFrom } from 'rxjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FirewallSetup } from '../../src/firewall/types.js';
import { firewall$ } from '../../src/tunnel/firewall-client.js';

const SETUP: FirewallSetup = { version: 1, method: 'nat', port: 12300, routerMode: false, rules: [] };
let dir: string;
let fakeSudo: string;

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rxs-fakesudo-'));
  fakeSudo = path.join(dir, 'sudo');
  fs.writeFileSync(
    fakeSudo,
    '#!/bin/sh\necho "sudo: unable to resolve host x: Name or service not known" >&2\necho "sudo: a password is required" >&2\nexit 1\n',
    { mode: 0o755 },
  );
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('firewall$ through sudo', () => {
  it('sudo missing: says so and what to do', async () => {
    await expect(firstValueFrom(firewall$(SETUP, { helperArgv: [path.join(dir, 'no', 'sudo'), 'node', 'cli.js', '--firewall'] }))).rejects.toThrow(
      'sudo not found: the firewall rules need root; run rxshuttle as root, or install sudo',
    );
  });

  it("sudo refuses: one line with sudo's reason (its stderr captured) and the way out", async () => {
    const lines: string[] = [];
    const error = await firstValueFrom(
      firewall$(SETUP, { helperArgv: [fakeSudo, 'node', 'cli.js', '--firewall'], stderr: (l) => lines.push(l) }),
    ).catch((e: unknown) => e as Error);
    expect((error as Error).message).toBe(
      'sudo did not start the firewall helper (exit status 1): sudo: a password is required; the firewall rules need root: ' +
        'run rxshuttle as root, or let this user start the helper without a password: rxshuttle --sudoers',
    );
    expect(lines).toEqual(['sudo: unable to resolve host x: Name or service not known', 'sudo: a password is required']);
  });
});
