// Hostile input into the firewall helper's command reader (it runs as root; its input comes from
// an unprivileged client): any bytes, plausible setups with one hostile field, HOST lines, in any
// chunking. The helper must end (no hang) with 0 or 1, answer only protocol lines without echoing
// what it read, run only iptables-save/-restore, nft and ip with fixed arguments, feed them only
// rules of its own chains (nat, mangle for tproxy), its own nft table, its own route table, mark
// and rule priority, built from validated values, and leave no rule, route and hosts entry behind.

import * as fs from 'node:fs';
import { isIP } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { PassThrough } from 'node:stream';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runFirewallHelper } from '../../src/firewall/helper.js';
import { HELLO_LINE, MAX_LINE_BYTES } from '../../src/firewall/protocol.js';
import { FakeIptables } from '../firewall/support/fake-iptables.js';
import { RUNS, SEEDS } from './seeds.js';

const CANARY = 'Zq9canary';
const HOSTS_ORIGINAL = `127.0.0.1\tlocalhost\n# ${CANARY}-original\n`;
let dir: string;
let hostsPath: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rxs-fwfuzz-'));
  hostsPath = path.join(dir, 'hosts');
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const NETWORKS: ReadonlyArray<readonly [4 | 6, string, number]> = [
  [4, '10.0.0.0', 8],
  [4, '10.98.0.0', 24],
  [4, '192.168.1.7', 32],
  [4, '0.0.0.0', 0],
  [6, 'fd00::', 8],
  [6, '2001:db8::1', 128],
  [6, '::', 0],
];
const ruleArb = fc.record({
  net: fc.constantFrom(...NETWORKS),
  ports: fc.constantFrom([0, 0], [80, 80], [1, 65535], [1000, 2000]),
  exclude: fc.boolean(),
});
const setupArb = fc.record({
  port: fc.integer({ min: 1, max: 65535 }),
  routerMode: fc.boolean(),
  rules: fc.array(ruleArb, { minLength: 1, maxLength: 4 }),
  bypassGid: fc.option(fc.integer({ min: 1, max: 2 ** 32 - 2 }), { nil: undefined }),
  hosts: fc.boolean(),
  dns: fc.boolean(),
  method: fc.constantFrom('nat', 'nft', 'tproxy'),
  tmark: fc.oneof(fc.constantFrom(1, 0x10, 0xffff_ffff), fc.integer({ min: 1, max: 2 ** 32 - 1 })),
  udp: fc.boolean(),
});
type SetupShape = typeof setupArb extends fc.Arbitrary<infer T> ? T : never;
function setupObject(s: SetupShape): Record<string, unknown> {
  return {
    version: 1,
    method: s.method,
    port: s.port,
    routerMode: s.routerMode,
    rules: s.rules.map((r) => ({
      family: r.net[0],
      address: r.net[1],
      prefix: r.net[2],
      portLow: r.ports[0],
      portHigh: r.ports[1],
      exclude: r.exclude,
    })),
    ...(s.bypassGid === undefined ? {} : { bypassGid: s.bypassGid }),
    ...(s.hosts ? { hosts: true } : {}),
    ...(s.dns && s.port < 65535 ? { dnsPort: s.port + 1, dnsServers: ['10.0.0.53'] } : {}),
    ...(s.method === 'tproxy' ? { tmark: s.tmark, ...(s.udp && s.port > 1 ? { udpPort: s.port - 1 } : {}) } : {}),
  };
}

/** Strings an attacker would try: shell, iptables option and line injection, odd numbers and encodings. */
const hostile = fc.oneof(
  fc.constantFrom(
    `10.0.0.0; echo ${CANARY}`,
    `$(touch /tmp/${CANARY})`,
    `\`${CANARY}\``,
    `10.0.0.0 -j ACCEPT ${CANARY}`,
    `10.0.0.0\n-A OUTPUT -j DROP ${CANARY}`,
    `--to-ports 22 ${CANARY}`,
    `rxshuttle-1 ${CANARY}`,
    '10.0.0.0/8',
    '010.000.000.000',
    '::ffff:10.0.0.0',
    'FD00::',
    '１０.0.0.0',
    '1e3',
    '0x10',
    '-1',
    ' 10.0.0.0',
  ),
  fc.string({ maxLength: 30 }).map((s) => `${s}${CANARY}`),
  fc.constantFrom(-1, 0, 1.5, 65536, 2 ** 32, Number.MAX_SAFE_INTEGER, 1e308),
  fc.constantFrom(null, true, [], {}, [[[]]], { __proto__: { admin: true } }),
);
const hostileSetupLine = fc
  .tuple(setupArb, fc.constantFrom('port', 'method', 'version', 'routerMode', 'bypassGid', 'rules', 'rule.address', 'rule.prefix', 'rule.family', 'rule.portLow', 'extra', 'dnsServers', 'dnsPort', 'tmark', 'udpPort'), hostile)
  .map(([s, field, value]) => {
    const obj = setupObject(s);
    const rules = obj.rules as Record<string, unknown>[];
    if (field.startsWith('rule.')) (rules[0] as Record<string, unknown>)[field.slice(5)] = value;
    else if (field === 'extra') obj[`${CANARY}`] = value;
    else if (field === 'dnsServers') obj.dnsServers = [value];
    else obj[field] = value;
    return JSON.stringify(obj);
  });
