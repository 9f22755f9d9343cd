import { Observable, type OperatorFunction } from 'rxjs';
import { ProtocolError } from '../shared/errors.js';
import { decodeDestination, encodeDestination } from './destination.js';
import { Command, commandName, type Destination, type Frame, frame, MAX_PAYLOAD } from './frame.js';

/** What the local end of a channel (a socket) reports. */
export type LocalEvent =
  | { readonly kind: 'connected' }
  | { readonly kind: 'data'; readonly chunk: Buffer }
  | { readonly kind: 'eof' }
  | { readonly kind: 'written'; readonly bytes: number }
  | { readonly kind: 'error'; readonly code: string };

/** What the channel asks of its local end. */
export type LocalAction =
  | { readonly kind: 'write'; readonly chunk: Buffer }
  | { readonly kind: 'end' }
  | { readonly kind: 'reset' }
  | { readonly kind: 'pause' }
  | { readonly kind: 'resume' };

export type ChannelInput = { readonly from: 'local'; readonly event: LocalEvent } | { readonly from: 'peer'; readonly frame: Frame };

/** How a channel ended: both sides finished, reset by either side, or the remote connect failed. */
export type CloseReason = 'done' | 'reset' | 'refused';

export type ChannelOutput =
  | { readonly to: 'peer'; readonly frame: Frame }
  | { readonly to: 'local'; readonly action: LocalAction }
  | { readonly to: 'closed'; readonly reason: CloseReason; readonly detail?: string };

export interface ChannelConfig {
  readonly id: number;
  /** The opener (client) sends OPEN; the acceptor (server) answers once its socket connects. */
  readonly role: 'opener' | 'acceptor';
  /** Unacknowledged bytes the peer accepts from us on this channel. */
  readonly sendWindow: number;
  /** Unacknowledged bytes we accept from the peer; exceeding it is a protocol violation. */
  readonly recvWindow: number;
  /** Opener only: where the acceptor should connect. */
  readonly destination?: Destination;
}

const PAUSE: LocalAction = { kind: 'pause' };
const RESUME: LocalAction = { kind: 'resume' };
const END: LocalAction = { kind: 'end' };
const RESET: LocalAction = { kind: 'reset' };

/**
 * One TCP channel as a pure state machine: local socket events and peer frames in, frames and socket
 * actions out. Credit: we send at most `sendWindow` bytes the peer has not returned; the peer's
 * CREDIT arrives as it writes them out. When credit runs out the local socket is paused, so one
 * slow reader slows only its own sender. Completes when the channel is finished; errors (ending
 * the session) when the peer breaks the protocol.
 */
