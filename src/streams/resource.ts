import { Observable } from 'rxjs';

/**
 * Something opened asynchronously (a listening server, bound sockets) as an Observable: emits it
 * once open, errors if opening fails; unsubscribing closes it, even while it is still opening.
 */
export function resource$<T>(open: () => Promise<T>, close: (opened: T) => void): Observable<T> {
  return new Observable<T>((subscriber) => {
    let opened: { readonly value: T } | null = null;
    let unsubscribed = false;
    open().then(
      (value) => {
        if (unsubscribed) return close(value);
        opened = { value };
        subscriber.next(value);
      },
      (err: unknown) => subscriber.error(err),
    );
    return () => {
      unsubscribed = true;
      if (opened) close(opened.value);
    };
  });
}
