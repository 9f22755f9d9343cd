// ssh2Connection$ against an in-process ssh2 server (ssh2-lab.ts): authentication, how it fails,
// and the host key check.
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer as createNetServer } from 'node:net';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { TransportError } from '../../src/shared/errors.js';
import { checkHostKey, parseKnownHosts } from '../../src/transport/known-hosts.js';
import { type Ssh2Connection, ssh2Connection$ } from '../../src/transport/ssh2.js';
import { Ssh2Unsuitable } from '../../src/transport/ssh2-errors.js';
import { bounded, listen, useSsh2Lab } from './ssh2-lab.js';

/** The in-process ssh server and connections these tests run against (ssh2-lab.ts). */
const lab = useSsh2Lab();

describe('ssh2Connection$', () => {
  it('connects and authenticates with an unencrypted key file; the send queue starts uncongested', async () => {
    const { port } = await lab.startServer();
    const connection = await lab.connect(lab.configFor(port));
    expect(connection.authenticatedWith).toBe(lab.keys.client.file);
    expect(connection.sendQueue.congested()).toBe(false);
  }, 10_000);

  it('connects to the addresses sshHostInfo found, without looking the name up again (issue 16, finding 5)', async () => {
    const { port } = await lab.startServer();
    const config = lab.configFor(port, { hostname: 'rxs-never-looked-up.invalid' });
    const connection = await new Promise<Ssh2Connection>((resolve, reject) => {
      const subscription = bounded(ssh2Connection$(config, 'testhost', undefined, ['127.0.0.1']), 3000, 'connect').subscribe({ next: resolve, error: reject });
      lab.cleanups.push(() => subscription.unsubscribe());
    });
    expect(connection.authenticatedWith).toBe(lab.keys.client.file);
  }, 10_000);

  it('fails with Ssh2Unsuitable, promptly, when the server closes during the handshake', async () => {
    const fake = createNetServer((socket) => {
      socket.on('error', () => {});
      // Reads what the client sends (no reset), answers with an ident line only, then closes.
      socket.resume();
      socket.end('SSH-2.0-fake\r\n');
    });
    const port = await listen(fake);
    lab.cleanups.push(() => new Promise<void>((resolve) => fake.close(() => resolve())));
    const started = Date.now();
    const err = await lab.connectError(lab.configFor(port), 2000);
    expect(err).toBeInstanceOf(Ssh2Unsuitable);
    expect(Date.now() - started).toBeLessThan(2000);
  }, 10_000);

  it('goes on with the key file when the identity agent is unusable (a regular file)', async () => {
    const { port } = await lab.startServer();
    const notASocket = join(lab.dir, 'not-an-agent');
    writeFileSync(notASocket, '');
    const connection = await lab.connect(lab.configFor(port, { identitiesOnly: false, identityAgent: notASocket }));
    expect(connection.authenticatedWith).toBe(lab.keys.client.file);
  }, 10_000);

  describe('host key checking', () => {
    it('negotiates the key type known_hosts has when the server offers several', async () => {
      const { port, knownName } = await lab.startServer({ hostKeys: [lab.keys.hostEd, lab.keys.hostEcdsa] });
      const knownHosts = join(lab.dir, `known_hosts_ecdsa_${port}`);
      writeFileSync(knownHosts, `${knownName} ${lab.keys.hostEcdsa.publicLine}\n`);
      const connection = await lab.connect(lab.configFor(port, { userKnownHostsFiles: [knownHosts], strictHostKeyChecking: 'yes' }));
      expect(connection.authenticatedWith).toBe(lab.keys.client.file);
    }, 10_000);

    it('refuses a changed host key as final (a TransportError, not Ssh2Unsuitable) naming the file', async () => {
      const { port, knownName } = await lab.startServer({ hostKeys: [lab.keys.hostEd] });
      const knownHosts = join(lab.dir, `known_hosts_changed_${port}`);
      writeFileSync(knownHosts, `${knownName} ${lab.keys.otherEd.publicLine}\n`);
      const err = await lab.connectError(lab.configFor(port, { userKnownHostsFiles: [knownHosts], strictHostKeyChecking: 'yes' }));
      expect(err).toBeInstanceOf(TransportError);
      expect(err).not.toBeInstanceOf(Ssh2Unsuitable);
      expect((err as Error).message).toContain(knownHosts);
      expect((err as Error).message).toMatch(/CHANGED/);
    }, 10_000);

    it('refuses an unknown host under StrictHostKeyChecking yes with Ssh2Unsuitable', async () => {
      const { port } = await lab.startServer();
      const knownHosts = join(lab.dir, `known_hosts_empty_${port}`);
      writeFileSync(knownHosts, '');
      const err = await lab.connectError(lab.configFor(port, { userKnownHostsFiles: [knownHosts], strictHostKeyChecking: 'yes' }));
      expect(err).toBeInstanceOf(Ssh2Unsuitable);
      expect((err as Error).message).toMatch(/not known/);
    }, 10_000);

    it('accept-new appends on a line of its own when the file does not end with a newline', async () => {
      const { port, knownName } = await lab.startServer({ hostKeys: [lab.keys.hostEd] });
      const knownHosts = join(lab.dir, `known_hosts_open_${port}`);
      const otherLine = `otherhost ${lab.keys.otherEd.publicLine}`;
      writeFileSync(knownHosts, otherLine);
      await lab.connect(lab.configFor(port, { userKnownHostsFiles: [knownHosts], strictHostKeyChecking: 'accept-new' }));
      const text = readFileSync(knownHosts, 'utf8');
      expect(text.startsWith(`${otherLine}\n`)).toBe(true);
      expect(text.endsWith('\n')).toBe(true);
      const entries = parseKnownHosts(text, knownHosts);
      expect(entries).toHaveLength(2);
      expect(entries[0]?.names).toEqual({ kind: 'patterns', patterns: ['otherhost'] });
      expect(entries[0]?.key.equals(lab.keys.otherEd.blob)).toBe(true);
      expect(checkHostKey(entries, ['otherhost'], lab.keys.otherEd.blob).kind).toBe('match');
      expect(checkHostKey(entries, [knownName], lab.keys.hostEd.blob)).toMatchObject({ kind: 'match', line: 2 });
    }, 10_000);
  });
});