const hostLine = fc.oneof(
  fc.tuple(fc.constantFrom('10.1.2.3', '10.1.2.3 ', '127.0.0.1', 'fd00::5', '1.2.3.4; x', CANARY), fc.constantFrom('web', 'db.lab', 'a b', `x${CANARY}`, '..', 'localhost', '-x', 'é.lab')).map(
    ([a, n]) => `HOST ${a} ${n}`,
  ),
  fc.string({ maxLength: 40 }).map((s) => `HOST ${s}`),
);
/** RULES lines: plausible lists, and lists with one hostile value. */
const rulesLine = fc.oneof(
  fc.array(ruleArb, { maxLength: 4 }).map(
    (rules) =>
      `RULES ${JSON.stringify(rules.map((r) => ({ family: r.net[0], address: r.net[1], prefix: r.net[2], portLow: r.ports[0], portHigh: r.ports[1], exclude: r.exclude })))}`,
  ),
  fc
    .tuple(fc.constantFrom('family', 'address', 'prefix', 'portLow', 'portHigh', 'exclude', 'extra'), hostile)
    .map(([field, value]) => `RULES ${JSON.stringify([{ family: 4, address: '10.9.0.0', prefix: 16, portLow: 0, portHigh: 0, exclude: false, [field === 'extra' ? CANARY : field]: value }])}`),
  fc.string({ maxLength: 40 }).map((s) => `RULES ${s}`),
);
const lineArb = fc.oneof(
  { weight: 2, arbitrary: rulesLine },
  { weight: 3, arbitrary: setupArb.map((s) => JSON.stringify(setupObject(s))) },
  { weight: 3, arbitrary: hostileSetupLine },
  { weight: 3, arbitrary: hostLine },
  { weight: 1, arbitrary: fc.constantFrom('QUIT', 'READY', '', 'HELLO rxshuttle-fw 1', '{}', 'null', '[' .repeat(5000), `{"__proto__":{"x":1},"${CANARY}":1}`) },
  { weight: 2, arbitrary: fc.string({ maxLength: 60 }) },
  { weight: 2, arbitrary: fc.uint8Array({ maxLength: 60 }).map((a) => Buffer.from(a).toString('latin1')) },
);
/** A valid setup that allows HOST lines, then a mix of good and hostile commands. */
const scenarioArb = fc
  .tuple(
    setupArb,
    fc.array(fc.oneof(fc.constantFrom('HOST 10.1.2.3 web', 'HOST fd00::5 db.lab', 'HOST 10.1.2.4 api.lab'), hostLine, rulesLine, lineArb), { maxLength: 6 }),
  )
  .map(([setup, rest]) => [JSON.stringify(setupObject({ ...setup, hosts: true })), ...rest]);
const inputArb = fc.tuple(
  fc.oneof(fc.array(lineArb, { maxLength: 8 }), scenarioArb),
  fc.boolean(),
  fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: 6 }),
);

const RESTORE_ARGS = [['--wait=10', '--noflush'], ['--noflush']];
const PROGRAMS = ['iptables-save', 'iptables-restore', 'ip6tables-save', 'ip6tables-restore', 'nft', 'ip'];
const NFT_TABLE = /^rxshuttle-\d{1,5}$/;
const BUILTIN = ['PREROUTING', 'INPUT', 'OUTPUT', 'POSTROUTING'];
const TOKEN = /^[A-Za-z0-9_.:/!-]+$/;
/** Our chains: nat's `rxshuttle-P`, tproxy's mangle `rxshuttle-tproxy-P` and `rxshuttle-mark-P`. */
const OUR_CHAIN = /^rxshuttle-(tproxy-|mark-)?\d{1,5}$/;
const ROUTE_TABLE_BASE = 0x7278_0000;

