// Plain-object helpers for values decoded from JSON (a request body, an upstream's answer, an IPC
// message): the one test of "a JSON object", and a property write that is safe for "__proto__".

/** A JSON object: not null, not an array, not raw bytes. */
export function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !Buffer.isBuffer(v);
}

/** Sets an own property, also for the key "__proto__" (JSON may carry it; never a prototype). */
export function setOwn(obj: Record<string, unknown>, key: string, value: unknown): void {
  if (key === '__proto__')
    Object.defineProperty(obj, key, {
      value,
      enumerable: true,
      writable: true,
      configurable: true,
    });
  else obj[key] = value;
}
