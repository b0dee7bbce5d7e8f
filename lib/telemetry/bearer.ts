// The metrics token check, shared by the service port and METRICS_PORT. A module of its own so
// that node:crypto is loaded where a token is checked, not by every process holding a registry
// (the primary's idle memory).
import { createHash, timingSafeEqual } from 'node:crypto';

/** `Authorization: Bearer <token>`, compared in constant time. */
export function bearerOk(header: string | undefined, token: string): boolean {
  if (!header) return false;
  const m = /^Bearer\s+(.+)$/i.exec(header.trim());
  if (!m) return false;
  const a = createHash('sha256').update(m[1]!).digest();
  const b = createHash('sha256').update(token).digest();
  return timingSafeEqual(a, b);
}