/** What the setup line (the first line) asked for, when it is one: the port and the tproxy mark. */
interface Asked {
  port: number | null;
  tmark: number | null;
}

/** One line of a restore script the helper produced: its own chain, fixed words, checked values. */
function checkScriptLine(line: string, asked: Asked): void {
  if (line === '' || line === '*nat' || line === '*mangle' || line === 'COMMIT') return;
  if (line.startsWith(':')) {
    expect(line).toMatch(/^:rxshuttle-(tproxy-|mark-)?\d{1,5} - \[0:0\]$/);
    return;
  }
  const tokens = line.split(' ');
  for (const t of tokens) expect(t, line).toMatch(TOKEN);
  expect(['-A', '-I', '-D', '-F', '-X']).toContain(tokens[0]);
  const chain = tokens[1] ?? '';
  expect(BUILTIN.includes(chain) || OUR_CHAIN.test(chain), line).toBe(true);
  const mark = asked.tmark === null ? null : `0x${asked.tmark.toString(16)}/0x${asked.tmark.toString(16)}`;
  tokens.forEach((t, i) => {
    const next = tokens[i + 1] ?? '';
    if (t === '-d' || t === '-s') {
      const [address = '', prefix = ''] = next.split('/');
      expect(isIP(address), line).not.toBe(0);
      expect(prefix, line).toMatch(/^\d{1,3}$/);
    }
    if (t === '-j') expect(['RETURN', 'REDIRECT', 'TPROXY', 'MARK'].includes(next) || OUR_CHAIN.test(next), line).toBe(true);
    if (t === '--to-ports' || t === '--dport' || t === '--gid-owner' || t === '--on-port') expect(next, line).toMatch(/^\d+(:\d+)?$/);
    if (t === '-p') expect(['tcp', 'udp']).toContain(next);
    if (t === '-i') expect(next, line).toBe('lo');
    if (t === '-m') expect(['addrtype', 'owner', 'mark'], line).toContain(next);
    if (t === '--on-ip') expect(['127.0.0.1', '::1'], line).toContain(next);
    // Only the setup's own mark, as the setup gave it.
    if (t === '--tproxy-mark' || t === '--set-xmark' || t === '--mark') expect(next, line).toBe(mark);
  });
}

/** An ip call the helper made: fixed words, the setup's own route table, mark and priority only. */
function checkIpCall(args: readonly string[], asked: Asked): void {
  expect(asked.port, args.join(' ')).not.toBeNull();
  const table = String(ROUTE_TABLE_BASE + (asked.port ?? 0));
  const [flag, ...rest] = args;
  expect(['-4', '-6']).toContain(flag);
  const words = rest.join(' ');
  const everywhere = flag === '-4' ? '0.0.0.0/0' : '::/0';
  const mark = asked.tmark === null ? null : `0x${asked.tmark.toString(16)}`;
  const allowed = [
    `rule show table ${table}`,
    `rule del priority 120 table ${table}`,
    `route show table ${table}`,
    `route flush table ${table}`,
    `route add local ${everywhere} dev lo table ${table}`,
    ...(mark === null ? [] : [`rule add fwmark ${mark}/${mark} lookup ${table} priority 120`]),
  ];
  expect(allowed, words).toContain(words);
}

/** An nft call the helper made: its own table by name, fixed words, checked values. */
function checkNftCall(args: readonly string[], input: string | undefined): void {
  const words = args.join(' ');
  if (words === 'list tables inet') return;
  if (args[0] === 'delete') {
    expect(args.slice(0, 3)).toEqual(['delete', 'table', 'inet']);
    expect(args[3]).toMatch(NFT_TABLE);
    expect(args).toHaveLength(4);
    return;
  }
  expect(words).toBe('-f -');
  const text = input ?? '';
  expect(text).not.toContain(CANARY);
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line === '}' || /^chain (capture|output|prerouting) \{$/.test(line)) continue;
    if (/^table inet rxshuttle-\d{1,5} \{$/.test(line) || /^flush chain inet rxshuttle-\d{1,5} capture$/.test(line)) continue;
    if (/^type nat hook (output|prerouting) priority -100; policy accept;$/.test(line)) continue;
    if (line === 'fib daddr type local return') continue;
    // A capture rule, or a hook's jump: only these words and checked numbers and addresses.
    expect(line, line).toMatch(
      /^((ip6? daddr [0-9a-f.:]+(\/\d{1,3})? )?(meta l4proto tcp|tcp dport \d{1,5}(-\d{1,5})?|udp dport 53)( meta skuid \d+)?( meta skgid != \d+)? (return|redirect to :\d{1,5}|jump capture))$/,
    );
    const address = /daddr ([0-9a-f.:]+)/.exec(line)?.[1];
    if (address !== undefined) expect(isIP(address), line).not.toBe(0);
  }
}

