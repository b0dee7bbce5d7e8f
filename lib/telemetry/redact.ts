// Secret redaction that copies and never mutates what it is given.

// Keys like *PASSWORD*, *SECRET*, *KEY*, *TOKEN*, `sk`, authorization headers, credentials.
const SECRET_KEY = /pass(word)?|secret|key|token|authorization|^sk$|credential/i;
const URL_CREDENTIALS = /\b([a-z][a-z0-9+.-]*:\/\/)([^\s/@:]*)(?::([^\s/@]*))?@/gi;
export const MASK = '***';

export function isSecretKey(key: string): boolean {
  return SECRET_KEY.test(key);
}

/** Hides credentials inside URLs: scheme://user:pass@host -> scheme://user:***@host. */
export function redactString(s: string): string {
  if (!s.includes('@')) return s;
  return s.replace(URL_CREDENTIALS, (_m, scheme: string, user: string, pass?: string) =>
    pass === undefined ? `${scheme}${MASK}@` : `${scheme}${user}:${MASK}@`,
  );
}

/** A redacted deep copy (depth-limited, cycle-safe). Errors become plain objects. */
export function redact(value: unknown, depth = 0, seen: WeakSet<object> = new WeakSet()): unknown {
  if (typeof value === 'string') return redactString(value);
  if (value === null || typeof value !== 'object') return value;
  if (seen.has(value)) return '[Circular]';
  if (depth > 8) return '[Object]';
  seen.add(value);
  if (value instanceof Error) {
    const out: Record<string, unknown> = { name: value.name, message: redactString(value.message) };
    if (value.stack) out.stack = redactString(value.stack);
    const code = (value as NodeJS.ErrnoException).code;
    if (code !== undefined) out.code = code;
    return out;
  }
  if (Array.isArray(value)) return value.map((v) => redact(v, depth + 1, seen));
  if (value instanceof Date) return value.toISOString();
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    out[k] =
      isSecretKey(k) && v !== '' && v !== null && v !== undefined
        ? MASK
        : redact(v, depth + 1, seen);
  }
  return out;
}
