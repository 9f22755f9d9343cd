// The syslog client against real Unix sockets: a datagram receiver (what rsyslog and journald
// listen on at /dev/log) and a stream one (some syslog-ng setups), both made with koffi here
// since Node has no Unix datagram sockets.
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import koffi from 'koffi';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Facility, formatMessage, openSyslog, sockaddrUn } from '../../src/cli/syslog.js';
import { waitUntil } from '../support/wait-until.js';

const AF_UNIX = 1;
const SOCK_DGRAM = 2;
const MSG_DONTWAIT = 0x40;

const lib = koffi.load('libc.so.6');
const socket = lib.func('int socket(int domain, int type, int protocol)') as (d: number, t: number, p: number) => number;
const bind = lib.func('int bind(int fd, const uint8_t *addr, uint32_t len)') as (fd: number, a: Buffer, l: number) => number;
const recv = lib.func('long recv(int fd, _Out_ uint8_t *buf, size_t len, int flags)') as (
  fd: number,
  b: Buffer,
  l: number,
  f: number,
) => number;
const close = lib.func('int close(int fd)') as (fd: number) => number;

/** A bound datagram socket; `take()` returns every datagram received so far. */
function dgramReceiver(file: string) {
  const fd = socket(AF_UNIX, SOCK_DGRAM, 0);
  const addr = sockaddrUn(file);
  if (fd < 0 || bind(fd, addr, addr.length) !== 0) throw new Error(`cannot bind ${file}: errno ${koffi.errno()}`);
  return {
    take(): string[] {
      const got: string[] = [];
      const buf = Buffer.alloc(65536);
      for (;;) {
        const n = recv(fd, buf, buf.length, MSG_DONTWAIT);
        if (n < 0) return got;
        got.push(buf.subarray(0, n).toString('utf8'));
      }
    },
    close: () => close(fd),
  };
}

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rxs-syslog-'));
});
afterEach(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('formatMessage', () => {
  it('writes RFC 3164 as glibc does: <PRI>Mmm dd hh:mm:ss TAG[PID]: MESSAGE', () => {
    const date = new Date(2024, 2, 5, 7, 8, 9);
    expect(formatMessage(Facility.daemon, 'info', 'rxshuttle', 4242, 'Connected to lab.', date)).toBe(
      '<30>Mar  5 07:08:09 rxshuttle[4242]: Connected to lab.',
    );
    expect(formatMessage(Facility.daemon, 'err', 'rxshuttle', 1, 'x', new Date(2024, 11, 25, 23, 59, 0))).toBe(
      '<27>Dec 25 23:59:00 rxshuttle[1]: x',
    );
    expect(formatMessage(Facility.user, 'warning', 't', 1, 'x', date).startsWith('<12>')).toBe(true);
  });

  it('keeps one message on one line: control characters cannot forge a second entry', () => {
    const line = formatMessage(Facility.daemon, 'info', 'rxshuttle', 7, 'a\nb\r\u0000c\u001b[31m', new Date(2024, 0, 1));
    expect(line).toBe('<30>Jan  1 00:00:00 rxshuttle[7]: a b c [31m');
  });
});

describe('openSyslog', () => {
  it('sends each message as one datagram with the tag and pid', () => {
    const file = path.join(dir, 'log');
    const receiver = dgramReceiver(file);
    try {
      const syslog = openSyslog({ tag: 'rxshuttle', path: file });
      expect(syslog.log('info', 'Connected to lab.')).toBe(true);
      expect(syslog.log('err', 'connection to lab lost')).toBe(true);
      syslog.close();
      const got = receiver.take();
      expect(got).toHaveLength(2);
      expect(got[0]).toMatch(new RegExp(`^<30>\\w{3} [ \\d]\\d \\d\\d:\\d\\d:\\d\\d rxshuttle\\[${process.pid}\\]: Connected to lab\\.$`));
      expect(got[1]).toMatch(new RegExp(`^<27>.* rxshuttle\\[${process.pid}\\]: connection to lab lost$`));
    } finally {
      receiver.close();
    }
  });

  it('without a syslog daemon: log() says false and why, never throws; finds a daemon started later', () => {
    const file = path.join(dir, 'log');
    const syslog = openSyslog({ tag: 'rxshuttle', path: file, pid: 99 });
    expect(syslog.log('info', 'lost')).toBe(false);
    expect(syslog.lastError).toBe('ENOENT');
    const receiver = dgramReceiver(file);
    try {
      expect(syslog.log('info', 'found')).toBe(true);
      expect(syslog.lastError).toBeNull();
      expect(receiver.take()).toEqual([expect.stringMatching(/ rxshuttle\[99\]: found$/)]);
      // The daemon restarts (a new socket at the same path): the next message reconnects.
      receiver.close();
      fs.rmSync(file);
      const again = dgramReceiver(file);
      try {
        expect(syslog.log('info', 'after restart')).toBe(true);
        expect(again.take()).toEqual([expect.stringMatching(/after restart$/)]);
      } finally {
        again.close();
      }
    } finally {
      syslog.close();
    }
  });

  it('cuts overlong messages instead of failing', () => {
    const file = path.join(dir, 'log');
    const receiver = dgramReceiver(file);
    try {
      const syslog = openSyslog({ tag: 'rxshuttle', path: file });
      expect(syslog.log('info', 'x'.repeat(100_000))).toBe(true);
      const [got] = receiver.take();
      expect(got?.length).toBe(4096);
      syslog.close();
    } finally {
      receiver.close();
    }
  });

  it('speaks to a stream socket too, each message ending with a NUL byte (as glibc does)', async () => {
    const file = path.join(dir, 'log');
    const received: Buffer[] = [];
    const server = net.createServer((s) => s.on('data', (d: Buffer) => received.push(d)));
    await new Promise<void>((resolve) => server.listen(file, resolve));
    try {
      const syslog = openSyslog({ tag: 'rxshuttle', path: file, pid: 5 });
      expect(syslog.log('notice', 'one')).toBe(true);
      expect(syslog.log('notice', 'two')).toBe(true);
      await waitUntil(() => Buffer.concat(received).toString().split('\0').length >= 3, { what: 'both messages at the socket' });
      syslog.close();
      const parts = Buffer.concat(received).toString().split('\0');
      expect(parts).toEqual([expect.stringMatching(/^<29>.* rxshuttle\[5\]: one$/), expect.stringMatching(/rxshuttle\[5\]: two$/), '']);
    } finally {
      server.close();
    }
  });
});

describe('cliOutput', () => {
  it('writes to stderr until switched to syslog; falls back to stderr when syslog cannot take a line', async () => {
    const { cliOutput } = await import('../../src/cli/output.js');
    const file = path.join(dir, 'log');
    let stderr = '';
    const output = cliOutput((text) => (stderr += text), file);
    output.say('before');
    expect(stderr).toBe('rxshuttle: before\n');
    // no syslog yet: a warning to show, and lines stay on stderr
    expect(output.toSyslog()).toMatch(/^cannot log to syslog: no .*log \(no such file\); is a syslog daemon running\?$/);
    output.say('still here', 'warning');
    expect(stderr).toBe('rxshuttle: before\nrxshuttle: still here\n');
    const receiver = dgramReceiver(file);
    try {
      output.say('to syslog', 'err');
      expect(stderr).toBe('rxshuttle: before\nrxshuttle: still here\n');
      expect(receiver.take()).toEqual([expect.stringMatching(new RegExp(`^<27>.* rxshuttle\\[${process.pid}\\]: to syslog$`))]);
      output.toStderr();
      output.say('back');
      expect(stderr.endsWith('rxshuttle: back\n')).toBe(true);
    } finally {
      receiver.close();
    }
  });
});