interface Outcome {
  status: number | 'hang';
  lines: string[];
  fake: FakeIptables;
  asked: Asked;
}

function askedBy(bytes: Buffer): Asked {
  try {
    const setup = JSON.parse(bytes.toString('utf8').split('\n')[0] ?? '') as { port?: unknown; tmark?: unknown };
    const int = (v: unknown) => (typeof v === 'number' && Number.isInteger(v) ? v : null);
    return { port: int(setup.port), tmark: int(setup.tmark) };
  } catch {
    return { port: null, tmark: null };
  }
}

async function runHelper(chunks: readonly Buffer[]): Promise<Outcome> {
  fs.writeFileSync(hostsPath, HOSTS_ORIGINAL);
  const fake = new FakeIptables();
  const input = new PassThrough();
  const output = new PassThrough();
  let text = '';
  output.on('data', (d: Buffer) => (text += d.toString('utf8')));
  const done = runFirewallHelper(input, output, {
    run: fake.run,
    handleSignals: false,
    warn: () => {},
    notice: () => {},
    hostsPath,
    resolvedRunning: () => false,
  });
  for (const chunk of chunks) input.write(chunk);
  input.end();
  let timer: NodeJS.Timeout | undefined;
  const status = await Promise.race([done, new Promise<'hang'>((r) => (timer = setTimeout(() => r('hang'), 5000)))]);
  clearTimeout(timer);
  return { status, lines: text.split('\n').slice(0, -1), fake, asked: askedBy(Buffer.concat(chunks)) };
}

function checkOutcome(out: Outcome): void {
  expect(out.status).not.toBe('hang');
  expect([0, 1]).toContain(out.status);
  expect(out.lines[0]).toBe(HELLO_LINE);
  for (const line of out.lines.slice(1)) {
    expect(line).toMatch(/^(READY|OK|ERROR \S.*)$/);
    expect(line.length).toBeLessThan(600);
    // biome-ignore lint/suspicious/noControlCharactersInRegex: checking for them
    expect(line).not.toMatch(/[\u0000-\u001f\u007f]/);
    expect(line).not.toContain(CANARY);
  }
  for (const call of out.fake.calls) {
    expect(PROGRAMS).toContain(call.file);
    if (call.file === 'nft') {
      checkNftCall(call.args, call.input);
      continue;
    }
    if (call.file === 'ip') {
      checkIpCall(call.args, out.asked);
      expect(call.input).toBeUndefined();
      continue;
    }
    // nat: the redirect; mangle: tproxy; filter: looked at for a kill switch left on the port (none here: no setup asks for one)
    if (call.file.endsWith('-save')) expect([['-t', 'nat'], ['-t', 'filter'], ['-t', 'mangle']]).toContainEqual([...call.args]);
    else {
      expect(RESTORE_ARGS).toContainEqual([...call.args]);
      for (const line of (call.input ?? '').split('\n')) checkScriptLine(line, out.asked);
      expect(call.input ?? '').not.toContain(CANARY);
    }
  }
  // Whatever happened, nothing of it stays: no rule, no route, the hosts file as it was.
  for (const family of [4, 6] as const) {
    expect(out.fake.rxshuttleLines(family)).toEqual([]);
    expect(out.fake.rxshuttleLines(family, 'mangle')).toEqual([]);
    expect(out.fake.ip[family].rules.map((r) => r.table)).toEqual(['local', 'main', 'default']);
    for (const [table, routes] of out.fake.ip[family].routes) expect(routes, `table ${table}`).toEqual([]);
  }
  expect([...out.fake.nftTables.keys()]).toEqual([]);
  expect(fs.readFileSync(hostsPath, 'utf8')).toBe(HOSTS_ORIGINAL);
}

