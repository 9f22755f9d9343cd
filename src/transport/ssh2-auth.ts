import { existsSync, readFileSync } from 'node:fs';
import createDebug from 'debug';
import ssh2, { type AnyAuthMethod, type NextAuthHandler } from 'ssh2';
import { errorMessage } from '../shared/errors.js';
import type { ResolvedSshConfig } from './ssh-config.js';

const debug = createDebug('rxshuttle:ssh2');

interface AuthAttempt {
  readonly label: string;
  readonly method: AnyAuthMethod;
}

/** The authentication of one connection: what is tried, in ssh's order, and what was. */
export interface Ssh2Auth {
  /** ssh2's authHandler: the next attempt each time it asks. */
  readonly handler: (methodsLeft: unknown, partialSuccess: boolean, next: NextAuthHandler) => void;
  /** How many attempts there are at all. */
  readonly attempts: number;
  /** The labels of the attempts made so far. */
  readonly tried: readonly string[];
  /** The attempt made last: once connected, what authenticated us. */
  lastTried(): string;
}

/** The agent, then each identity file that exists and needs no passphrase, in ssh's order. */
export function ssh2Auth(config: ResolvedSshConfig): Ssh2Auth {
  const attempts = authAttempts(config, config.user);
  const tried: string[] = [];
  return {
    handler: (_methodsLeft, _partialSuccess, next) => {
      const attempt = attempts[tried.length];
      // ssh2 takes false for "nothing left to try" (its typings do not say so).
      if (!attempt) return (next as unknown as (done: false) => void)(false);
      tried.push(attempt.label);
      next(attempt.method);
    },
    attempts: attempts.length,
    tried,
    lastTried: () => tried[tried.length - 1] ?? '',
  };
}

function authAttempts(config: ResolvedSshConfig, username: string): AuthAttempt[] {
  const attempts: AuthAttempt[] = [];
  const agent = config.identityAgent === null ? undefined : (config.identityAgent ?? process.env.SSH_AUTH_SOCK);
  // IdentitiesOnly: ssh offers only the configured keys (using the agent only to sign those);
  // ssh2 cannot limit an agent that way, so it does without the agent.
  if (agent && existsSync(agent) && !config.identitiesOnly) {
    attempts.push({ label: 'the ssh agent', method: { type: 'agent', username, agent } });
  }
  for (const file of config.identityFiles) {
    if (!existsSync(file)) continue;
    let parsed;
    try {
      parsed = ssh2.utils.parseKey(readFileSync(file));
    } catch (err) {
      debug('identity %s: %s', file, errorMessage(err));
      continue;
    }
    const key = Array.isArray(parsed) ? parsed[0] : parsed;
    if (!key || key instanceof Error) {
      debug('identity %s unusable: %s', file, key instanceof Error ? key.message : 'no key');
      continue;
    }
    attempts.push({ label: file, method: { type: 'publickey', username, key } });
  }
  return attempts;
}
