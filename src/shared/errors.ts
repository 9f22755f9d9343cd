/**
 * Every failure a user can meet has a class and a stable code; the CLI derives its exit status from them.
 * Codes are documented in README.md ("Errors").
 */

export type ErrorCode =
  | 'RXS_ERR_USAGE'
  | 'RXS_ERR_PROTOCOL'
  | 'RXS_ERR_PROTOCOL_VERSION'
  | 'RXS_ERR_SSH'
  | 'RXS_ERR_REMOTE_NO_NODE'
  | 'RXS_ERR_REMOTE_NODE_TOO_OLD'
  | 'RXS_ERR_REMOTE_EXIT'
  | 'RXS_ERR_TRANSPORT_CLOSED'
  | 'RXS_ERR_FW_APPLY'
  | 'RXS_ERR_LISTEN'
  | 'RXS_ERR_PIDFILE'
  | 'RXS_ERR_SUDOERS'
  | 'RXS_ERR_DNS_TIMEOUT'
  | 'RXS_ERR_DNS_FAILED';

export class RxshuttleError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
  ) {
    super(message);
    this.name = new.target.name;
  }
}

/** Bad command line: exit status 2, as usage errors conventionally have. */
export class UsageError extends RxshuttleError {
  constructor(message: string) {
    super('RXS_ERR_USAGE', message);
  }
}

/** The peer broke the wire protocol: malformed frame, unknown channel, window violation. */
export class ProtocolError extends RxshuttleError {
  constructor(message: string, code: 'RXS_ERR_PROTOCOL' | 'RXS_ERR_PROTOCOL_VERSION' = 'RXS_ERR_PROTOCOL') {
    super(code, message);
  }
}

export class TransportError extends RxshuttleError {}

export class ListenError extends RxshuttleError {
  constructor(message: string) {
    super('RXS_ERR_LISTEN', message);
  }
}

/** One captured DNS query got no answer: nobody answered in time, or every remote nameserver failed. */
export class DnsError extends RxshuttleError {
  constructor(code: 'RXS_ERR_DNS_TIMEOUT' | 'RXS_ERR_DNS_FAILED', message: string) {
    super(code, message);
  }
}

export function exitCodeFor(error: unknown): number {
  if (error instanceof UsageError) return 2;
  return 1;
}

export const errorMessage = (error: unknown): string => (error instanceof Error ? error.message : String(error));
