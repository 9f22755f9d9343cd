/**
 * The restricted mode of the helper (`--restricted`), which is all that the rule of
 * `rxshuttle --sudoers` lets a user start without a password (issue 17, finding 3). Whoever may
 * run it is not an administrator of the machine, so it grants no more than that user could want
 * for themselves:
 *
 * - only that user's own traffic is captured: the OUTPUT jumps carry `-m owner --uid-owner U`
 *   (U is the user sudo ran it for, SUDO_UID, which sudo sets and the user cannot choose);
 *   nothing of root's or of any other user's goes to the tunnel;
 * - no router mode (PREROUTING: other machines' traffic);
 * - the ports the rules redirect to must be listened on by a socket of that user (TCP for the
 *   tunnel, UDP for --dns): the rules cannot send the user's connections to another program's
 *   port;
 * - -H edits nothing but the instance's own block (as in every mode);
 * - no `tproxy` method: its transparent sockets need a client running as root, which has no use
 *   for this mode.
 *
 * An administrator who authenticates to sudo gets the unrestricted helper: whole-machine capture,
 * so that `sudo apt` goes through the tunnel too.
 */
import { readFileSync } from 'node:fs';
import type { FirewallSetup } from './types.js';

/** The argument that selects the restricted mode. */
export const RESTRICTED_FLAG = '--restricted';

/** The user the restricted helper works for: SUDO_UID, which must name a user other than root. */
export function restrictedUid(env: NodeJS.ProcessEnv = process.env): number {
  const raw = env.SUDO_UID;
  if (raw === undefined || !/^[1-9]\d{0,9}$/.test(raw) || Number(raw) >= 2 ** 32 - 1) {
    throw new Error(`${RESTRICTED_FLAG} is the mode sudo starts for a user (SUDO_UID of a user other than root); run it through sudo`);
  }
  return Number(raw);
}

type Protocol = 'tcp' | 'udp';
/** /proc/net socket states: TCP_LISTEN, and TCP_CLOSE (an unconnected UDP socket). */
const STATE: Record<Protocol, string> = { tcp: '0A', udp: '07' };

/**
 * Whether a socket of user `uid` is bound to local `port` (TCP: listening; UDP: unconnected) in
 * this network namespace, over IPv4 or IPv6, from /proc/net/{tcp,tcp6,udp,udp6}.
 */
export function boundBy(port: number, uid: number, protocol: Protocol, read: (path: string) => string = readProc): boolean {
  const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
  for (const file of [protocol, `${protocol}6`]) {
    let text: string;
    try {
      text = read(`/proc/net/${file}`);
    } catch {
      continue; // no IPv6 in this kernel
    }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      // sl local_address rem_address st tx:rx tr:when retrnsmt uid …
      if (f.length < 8) continue;
      if (f[3] === STATE[protocol] && f[1]?.endsWith(`:${hexPort}`) && Number(f[7]) === uid) return true;
    }
  }
  return false;
}

const readProc = (path: string) => readFileSync(path, 'latin1');

/** Refuses what the restricted mode does not grant; throws an Error that says why. */
export function checkRestrictedSetup(setup: FirewallSetup, uid: number, bound: typeof boundBy = boundBy): void {
  const why = 'the rule of rxshuttle --sudoers allows only your own traffic; run rxshuttle as root (or with sudo and your password) for';
  // Transparent sockets need CAP_NET_ADMIN: a client that is not root could not take what the
  // rules divert, and the rules would send the user's traffic (UDP too) to whoever could.
  if (setup.method === 'tproxy') {
    throw new Error('method tproxy is refused: its transparent sockets need the client to run as root; run rxshuttle as root (sudo rxshuttle …), or use --method nat or nft');
  }
  if (setup.routerMode) throw new Error(`router mode (a listen address beyond loopback) is refused: ${why} the whole machine`);
  if (setup.user !== undefined && setup.user !== uid) throw new Error(`--user ${setup.user} is refused: ${why} another user's traffic`);
  if (!bound(setup.port, uid, 'tcp')) {
    throw new Error(`port ${setup.port} is not listened on by uid ${uid}: the rules may only redirect to your own listener`);
  }
  if (setup.dnsPort !== undefined && !bound(setup.dnsPort, uid, 'udp')) {
    throw new Error(`DNS port ${setup.dnsPort} is not bound by uid ${uid}: the rules may only redirect to your own listener`);
  }
}
