/** Output of one remote command that we read at most (a hostile server may send without end). */
export const MAX_EXEC_OUTPUT = 4 * 1024 * 1024;

export interface ExecResult {
  readonly stdout: string;
  readonly code: number | null;
  /** Output beyond MAX_EXEC_OUTPUT was dropped. */
  readonly cut: boolean;
}

/** A command's stdout, kept up to MAX_EXEC_OUTPUT bytes (the ssh2 exec channel and the ssh binary alike). */
export class ExecOutput {
  private readonly chunks: Buffer[] = [];
  private size = 0;
  private cut = false;

  add(chunk: Buffer): void {
    const kept = chunk.subarray(0, Math.max(0, MAX_EXEC_OUTPUT - this.size));
    this.cut ||= kept.length < chunk.length;
    if (kept.length === 0) return;
    // Copied: a chunk may be a view of memory that is reused (ssh2's read slabs).
    this.chunks.push(Buffer.from(kept));
    this.size += kept.length;
  }

  result(code: number | null): ExecResult {
    return { stdout: Buffer.concat(this.chunks, this.size).toString('utf8'), code, cut: this.cut };
  }
}
