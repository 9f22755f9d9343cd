import { Observable } from 'rxjs';

const ignore = () => {};

/** A readable stream as an Observable of chunks: completes on 'end' (or 'close' without it), errors on 'error'. */
export function fromReadable(stream: NodeJS.ReadableStream & { destroyed?: boolean; readableEnded?: boolean }): Observable<Buffer> {
  stream.on('error', ignore);
  return new Observable<Buffer>((subscriber) => {
    // Subscribed again after an earlier reader stopped: the end may have come meanwhile.
    if (stream.readableEnded) {
      subscriber.complete();
      return;
    }
    const onData = (chunk: Buffer | string) => subscriber.next(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
    const onEnd = () => subscriber.complete();
    const onError = (err: Error) => subscriber.error(err);
    stream.on('data', onData);
    stream.once('end', onEnd);
    stream.once('close', onEnd);
    stream.once('error', onError);
    stream.resume();
    return () => {
      stream.off('data', onData);
      stream.off('end', onEnd);
      stream.off('close', onEnd);
      stream.off('error', onError);
      // A new reader may already be listening (one reader hands the stream to the next).
      if (stream.listenerCount('data') === 0) stream.pause();
    };
  });
}
