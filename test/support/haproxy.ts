// A real HAProxy in front of several instances, for the scale-out tests: the configuration is
// generated here (the README's "Scaling out" example is this function's output, checked by the
// scale-out test), haproxy runs in the foreground as a child of the test and is stopped by its
// pid, server state changes are read from its stderr as they happen and counters from its stats
// socket.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { dirname, join } from 'node:path';
import { ROOT, tempDir } from './service.js';

export interface HaproxyServer {
  name: string;
  host: string;
  port: number;
}

export interface HaproxyOptions {
  bind: string;
  servers: HaproxyServer[];
  /** Unix socket for `show stat`; omitted from the config when not given. */
  statsSocket?: string;
  /** Health-check timing in ms: how often, and how many failures/successes change the state. */
  inter?: number;
  fall?: number;
  rise?: number;
  /** Longest SSE stream or WebSocket chat expected, in seconds (idle gaps never exceed it). */
  longestStreamSeconds?: number;
}

/** The HAProxy configuration the scale-out test runs (and the README shows). */
export function haproxyConfig(o: HaproxyOptions): string {
  const inter = o.inter ?? 2000;
  const fall = o.fall ?? 1;
  const rise = o.rise ?? 2;
  const stream = o.longestStreamSeconds ?? 600;
  const lines = [
    'global',
    '  maxconn 4096',
    ...(o.statsSocket ? [`  stats socket ${o.statsSocket} mode 600 level admin`] : []),
    '',
    'defaults',
    '  mode http',
    '  timeout connect 2s',
    '  # An SSE stream is one response and a WebSocket chat one tunnel: these bound the silence',
    '  # between two reads, so keep them above the longest stream. HAProxy does not buffer',
    '  # responses (no compression here): every SSE event is passed on as it comes.',
    `  timeout client ${stream}s`,
    `  timeout server ${stream}s`,
    `  timeout tunnel ${stream}s`,
    '  timeout http-request 10s',
    '  timeout http-keep-alive 60s',
    '  timeout queue 10s',
    '  # A stopping instance refuses new connections at once and closes its idle keep-alive',
    '  # ones: retry those requests, each time on another server.',
    '  retries 3',
    '  option redispatch 1',
    '  retry-on conn-failure empty-response',
    '',
    'frontend agent',
    `  bind ${o.bind}`,
    '  default_backend agents',
    '',
    'backend agents',
    '  balance roundrobin',
    '  # Readiness, not liveness: /health/ready is 503 from the first moment of a stop.',
    '  option httpchk',
    '  http-check send meth GET uri /health/ready',
    '  http-check expect status 200',
    `  default-server check inter ${inter}ms fall ${fall} rise ${rise}`,
    "  # Optional: which instance answered (also on haproxy's own 502/503).",
    '  http-after-response set-header X-Served-By %s',
    ...o.servers.map((s) => `  server ${s.name} ${s.host}:${s.port}`),
    '',
  ];
  return lines.join('\n');
}

/** The example of the README (ports as in a three-machine setup). */
export const README_EXAMPLE: HaproxyOptions = {
  bind: ':80',
  servers: [
    { name: 'agent1', host: '10.0.0.11', port: 17870 },
    { name: 'agent2', host: '10.0.0.12', port: 17870 },
    { name: 'agent3', host: '10.0.0.13', port: 17870 },
  ],
  statsSocket: '/run/haproxy/admin.sock',
};

/**
 * Makes `haproxy` available: runs test/support/install-haproxy.sh (apt-get, without starting the
 * packaged service) when it is not on PATH. Returns why it is not available, or null.
 */
export function ensureHaproxy(): string | null {
  if (spawnSync('haproxy', ['-v']).status === 0) return null;
  const r = spawnSync('bash', [join(ROOT, 'test', 'support', 'install-haproxy.sh')], {
    encoding: 'utf8',
    timeout: 600_000,
  });
  if (r.status !== 0 || spawnSync('haproxy', ['-v']).status !== 0)
    return `haproxy is missing and install-haproxy.sh failed (${r.status ?? r.signal}): ${r.stderr.slice(-500)}`;
  return null;
}

