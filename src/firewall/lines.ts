/**
 * Splits a byte stream into '\n'-terminated lines with a length bound, so a peer that never
 * sends a newline cannot make the other side buffer without limit.
 */

/** Stands for a line longer than the bound; the rest of that line is skipped. */
export const LINE_TOO_LONG: unique symbol = Symbol('line too long');
export type LineItem = string | typeof LINE_TOO_LONG;

export class LineSplitter {
  #parts: Buffer[] = [];
  #size = 0;
  #skipping = false;

  constructor(public maxBytes: number) {}

  /** Feeds one chunk; returns the lines it completed (without the '\n'), in order. */
  push(chunk: Buffer): LineItem[] {
    const items: LineItem[] = [];
    let start = 0;
    while (start < chunk.length) {
      const nl = chunk.indexOf(0x0a, start);
      const end = nl < 0 ? chunk.length : nl;
      if (this.#skipping) {
        if (nl >= 0) this.#skipping = false;
      } else if (this.#size + (end - start) > this.maxBytes) {
        items.push(LINE_TOO_LONG);
        this.#parts = [];
        this.#size = 0;
        this.#skipping = nl < 0;
      } else {
        this.#parts.push(chunk.subarray(start, end));
        this.#size += end - start;
        if (nl >= 0) {
          items.push(Buffer.concat(this.#parts, this.#size).toString('utf8'));
          this.#parts = [];
          this.#size = 0;
        }
      }
      if (nl < 0) break;
      start = nl + 1;
    }
    return items;
  }

  /** Bytes of an unterminated line held back (a partial line at end of stream is dropped). */
  get pending(): number {
    return this.#size;
  }
}
