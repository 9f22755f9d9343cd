/**
 * The `tproxy` method: TCP and UDP to the tunneled subnets go, with their original destination
 * untouched, to the client's transparent sockets (IP_TRANSPARENT) on 127.0.0.1 / ::1. Everything
 * of it is set up and removed here: the `mangle` chains, the policy routing they need
 * (policy-routing.ts), and --dns, which is captured as the `nat` method captures it.
 *
 * Shape, per address family that has an include, for listening port P, UDP port U (setup.udpPort;
 * without it no UDP rule at all), mark M (setup.tmark, written 0x…), loopback L (127.0.0.1, ::1):
 *
 *   *mangle
 *   :rxshuttle-tproxy-P - [0:0]
 *   :rxshuttle-mark-P - [0:0]
 *   -A rxshuttle-tproxy-P -m addrtype --dst-type LOCAL -j RETURN
 *   -A rxshuttle-tproxy-P -d NS/32 -p tcp --dport 53 -j RETURN                    (--dns, per nameserver)
 *   -A rxshuttle-tproxy-P -d NS/32 -p udp --dport 53 -j RETURN                    (--dns, with U)
 *   -A rxshuttle-tproxy-P -d NET/LEN -p tcp [--dport LO[:HI]] -j RETURN           (exclude)
 *   -A rxshuttle-tproxy-P -d NET/LEN -p udp [--dport LO[:HI]] -j RETURN           (exclude, with U)
 *   -A rxshuttle-tproxy-P -d NET/LEN -p tcp [--dport …] -j TPROXY --on-port P --on-ip L --tproxy-mark M/M
 *   -A rxshuttle-tproxy-P -d NET/LEN -p udp [--dport …] -j TPROXY --on-port U --on-ip L --tproxy-mark M/M   (with U)
 *   -A rxshuttle-mark-P …the same lines, with -j MARK --set-xmark M/M for TPROXY…
 *   -I PREROUTING 1 -i lo -p tcp -m mark --mark M/M -j rxshuttle-tproxy-P
 *   -I PREROUTING 1 -i lo -p udp -m mark --mark M/M -j rxshuttle-tproxy-P        (with U)
 *   -I OUTPUT 1 -p tcp [-m owner --uid-owner U'] [-m owner --gid-owner G] [-m owner ! --gid-owner B] -j rxshuttle-mark-P
 *   -I OUTPUT 1 -p udp […the same owner matches…] -j rxshuttle-mark-P             (with U)
 *   COMMIT
 *
 * Router mode jumps from PREROUTING without `-i lo -m mark`: forwarded traffic meets the TPROXY
 * chain directly, as it comes in.
 *
 * How a local program's packet gets there: TPROXY works only in PREROUTING, which locally sent
 * packets never pass. So OUTPUT marks them (`rxshuttle-mark-P`), the kernel routes a packet
 * again when mangle OUTPUT changed its mark, the rule `fwmark M/M lookup T` sends it to table T
 * whose one route is `local default dev lo`, and it comes back in on lo with its mark and its
 * destination unchanged, into PREROUTING, where `rxshuttle-tproxy-P` gives it to the socket on
 * L:P (L:U). Replies leave from the original destination (the transparent socket is bound to it)
 * to the program's own address: LOCAL, so they are neither marked nor diverted.
 *
 * The non-router PREROUTING jump takes only what came in on lo carrying the mark: what our OUTPUT
 * chain chose (with its owner matches, which PREROUTING cannot test), never traffic this host
 * merely forwards. The owner matches and the bypass group sit on the OUTPUT jumps, as in `nat`
 * (rules.ts): the local server's own sockets (bypassGid) are never marked.
 *
 * --dns: the nameservers' port 53 goes to D through the `nat` table, exactly as the `nat` method
 * does it (natRules with no subnets: chain `rxshuttle-P` with the REDIRECTs and its jumps). The
 * mangle chains RETURN that traffic before the subnets, so a nameserver inside a tunneled subnet
 * is redirected to D and not also marked or diverted.
 *
 * A RULES line rewrites both mangle chains of a family in one iptables-restore (`-F` and the
 * rules again); the jumps and the policy routing stay as they are.
 */
import createDebug from 'debug';
import { iptablesTable, type NatTable, natTable, type RunCommand } from './iptables.js';
import type { InstalledRules } from './methods.js';
import { removeChain } from './nat.js';
import { addPolicyRouting, markText, removePolicyRouting } from './policy-routing.js';
import { byPrecedence, chainsCleanupScript, type NatScripts, natRules, ownerMatch, subnetMatch } from './rules.js';
import type { FirewallSetup, IpFamily, SubnetRule } from './types.js';

const log = createDebug('rxshuttle:fw');

/** The instance's two mangle chains: hooked from PREROUTING (TPROXY) and from OUTPUT (MARK). */
export function tproxyChains(port: number): { tproxy: string; mark: string } {
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`tproxy: not a port: ${String(port)}`);
  return { tproxy: `rxshuttle-tproxy-${port}`, mark: `rxshuttle-mark-${port}` };
}

