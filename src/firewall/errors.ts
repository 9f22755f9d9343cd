import { RxshuttleError } from '../shared/errors.js';

/** The helper refused or failed to install the rules, or went away. `message` is its reason. */
export class FirewallError extends RxshuttleError {
  constructor(message: string) {
    super('RXS_ERR_FW_APPLY', message);
  }
}
