import { describe, expect, it } from 'vitest';
import { DatagramQueues } from '../../src/streams/datagram-queues.js';
import { QUEUED_DATAGRAM_OVERHEAD } from '../../src/streams/udp.js';

describe('DatagramQueues', () => {
  const cost = (n: number) => n + QUEUED_DATAGRAM_OVERHEAD;

  it('serves flows round-robin, one datagram per flow per turn, each flow in order', () => {
    const queues = new DatagramQueues(10_000, 10_000);
    for (const [flow, text] of [[1, 'a1'], [1, 'a2'], [1, 'a3'], [2, 'b1'], [3, 'c1'], [2, 'b2']] as const) {
      expect(queues.offer(flow, Buffer.from(text))).toBeUndefined();
    }
    const order: string[] = [];
    for (let next = queues.take(); next; next = queues.take()) order.push(next.datagram.toString());
    expect(order).toEqual(['a1', 'b1', 'c1', 'a2', 'b2', 'a3']);
    expect(queues.bytes).toBe(0);
  });

  it('refuses what would pass the per-flow or the total bound, counting the overhead', () => {
    const queues = new DatagramQueues(cost(10) * 2, cost(10) * 3);
    expect(queues.offer(1, Buffer.alloc(10))).toBeUndefined();
    expect(queues.offer(1, Buffer.alloc(10))).toBeUndefined();
    expect(queues.offer(1, Buffer.alloc(0))).toBe('flow-queue-full');
    expect(queues.offer(2, Buffer.alloc(10))).toBeUndefined();
    expect(queues.offer(3, Buffer.alloc(0))).toBe('queue-full');
    expect(queues.bytes).toBe(cost(10) * 3);
    expect(queues.flowBytes(1)).toBe(cost(10) * 2);
  });

  it('discard forgets a flow and frees its share', () => {
    const queues = new DatagramQueues(10_000, 10_000);
    queues.offer(1, Buffer.from('a'));
    queues.offer(2, Buffer.from('b'));
    queues.offer(2, Buffer.from('c'));
    expect(queues.discard(2)).toBe(2);
    expect(queues.discard(2)).toBe(0);
    expect(queues.bytes).toBe(cost(1));
    expect(queues.take()).toEqual({ flow: 1, datagram: Buffer.from('a') });
    expect(queues.take()).toBeUndefined();
  });
});