export function channelMachine(config: ChannelConfig): OperatorFunction<ChannelInput, ChannelOutput> {
  return (input$) =>
    new Observable<ChannelOutput>((out) => {
      const { id, role, sendWindow, recvWindow } = config;
      let opened = false;
      let credit = sendWindow;
      const pending: Buffer[] = [];
      let paused = false;
      let localEof = false;
      let eofSent = false;
      let peerEof = false;
      let freed = 0; // flushed bytes not yet returned as credit
      let outstanding = 0; // received bytes not yet returned as credit: the peer's view of its window
      const creditThreshold = Math.max(1, Math.floor(recvWindow / 8));

      const toPeer = (command: Command, payload?: Buffer) => out.next({ to: 'peer', frame: frame(id, command, payload) });
      const toLocal = (action: LocalAction) => out.next({ to: 'local', action });
      const close = (reason: CloseReason, detail?: string) => {
        out.next(detail === undefined ? { to: 'closed', reason } : { to: 'closed', reason, detail });
        out.complete();
      };
      const violation = (what: string) => out.error(new ProtocolError(`channel ${id}: ${what}`));

      /** Sends queued bytes, oldest first, as far as credit allows; the rest waits for CREDIT. */
      const flushPending = () => {
        while (pending.length > 0 && credit > 0) {
          const head = pending[0] as Buffer;
          const n = Math.min(head.length, credit, MAX_PAYLOAD);
          toPeer(Command.DATA, head.subarray(0, n));
          credit -= n;
          if (n === head.length) pending.shift();
          else pending[0] = head.subarray(n);
        }
      };

      /** Queues behind anything already waiting (byte order), then sends what credit allows. */
      const sendData = (chunk: Buffer) => {
        pending.push(chunk);
        flushPending();
      };

      const updateFlow = () => {
        const blocked = credit <= 0 || pending.length > 0;
        if (blocked && !paused && !localEof) {
          paused = true;
          toLocal(PAUSE);
        } else if (!blocked && paused) {
          paused = false;
          toLocal(RESUME);
        }
        if (localEof && pending.length === 0 && !eofSent) {
          eofSent = true;
          toPeer(Command.EOF);
        }
        if (eofSent && peerEof) close('done');
      };

      const onLocal = (event: LocalEvent) => {
        switch (event.kind) {
          case 'connected':
            if (role === 'acceptor' && !opened) {
              opened = true;
              toPeer(Command.OPEN_OK);
            }
            return;
          case 'data':
            sendData(event.chunk);
            return updateFlow();
          case 'eof':
            localEof = true;
            return updateFlow();
          case 'written':
            freed += event.bytes;
            // Only in batches: an eager CREDIT per small write doubled the frames (and syscalls) of
            // every request/response exchange. A sender out of credit has a whole window
            // outstanding, so a batch of an eighth of it always comes back.
            if (!peerEof && freed >= creditThreshold) {
              const payload = Buffer.allocUnsafe(4);
              payload.writeUInt32BE(freed, 0);
              outstanding -= freed;
              freed = 0;
              toPeer(Command.CREDIT, payload);
            }
            return;
          case 'error':
            if (role === 'acceptor' && !opened) {
              toPeer(Command.OPEN_FAILED, Buffer.from(event.code, 'utf8'));
              return close('refused', event.code);
            }
            toPeer(Command.CLOSE, Buffer.from(event.code, 'utf8'));
            toLocal(RESET);
            return close('reset', event.code);
        }
      };

      const onPeer = ({ command, payload }: Frame) => {
        switch (command) {
          case Command.DATA:
            if (peerEof) return violation('DATA after EOF');
            if (role === 'opener' && !opened) return violation('DATA before OPEN_OK');
            outstanding += payload.length;
            if (outstanding > recvWindow) return violation(`window violation: ${outstanding} bytes outstanding, window ${recvWindow}`);
            return toLocal({ kind: 'write', chunk: payload });
          case Command.EOF:
            if (peerEof) return violation('second EOF');
            peerEof = true;
            toLocal(END);
            return updateFlow();
          case Command.CREDIT: {
            if (payload.length !== 4) return violation('malformed CREDIT');
            credit += payload.readUInt32BE(0);
            if (credit > sendWindow) return violation(`credit overflow: ${credit} exceeds window ${sendWindow}`);
            flushPending();
            return updateFlow();
          }
          case Command.OPEN_OK:
            if (role !== 'opener' || opened) return violation('unexpected OPEN_OK');
            opened = true;
            return;
          case Command.OPEN_FAILED:
            if (role !== 'opener' || opened) return violation('unexpected OPEN_FAILED');
            toLocal(RESET);
            return close('refused', payload.toString('utf8') || 'ECONNREFUSED');
          case Command.CLOSE:
            toLocal(RESET);
            return close('reset', payload.toString('utf8') || 'closed by peer');
          default:
            return violation(`unexpected ${commandName(command)}`);
        }
      };

      if (role === 'opener') {
        if (!config.destination) throw new TypeError('an opener channel needs a destination');
        toPeer(Command.OPEN, encodeDestination(config.destination));
      }
      const subscription = input$.subscribe({
        next: (input) => (input.from === 'local' ? onLocal(input.event) : onPeer(input.frame)),
        error: (err: unknown) => out.error(err),
        complete: () => {
          if (out.closed) return;
          toLocal(RESET);
          close('reset', 'session ended');
        },
      });
      return subscription;
    });
}

/** The destination an OPEN frame asks for; throws ProtocolError when malformed. */
export const openDestination = (open: Frame): Destination => decodeDestination(open.payload);
