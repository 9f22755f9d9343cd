import { Observable } from 'rxjs';

const ignore = () => {};

/** A readable stream as an Observable of chunks: completes on 'end' (or 'close' without it), errors on 'error'. */
export function fromReadable(stream: NodeJS.ReadableStream & { destroyed?: boolean }): Observable<Buffer> {
  stream.on('error', ignore);
  return new Observable<Buffer>((subscriber) => {
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
      stream.pause();
    };
  });
}
