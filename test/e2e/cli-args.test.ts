// Arguments from elsewhere than the command line, in the lab (issue 15): the subnets from
// `-s FILE` (excludes from `-X FILE`), the whole command from an `@FILE` argument file, from
// RXSHUTTLE_ARGS and from SSHUTTLE_ARGS; each tunnel fetches the page from the target, which cli
// reaches only through it. Also `-l localhost,[::1]` with IPv4 and IPv6 subnets at once, and what
// rxshuttle prints without -v: one line once the tunnel is up, one when a signal stops it.
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { LAB, type Lab, PAGE_MARKER } from './lab.js';
import { curl, expectNothingLeft, Rxshuttle, rxshuttleRules, useLab } from './tunnel-helpers.js';

let lab: Lab;
const work = fs.mkdtempSync(path.join(tmpdir(), 'rxs-e2e-args-'));
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

useLab({ ipv6: true }, (up) => {
  lab = up;
});

const write = (name: string, text: string): string => {
  const file = path.join(work, name);
  fs.writeFileSync(file, text);
  return file;
};

/** The environment without argument variables of the machine's own. */
function env(vars: Record<string, string>): NodeJS.ProcessEnv {
  const clean = { ...process.env };
  delete clean['RXSHUTTLE_ARGS'];
  delete clean['SSHUTTLE_ARGS'];
  return { ...clean, ...vars };
}

async function expectPage(url = `http://${LAB.target}/`): Promise<void> {
  const page = await curl(lab, 'cli', url);
  expect(page.stderr).toBe('');
  expect(page.stdout).toContain(PAGE_MARKER);
}

const READY = /^rxshuttle: Connected to lab; tunneling (\d+) subnets? on (.+)\.$/m;

describe('the subnets from -s FILE, excludes from -X FILE, without -v', () => {
  it('one line when up, the page through the tunnel, the excluded host not, one line on SIGTERM', async () => {
    const before = await curl(lab, 'cli', `http://${LAB.target}/`, ['--connect-timeout', '2'], 4);
    expect(before.code, `${LAB.target} must be unreachable without the tunnel`).not.toBe(0);
    const subnets = write('subnets.txt', `# the lab's target network\n\n${LAB.targetSubnet}   # all of it\n`);
    const excludes = write('excludes.txt', `${LAB.target4}/32\n`);
    const rx = new Rxshuttle(lab, 'cli', ['-r', lab.sshHost, '-e', lab.sshCommand, '-s', subnets, '-X', excludes], [], env({}));
    await rx.waitFor(READY, 30_000);
    expect(READY.exec(rx.output)?.slice(1)).toEqual(['1', expect.stringMatching(/^127\.0\.0\.1:\d+$/)]);
    await expectPage();
    const excluded = await curl(lab, 'cli', `http://${LAB.target4}/`, ['--connect-timeout', '2'], 4);
    expect(excluded.code, 'the host -X excludes is not tunneled').not.toBe(0);

    expect(await rx.stop('SIGTERM')).toMatchObject({ code: 0, signal: null, killed: false });
    const lines = rx.output.trim().split('\n');
    expect(lines, rx.output).toEqual([expect.stringMatching(READY), 'rxshuttle: Stopping.']);
    await expectNothingLeft(lab);
  });
});

describe.each([
  {
    source: 'an @FILE argument file',
    start: () => {
      const conf = write(
        'tunnel.conf',
        ['# rxshuttle @tunnel.conf', '-v', '--remote', lab.sshHost, `--ssh-cmd=${lab.sshCommand}`, `"${LAB.targetSubnet}"`, ''].join('\n'),
      );
      return new Rxshuttle(lab, 'cli', [`@${conf}`], [], env({}));
    },
  },
  {
    source: 'RXSHUTTLE_ARGS (SSHUTTLE_ARGS then unread)',
    start: () =>
      new Rxshuttle(lab, 'cli', [LAB.targetSubnet], [], env({
        RXSHUTTLE_ARGS: `-v -r ${lab.sshHost} -e '${lab.sshCommand}'`,
        SSHUTTLE_ARGS: '--method nft --no-such-option',
      })),
  },
  {
    source: 'SSHUTTLE_ARGS, with -s FILE in it',
    start: () => {
      const subnets = write('from-env.txt', `${LAB.targetSubnet}\n`);
      return new Rxshuttle(lab, 'cli', [], [], env({ SSHUTTLE_ARGS: `-v -r ${lab.sshHost} -e "${lab.sshCommand}" -s ${subnets}` }));
    },
  },
])('the command from $source', ({ start }) => {
  it('starts the tunnel and fetches the page through it', async () => {
    const rx = start();
    await rx.ready();
    // The line of the default output follows -v's "Firewall ready".
    await rx.waitFor(READY, 2_000);
    await expectPage();
    await rx.waitFor(new RegExp(`Accept: ${LAB.cli.replace(/\./g, '\\.')}:\\d+ -> 10\\.98\\.0\\.3:80\\.`));
    expect(await rx.stop('SIGTERM')).toMatchObject({ code: 0, killed: false });
    expect(rx.output.trim().split('\n').at(-1)).toBe('rxshuttle: SIGTERM: shutting down.');
    expect(await rxshuttleRules(lab)).toEqual([]);
  });
});

describe('-l localhost,[::1]: IPv4 and IPv6 listeners at once', () => {
  it('one port for both; pages over IPv4 and IPv6 through the tunnel; Ctrl-C stops it', async () => {
    const rx = new Rxshuttle(lab, 'cli', ['-r', lab.sshHost, '-e', lab.sshCommand, '-l', 'localhost,[::1]', LAB.targetSubnet, LAB.targetSubnet6], [], env({}));
    await rx.waitFor(READY, 30_000);
    const [, count, on] = READY.exec(rx.output) ?? [];
    expect(count).toBe('2');
    const port = /^127\.0\.0\.1:(\d+), \[::1\]:(\d+)$/.exec(on ?? '');
    expect(port, on).not.toBeNull();
    expect(port?.[1]).toBe(port?.[2]);
    const listening = (await lab.execOk('cli', ['ss', '-ltnH', `sport = :${port?.[1]}`])).stdout;
    expect(listening).toMatch(/127\.0\.0\.1:\d+/);
    expect(listening).toMatch(/\[::1\]:\d+/);
    await expectPage();
    await expectPage(`http://[${LAB.target6}]/`);
    expect(await rx.stop('SIGINT')).toMatchObject({ code: 0, killed: false });
    expect(rx.output.trim().split('\n').at(-1)).toBe('rxshuttle: Stopping.');
    await expectNothingLeft(lab);
  });
});
