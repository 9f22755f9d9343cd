import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  checkHostKey,
  hostKeyDecision,
  knownHostsLine,
  knownHostsNames,
  parseKnownHosts,
  preferredHostKeyAlgorithms,
} from '../../src/transport/known-hosts.js';

const dir = mkdtempSync(join(tmpdir(), 'rxshuttle-known-hosts-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A real key from ssh-keygen: `line` is the .pub text minus the comment, `blob` what ssh2's hostVerifier gets. */
function generateKey(name: string, ...type: string[]): { line: string; blob: Buffer } {
  const file = join(dir, name);
  execFileSync('ssh-keygen', ['-q', ...type, '-N', '', '-C', '', '-f', file]);
  const [keyType = '', base64 = ''] = readFileSync(`${file}.pub`, 'utf8').trim().split(' ');
  return { line: `${keyType} ${base64}`, blob: Buffer.from(base64, 'base64') };
}

const keys = {
  ed1: generateKey('ed1', '-t', 'ed25519'),
  ed2: generateKey('ed2', '-t', 'ed25519'),
  ecdsa: generateKey('ecdsa', '-t', 'ecdsa'),
  rsa: generateKey('rsa', '-t', 'rsa', '-b', '1024'),
};

const write = (name: string, text: string): string => {
  const file = join(dir, name);
  writeFileSync(file, text);
  return file;
};

describe('knownHostsNames', () => {
  it('uses the bare host on port 22 and [host]:port elsewhere, lowercased as ssh does', () => {
    expect(knownHostsNames('Example.COM', 22)).toEqual(['example.com']);
    expect(knownHostsNames('example.com', 2222)).toEqual(['[example.com]:2222']);
  });

  it('uses HostKeyAlias verbatim, whatever the port', () => {
    expect(knownHostsNames('example.com', 2222, 'MyAlias')).toEqual(['MyAlias']);
  });
});

describe('parseKnownHosts', () => {
  it('keeps markers and line numbers and skips comments, blank and malformed lines', () => {
    const { ed1, ed2 } = keys;
    const text = [
      '# comment',
      '',
      `a.example ${ed1.line} a comment`,
      `@revoked * ${ed2.line}`,
      `@cert-authority *.example ${ed1.line}`,
      `@unknown b.example ${ed1.line}`,
      'c.example ssh-ed25519',
      'd.example ssh-ed25519 !!notbase64!!',
      `e.example ssh-rsa ${ed1.line.split(' ')[1]}`,
      `|1|c2hvcnQ=|c2hvcnQ= ${ed1.line}`,
      `   \tf.example,g.example\t${ed1.line}  `,
    ].join('\n');
    const entries = parseKnownHosts(text, '/kh');
    expect(entries.map((e) => [e.line, e.marker, e.keyType])).toEqual([
      [3, undefined, 'ssh-ed25519'],
      [4, 'revoked', 'ssh-ed25519'],
      [5, 'cert-authority', 'ssh-ed25519'],
      [11, undefined, 'ssh-ed25519'],
    ]);
    expect(entries[0]?.key.equals(ed1.blob)).toBe(true);
    expect(entries[3]?.names).toEqual({ kind: 'patterns', patterns: ['f.example', 'g.example'] });
    expect(entries.every((e) => e.file === '/kh')).toBe(true);
  });
});

describe('checkHostKey', () => {
  it('matches exact names, * and ? wildcards and [host]:port, case-insensitively', () => {
    const { ed1 } = keys;
    const entries = parseKnownHosts(
      [`exact.example ${ed1.line}`, `*.wild.example,host?.q.example ${ed1.line}`, `[port.example]:2222 ${ed1.line}`].join('\n'),
      '/kh',
    );
    const check = (host: string, port = 22) => checkHostKey(entries, knownHostsNames(host, port), ed1.blob).kind;
    expect(check('exact.example')).toBe('match');
    expect(check('EXACT.example')).toBe('match');
    expect(check('a.b.wild.example')).toBe('match');
    expect(check('wild.example')).toBe('unknown');
    expect(check('host1.q.example')).toBe('match');
    expect(check('host12.q.example')).toBe('unknown');
    expect(check('port.example', 2222)).toBe('match');
    expect(check('port.example')).toBe('unknown');
    expect(check('exact.example', 2222)).toBe('unknown');
    expect(checkHostKey(entries, knownHostsNames('port.example', 2222), ed1.blob)).toEqual({
      kind: 'match',
      file: '/kh',
      line: 3,
    });
  });

  it('does not apply a line whose negated pattern matches', () => {
    const { ed1 } = keys;
    const entries = parseKnownHosts(`*.example,!bad.example ${ed1.line}`, '/kh');
    expect(checkHostKey(entries, ['good.example'], ed1.blob).kind).toBe('match');
    expect(checkHostKey(entries, ['bad.example'], ed1.blob).kind).toBe('unknown');
    // Negation alone never makes a line apply.
    expect(checkHostKey(parseKnownHosts(`!bad.example ${ed1.line}`, '/kh'), ['good.example'], ed1.blob).kind).toBe('unknown');
  });

  it('matches the lines ssh-keygen -H hashed', () => {
    const { ed1, ecdsa } = keys;
    const file = write('hashed', [`host.example ${ed1.line}`, `[host.example]:2222 ${ecdsa.line}`, ''].join('\n'));
    execFileSync('ssh-keygen', ['-q', '-H', '-f', file], { stdio: 'ignore' });
    const text = readFileSync(file, 'utf8');
    expect(text).not.toContain('host.example');
    const entries = parseKnownHosts(text, file);
    expect(entries.map((e) => e.names.kind)).toEqual(['hashed', 'hashed']);
    expect(checkHostKey(entries, knownHostsNames('host.example', 22), ed1.blob)).toEqual({ kind: 'match', file, line: 1 });
    expect(checkHostKey(entries, knownHostsNames('host.example', 2222), ecdsa.blob)).toEqual({ kind: 'match', file, line: 2 });
    expect(checkHostKey(entries, knownHostsNames('other.example', 22), ed1.blob).kind).toBe('unknown');
  });

  it('reports a revoked key for any host, even one that lists it', () => {
    const { ed1 } = keys;
    const entries = parseKnownHosts([`host.example ${ed1.line}`, `@revoked other.example ${ed1.line}`].join('\n'), '/kh');
    expect(checkHostKey(entries, ['host.example'], ed1.blob)).toEqual({ kind: 'revoked', file: '/kh', line: 2 });
  });

  it('reports a different key of a known type as a mismatch, and other types as unknown', () => {
    const { ed1, ed2, ecdsa, rsa } = keys;
    const entries = parseKnownHosts([`host.example ${rsa.line}`, `host.example ${ed1.line}`].join('\n'), '/kh');
    expect(checkHostKey(entries, ['host.example'], ed2.blob)).toEqual({
      kind: 'mismatch',
      file: '/kh',
      line: 2,
      keyType: 'ssh-ed25519',
    });
    expect(checkHostKey(entries, ['host.example'], ecdsa.blob)).toEqual({
      kind: 'unknown',
      knownTypes: ['ssh-rsa', 'ssh-ed25519'],
    });
  });

  it('accepts a key listed on any line, as when old and new keys are both present', () => {
    const { ed1, ed2 } = keys;
    const entries = parseKnownHosts([`host.example ${ed1.line}`, `host.example ${ed2.line}`].join('\n'), '/kh');
    expect(checkHostKey(entries, ['host.example'], ed2.blob)).toEqual({ kind: 'match', file: '/kh', line: 2 });
  });

  it('ignores @cert-authority lines', () => {
    const { ed1 } = keys;
    const entries = parseKnownHosts(`@cert-authority host.example ${ed1.line}`, '/kh');
    expect(checkHostKey(entries, ['host.example'], ed1.blob)).toEqual({ kind: 'unknown', knownTypes: [] });
  });
});

describe('preferredHostKeyAlgorithms', () => {
  it('lists the known types in file order, once each, with rsa-sha2 before ssh-rsa', () => {
    const { ed1, ed2, rsa, ecdsa } = keys;
    const entries = parseKnownHosts(
      [`host.example ${rsa.line}`, `host.example ${ed1.line}`, `*.example ${ed2.line}`, `other.example ${ecdsa.line}`].join('\n'),
      '/kh',
    );
    expect(preferredHostKeyAlgorithms(entries, ['host.example'])).toEqual([
      'rsa-sha2-512',
      'rsa-sha2-256',
      'ssh-rsa',
      'ssh-ed25519',
    ]);
    expect(preferredHostKeyAlgorithms(entries, ['new.host'])).toEqual([]);
  });
});

describe('hostKeyDecision', () => {
  const unknown = { kind: 'unknown', knownTypes: [] } as const;

  it('accepts a match whatever the setting', () => {
    for (const strict of ['yes', 'no', 'ask', 'accept-new'] as const) {
      expect(hostKeyDecision({ kind: 'match', file: '/kh', line: 1 }, strict, 'h')).toEqual({ ok: true, learn: false });
    }
  });

  it('refuses revoked and changed keys whatever the setting, naming the line to fix', () => {
    for (const strict of ['yes', 'no', 'ask', 'accept-new'] as const) {
      const revoked = hostKeyDecision({ kind: 'revoked', file: '/kh', line: 4 }, strict, 'h');
      expect(revoked).toEqual({ ok: false, message: expect.stringContaining('/kh:4') });
      const changed = hostKeyDecision({ kind: 'mismatch', file: '/kh', line: 7, keyType: 'ssh-ed25519' }, strict, 'h');
      expect(changed).toEqual({ ok: false, message: expect.stringMatching(/REMOTE HOST IDENTIFICATION HAS CHANGED.*\/kh:7/) });
      if (!changed.ok) expect(changed.message).not.toContain('\n');
    }
  });

  it('decides unknown hosts by StrictHostKeyChecking, refusing where ssh would prompt', () => {
    expect(hostKeyDecision(unknown, 'no', 'h')).toEqual({ ok: true, learn: false });
    expect(hostKeyDecision(unknown, 'accept-new', 'h')).toEqual({ ok: true, learn: true });
    for (const strict of ['yes', 'ask'] as const) {
      expect(hostKeyDecision(unknown, strict, 'h')).toEqual({
        ok: false,
        message: 'host key for h is not known (no entry in known_hosts): connect once with "ssh h" to check and accept it',
      });
    }
    expect(hostKeyDecision({ kind: 'unknown', knownTypes: ['ssh-rsa'] }, 'yes', 'h')).toEqual({
      ok: false,
      message: expect.stringContaining('only its ssh-rsa key'),
    });
  });
});

describe('knownHostsLine', () => {
  it.each([false, true])('writes a line that we and ssh-keygen -F find again (hashed: %s)', (hashed) => {
    const { ed1, ed2 } = keys;
    const names = knownHostsNames('learn.example', 2222);
    const line = knownHostsLine(names, ed1.blob, hashed);
    expect(line.startsWith(hashed ? '|1|' : '[learn.example]:2222 ssh-ed25519 ')).toBe(true);
    const file = write(`learnt-${hashed}`, `${line}\n`);
    const entries = parseKnownHosts(readFileSync(file, 'utf8'), file);
    expect(checkHostKey(entries, names, ed1.blob)).toEqual({ kind: 'match', file, line: 1 });
    expect(checkHostKey(entries, names, ed2.blob).kind).toBe('mismatch');
    expect(checkHostKey(entries, knownHostsNames('learn.example', 22), ed1.blob).kind).toBe('unknown');
    const found = execFileSync('ssh-keygen', ['-F', '[learn.example]:2222', '-f', file], { encoding: 'utf8' });
    expect(found).toContain(ed1.line.split(' ')[1]);
  });

  it('puts each name on its own line when hashing, with its own salt', () => {
    const lines = knownHostsLine(['a.example', 'b.example'], keys.ed1.blob, true).split('\n');
    expect(lines).toHaveLength(2);
    expect(lines[0]?.split(' ')[0]).not.toBe(lines[1]?.split(' ')[0]);
    const entries = parseKnownHosts(lines.join('\n'), '/kh');
    expect(checkHostKey(entries, ['b.example'], keys.ed1.blob)).toEqual({ kind: 'match', file: '/kh', line: 2 });
  });
});
