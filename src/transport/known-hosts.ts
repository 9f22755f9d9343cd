import { createHmac, randomBytes } from 'node:crypto';
import { TransportError } from '../shared/errors.js';
import type { StrictHostKeyChecking } from './ssh-config.js';

/**
 * OpenSSH known_hosts files (sshd(8), SSH_KNOWN_HOSTS FILE FORMAT), so that the ssh2 transport
 * trusts exactly the host keys ssh would trust. Certificates are not supported: @cert-authority
 * lines are kept but never match.
 */

/** A line's host field: comma-separated patterns, or one name hashed as `|1|salt|hmac`. */
export type KnownHostNames =
  | { readonly kind: 'patterns'; readonly patterns: readonly string[] }
  | { readonly kind: 'hashed'; readonly salt: Buffer; readonly hash: Buffer };

export interface KnownHostEntry {
  readonly file: string;
  /** 1-based, for messages that say which line to fix. */
  readonly line: number;
  readonly marker: 'revoked' | 'cert-authority' | undefined;
  readonly names: KnownHostNames;
  readonly keyType: string;
  /** The SSH wire-format public key blob. */
  readonly key: Buffer;
}

export type HostKeyVerdict =
  | { readonly kind: 'revoked'; readonly file: string; readonly line: number }
  | { readonly kind: 'match'; readonly file: string; readonly line: number }
  | { readonly kind: 'mismatch'; readonly file: string; readonly line: number; readonly keyType: string }
  | { readonly kind: 'unknown'; readonly knownTypes: readonly string[] };

export type HostKeyDecision = { readonly ok: true; readonly learn: boolean } | { readonly ok: false; readonly message: string };

const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;
/** The salt and the HMAC are SHA-1 sized; OpenSSH rejects other lengths. */
const HASH_LENGTH = 20;

/** The names ssh looks up: HostKeyAlias verbatim, else the host, as `[host]:port` off port 22. */
export function knownHostsNames(host: string, port: number, hostKeyAlias?: string): string[] {
  if (hostKeyAlias !== undefined) return [hostKeyAlias];
  // ssh lowercases the host before lookup; hashed entries are hashes of the lowercase name.
  const name = host.toLowerCase();
  return [port === 22 ? name : `[${name}]:${port}`];
}

/** The key type a wire-format blob starts with (an ssh string), or undefined if it is malformed. */
function blobKeyType(blob: Buffer): string | undefined {
  if (blob.length < 4) return undefined;
  const end = 4 + blob.readUInt32BE(0);
  return end <= blob.length ? blob.toString('latin1', 4, end) : undefined;
}

function parseNames(field: string): KnownHostNames | undefined {
  if (!field.startsWith('|')) return { kind: 'patterns', patterns: field.split(',').filter((p) => p !== '') };
  const [empty, magic, salt, hash, ...rest] = field.split('|');
  if (empty !== '' || magic !== '1' || !salt || !hash || rest.length > 0) return undefined;
  const names = { kind: 'hashed' as const, salt: Buffer.from(salt, 'base64'), hash: Buffer.from(hash, 'base64') };
  return names.salt.length === HASH_LENGTH && names.hash.length === HASH_LENGTH ? names : undefined;
}

/** Like ssh, skips what it cannot read (unknown marker, bad base64, blob of another type) instead of failing. */
export function parseKnownHosts(text: string, file: string): KnownHostEntry[] {
  const entries: KnownHostEntry[] = [];
  text.split(/\r?\n/).forEach((raw, index) => {
    const fields = raw.trim().split(/\s+/);
    const first = fields[0] ?? '';
    if (first === '' || first.startsWith('#')) return;
    const marker = first === '@revoked' ? 'revoked' : first === '@cert-authority' ? 'cert-authority' : undefined;
    if (marker) fields.shift();
    const [hostField, keyType, base64] = fields;
    if (!hostField || hostField.startsWith('@') || !keyType || !base64 || !BASE64.test(base64)) return;
    const key = Buffer.from(base64, 'base64');
    const names = parseNames(hostField);
    if (!names || blobKeyType(key) !== keyType) return;
    entries.push({ file, line: index + 1, marker, names, keyType, key });
  });
  return entries;
}

