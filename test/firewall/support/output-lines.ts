import type { Readable } from 'node:stream';

/** The helper's output line by line: `nextLine()` waits for the next line not yet taken. */
export function outputLines(output: Readable): { readonly received: string[]; nextLine(): Promise<string> } {
  const received: string[] = [];
  const waiters: Array<() => void> = [];
  let buffered = '';
  output.on('data', (chunk: Buffer) => {
    buffered += chunk.toString();
    let nl: number;
    while ((nl = buffered.indexOf('\n')) >= 0) {
      received.push(buffered.slice(0, nl));
      buffered = buffered.slice(nl + 1);
      waiters.splice(0).forEach((w) => w());
    }
  });
  let read = 0;
  return {
    received,
    async nextLine() {
      while (read >= received.length) await new Promise<void>((r) => waiters.push(r));
      return received[read++] as string;
    },
  };
}
