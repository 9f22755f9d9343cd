/**
 * Which network namespace the helper runs in. Its nat table, and so its chain `rxshuttle-P`,
 * belong to that namespace; the port lock and the hosts block carry its identity so that
 * instances with the same port in other namespaces never take each other's for leftovers
 * (issue 17, finding 11): their hosts file may be the same /etc/hosts.
 */
import { statSync } from 'node:fs';

/** The inode of /proc/self/ns/net (what `lsns -t net` shows), the namespace's identity; null without /proc. */
export function netnsInode(): number | null {
  try {
    return statSync('/proc/self/ns/net').ino;
  } catch {
    return null;
  }
}

/** `net<inode>`, or `net0` where the namespace cannot be told (no /proc): all such helpers share it. */
export function netnsTag(inode: number | null = netnsInode()): string {
  return `net${inode ?? 0}`;
}
