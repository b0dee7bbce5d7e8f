// Secret redaction that copies and never mutates what it is given.

// Keys like *PASSWORD*, *SECRET*, *KEY*, *TOKEN*, `sk`, authorization headers, credentials.
const SECRET_KEY = /pass(word)?|secret|key|token|authorization|^sk$|credential/i;
const URL_CREDENTIALS = /\b([a-z][a-z0-9+.-]*:\/\/)([^\s/@:]*)(?::([^\s/@]*))?@/gi;
// A query-string (or fragment: OAuth's implicit flow) parameter: `?name=value`, `&name=value`.
// The value ends where a URL, a quoted string or the service's comma-joined messages end.
const QUERY_PARAM = /([?&;#])([^=&#?;\s"'<>,]+)=([^&#;\s"'<>,]*)/g;
// Parameter names that carry a credential, compared lowercased without `-`, `_` and `.`:
// token, access_token, X-Amz-Security-Token, key, api_key, apikey, AccessKeyId, sk, secret,
// client_secret, password, passwd, pwd, signature, sig, X-Amz-Signature, X-Amz-Credential,
// auth, authorization, session_id ...
const CREDENTIAL_PARAM =
  /(token|key|keyid|^sk|secret|passw(or)?d|^pwd|^pass|signature|^sig|auth|authorization|credentials?|sessionid)$/;
export const MASK = '***';

export function isSecretKey(key: string): boolean {
  return SECRET_KEY.test(key);
}

/** Whether a URL query parameter of this name carries a credential. */
export function isCredentialParam(name: string): boolean {
  let decoded = name;
  try {
    decoded = decodeURIComponent(name);
  } catch {
    /* not percent-encoded text: compare it as it is */
  }
  return CREDENTIAL_PARAM.test(decoded.toLowerCase().replace(/[-_.]/g, ''));
}

/**
 * Hides credentials inside URLs: scheme://user:pass@host -> scheme://user:***@host, and the
 * values of credential query parameters: ?token=abc&x=1 -> ?token=***&x=1.
 */
export function redactString(s: string): string {
  let out = s;
  if (out.includes('@')) {
    out = out.replace(URL_CREDENTIALS, (_m, scheme: string, user: string, pass?: string) =>
      pass === undefined ? `${scheme}${MASK}@` : `${scheme}${user}:${MASK}@`,
    );
  }
  if (out.includes('=')) {
    // Punctuation closing the value is the sentence's (`GET <url>: 401`), kept visible.
    out = out.replace(QUERY_PARAM, (m, sep: string, name: string, value: string) => {
      if (value === '' || !isCredentialParam(name)) return m;
      const tail = /[:.)\]]+$/.exec(value)?.[0] ?? '';
      return `${sep}${name}=${MASK}${tail}`;
    });
  }
  return out;
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
