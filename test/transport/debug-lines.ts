import { format } from 'node:util';
import createDebug from 'debug';

/**
 * Collects what `namespaces` (debug) print from now on, instead of printing it; `stop` puts
 * debug back as it was.
 */
export function captureDebug(namespaces: string): { readonly lines: string[]; stop(): void } {
  const lines: string[] = [];
  const log = createDebug.log;
  const enabled = createDebug.disable();
  createDebug.log = (...args: unknown[]) => void lines.push(format(...args));
  createDebug.enable(namespaces);
  return {
    lines,
    stop() {
      createDebug.log = log;
      createDebug.disable();
      if (enabled) createDebug.enable(enabled);
    },
  };
}
