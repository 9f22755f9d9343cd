/** What the client asks the firewall helper for. Plain data: sent as one JSON line. */

export type IpFamily = 4 | 6;

/** One include or exclude entry, as given on the command line or derived (ssh server, auto-nets). */
export interface SubnetRule {
  family: IpFamily;
  /**
   * Network address in canonical text form, e.g. "10.98.0.0" or "fd00::": dotted decimal without
   * leading zeros, or RFC 5952 IPv6 (lower case, longest zero run as "::", no dotted tail), with
   * no bits set after `prefix`. The helper refuses any other spelling (`formatIp` in
   * src/shared/ip.ts produces it from bytes).
   */
  address: string;
  /** Prefix length, 0..32 (v4) or 0..128 (v6). */
  prefix: number;
  /** Inclusive TCP port range; 0..0 means every port. */
  portLow: number;
  portHigh: number;
  /** true: never tunnel (RETURN); false: tunnel (REDIRECT). */
  exclude: boolean;
}

/**
 * `nat`: iptables' nat table (rules.ts); `nft`: one nftables table of the instance's own (nft.ts);
 * `tproxy`: iptables' mangle table with TPROXY, TCP and UDP, and the policy routing it needs (tproxy.ts).
 */
export type FirewallMethod = 'nat' | 'nft' | 'tproxy';

export interface FirewallSetup {
  /** Helper protocol version; the helper refuses anything else. */
  version: 1;
  method: FirewallMethod;
  /** Port the client listens on; also names the chain `rxshuttle-<port>`. */
  port: number;
  /** Also jump from PREROUTING (client listens beyond loopback: router mode). */
  routerMode: boolean;
  rules: SubnetRule[];
  /**
   * Sockets owned by this group id are never redirected: the local-mode server runs with it,
   * so its own outbound connections do not loop back into the tunnel.
   */
  bypassGid?: number;
  /**
   * --dns: UDP and TCP to port 53 of these nameservers (canonical addresses, as in rules) go to
   * this port, where the client answers them. Both or neither; dnsPort differs from port.
   */
  dnsPort?: number;
  dnsServers?: string[];
  /**
   * --user: only sockets of this uid are captured on this host (an owner match on the OUTPUT
   * jumps; forwarded traffic in router mode has no owner and is not affected).
   */
  user?: number;
  /** --group: only sockets whose group (the process's primary group) is this gid are captured on this host. */
  group?: number;
  /**
   * tproxy: UDP to the tunneled subnets goes to this port (a transparent socket of the client's);
   * absent: UDP is not captured. Differs from dnsPort (it may be `port`'s number: UDP's ports are apart).
   */
  udpPort?: number;
  /**
   * tproxy: the firewall mark (--tmark) that sends captured packets to the instance's local route
   * table; 1..0xffffffff.
   */
  tmark?: number;
  /** -H: the client will send HOST lines for /etc/hosts (without it the helper refuses them). */
  hosts?: boolean;
  /**
   * --kill-switch: if the client (or the helper) dies without an orderly end, the tunneled subnets
   * (and the captured nameservers) are blocked with REJECT instead of going back to the direct
   * path, until the next instance on the port or `rxshuttle --flush` (kill-switch.ts).
   */
  killSwitch?: boolean;
}

/** A line `HOST <address> <name>` after READY: one /etc/hosts entry for the instance's block. */
export interface HostsEntry {
  address: string;
  name: string;
}
