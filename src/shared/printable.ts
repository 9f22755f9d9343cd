/**
 * Text that comes from the remote host (its stderr, a login banner, the reason in an EXIT frame)
 * made safe to print on a terminal or send to syslog: a malicious or broken server must not be
 * able to move the cursor, retitle the window, clear the screen, forge a line of ours, or reorder
 * what is shown.
 *
 * Escaped, as visible text: C0 controls (`\x1b`, `\x07`, `\x00`, …; a newline or carriage return
 * as `\n` / `\r`, so one line stays one line), DEL and the C1 controls (U+007F–U+009F, `\x9b` is
 * a CSI of its own), the line and paragraph separators U+2028/U+2029, and the bidirectional
 * controls (U+061C, U+200E/U+200F, U+202A–U+202E, U+2066–U+2069: `\u202e`). A tab stays a tab:
 * it moves the cursor only forward. Everything else, backslashes included, is left as it is, so
 * escaping twice changes nothing.
 */
const UNSAFE = /[\p{Cc}\p{Zl}\p{Zp}\p{Bidi_Control}]/gu;

const NAMED: Readonly<Record<string, string>> = { '\n': '\\n', '\r': '\\r' };

const escape = (char: string): string => {
  if (char === '\t') return char;
  const named = NAMED[char];
  if (named !== undefined) return named;
  const code = char.codePointAt(0) ?? 0;
  return code < 0x100 ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`;
};

/** One line of remote text, with every character that could act on a terminal written out as an escape. */
export function printable(text: string): string {
  return text.replace(UNSAFE, escape);
}

/** Remote output that may hold several lines (a login banner): its non-blank lines, each printable. */
export function printableLines(text: string): string[] {
  return text
    .split(/\r?\n/)
    .filter((line) => line.trim() !== '')
    .map((line) => printable(line.trimEnd()));
}