/** OpenSSH's match_pattern: `*` and `?` wildcards, case-insensitive, everything else literal. */
function globMatches(pattern: string, name: string): boolean {
  const source = pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${source}$`, 'i').test(name);
}

/** A pattern line applies when a positive pattern matches and no negated one does. */
function appliesTo(names: KnownHostNames, name: string): boolean {
  if (names.kind === 'hashed') return createHmac('sha1', names.salt).update(name).digest().equals(names.hash);
  let positive = false;
  for (const pattern of names.patterns) {
    if (pattern.startsWith('!')) {
      if (globMatches(pattern.slice(1), name)) return false;
    } else if (globMatches(pattern, name)) positive = true;
  }
  return positive;
}

function entriesFor(entries: readonly KnownHostEntry[], names: readonly string[]): KnownHostEntry[] {
  return entries.filter((e) => e.marker === undefined && names.some((name) => appliesTo(e.names, name)));
}

export function checkHostKey(entries: readonly KnownHostEntry[], names: readonly string[], key: Buffer): HostKeyVerdict {
  // A revoked key is refused for every host, whatever the line's host field says.
  const revoked = entries.find((e) => e.marker === 'revoked' && e.key.equals(key));
  if (revoked) return { kind: 'revoked', file: revoked.file, line: revoked.line };
  const known = entriesFor(entries, names);
  // One matching line is enough, as in ssh: a host may be listed with old and new keys.
  const match = known.find((e) => e.key.equals(key));
  if (match) return { kind: 'match', file: match.file, line: match.line };
  const keyType = blobKeyType(key);
  const changed = known.find((e) => e.keyType === keyType);
  if (changed) return { kind: 'mismatch', file: changed.file, line: changed.line, keyType: changed.keyType };
  return { kind: 'unknown', knownTypes: [...new Set(known.map((e) => e.keyType))] };
}

/**
 * The key types known for the host, to offer first: a server with several host keys then
 * presents the one we can check, as ssh arranges. An ssh-rsa key is also signed with the
 * rsa-sha2 algorithms, which servers prefer to SHA-1.
 */
export function preferredHostKeyAlgorithms(entries: readonly KnownHostEntry[], names: readonly string[]): string[] {
  const types = new Set(entriesFor(entries, names).map((e) => e.keyType));
  return [...types].flatMap((type) => (type === 'ssh-rsa' ? ['rsa-sha2-512', 'rsa-sha2-256', type] : [type]));
}

/**
 * StrictHostKeyChecking as ssh applies it, except that we cannot prompt: `ask` refuses an
 * unknown host like `yes`, and a changed or revoked key is refused whatever the setting.
 */
export function hostKeyDecision(verdict: HostKeyVerdict, strict: StrictHostKeyChecking, hostLabel: string): HostKeyDecision {
  switch (verdict.kind) {
    case 'match':
      return { ok: true, learn: false };
    case 'revoked':
      return { ok: false, message: `the host key of ${hostLabel} is revoked (${verdict.file}:${verdict.line}): refusing to connect` };
    case 'mismatch':
      return {
        ok: false,
        message:
          `REMOTE HOST IDENTIFICATION HAS CHANGED for ${hostLabel}: its ${verdict.keyType} host key differs from ${verdict.file}:${verdict.line}; ` +
          'someone may be intercepting the connection (man-in-the-middle), or the key was replaced: ' +
          `if you trust the new key, remove that line and connect once with "ssh ${hostLabel}"`,
      };
    case 'unknown': {
      if (strict === 'no') return { ok: true, learn: false };
      if (strict === 'accept-new') return { ok: true, learn: true };
      const why =
        verdict.knownTypes.length === 0
          ? 'no entry in known_hosts'
          : `known_hosts has only its ${verdict.knownTypes.join(', ')} key, the server offered another type`;
      return {
        ok: false,
        message: `host key for ${hostLabel} is not known (${why}): connect once with "ssh ${hostLabel}" to check and accept it`,
      };
    }
  }
}

/**
 * The known_hosts text for a key learnt under `names`, without the final newline. Hashed, each
 * name gets its own line and salt, since a hash stands for a single name (ssh does the same).
 */
export function knownHostsLine(names: readonly string[], key: Buffer, hashed: boolean): string {
  const keyType = blobKeyType(key);
  if (keyType === undefined) throw new TransportError('RXS_ERR_SSH', 'the server sent a malformed host key');
  const tail = `${keyType} ${key.toString('base64')}`;
  if (!hashed) return `${names.join(',')} ${tail}`;
  return names
    .map((name) => {
      const salt = randomBytes(HASH_LENGTH);
      return `|1|${salt.toString('base64')}|${createHmac('sha1', salt).update(name).digest('base64')} ${tail}`;
    })
    .join('\n');
}
