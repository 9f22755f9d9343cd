/**
 * Host names as subnets (`rxshuttle -r gw intranet.corp:443`): the remote's resolver answers, as
 * the name often resolves only there, through the tunnel's DNS path (the node server's
 * DNS_REQUEST, or DNS over TCP in stock-sshd mode: DiscoverySource.ask). Each address becomes a
 * /32 or /128 rule with the name's ports; when the answer's TTL runs out the name is asked
 * again, and a changed answer becomes a new list of rules, which the firewall helper puts in
 * place of the old ones (a RULES line: the chain is rewritten in one transaction).
 *
 * A name that does not resolve when the tunnel starts is an error. Later, a failed lookup keeps
 * the addresses the name had (a nameserver that is briefly away must not drop live rules) and
 * tries again after RETRY_S.
 */
import { randomInt } from 'node:crypto';
import dnsPacket from 'dns-packet';
import { asyncScheduler, catchError, defer, EMPTY, expand, filter, forkJoin, from, map, merge, type Observable, of, type SchedulerLike, switchMap, throwError, timer } from 'rxjs';
import { isLocalOnlyIp } from '../firewall/host-address.js';
import type { SubnetRule } from '../firewall/types.js';
import { errorMessage, UsageError } from '../shared/errors.js';
import { formatIp, parseIp } from '../shared/ip.js';
import type { NamedSubnet } from '../shared/options.js';
import { checkAnswer, rcodeName, rcodeOf } from './dns-message.js';

/** A TTL of 0 or 1 must not become a query loop. */
export const MIN_REFRESH_S = 10;
/** However long a TTL, a moved host is noticed within this long. */
export const MAX_REFRESH_S = 3600;
/** After a failed lookup (the earlier addresses stay), the next try. */
export const RETRY_S = 30;
/** Addresses one name may bring, per family: a round-robin name does not flood the rules. */
export const MAX_ADDRESSES_PER_FAMILY = 4;

/** Asks the remote's resolver: a DNS query message in, the answer message out. */
export type AskDns = (query: Buffer) => Observable<Buffer>;

/** What a name resolved to: canonical addresses (sorted, IPv4 first), and when to ask again. */
export interface NameAnswer {
  readonly addresses: readonly string[];
  readonly ttlS: number;
}

export type NameEvent =
  /** A name's addresses, at the start and whenever they change. */
  | { readonly kind: 'resolved'; readonly name: string; readonly addresses: readonly string[]; readonly ttlS: number }
  /** The rules of every name, as a whole, after a change. */
  | { readonly kind: 'rules'; readonly rules: readonly SubnetRule[] }
  /** A lookup after the start failed; the name keeps its addresses until the next try. */
  | { readonly kind: 'stale'; readonly name: string; readonly reason: string; readonly retryS: number };

export interface NameOptions {
  /** AAAA too (the listener takes IPv6); without it only A is asked. */
  readonly ipv6: boolean;
  readonly scheduler?: SchedulerLike;
}

const clampTtl = (ttl: number): number => Math.min(MAX_REFRESH_S, Math.max(MIN_REFRESH_S, ttl));

export function encodeQuery(name: string, type: 'A' | 'AAAA'): Buffer {
  return dnsPacket.encode({
    type: 'query',
    id: randomInt(0x10000),
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ type, class: 'IN', name }],
  });
}

/**
 * The addresses an answer gives for its question (after checkAnswer took out whatever does not
 * belong to the question's CNAME chain: the remote is not trusted), canonical, without local-only
 * ones (loopback, link-local, multicast: no tunnel carries those), at most MAX_ADDRESSES_PER_FAMILY.
 * Throws with the rcode's name for an error answer (NXDOMAIN, SERVFAIL …).
 */
export function addressesOf(query: Buffer, answer: Buffer, type: 'A' | 'AAAA'): NameAnswer {
  const checked = checkAnswer(query, answer);
  if (checked.kind === 'rejected') throw new Error(`unusable answer (${checked.reason})`);
  const rcode = rcodeOf(checked.answer);
  if (rcode !== 0) throw new Error(rcodeName(rcode));
  const packet = dnsPacket.decode(checked.answer);
  const found = new Set<string>();
  let ttl = MAX_REFRESH_S;
  for (const record of packet.answers ?? []) {
    if (record.type !== type || typeof record.data !== 'string') continue;
    const ip = parseIp(record.data);
    if (ip === null || isLocalOnlyIp(ip)) continue;
    if (found.size < MAX_ADDRESSES_PER_FAMILY) found.add(formatIp(ip.bytes));
    ttl = Math.min(ttl, record.ttl ?? 0);
  }
  return { addresses: [...found].sort(), ttlS: clampTtl(ttl) };
}

type Lookup = { readonly answer: NameAnswer } | { readonly error: string };

/** Asks for a name's A (and AAAA) records; errors when neither gives an address, with why. */
export function resolveName$(name: string, ask: AskDns, ipv6: boolean): Observable<NameAnswer> {
  const lookup = (type: 'A' | 'AAAA'): Observable<Lookup> =>
    defer(() => {
      const query = encodeQuery(name, type);
      return ask(query).pipe(
        map((answer): Lookup => ({ answer: addressesOf(query, answer, type) })),
        catchError((err: unknown) => of<Lookup>({ error: errorMessage(err) })),
      );
    });
  const lookups: Observable<Lookup>[] = ipv6 ? [lookup('A'), lookup('AAAA')] : [lookup('A')];
  return forkJoin(lookups).pipe(
    map((results: Lookup[]) => {
      const answers = results.flatMap((r) => ('answer' in r && r.answer.addresses.length > 0 ? [r.answer] : []));
      if (answers.length === 0) {
        const errors = results.flatMap((r) => ('error' in r ? [r.error] : []));
        throw new Error(errors[0] ?? 'no address');
      }
      return {
        addresses: answers.flatMap((a) => a.addresses),
        ttlS: Math.min(...answers.map((a) => a.ttlS)),
      };
    }),
  );
}

