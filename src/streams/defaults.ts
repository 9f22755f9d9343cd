/**
 * Per-channel receive window. DESIGN.md's measurements: 4–8 MiB windows cost no throughput,
 * 2 MiB cost 5–10 points on upload. Memory per channel is bounded by it.
 */
export const DEFAULT_WINDOW = 4 * 1024 * 1024;

/**
 * Bytes that may wait in the transport's write buffer before the scheduler holds back. With
 * latency control only the stream's own high-water mark (so frames wait in the scheduler, where
 * they can still be ordered fairly); without it, enough to keep the pipe full.
 */
export const BULK_QUEUE = 1024 * 1024;

/** Hello flag: the client asked for --no-latency-control; the server sizes its queue to match. */
export const FLAG_NO_LATENCY_CONTROL = 0x1;

/**
 * With latency control, DATA bytes in flight between the two schedulers (in pipes, ssh, TCP),
 * where a keystroke would queue behind bulk data unseen. Must exceed SESSION_CREDIT_BATCH.
 */
export const SESSION_WINDOW = 512 * 1024;
/** The receiver returns session credit in batches of this many DATA bytes. */
export const SESSION_CREDIT_BATCH = 64 * 1024;
/** Queued DATA bytes in a scheduler above which every reader pauses. */
export const SCHEDULER_MAX_QUEUED = 1024 * 1024;
