/**
 * Errno codes in words, for lines a user reads: "no such file", not "ENOENT". Node's own messages
 * ("listen EADDRINUSE: address already in use 127.0.0.1:12300") carry a description after the
 * code; our own ("cannot write x: EACCES") carry the bare code.
 */

const WORDS: Readonly<Record<string, string>> = {
  ENOENT: 'no such file',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EISDIR: 'is a directory',
  ENOTDIR: 'not a directory',
  EEXIST: 'already exists',
  EROFS: 'read-only file system',
  ENOSPC: 'no space left on device',
  ELOOP: 'too many symbolic links',
  ENAMETOOLONG: 'name too long',
  EMFILE: 'too many open files',
  ENFILE: 'too many open files in the system',
  EBUSY: 'busy',
  EINVAL: 'invalid argument',
  EPIPE: 'broken pipe',
  EADDRINUSE: 'address already in use',
  EADDRNOTAVAIL: 'address not available',
  EAFNOSUPPORT: 'address family not supported',
  ECONNREFUSED: 'connection refused',
  ECONNRESET: 'connection reset',
  ECONNABORTED: 'connection aborted',
  ETIMEDOUT: 'timed out',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
  ENOTFOUND: 'name not found',
  EAI_AGAIN: 'name lookup failed for now',
};

/** A file system or socket error in words: its code's words, else its message without the code. */
export function errnoWords(err: unknown): string {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  if (typeof code === 'string' && WORDS[code] !== undefined) return WORDS[code];
  return withoutErrnoCodes(err instanceof Error ? err.message : String(err));
}

const CODES = Object.keys(WORDS).join('|');
/** `syscall CODE: description` (Node's form): the description says it already. */
const WITH_DESCRIPTION = new RegExp(`\\b(?:[a-z]+ )?(?:${CODES}): (?=[a-z])`, 'g');
/** `syscall CODE` or a bare CODE. */
const BARE = new RegExp(`\\b(?:(?:connect|listen|bind|open|read|write|getaddrinfo|spawn|kill|unlink) )?(${CODES})\\b`, 'g');

/** A message with every known errno code put into words (see WORDS); other text is unchanged. */
export function withoutErrnoCodes(message: string): string {
  return message.replace(WITH_DESCRIPTION, '').replace(BARE, (_, code: string) => WORDS[code] ?? code);
}