function cut(bytes: Buffer, points: readonly number[]): Buffer[] {
  const offsets = [...new Set(points.map((p) => Math.floor(p * bytes.length)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let start = 0;
  for (const offset of [...offsets, bytes.length]) {
    if (offset > start) out.push(bytes.subarray(start, offset));
    start = Math.max(start, offset);
  }
  return out;
}

describe.each(SEEDS)('firewall helper fuzzing, %s', (_name, seed) => {
  it('any lines, in any chunks, then EOF: a clean end, protocol answers only, safe rules, nothing left', async () => {
    // Each case may rewrite (and fsync) a hosts file: fewer cases here than elsewhere.
    const numRuns = Math.ceil(RUNS / 8);
    let installed = 0;
    let tproxyInstalled = 0;
    let hostsAccepted = 0;
    await fc.assert(
      fc.asyncProperty(inputArb, async ([lines, finalNewline, points]) => {
        const text = lines.join('\n') + (finalNewline ? '\n' : '');
        const out = await runHelper(cut(Buffer.from(text, 'utf8'), points));
        checkOutcome(out);
        if (out.lines.includes('READY')) installed++;
        if (out.lines.includes('READY') && out.fake.calls.some((c) => c.file === 'ip' && c.args.includes('add'))) tproxyInstalled++;
        if (out.lines.includes('OK')) hostsAccepted++;
      }),
      { seed, numRuns },
    );
    // The generators reach the interesting paths, not only the first refusal.
    expect(installed).toBeGreaterThan(numRuns / 10);
    expect(tproxyInstalled).toBeGreaterThan(0);
    expect(hostsAccepted).toBeGreaterThan(0);
  });

  it('arbitrary bytes: a clean end', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 300 }), fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: 6 }), async (bytes, points) => {
        checkOutcome(await runHelper(cut(Buffer.from(bytes), points)));
      }),
      { seed, numRuns: Math.ceil(RUNS / 4) },
    );
  });
});

describe('firewall helper: hand-picked hostile input', () => {
  const setup = JSON.stringify({
    version: 1,
    method: 'nat',
    port: 12300,
    routerMode: false,
    rules: [{ family: 4, address: '10.0.0.0', prefix: 8, portLow: 0, portHigh: 0, exclude: false }],
  });
  const cases: Array<[string, string | Buffer, RegExp]> = [
    ['a setup line over the limit, without a newline', Buffer.alloc(MAX_LINE_BYTES + 10, 0x7b), /^ERROR setup line longer than/],
    ['deeply nested JSON', `${'['.repeat(200_000)}${']'.repeat(200_000)}\n`, /^ERROR invalid setup/],
    ['a shell command as the address', setup.replace('"10.0.0.0"', `"$(id>/tmp/${CANARY})"`) + '\n', /^ERROR invalid setup: rules\[0\]\.address/],
    ['an iptables option as the address', setup.replace('"10.0.0.0"', `"10.0.0.0 -j ACCEPT"`) + '\n', /^ERROR invalid setup: rules\[0\]\.address/],
    ['a second rule line smuggled into the address', setup.replace('"10.0.0.0"', '"10.0.0.0\\n-A OUTPUT -j DROP"') + '\n', /^ERROR invalid setup/],
    ['a port as a string', setup.replace('12300', '"12300; reboot"') + '\n', /^ERROR invalid setup: port/],
    ['a __proto__ key', setup.replace('{"version"', '{"__proto__":{"x":1},"version"') + '\n', /^ERROR invalid setup: setup has an unknown key/],
    ['NUL bytes', Buffer.from(`${setup.slice(0, 20)}\u0000${setup.slice(20)}\n`), /^ERROR /],
    ['an unknown command after READY', `${setup}\nRM -rf /\n`, /^READY$/],
  ];
  for (const [name, input, first] of cases) {
    it(`${name}: refused without echo, nothing installed or left`, async () => {
      const out = await runHelper([Buffer.isBuffer(input) ? input : Buffer.from(input)]);
      checkOutcome(out);
      expect(out.lines[1]).toMatch(first);
    });
  }

  it('an unknown command after READY is refused, the rules stay until EOF, then go', async () => {
    const out = await runHelper([Buffer.from(`${setup}\nRM -rf /\nQUIT\n`)]);
    checkOutcome(out);
    expect(out.lines.slice(1)).toEqual(['READY', 'ERROR unknown command (rules stay in place)']);
    expect(out.status).toBe(0);
  });
});
