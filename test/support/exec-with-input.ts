import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

/**
 * Runs `file` with `input` on its stdin; resolves with stdout, rejects as execFile does. A program
 * that exits before reading its stdin (`nft list …`, a failing restore) makes the write fail with
 * EPIPE: that is not a failure of the test, the exit status and stderr tell what happened.
 */
export async function execWithInput(
  file: string,
  args: readonly string[],
  input = '',
  options: { maxBuffer?: number } = {},
): Promise<string> {
  const running = execFileP(file, args, { maxBuffer: options.maxBuffer ?? 16 * 1024 * 1024 });
  running.child.stdin?.on('error', () => undefined);
  running.child.stdin?.end(input);
  return (await running).stdout;
}
