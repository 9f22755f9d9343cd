/**
 * The words of the client <-> firewall-helper protocol (docs/firewall-helper.md). Shared by
 * both sides so they cannot drift apart.
 */

export const HELPER_PROTOCOL_VERSION = 1;
/** First line the helper writes; the client sends nothing before it. */
export const HELLO_LINE = `HELLO rxshuttle-fw ${HELPER_PROTOCOL_VERSION}`;
export const READY_LINE = 'READY';
/** The answer to each command after READY that worked (HOST); ERROR <reason> otherwise. */
export const OK_LINE = 'OK';
/** The client's last line before it closes the pipe: an orderly end (the helper stays quiet). */
export const QUIT_LINE = 'QUIT';
export const ERROR_PREFIX = 'ERROR ';
/** Longest line either side accepts (the setup JSON of 10 000 rules is well below). */
export const MAX_LINE_BYTES = 1024 * 1024;

/** Squeezes a message onto one protocol line: no control characters, bounded length. */
export function oneLine(message: string, maxLength = 500): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: stripping them is the point
  const flat = message.replace(/[\u0000-\u001f\u007f]+/g, ' ').trim();
  return flat.length > maxLength ? `${flat.slice(0, maxLength - 1)}…` : flat;
}
