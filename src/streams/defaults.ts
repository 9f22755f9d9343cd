/**
 * Per-channel receive window. DESIGN.md's measurements: 4–8 MiB windows cost no throughput,
 * 2 MiB cost 5–10 points on upload. Memory per channel is bounded by it.
 */
export const DEFAULT_WINDOW = 4 * 1024 * 1024;
