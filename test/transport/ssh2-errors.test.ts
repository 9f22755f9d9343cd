import { describe, expect, it } from 'vitest';
import { TransportError } from '../../src/shared/errors.js';
import { type Ssh2ErrorContext, Ssh2Unsuitable, ssh2ConnectionError } from '../../src/transport/ssh2-errors.js';

/** Connecting (not ready), one key tried, no host key refusal, no keepalive. */
const connecting: Ssh2ErrorContext = {
  where: 'bastion',
  ready: false,
  attempts: 1,
  tried: ['/home/me/.ssh/id_ed25519'],
  identityFiles: ['/home/me/.ssh/id_ed25519'],
};

/** What an error becomes: ignored (ssh2 goes on), or the class, code and message the connection ends with. */
function outcome(message: string, level: string | undefined, context: Partial<Ssh2ErrorContext> = {}) {
  const error = ssh2ConnectionError({ message, level }, { ...connecting, ...context });
  if (!error) return 'ignored';
  return { unsuitable: error instanceof Ssh2Unsuitable, code: error.code, message: error.message };
}

describe('ssh2ConnectionError', () => {
  it('once ready, any error ends the connection as lost (not a fallback), a keepalive timeout in --keepalive words', () => {
    expect(outcome('read ECONNRESET', 'client-socket', { ready: true })).toEqual({
      unsuitable: false,
      code: 'RXS_ERR_TRANSPORT_CLOSED',
      message: 'connection to bastion lost: read ECONNRESET',
    });
    const keepaliveLost = 'connection to bastion lost: no answer for 60 s (--keepalive 15)';
    expect(outcome('Keepalive timeout', 'client-timeout', { ready: true, keepaliveLost })).toMatchObject({ unsuitable: false, message: keepaliveLost });
    // Without keepalives on, ssh2's own words.
    expect(outcome('Keepalive timeout', 'client-timeout', { ready: true })).toMatchObject({ message: 'connection to bastion lost: Keepalive timeout' });
  });

  it('ignores an agent or a key that cannot sign while methods are left: ssh2 tries the next one', () => {
    expect(outcome('agent refused operation', 'agent')).toBe('ignored');
    expect(outcome('Cannot sign with this key', 'client-authentication')).toBe('ignored');
  });

  it('every method failed: Ssh2Unsuitable naming what was tried, or that there was no usable key', () => {
    const exhausted = 'All configured authentication methods failed';
    expect(outcome(exhausted, 'client-authentication', { attempts: 2, tried: ['the ssh agent', '/k'] })).toEqual({
      unsuitable: true,
      code: 'RXS_ERR_SSH',
      message: 'ssh to bastion failed: authentication failed (tried the ssh agent, /k); ssh2 cannot ask for passwords or passphrases',
    });
    expect(outcome(exhausted, 'client-authentication', { attempts: 0, tried: [], identityFiles: [] })).toMatchObject({
      unsuitable: true,
      message: 'ssh to bastion failed: no usable key: no ssh agent and no unencrypted identity file (none); ssh2 cannot ask for passwords or passphrases',
    });
  });

  it('a refused host key: an unknown one may fall back to ssh (which can ask), a changed one is final', () => {
    const unknown = { message: 'host key for bastion is not known', unknown: true };
    const changed = { message: 'host key for bastion has CHANGED (known_hosts:3)', unknown: false };
    // ssh2 reports the refusal as a handshake error of its own wording.
    expect(outcome('Handshake failed: host verification failed', 'handshake', { hostKeyRefusal: unknown })).toEqual({
      unsuitable: true,
      code: 'RXS_ERR_SSH',
      message: 'ssh to bastion failed: host key for bastion is not known',
    });
    expect(outcome('Handshake failed: host verification failed', 'handshake', { hostKeyRefusal: changed })).toEqual({
      unsuitable: false,
      code: 'RXS_ERR_SSH',
      message: 'ssh to bastion failed: host key for bastion has CHANGED (known_hosts:3)',
    });
  });

  it.each([
    ['client-socket', 'connect ECONNREFUSED 10.0.0.1:22', 'ssh to bastion failed: connect ECONNREFUSED 10.0.0.1:22'],
    ['client-dns', 'getaddrinfo ENOTFOUND bastion', 'ssh to bastion failed: getaddrinfo ENOTFOUND bastion'],
    ['client-timeout', 'Timed out while waiting for handshake', 'ssh to bastion failed: timed out during the ssh handshake'],
  ])('an unreachable host (%s) is final: ssh would not reach it either', (level, message, expected) => {
    expect(outcome(message, level)).toEqual({ unsuitable: false, code: 'RXS_ERR_SSH', message: expected });
  });

  it('anything else before ready (algorithms, a disconnect, a quirk): Ssh2Unsuitable, the ssh binary may manage', () => {
    expect(outcome('Handshake failed: no matching cipher', 'handshake')).toEqual({
      unsuitable: true,
      code: 'RXS_ERR_SSH',
      message: 'ssh to bastion failed: Handshake failed: no matching cipher',
    });
    expect(outcome('Too many authentication failures', 'protocol')).toMatchObject({ unsuitable: true });
  });

  it('makes what the server said printable (one line, no terminal control)', () => {
    const error = ssh2ConnectionError({ message: 'bye\u001b[2J\nnow', level: 'protocol' }, connecting);
    expect(error).toBeInstanceOf(TransportError);
    expect(error?.message).not.toMatch(/[\u0000-\u001f]/);
  });
});
