import { QUEUED_DATAGRAM_OVERHEAD } from './udp.js';

/** Why a datagram was not queued: its flow has its share waiting, or all flows together have. */
export type QueueRefusal = 'flow-queue-full' | 'queue-full';

interface FlowQueue {
  readonly datagrams: Buffer[];
  bytes: number;
}

const cost = (datagram: Buffer) => datagram.length + QUEUED_DATAGRAM_OVERHEAD;

/**
 * Datagrams waiting for the tunnel to take more, one queue per flow, bounded per flow and in
 * total; `take` serves the flows round-robin, one datagram per flow per turn, so one flow's burst
 * never sits in front of another flow's next datagram for longer than one datagram. Nothing here
 * grows without bound: a datagram that does not fit is refused, and the caller drops it.
 */
export class DatagramQueues {
  readonly #queues = new Map<number, FlowQueue>();
  /** Flows with something waiting, in the order they get their next turn. */
  readonly #turns: number[] = [];
  #bytes = 0;

  constructor(
    readonly maxFlowBytes: number,
    readonly maxBytes: number,
  ) {}

  /** Queues the datagram, or says why not (it is not kept then). */
  offer(flow: number, datagram: Buffer): QueueRefusal | undefined {
    const bytes = cost(datagram);
    const queue = this.#queues.get(flow);
    if ((queue?.bytes ?? 0) + bytes > this.maxFlowBytes) return 'flow-queue-full';
    if (this.#bytes + bytes > this.maxBytes) return 'queue-full';
    if (queue) {
      queue.datagrams.push(datagram);
      queue.bytes += bytes;
    } else {
      this.#queues.set(flow, { datagrams: [datagram], bytes });
      this.#turns.push(flow);
    }
    this.#bytes += bytes;
    return undefined;
  }

  /** The next datagram in turn, or undefined when nothing waits. */
  take(): { readonly flow: number; readonly datagram: Buffer } | undefined {
    const flow = this.#turns.shift();
    if (flow === undefined) return undefined;
    const queue = this.#queues.get(flow) as FlowQueue;
    const datagram = queue.datagrams.shift() as Buffer;
    queue.bytes -= cost(datagram);
    this.#bytes -= cost(datagram);
    if (queue.datagrams.length > 0) this.#turns.push(flow);
    else this.#queues.delete(flow);
    return { flow, datagram };
  }

  /** Forgets what a flow had waiting (it closed); returns how many datagrams that was. */
  discard(flow: number): number {
    const queue = this.#queues.get(flow);
    if (!queue) return 0;
    this.#queues.delete(flow);
    this.#bytes -= queue.bytes;
    this.#turns.splice(this.#turns.indexOf(flow), 1);
    return queue.datagrams.length;
  }

  /** Bytes waiting, overhead included (what the bounds count). */
  get bytes(): number {
    return this.#bytes;
  }

  flowBytes(flow: number): number {
    return this.#queues.get(flow)?.bytes ?? 0;
  }
}
