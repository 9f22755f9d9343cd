/**
 * The words of the client <-> firewall-helper protocol (docs/firewall-helper.md). Shared by
 * both sides so they cannot drift apart.
 */
import { dirname, join } from 'node:path';
import type { FirewallSetup, SubnetRule } from './types.js';

/** The helper's program, built next to the CLI (scripts/bundle.mjs; src/firewall/program.ts). */
export const HELPER_SCRIPT = 'firewall-helper.cjs';
/**
 * Node's options for the helper: a young generation of 1 MiB semi-spaces. A flood of short lines
 * makes garbage fast, and V8's default young generation alone then took the helper near 100 MiB
 * (issue 17: its RSS stays under 100 MiB whatever it is sent); with this, about 70 MiB. Only a
 * flood pays for it, in time.
 */
export const HELPER_NODE_OPTIONS: readonly string[] = ['--max-semi-space-size=1'];
/** Where the helper's program is for the CLI script at `cliPath` (both in the package's dist/). */
export const helperScriptPath = (cliPath: string): string => join(dirname(cliPath), HELPER_SCRIPT);

export const HELPER_PROTOCOL_VERSION = 1;
/** First line the helper writes; the client sends nothing before it. */
export const HELLO_LINE = `HELLO rxshuttle-fw ${HELPER_PROTOCOL_VERSION}`;
export const READY_LINE = 'READY';
/** The answer to each command after READY that worked (HOST); ERROR <reason> otherwise. */
export const OK_LINE = 'OK';
/**
 * `RULES <JSON array of SubnetRule>` after READY: the rules beyond the setup's own (host names as
 * subnets, resolved by the remote) are now these; the chain is rewritten in place. OK or ERROR.
 */
export const RULES_PREFIX = 'RULES ';
/** The client's last line before it closes the pipe: an orderly end (the helper stays quiet). */
export const QUIT_LINE = 'QUIT';
export const ERROR_PREFIX = 'ERROR ';
/**
 * Longest line either side accepts. The longest setup line the helper's validator lets through
 * (MAX_RULES, 20 000, IPv6 rules with 39-character addresses, /128 and 5-digit port ranges, every
 * optional field at its longest) is about 2.54 MB; test/firewall/validate.test.ts checks that it
 * fits. The helper reads one such line once (its parts, then the line, then the parsed setup:
 * some tens of MiB at worst); every later line is held to MAX_RULES_LINE_BYTES.
 */
export const MAX_LINE_BYTES = 3 * 1024 * 1024;

/** The setup as the client sends it: one JSON line. */
export const setupLine = (setup: FirewallSetup): string => `${JSON.stringify(setup)}\n`;

/** The rules beyond the setup's as the client sends them: one RULES line. */
export const rulesLine = (rules: readonly SubnetRule[]): string => `${RULES_PREFIX}${JSON.stringify(rules)}\n`;

/** Squeezes a message onto one protocol line: no control characters, bounded length. */
export function oneLine(message: string, maxLength = 500): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: stripping them is the point
  const flat = message.replace(/[\u0000-\u001f\u007f]+/g, ' ').trim();
  return flat.length > maxLength ? `${flat.slice(0, maxLength - 1)}…` : flat;
}
