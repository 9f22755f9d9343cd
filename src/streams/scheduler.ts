import { Observable, Subscription } from 'rxjs';
import { Command, CONTROL_CHANNEL, type Frame } from './frame.js';

export interface SchedulerConfig {
  /**
   * DATA bytes that may be in flight (sent, not yet returned by the peer's session credit) across
   * all channels. It bounds what queues in pipes, ssh and TCP, where we could no longer reorder it
   * for fairness. Infinity: no limit (--no-latency-control).
   */
  readonly sessionWindow: number;
  /** Queued DATA bytes above which readers are asked to pause. */
  readonly maxQueued: number;
}

export interface SchedulerInputs {
  /** Frames from every channel, in the order they were produced. */
  readonly frames$: Observable<Frame>;
  /** Whether the transport takes more now (false while its buffer is over its limit). */
  readonly writable$: Observable<boolean>;
  /** Session credit the peer returned (bytes of DATA it has received). */
  readonly credit$: Observable<number>;
}

export type SchedulerOutput = { readonly kind: 'frame'; readonly frame: Frame } | { readonly kind: 'blocked'; readonly blocked: boolean };

const queuesInOrder = (f: Frame) => f.channel !== CONTROL_CHANNEL && (f.command === Command.DATA || f.command === Command.EOF);

/**
 * Fair scheduling of frames onto the transport. DATA and EOF wait in a queue per channel and are
 * sent round-robin, one frame (at most 64 KiB) per channel per turn, while the transport is
 * writable and the session window allows; so a bulk transfer never sits in front of another
 * channel's keystroke for more than one slice. Every other frame (OPEN, CREDIT, CLOSE, control)
 * jumps the queue. Emits 'blocked' when readers should pause (too much queued) and resume.
 */
export function schedule(config: SchedulerConfig, inputs: SchedulerInputs): Observable<SchedulerOutput> {
  return new Observable<SchedulerOutput>((out) => {
    const queues = new Map<number, Frame[]>();
    const ring: number[] = [];
    let queued = 0;
    let inFlight = 0;
    let writable = true;
    let blocked = false;
    let pumping = false;

    const updateBlocked = () => {
      const next = queued > config.maxQueued;
      if (next !== blocked) {
        blocked = next;
        out.next({ kind: 'blocked', blocked });
      }
    };

    const pump = () => {
      if (pumping) return;
      pumping = true;
      while (writable && ring.length > 0 && inFlight < config.sessionWindow && !out.closed) {
        const channel = ring.shift() as number;
        const queue = queues.get(channel) as Frame[];
        const f = queue.shift() as Frame;
        if (queue.length > 0) ring.push(channel);
        else queues.delete(channel);
        queued -= f.payload.length;
        if (f.command === Command.DATA) inFlight += f.payload.length;
        out.next({ kind: 'frame', frame: f });
      }
      pumping = false;
      updateBlocked();
    };

    /** A channel that is reset or refused will never want its queued data sent. */
    const dropQueue = (channel: number) => {
      const queue = queues.get(channel);
      if (!queue) return;
      for (const f of queue) queued -= f.payload.length;
      queues.delete(channel);
      const at = ring.indexOf(channel);
      if (at >= 0) ring.splice(at, 1);
      updateBlocked();
    };

    const onFrame = (f: Frame) => {
      if (!queuesInOrder(f)) {
        if (f.command === Command.CLOSE || f.command === Command.OPEN_FAILED) dropQueue(f.channel);
        out.next({ kind: 'frame', frame: f });
        return;
      }
      const queue = queues.get(f.channel);
      if (queue) queue.push(f);
      else {
        queues.set(f.channel, [f]);
        ring.push(f.channel);
      }
      queued += f.payload.length;
      pump();
    };

    const subscriptions = new Subscription();
    subscriptions.add(inputs.writable$.subscribe({
      next: (value) => {
        writable = value;
        pump();
      },
      error: (err: unknown) => out.error(err),
    }));
    subscriptions.add(
      inputs.credit$.subscribe({
        next: (bytes) => {
          inFlight = Math.max(0, inFlight - bytes);
          pump();
        },
        error: (err: unknown) => out.error(err),
      }),
    );
    subscriptions.add(
      inputs.frames$.subscribe({
        next: onFrame,
        error: (err: unknown) => out.error(err),
        complete: () => out.complete(),
      }),
    );
    return subscriptions;
  });
}