export interface StateChange {
  at: number;
  server: string;
  state: 'UP' | 'DOWN';
  line: string;
}

export class Haproxy {
  readonly stderr: string[] = [];
  readonly changes: StateChange[] = [];
  readonly exited: Promise<void>;
  private readonly waiters: (() => void)[] = [];

  private constructor(
    readonly proc: ChildProcess,
    readonly port: number,
    readonly socket: string,
    readonly config: string,
  ) {
    let buf = '';
    proc.stderr!.on('data', (chunk: Buffer) => {
      buf += chunk.toString();
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        this.stderr.push(line);
        // e.g. "[WARNING]  (42) : Server agents/i1 is DOWN, reason: Layer4 connection problem..."
        const m = /Server agents\/(\S+) is (UP|DOWN)/.exec(line);
        if (m) this.changes.push({ at: Date.now(), server: m[1]!, state: m[2] as 'UP', line });
        for (const w of this.waiters.splice(0)) w();
      }
    });
    this.exited = new Promise((r) => proc.once('exit', () => r()));
  }

  static async start(o: Omit<HaproxyOptions, 'bind' | 'statsSocket'> & { port: number }) {
    const dir = tempDir('astron-haproxy-');
    const socket = join(dir, 'admin.sock');
    const config = haproxyConfig({ ...o, bind: `127.0.0.1:${o.port}`, statsSocket: socket });
    const file = join(dir, 'haproxy.cfg');
    writeFileSync(file, config);
    const check = spawnSync('haproxy', ['-c', '-q', '-f', file], { encoding: 'utf8' });
    if (check.status !== 0) throw new Error(`haproxy -c: ${check.stdout}${check.stderr}`);
    // -db: foreground, no daemon, so the test owns the process and its stderr.
    const proc = spawn('haproxy', ['-db', '-f', file], { stdio: ['ignore', 'ignore', 'pipe'] });
    const hp = new Haproxy(proc, o.port, socket, config);
    const end = Date.now() + 10_000;
    for (;;) {
      try {
        await hp.showStat();
        return hp;
      } catch (err) {
        if (Date.now() > end || proc.exitCode !== null)
          throw new Error(`haproxy did not start: ${String(err)}\n${hp.stderr.join('\n')}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }

  /** `show stat` for the backend's servers: one record per server, keyed by the CSV header. */
  async showStat(): Promise<Map<string, Record<string, string>>> {
    const text = await new Promise<string>((res, rej) => {
      const s = net.connect(this.socket);
      let out = '';
      s.on('data', (d) => (out += d.toString()));
      s.on('end', () => res(out));
      s.on('error', rej);
      s.write('show stat\n');
    });
    const [head, ...rows] = text.trim().split('\n');
    if (!head?.startsWith('# ')) throw new Error(`not a stat answer: ${text.slice(0, 200)}`);
    const cols = head.slice(2).split(',');
    const out = new Map<string, Record<string, string>>();
    for (const row of rows) {
      const v = row.split(',');
      const rec = Object.fromEntries(cols.map((c, i) => [c, v[i] ?? '']));
      if (rec.pxname === 'agents' && rec.svname !== 'BACKEND') out.set(rec.svname!, rec);
    }
    return out;
  }

  /** Waits for a state change of `server` logged at or after `since` (ms epoch). */
  async waitFor(
    server: string,
    state: 'UP' | 'DOWN',
    since: number,
    timeoutMs = 15_000,
  ): Promise<StateChange> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.changes.find(
        (c) => c.server === server && c.state === state && c.at >= since,
      );
      if (hit) return hit;
      if (Date.now() > end)
        throw new Error(`haproxy did not mark ${server} ${state}:\n${this.stderr.join('\n')}`);
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, 100);
      });
    }
  }

  async stop(): Promise<void> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) {
      this.proc.kill('SIGTERM');
      const t = setTimeout(() => this.proc.kill('SIGKILL'), 5000);
      await this.exited;
      clearTimeout(t);
    }
    rmSync(dirname(this.socket), { recursive: true, force: true });
  }
}