const LOOPBACK = { 4: '127.0.0.1', 6: '::1' } as const;

/** The mark of a tproxy setup (the validator requires it for this method). */
function markOf(setup: FirewallSetup): string {
  if (setup.tmark === undefined) throw new Error('tproxy: the setup has no tmark');
  return markText(setup.tmark);
}

function protocolsOf(setup: FirewallSetup): Array<'tcp' | 'udp'> {
  return setup.udpPort === undefined ? ['tcp'] : ['tcp', 'udp'];
}

/** Both chains' rules for one family, or null when nothing of that family is included. */
function chainBodies(setup: FirewallSetup, rules: readonly SubnetRule[], family: IpFamily): string[] | null {
  const own = rules.filter((r) => r.family === family);
  if (!own.some((r) => !r.exclude)) return null;
  const { tproxy, mark } = tproxyChains(setup.port);
  const m = markOf(setup);
  const protocols = protocolsOf(setup);
  const nameservers = setup.dnsPort === undefined ? [] : (setup.dnsServers ?? []).filter((ip) => (ip.includes(':') ? 6 : 4) === family);
  const width = family === 4 ? 32 : 128;
  const target = (chain: string, protocol: 'tcp' | 'udp') =>
    chain === mark ? `MARK --set-xmark ${m}/${m}` : `TPROXY --on-port ${protocol === 'tcp' ? setup.port : setup.udpPort} --on-ip ${LOOPBACK[family]} --tproxy-mark ${m}/${m}`;
  const lines: string[] = [];
  for (const chain of [tproxy, mark]) {
    lines.push(`-A ${chain} -m addrtype --dst-type LOCAL -j RETURN`);
    for (const ns of nameservers) {
      for (const protocol of protocols) lines.push(`-A ${chain} -d ${ns}/${width} -p ${protocol} --dport 53 -j RETURN`);
    }
    for (const rule of byPrecedence(own)) {
      for (const protocol of protocols) lines.push(`-A ${chain} ${subnetMatch(rule, protocol)} -j ${rule.exclude ? 'RETURN' : target(chain, protocol)}`);
    }
  }
  return lines;
}

/**
 * iptables-restore input that creates one family's mangle chains and their jumps, or null when
 * the family has no include. `ownerUid`: capture only that user's traffic (the restricted mode,
 * which refuses this method today; kept for symmetry with `nat`).
 */
export function tproxyMangleScript(setup: FirewallSetup, family: IpFamily, ownerUid?: number, rules: readonly SubnetRule[] = setup.rules): string | null {
  const body = chainBodies(setup, rules, family);
  if (body === null) return null;
  const { tproxy, mark } = tproxyChains(setup.port);
  const m = markOf(setup);
  const owner = `${ownerMatch(setup, ownerUid)}${setup.bypassGid === undefined ? '' : ` -m owner ! --gid-owner ${setup.bypassGid}`}`;
  const lines = ['*mangle', `:${tproxy} - [0:0]`, `:${mark} - [0:0]`, ...body];
  for (const protocol of protocolsOf(setup)) {
    lines.push(setup.routerMode ? `-I PREROUTING 1 -p ${protocol} -j ${tproxy}` : `-I PREROUTING 1 -i lo -p ${protocol} -m mark --mark ${m}/${m} -j ${tproxy}`);
  }
  for (const protocol of protocolsOf(setup)) lines.push(`-I OUTPUT 1 -p ${protocol}${owner} -j ${mark}`);
  lines.push('COMMIT', '');
  return lines.join('\n');
}

/**
 * Rewrites the installed chains of a family in one transaction, jumps untouched. With nothing
 * left to include, each chain keeps only its LOCAL RETURN until the instance ends.
 */
export function tproxyMangleUpdate(setup: FirewallSetup, family: IpFamily, rules: readonly SubnetRule[]): string {
  const { tproxy, mark } = tproxyChains(setup.port);
  const body = chainBodies(setup, rules, family) ?? [tproxy, mark].map((chain) => `-A ${chain} -m addrtype --dst-type LOCAL -j RETURN`);
  return ['*mangle', `-F ${tproxy}`, `-F ${mark}`, ...body, 'COMMIT', ''].join('\n');
}

/** --dns: the `nat` method's DNS capture alone (its chain `rxshuttle-P` holds nothing else then). */
export function tproxyDnsScripts(setup: FirewallSetup, ownerUid?: number): NatScripts {
  return natRules({ ...setup, rules: [] }, ownerUid);
}

/** Deletes the instance's mangle chains and every jump to them from one family; false when there were none. */
export async function removeMangleChains(table: NatTable, port: number): Promise<boolean> {
  const { tproxy, mark } = tproxyChains(port);
  const script = chainsCleanupScript(await table.save(), 'mangle', [tproxy, mark]);
  if (script === null) return false;
  log('%s-restore --noflush (cleanup):\n%s', table.tool, script);
  await table.restore(script);
  if (chainsCleanupScript(await table.save(), 'mangle', [tproxy, mark]) !== null) {
    throw new Error(`${table.tool}: mangle rules of port ${port} are still present after removal`);
  }
  return true;
}

