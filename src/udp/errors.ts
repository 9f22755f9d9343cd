import { ListenError } from '../shared/errors.js';

/**
 * A transparent UDP socket could not be opened or used. `syscall` and `errnoCode` ("EPERM",
 * "EADDRINUSE"…) say which step failed, so a caller can tell "not root" from "port taken".
 * It is a ListenError (RXS_ERR_LISTEN): the tunnel cannot capture UDP without these sockets.
 */
export class UdpSocketError extends ListenError {
  constructor(
    readonly syscall: string,
    readonly errnoCode: string,
    message: string,
  ) {
    super(message);
  }
}
