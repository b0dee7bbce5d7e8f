// The host's IPv4 address, found two ways: the sid's (the interface that routes to 8.8.8.8, as
// the original asks; async, a UDP socket) and the OTLP `server_host` label's (the first
// non-internal interface; sync, no socket). The first falls back to the second.
import dgram from 'node:dgram';
import { networkInterfaces } from 'node:os';

/**
 * The first non-internal IPv4 address, else 127.0.0.1: the OTLP `server_host` label (the
 * original asked the routing table for 8.8.8.8 over UDP; reading the interfaces needs no socket).
 */
export function localIPv4(): string {
  for (const addrs of Object.values(networkInterfaces())) {
    for (const a of addrs ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  }
  return '127.0.0.1';
}

/**
 * The address of the interface that would route to 8.8.8.8 (a UDP "connect" sends nothing),
 * as the original does; falls back to the first non-internal IPv4 address, then 127.0.0.1.
 */
export async function detectLocalIp(timeoutMs = 500): Promise<string> {
  const viaRoute = await new Promise<string | null>((resolve) => {
    const sock = dgram.createSocket('udp4');
    const done = (ip: string | null) => {
      clearTimeout(timer);
      try {
        sock.close();
      } catch {
        /* already closed */
      }
      resolve(ip);
    };
    const timer = setTimeout(() => done(null), timeoutMs);
    sock.once('error', () => done(null));
    try {
      sock.connect(80, '8.8.8.8', () => {
        try {
          done(sock.address().address);
        } catch {
          done(null);
        }
      });
    } catch {
      done(null);
    }
  });
  if (viaRoute && viaRoute !== '0.0.0.0') return viaRoute;
  return localIPv4();
}
