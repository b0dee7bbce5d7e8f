// A bounded keep-alive load for tests: `concurrency` clients on one keep-alive agent send
// `total` requests and record every failure and the worker pid of every answer.
import http from 'node:http';

export interface LoadReport {
  ok: number;
  failed: number;
  errors: string[];
  /** pid -> time of the last answer from it */
  pids: Map<number, number>;
  /** [time, pid] of every answer */
  answers: [number, number][];
  /** [start time, latency ms] of every request, failed ones included */
  latencies: [number, number][];
}

export async function keepAliveLoad(
  port: number,
  opts: {
    total: number;
    concurrency?: number;
    path?: string;
    onProgress?: (done: number) => void;
    /** Keep going past `total` until this returns true (bounded by 10 x total). */
    until?: () => boolean;
  },
): Promise<LoadReport> {
  const concurrency = opts.concurrency ?? 8;
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  const report: LoadReport = {
    ok: 0,
    failed: 0,
    errors: [],
    pids: new Map(),
    answers: [],
    latencies: [],
  };
  let sent = 0;
  const one = () =>
    new Promise<void>((done) => {
      const t0 = Date.now();
      const p0 = performance.now();
      const resolve = () => {
        report.latencies.push([t0, performance.now() - p0]);
        done();
      };
      const req = http.get(
        { host: '127.0.0.1', port, path: opts.path ?? '/health', agent, timeout: 10000 },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            if (res.statusCode === 200) {
              report.ok++;
              const pid = (JSON.parse(Buffer.concat(chunks).toString()) as { pid?: number }).pid;
              if (typeof pid === 'number') {
                const now = Date.now();
                report.pids.set(pid, now);
                report.answers.push([now, pid]);
              }
            } else {
              report.failed++;
              report.errors.push(`HTTP ${res.statusCode}`);
            }
            resolve();
          });
          res.on('error', (e) => {
            report.failed++;
            report.errors.push(e.message);
            resolve();
          });
        },
      );
      req.on('timeout', () => req.destroy(new Error('timeout')));
      req.on('error', (e: NodeJS.ErrnoException) => {
        report.failed++;
        report.errors.push(e.code ?? e.message);
        resolve();
      });
    });
  const loop = async () => {
    while (sent < opts.total || (opts.until && !opts.until() && sent < opts.total * 10)) {
      sent++;
      await one();
      opts.onProgress?.(report.ok + report.failed);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, loop));
  agent.destroy();
  return report;
}
