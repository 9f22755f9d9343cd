import createDebug from 'debug';
import { Observable, Subscription } from 'rxjs';
import { CONTROL_CHANNEL, Command, type Frame, frame } from './frame.js';

const debug = createDebug('rxshuttle:scheduler');

export interface SchedulerConfig {
  /**
   * DATA bytes that may be in flight (sent, not yet returned by the peer's session credit) across
   * all channels. It bounds what queues in pipes, ssh and TCP, where we could no longer reorder it
   * for fairness. Infinity: no limit (--no-latency-control).
   */
  readonly sessionWindow: number;
  /** Queued DATA bytes above which readers are asked to pause. */
  readonly maxQueued: number;
  /**
   * CREDIT frames sent as they come while the transport is not writable, before the rest is held
   * back and summed per channel (default CONGESTED_CREDIT_FRAMES).
   */
  readonly congestedCreditFrames?: number;
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
 * CREDIT frames that go out as they come while the transport is not writable: more than a
 * full-duplex bulk transfer returns while a 1 MiB buffer drains, so credit keeps its place in the
 * byte stream then; only a peer that sends without reading runs past it.
 */
export const CONGESTED_CREDIT_FRAMES = 128;

/** The most a CREDIT frame carries (u32). */
const MAX_CREDIT = 0xffff_ffff;

const creditFrame = (channel: number, bytes: number): Frame => {
  const payload = Buffer.allocUnsafe(4);
  payload.writeUInt32BE(bytes, 0);
  return frame(channel, Command.CREDIT, payload);
};

/**
 * Fair scheduling of frames onto the transport. DATA and EOF wait in a queue per channel and are
 * sent round-robin, one frame (at most 64 KiB) per channel per turn, while the transport is
 * writable and the session window allows; so a bulk transfer never sits in front of another
 * channel's keystroke for more than one slice. Every other frame (OPEN, CREDIT, CLOSE, control)
 * jumps the queue. Emits 'blocked' when readers should pause (too much queued) and resume.
 *
 * While the transport is not writable (the peer is not reading), what the peer's own frames make
 * us send is bounded, whatever it sends: a PONG is dropped (any byte is a sign of life; a flood of
 * PINGs must not queue echoes), and CREDIT beyond `congestedCreditFrames` is summed per channel
 * and sent, one frame per channel, once the transport is writable again.
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
    /** CREDIT held back while the transport is not writable: channel (0: session) → bytes. */
    const heldCredit = new Map<number, number>();
    const creditAllowance = config.congestedCreditFrames ?? CONGESTED_CREDIT_FRAMES;
    /** CREDIT frames sent since the transport stopped being writable. */
    let congestedCredit = 0;

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

    /** Whether a frame the transport cannot take now is dropped or folded into held credit instead. */
    const holdBack = (f: Frame): boolean => {
      if (f.command === Command.PONG) {
        debug('transport congested: dropping a PONG');
        return true;
      }
      if (f.command !== Command.CREDIT || f.payload.length !== 4) return false;
      if (congestedCredit < creditAllowance) {
        congestedCredit++;
        return false;
      }
      const bytes = f.payload.readUInt32BE(0);
      const held = heldCredit.get(f.channel) ?? 0;
      if (held + bytes > MAX_CREDIT) {
        heldCredit.set(f.channel, bytes);
        out.next({ kind: 'frame', frame: creditFrame(f.channel, held) });
      } else heldCredit.set(f.channel, held + bytes);
      return true;
    };

    const sendHeldCredit = () => {
      for (const [channel, bytes] of heldCredit) {
        heldCredit.delete(channel);
        if (out.closed) return;
        out.next({ kind: 'frame', frame: creditFrame(channel, bytes) });
      }
    };

    const onFrame = (f: Frame) => {
      if (!queuesInOrder(f)) {
        if (!writable && holdBack(f)) return;
        if (f.command === Command.CLOSE || f.command === Command.OPEN_FAILED) {
          dropQueue(f.channel);
          heldCredit.delete(f.channel);
        }
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
        if (writable) {
          congestedCredit = 0;
          sendHeldCredit();
        }
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
