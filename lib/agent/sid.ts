// Per-request trace ids in the original's layout (spec 11.1):
//   {sub}{pid:04x}{index:04x}@{location}{ts11}{ip4hex}{port2}2
// The original never increments `index` (defect D6), so two ids of one process in the same
// millisecond collide; here `index` is a per-generator counter (16 bits, wrapping), which keeps
// the layout and makes ids unique per process up to 65536 a millisecond.

export interface SidOptions {
  /** SERVICE_SUB */
  sub: string;
  /** SERVICE_LOCATION */
  location: string;
  /** SERVICE_PORT (the first two characters are used) */
  port: number | string;
  /** The local IPv4 address (see detectLocalIp in lib/telemetry/host.ts). */
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
