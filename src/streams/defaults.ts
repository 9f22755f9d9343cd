/**
 * Per-channel receive window. DESIGN.md's measurements: 4–8 MiB windows cost no throughput,
 * 2 MiB cost 5–10 points on upload. Memory per channel is bounded by it.
 */
export const DEFAULT_WINDOW = 4 * 1024 * 1024;

/**
 * Bytes that may wait in the transport's write buffer before every reader pauses. With latency
 * control only the stream's own high-water mark (so an interactive frame never queues behind
 * much bulk data); without it, enough to keep the pipe full.
 */
export const LATENCY_CONTROL_QUEUE = 0;
export const BULK_QUEUE = 1024 * 1024;

/** Hello flag: the client asked for --no-latency-control; the server sizes its queue to match. */
export const FLAG_NO_LATENCY_CONTROL = 0x1;
