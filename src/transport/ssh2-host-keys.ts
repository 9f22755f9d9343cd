import { appendFileSync, existsSync, readFileSync } from 'node:fs';
import createDebug from 'debug';
import { errorMessage } from '../shared/errors.js';
import {
  checkHostKey,
  hostKeyDecision,
  type KnownHostEntry,
  knownHostsLine,
  knownHostsNames,
  parseKnownHosts,
  preferredHostKeyAlgorithms,
} from './known-hosts.js';
import type { ResolvedSshConfig } from './ssh-config.js';

const debug = createDebug('rxshuttle:ssh2');

/** Why the server's host key was refused; `unknown`: only not known (the ssh binary may ask), not changed. */
export interface HostKeyRefusal {
  readonly message: string;
  readonly unknown: boolean;
}

/** The host key check of one connection, as ssh does it: known_hosts, StrictHostKeyChecking, accept-new. */
export interface HostKeyCheck {
  /**
   * ssh2's hostVerifier: the first key exchange's key is checked against known_hosts; every
   * later one (a re-key) must show the key accepted then.
   */
  readonly verify: (key: Buffer) => boolean;
  /** The key types known_hosts has for this host, to be negotiated first (empty: ssh2's order). */
  readonly knownAlgorithms: string[];
  /** Why the key was refused, once it was. */
  refusal(): HostKeyRefusal | undefined;
}

export function hostKeyCheck(config: ResolvedSshConfig, where: string): HostKeyCheck {
  const entries = readKnownHosts([...config.userKnownHostsFiles, ...config.globalKnownHostsFiles]);
  const names = knownHostsNames(config.hostname, config.port, config.hostKeyAlias);
  let refusal: HostKeyRefusal | undefined;
  let acceptedKey: Buffer | undefined;
  return {
    verify: (key) => {
      if (acceptedKey) return acceptedKey.equals(key);
      const verdict = checkHostKey(entries, names, key);
      const decision = hostKeyDecision(verdict, config.strictHostKeyChecking, where);
      if (!decision.ok) {
        refusal = { message: decision.message, unknown: verdict.kind === 'unknown' };
        return false;
      }
      if (decision.learn) learnHostKey(config, names, key);
      acceptedKey = Buffer.from(key);
      return true;
    },
    knownAlgorithms: preferredHostKeyAlgorithms(entries, names),
    refusal: () => refusal,
  };
}

function readKnownHosts(files: readonly string[]): KnownHostEntry[] {
  return files.flatMap((file) => {
    try {
      return parseKnownHosts(readFileSync(file, 'utf8'), file);
    } catch {
      return [];
    }
  });
}

/** accept-new: remember the key as ssh would, in the first user known_hosts file. */
function learnHostKey(config: ResolvedSshConfig, names: readonly string[], key: Buffer): void {
  const file = config.userKnownHostsFiles[0];
  if (!file || file === '/dev/null') return;
  try {
    // As ssh does: a last line without its newline must not swallow ours.
    const current = existsSync(file) ? readFileSync(file) : Buffer.alloc(0);
    const endsOpen = current.length > 0 && current[current.length - 1] !== 0x0a;
    appendFileSync(file, `${endsOpen ? '\n' : ''}${knownHostsLine(names, key, config.hashKnownHosts)}\n`, { mode: 0o600 });
    debug('added the host key of %s to %s', names[0], file);
  } catch (err) {
    debug('cannot add the host key to %s: %s', file, errorMessage(err));
  }
}
