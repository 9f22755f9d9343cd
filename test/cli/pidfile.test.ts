// The pid file: written atomically, a stale one replaced, a live one refused, removed only by
// its owner.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { checkPidfile, PidfileError, readPidfile, removePidfile, writePidfile } from '../../src/cli/pidfile.js';

let dir: string;
let file: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rxs-pid-'));
  file = path.join(dir, 'rxshuttle.pid');
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

/** The pid of a process that has exited (and been reaped): nobody has it right now. */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', '0']);
  await new Promise((r) => child.once('exit', r));
  return child.pid as number;
}

describe('pid file', () => {
  it('writes the pid with a newline, returns the absolute path, and leaves no temporary file', () => {
    const written = writePidfile(path.relative(process.cwd(), file), 1234);
    expect(written).toBe(file);
    expect(fs.readFileSync(file, 'utf8')).toBe('1234\n');
    expect(readPidfile(file)).toBe(1234);
    expect(fs.readdirSync(dir)).toEqual(['rxshuttle.pid']);
  });

  it('replaces a stale file (its process is gone) and one that holds no pid', async () => {
    fs.writeFileSync(file, `${await deadPid()}\n`);
    expect(() => checkPidfile(file)).not.toThrow();
    writePidfile(file, process.pid);
    expect(readPidfile(file)).toBe(process.pid);
    fs.writeFileSync(file, 'garbage');
    writePidfile(file, process.pid);
    expect(readPidfile(file)).toBe(process.pid);
  });

  it('refuses when the file names another running process, and leaves it alone', () => {
    const other = process.ppid;
    fs.writeFileSync(file, `${other}\n`);
    expect(() => checkPidfile(file)).toThrow(PidfileError);
    expect(() => writePidfile(file, process.pid)).toThrow(/belongs to process \d+, which is still running/);
    expect(readPidfile(file)).toBe(other);
    expect(fs.readdirSync(dir)).toEqual(['rxshuttle.pid']);
    // …but our own pid in it is no conflict (a restart of the same process)
    fs.writeFileSync(file, `${process.pid}\n`);
    expect(() => checkPidfile(file)).not.toThrow();
  });

  it('is removed only by the process it names', () => {
    writePidfile(file, 4321);
    expect(removePidfile(file, 1111)).toBe(false);
    expect(fs.existsSync(file)).toBe(true);
    expect(removePidfile(file, 4321)).toBe(true);
    expect(fs.existsSync(file)).toBe(false);
    expect(removePidfile(file, 4321)).toBe(false);
  });

  it('reports a directory it cannot write to', () => {
    expect(() => writePidfile(path.join(dir, 'missing', 'x.pid'))).toThrow(/cannot write pid file .*ENOENT/);
  });
});
