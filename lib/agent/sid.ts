// Per-request trace ids in the original's layout (spec 11.1):
//   {sub}{pid:04x}{index:04x}@{location}{ts11}{ip4hex}{port2}2
// The original never increments `index` (defect D6), so two ids of one process in the same
// millisecond collide; here `index` is a per-generator counter (16 bits, wrapping), which keeps
// the layout and makes ids unique per process up to 65536 a millisecond.
import dgram from 'node:dgram';
import os from 'node:os';

export interface SidOptions {
  /** SERVICE_SUB */
  sub: string;
  /** SERVICE_LOCATION */
  location: string;
  /** SERVICE_PORT (the first two characters are used) */
  port: number | string;
  /** The local IPv4 address (see detectLocalIp). */
  ip: string;
  pid?: number;
  now?: () => number;
}

const hex = (n: number, width: number) => n.toString(16).padStart(width, '0');

export class SidGenerator {
  private index = 0;
  private readonly prefix: string;
  private readonly suffix: string;
  private readonly location: string;
  private readonly now: () => number;

  constructor(opts: SidOptions) {
    const pid = (opts.pid ?? process.pid) & 0xff;
    this.prefix = `${opts.sub}${hex(pid, 4)}`;
    this.now = opts.now ?? Date.now;
    const octets = opts.ip.split('.').map((o) => Number(o));
    const [c, d] =
      octets.length === 4 && octets.every((o) => Number.isInteger(o) && o >= 0 && o <= 255)
        ? octets.slice(2)
        : [0, 0];
    this.suffix = `${hex(c!, 2)}${hex(d!, 2)}${String(opts.port).slice(0, 2)}2`;
    this.location = opts.location;
  }

  next(): string {
    const index = this.index;
    this.index = (this.index + 1) & 0xffff;
    const ts = hex(this.now(), 11).slice(-11);
    return `${this.prefix}${hex(index, 4)}@${this.location}${ts}${this.suffix}`;
  }
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
  for (const list of Object.values(os.networkInterfaces())) {
    for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  }
  return '127.0.0.1';
}
