// A helper with no imports, so that a vi.mock factory may load it (ssh2-public-api.test.ts).

/**
 * A view of `object` in which the field at `path` reads as undefined, everything else as it is:
 * what the capability check would find in an ssh2 that moved that field. (ssh2 itself goes on
 * using the real object.)
 */
export function without(object: object, path: readonly string[]): object {
  const [first, ...rest] = path;
  return new Proxy(object, {
    get: (target, property) => {
      const value: unknown = Reflect.get(target, property, target);
      if (property !== first) return typeof value === 'function' ? value.bind(target) : value;
      return rest.length === 0 || typeof value !== 'object' || value === null ? undefined : without(value, rest);
    },
  });
}