/**
 * What the tproxy method alone holds in one family: its mangle chains, then its policy routing
 * (not the `nat` chain of --dns, which is the nat method's too). False when nothing was there.
 * The chains go first: while they mark, the routing must stay, or marked packets would leave by
 * the direct path; if they cannot be removed, the routing stays for the next attempt.
 */
export async function removeTproxyCapture(run: RunCommand, family: IpFamily, port: number): Promise<boolean> {
  const chains = await removeMangleChains(iptablesTable(family, run, 'mangle'), port);
  const routing = await removePolicyRouting(run, family, port);
  return chains || routing;
}

/**
 * Removes what an earlier instance with the same port left (mangle chains, policy routing, the
 * DNS chain), then installs the capture of setup.rules. On failure nothing of this instance
 * stays installed and the error is thrown.
 */
export async function installTproxy(setup: FirewallSetup, run: RunCommand, ownerUid?: number): Promise<InstalledRules> {
  const mark = setup.tmark;
  if (mark === undefined) throw new Error('tproxy: the setup has no tmark');
  const mangle = { 4: iptablesTable(4, run, 'mangle'), 6: iptablesTable(6, run, 'mangle') } as const;
  const nat = { 4: natTable(4, run), 6: natTable(6, run) } as const;
  const dns = tproxyDnsScripts(setup, ownerUid);
  const dnsScript = (family: IpFamily) => (family === 4 ? dns.v4 : dns.v6);
  /** Families whose mangle chains and policy routing are (being) put in place. */
  const captured = new Set<IpFamily>();
  /** Families whose DNS chain is (being) put in place. */
  const dnsInstalled = new Set<IpFamily>();

  // IPv4 cleanup must work (it is also the check that the programs are there at all); IPv6
  // cleanup may fail harmlessly when the setup does not need IPv6 (no ip6tables, IPv6 off).
  for (const family of [4, 6] as const) {
    const needed = family === 4 || tproxyMangleScript(setup, family, ownerUid) !== null || dnsScript(family) !== null;
    const ignore = (e: Error) => log('ignoring IPv%d cleanup: %s', family, e.message);
    if (needed) {
      await removeTproxyCapture(run, family, setup.port);
      await removeChain(nat[family], setup.port);
    } else {
      await removeTproxyCapture(run, family, setup.port).catch(ignore);
      await removeChain(nat[family], setup.port).catch(ignore);
    }
  }

  const capture = async (family: IpFamily, script: string) => {
    captured.add(family);
    // The routing first: a marked packet must never find it missing.
    await addPolicyRouting(run, family, setup.port, mark);
    log('%s-restore --noflush:\n%s', mangle[family].tool, script);
    await mangle[family].restore(script);
  };
  const undo = async (families: Iterable<IpFamily>) => {
    for (const family of families) await removeTproxyCapture(run, family, setup.port).catch((u: Error) => log('undo failed: %s', u.message));
  };

  try {
    for (const family of [4, 6] as const) {
      const script = tproxyMangleScript(setup, family, ownerUid);
      if (script !== null) await capture(family, script);
    }
    for (const family of [4, 6] as const) {
      const script = dnsScript(family);
      if (script === null) continue;
      dnsInstalled.add(family);
      log('%s-restore --noflush (dns):\n%s', nat[family].tool, script);
      await nat[family].restore(script);
    }
  } catch (e) {
    await undo(captured);
    for (const family of dnsInstalled) await removeChain(nat[family], setup.port).catch((u: Error) => log('undo failed: %s', u.message));
    throw e;
  }

  return {
    async update(extra) {
      const rules = [...setup.rules, ...extra];
      for (const family of [4, 6] as const) {
        if (captured.has(family)) {
          const script = tproxyMangleUpdate(setup, family, rules);
          log('%s-restore --noflush (update):\n%s', mangle[family].tool, script);
          await mangle[family].restore(script);
          continue;
        }
        const script = tproxyMangleScript(setup, family, ownerUid, rules);
        if (script === null) continue;
        // A family the setup alone did not need: routing, chains and jumps, as at the start.
        await capture(family, script).catch(async (e: unknown) => {
          await undo([family]);
          captured.delete(family);
          throw e;
        });
      }
    },
    async remove() {
      const problems: string[] = [];
      for (const family of [4, 6] as const) {
        const steps: Array<[boolean, () => Promise<unknown>]> = [
          [captured.has(family), () => removeTproxyCapture(run, family, setup.port)],
          [dnsInstalled.has(family), () => removeChain(nat[family], setup.port)],
        ];
        for (const [ours, step] of steps) {
          try {
            await step();
          } catch (e) {
            // A family we never touched may legitimately be unusable; one we touched may not.
            if (ours || family === 4) problems.push((e as Error).message);
            else log('ignoring IPv%d cleanup: %s', family, (e as Error).message);
          }
        }
      }
      if (problems.length > 0) throw new Error(problems.join('; '));
    },
  };
}