/** Each name's addresses, as namedRules takes them. */
export const addressLists = (answers: ReadonlyMap<string, NameAnswer>): Map<string, readonly string[]> =>
  new Map([...answers].map(([name, answer]) => [name, answer.addresses]));

/** The rules of the names given, for what each resolved to (one /32 or /128 per address). */
export function namedRules(names: readonly NamedSubnet[], resolved: ReadonlyMap<string, readonly string[]>): SubnetRule[] {
  const rules: SubnetRule[] = [];
  const seen = new Set<string>();
  for (const named of names) {
    for (const address of resolved.get(named.name) ?? []) {
      const family = address.includes(':') ? 6 : 4;
      const rule: SubnetRule = {
        family,
        address,
        prefix: family === 4 ? 32 : 128,
        portLow: named.portLow,
        portHigh: named.portHigh,
        exclude: named.exclude,
      };
      const key = JSON.stringify(rule);
      if (seen.has(key)) continue;
      seen.add(key);
      rules.push(rule);
    }
  }
  return rules;
}

/**
 * Resolves every name once, all at the same time. A name that does not resolve fails the whole
 * with a UsageError naming it, unless `known` has its earlier addresses (a tunnel started again
 * after a lost session keeps them).
 */
export function resolveNames$(
  names: readonly NamedSubnet[],
  ask: AskDns,
  options: NameOptions & { readonly known?: ReadonlyMap<string, NameAnswer> },
): Observable<Map<string, NameAnswer>> {
  const unique = [...new Set(names.map((n) => n.name))];
  if (unique.length === 0) return of(new Map());
  return forkJoin(
    unique.map((name) =>
      resolveName$(name, ask, options.ipv6).pipe(
        catchError((err: unknown) => {
          const earlier = options.known?.get(name);
          if (earlier) return of(earlier);
          return throwError(() => new UsageError(`host name "${name}" does not resolve through the tunnel: ${errorMessage(err)}`));
        }),
      ),
    ),
  ).pipe(map((answers) => new Map(unique.map((name, i) => [name, answers[i] as NameAnswer]))));
}

type Step = NameEvent | { readonly kind: 'wait'; readonly name: string; readonly delayS: number };

/**
 * Asks each name again when its TTL runs out (`first`: the answers resolveNames$ gave), and
 * reports changed addresses and the new rules; a failed lookup reports `stale` and is tried
 * again after RETRY_S. Runs until unsubscribed. `onAnswer` sees every answer taken (to keep
 * them across sessions).
 */
export function watchNames$(
  names: readonly NamedSubnet[],
  ask: AskDns,
  first: ReadonlyMap<string, NameAnswer>,
  options: NameOptions & { readonly onAnswer?: (name: string, answer: NameAnswer) => void },
): Observable<NameEvent> {
  const scheduler = options.scheduler ?? asyncScheduler;
  const current = addressLists(first);
  const again = (name: string): Observable<Step> =>
    resolveName$(name, ask, options.ipv6).pipe(
      switchMap((answer): Observable<Step> => {
        options.onAnswer?.(name, answer);
        const wait: Step = { kind: 'wait', name, delayS: answer.ttlS };
        if (sameList(current.get(name), answer.addresses)) return of(wait);
        current.set(name, answer.addresses);
        const steps: Step[] = [
          { kind: 'resolved', name, addresses: answer.addresses, ttlS: answer.ttlS },
          { kind: 'rules', rules: namedRules(names, current) },
          wait,
        ];
        return from(steps);
      }),
      catchError((err: unknown) => {
        const steps: Step[] = [
          { kind: 'stale', name, reason: errorMessage(err), retryS: RETRY_S },
          { kind: 'wait', name, delayS: RETRY_S },
        ];
        return from(steps);
      }),
    );
  // expand, not recursion: each lookup's Observable completes, so a tunnel of months holds no chain of them.
  const watchOne = (name: string, answer: NameAnswer): Observable<NameEvent> =>
    of<Step>({ kind: 'wait', name, delayS: answer.ttlS }).pipe(
      expand((step) => (step.kind === 'wait' ? timer(step.delayS * 1000, scheduler).pipe(switchMap(() => again(name))) : EMPTY)),
      filter((step): step is NameEvent => step.kind !== 'wait'),
    );
  return merge(...[...first].map(([name, answer]) => watchOne(name, answer)));
}

/** The events of the start: what each name resolved to, then the rules of all. */
export function startEvents(names: readonly NamedSubnet[], first: ReadonlyMap<string, NameAnswer>): NameEvent[] {
  return [
    ...[...first].map(([name, answer]): NameEvent => ({ kind: 'resolved', name, addresses: answer.addresses, ttlS: answer.ttlS })),
    { kind: 'rules', rules: namedRules(names, addressLists(first)) },
  ];
}

const sameList = (a: readonly string[] | undefined, b: readonly string[]): boolean =>
  a !== undefined && a.length === b.length && a.every((x, i) => x === b[i]);
