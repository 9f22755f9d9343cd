import { TransportError } from '../shared/errors.js';
import { printable } from '../shared/printable.js';

/** ssh2's message when its keepalive requests went unanswered. */
const KEEPALIVE_TIMEOUT = 'Keepalive timeout';
/** ssh2's message when every authentication method has been tried. */
const AUTH_EXHAUSTED = /All configured authentication methods failed/;
/** ssh2 error levels that mean the host could not be reached at all. */
const UNREACHABLE_LEVELS = new Set(['client-socket', 'client-dns', 'client-timeout']);

/** ssh2 cannot do what this host needs (the ssh binary may): the reason, and the error if it is final. */
export class Ssh2Unsuitable extends TransportError {
  constructor(
    where: string,
    readonly reason: string,
  ) {
    super('RXS_ERR_SSH', `ssh to ${where} failed: ${reason}`);
  }
}

/** An error ssh2's Client emitted: its message and `level` (where in ssh2 it arose). */
export interface Ssh2ClientError {
  readonly message: string;
  readonly level?: string | undefined;
}

/** What the connection knew when ssh2 reported an error. */
export interface Ssh2ErrorContext {
  /** The host as the user named it, for the messages. */
  readonly where: string;
  /** Whether the connection was up (authenticated): then any error ends it. */
  readonly ready: boolean;
  /** How a keepalive timeout is worded (--keepalive), if keepalives are on. */
  readonly keepaliveLost?: string | undefined;
  /** Why our host key check refused the server's key, and whether the key was only unknown (not changed). */
  readonly hostKeyRefusal?: { readonly message: string; readonly unknown: boolean } | undefined;
  /** The authentication attempts there were, and those made so far (their labels). */
  readonly attempts: number;
  readonly tried: readonly string[];
  readonly identityFiles: readonly string[];
}

/**
 * What an error of ssh2's Client means for the connection: undefined when ssh2 goes on by
 * itself (an agent or a key that cannot sign: it tries the next method), otherwise the error the
 * connection ends with. Ssh2Unsuitable when the ssh binary may manage what ssh2 could not (a key
 * that needs a passphrase, an algorithm, a protocol quirk); a plain TransportError when it would
 * fail the same way (a changed host key, an unreachable host, a lost connection).
 */
export function ssh2ConnectionError(err: Ssh2ClientError, context: Ssh2ErrorContext): TransportError | undefined {
  const { where, hostKeyRefusal } = context;
  if (context.ready) {
    const why = context.keepaliveLost !== undefined && err.message === KEEPALIVE_TIMEOUT ? context.keepaliveLost : `connection to ${where} lost: ${printable(err.message)}`;
    return new TransportError('RXS_ERR_TRANSPORT_CLOSED', why);
  }
  if (err.level === 'agent' || (err.level === 'client-authentication' && !AUTH_EXHAUSTED.test(err.message))) return undefined;
  if (hostKeyRefusal) {
    // A changed or revoked key is final: falling back would only ask ssh to overlook it.
    return hostKeyRefusal.unknown ? new Ssh2Unsuitable(where, hostKeyRefusal.message) : new TransportError('RXS_ERR_SSH', `ssh to ${where} failed: ${hostKeyRefusal.message}`);
  }
  if (err.level === 'client-authentication') {
    const why =
      context.attempts === 0
        ? `no usable key: no ssh agent and no unencrypted identity file (${context.identityFiles.join(', ') || 'none'})`
        : `authentication failed (tried ${context.tried.join(', ')})`;
    return new Ssh2Unsuitable(where, `${why}; ssh2 cannot ask for passwords or passphrases`);
  }
  if (UNREACHABLE_LEVELS.has(err.level ?? '')) {
    // A host that does not answer would not answer the ssh binary either.
    const why = err.level === 'client-timeout' ? 'timed out during the ssh handshake' : printable(err.message);
    return new TransportError('RXS_ERR_SSH', `ssh to ${where} failed: ${why}`);
  }
  // Algorithms, a disconnect ("too many authentication failures"), a protocol quirk: the ssh
  // binary may still manage.
  return new Ssh2Unsuitable(where, printable(err.message));
}
