/**
 * Errors of the firewall part. Local for now: the lead folds these codes into src/errors.ts
 * (RxshuttleError subclasses with stable codes, as undici does).
 */

/** The helper refused or failed to install the rules, or went away. `message` is its reason. */
export class FirewallError extends Error {
  override name = 'FirewallError';
  readonly code = 'RXS_ERR_FW_APPLY';
}
