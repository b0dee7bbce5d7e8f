// Keep-alive load whose failures can be attributed: each client holds one connection at a time
// and learns which worker serves it from GET /health (the body names the pid). A failure on a
// connection whose worker the test killed (or the pool killed as hung) is that worker's own;
// any other failure (a refused connection, an error from a healthy worker) is "other", and a
// supervisor that survives its faults keeps "other" at 0.
import http from 'node:http';

export interface AttributedReport {
  ok: number;
  failed: number;
  /**
   * Failures on connections served by a worker in `doomed` when they failed, and resets of a
   * new connection within 1 s of a doomed worker's end (the kernel had handed it to that worker:
   * accepted, then closed by its death). A refused connection is never "own".
   */
  ownFailures: number;
  /** Every other failure, with its reason. */
  other: string[];
  /** Answers per worker pid. */
  byPid: Map<number, number>;
}

export interface AttributedLoad {
  report: AttributedReport;
  /** Pids whose connections may fail (killed, or stopped past the hung timeout). */
  doomed: Set<number>;
  /** Marks a worker's end (call it when killing it): see `ownFailures`. */
  doom(pid: number): void;
  /** Optional extra request on the same connection after /health (e.g. a chat stream). */
  stop(): Promise<AttributedReport>;
}

export interface AttributedOptions {
  clients?: number;
  /** Runs on the client's connection after a /health that did not ask to close it. */
  extra?: (agent: http.Agent) => Promise<void>;
  /** How often `extra` runs, 0..1 of the iterations. */
  extraShare?: number;
  /** Pause between iterations of one client (ms). */
  pauseMs?: number;
  random?: () => number;
}

function health(
  port: number,
  agent: http.Agent,
): Promise<{ pid: number; close: boolean; reused: boolean }> {
  return new Promise((resolve, reject) => {
    const req = http.get(
      { host: '127.0.0.1', port, path: '/health', agent, timeout: 15000 },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          if (res.statusCode !== 200) {
            reject(new Error(`HTTP ${res.statusCode}`));
            return;
          }
          try {
            const pid = (JSON.parse(Buffer.concat(chunks).toString()) as { pid: number }).pid;
            resolve({ pid, close: res.headers.connection === 'close', reused: req.reusedSocket });
          } catch (e) {
            reject(e as Error);
          }
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (e: NodeJS.ErrnoException) =>
      reject(Object.assign(e, { reused: req.reusedSocket })),
    );
  });
}

export function startAttributedLoad(port: number, opts: AttributedOptions = {}): AttributedLoad {
  const report: AttributedReport = {
    ok: 0,
    failed: 0,
    ownFailures: 0,
    other: [],
    byPid: new Map(),
  };
  const doomed = new Set<number>();
  let lastDoomAt = -Infinity;
  const doom = (pid: number) => {
    doomed.add(pid);
    lastDoomAt = Date.now();
  };
  const random = opts.random ?? Math.random;
  let running = true;
  const fail = (pid: number | undefined, why: string) => {
    report.failed++;
    const reset = why === 'ECONNRESET' || why === 'socket hang up';
    if (pid !== undefined && doomed.has(pid)) report.ownFailures++;
    else if (pid === undefined && reset && Date.now() - lastDoomAt < 1000) report.ownFailures++;
    else
      report.other.push(
        `${new Date().toISOString().slice(11, 23)} ${why}${pid ? ` (worker ${pid})` : ' (new connection)'}`,
      );
  };
  const client = async () => {
    let agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    let pid: number | undefined;
    while (running) {
      try {
        const h = await health(port, agent);
        pid = h.pid;
        report.ok++;
        report.byPid.set(h.pid, (report.byPid.get(h.pid) ?? 0) + 1);
        if (h.close) {
          pid = undefined;
        } else if (opts.extra && random() < (opts.extraShare ?? 0)) {
          try {
            await opts.extra(agent);
            report.ok++;
          } catch (e) {
            fail(pid, `extra: ${(e as Error).message}`);
            agent.destroy();
            agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
            pid = undefined;
          }
        }
      } catch (e) {
        const err = e as NodeJS.ErrnoException & { reused?: boolean; pid?: number };
        // A failure on a connection we had used belongs to the worker that served it.
        fail(err.pid ?? (err.reused ? pid : undefined), err.code ?? err.message);
        agent.destroy();
        agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
        pid = undefined;
      }
      if (opts.pauseMs) await new Promise((r) => setTimeout(r, opts.pauseMs));
    }
    agent.destroy();
  };
  const clients = Array.from({ length: opts.clients ?? 8 }, client);
  return {
    report,
    doomed,
    doom,
    async stop() {
      running = false;
      await Promise.all(clients);
      return report;
    },
  };
}
