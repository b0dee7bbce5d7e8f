// The control channel behind `astron-agent status|reload|scale|stop`: a Unix socket owned by the
// primary (mode 0600: only the service's user, and root, can connect), one JSON request line per
// connection, answered with progress lines and one result line (JSON lines both ways). Commands
// go through the pool's queue like signals do; the socket only adds a way to wait for the outcome.
import { existsSync, mkdirSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import { dirname, resolve } from 'node:path';
import type { Logger } from '../telemetry/logger.js';
import { guarded } from './guard.js';
import type { Pool } from './pool.js';

/** What the primary knows about itself, for `status`. */
export interface ServiceInfo {
  pid: number;
  version: string;
  startedAt: number;
  configFile: string;
  listen: string;
}

export type ControlRequest =
  { cmd: 'status' } | { cmd: 'reload' } | { cmd: 'scale'; workers: string } | { cmd: 'stop' };

export interface ResultLine {
  ok: boolean;
  result: string;
  message: string;
  [k: string]: unknown;
}

export type ControlLine = { type: 'progress'; message: string } | ({ type: 'result' } & ResultLine);

/** The most a request line may be: a request is a few dozen bytes. */
const MAX_REQUEST = 4096;
/** The most workers `scale` accepts (a typo's guard; SERVICE_WORKERS has no cap either). */
export const MAX_SCALE = 256;

export interface Control {
  /** The service is about to exit with `code`: tell the `stop` callers, remove the socket. */
  finish(code: number): Promise<void>;
}

/** `+N`, `-N` or `N` against the current count; null when it is not one of those. */
export function scaleTarget(spec: string, current: number): number | null {
  const m = /^([+-]?)(\d{1,4})$/.exec(spec.trim());
  if (!m) return null;
  const n = Number(m[2]);
  return m[1] === '+' ? current + n : m[1] === '-' ? current - n : n;
}

/** Another primary answers on `path`? (Then the socket is not ours to take.) */
function answers(path: string): Promise<boolean> {
  return new Promise((res) => {
    const s = net.connect(path);
    s.once('connect', () => {
      s.destroy();
      res(true);
    });
    s.once('error', () => res(false));
  });
}

export async function startControl(opts: {
  path: string;
  pool: Pool;
  logger: Logger;
  info: ServiceInfo;
}): Promise<Control | undefined> {
  const { pool, logger, info } = opts;
  const path = resolve(opts.path);
  if (Buffer.byteLength(path) > 107) {
    logger.warn(
      `control socket path ${path} is longer than a Unix socket allows (107 bytes); no control socket`,
    );
    return undefined;
  }
  if (existsSync(path)) {
    if (await answers(path)) {
      logger.warn(
        `control socket ${path} answers for another running service; no control socket for this one`,
      );
      return undefined;
    }
    unlinkSync(path); // left by a primary that was killed
  }
  mkdirSync(dirname(path), { recursive: true });
  const stopCallers = new Set<net.Socket>();

  const send = (sock: net.Socket, line: ControlLine): void => {
    if (!sock.destroyed) sock.write(`${JSON.stringify(line)}\n`);
  };
  const result = (sock: net.Socket, line: ResultLine) => {
    send(sock, { type: 'result', ...line });
    sock.end();
  };

  const statusOf = () => ({
    service: {
      pid: info.pid,
      version: info.version,
      uptime_s: Math.round((Date.now() - info.startedAt) / 1000),
      phase: pool.phaseName(),
      config_file: info.configFile,
      listen: info.listen,
      workers: pool.desiredWorkers(),
      inflight: pool.inFlight(),
    },
    workers: pool.status(),
  });

  const handle = (sock: net.Socket, req: ControlRequest): void => {
    switch (req.cmd) {
      case 'status':
        result(sock, { ok: true, result: 'ok', message: '', status: statusOf() });
        return;
      case 'reload':
        pool.enqueue({
          kind: 'reload',
          reason: 'control socket',
          waiter: {
            progress: (message) => send(sock, { type: 'progress', message }),
            done: (r, message) => result(sock, { ok: r === 'ok', result: r, message }),
          },
        });
        return;
      case 'scale': {
        const target = scaleTarget(String(req.workers ?? ''), pool.desiredWorkers());
        if (target === null || target < 1 || target > MAX_SCALE) {
          result(sock, {
            ok: false,
            result: 'invalid',
            message: `scale takes N, +N or -N with a result from 1 to ${MAX_SCALE} (got ${JSON.stringify(req.workers)})`,
          });
          return;
        }
        pool.enqueue({
          kind: 'scale-to',
          target,
          waiter: {
            progress: (message) => send(sock, { type: 'progress', message }),
            done: (r, message) =>
              result(sock, { ok: r === 'ok', result: r, message, workers: pool.desiredWorkers() }),
          },
        });
        return;
      }
      case 'stop':
        stopCallers.add(sock);
        send(sock, { type: 'progress', message: 'stopping: draining the workers' });
        pool.enqueue({ kind: 'stop', signal: 'control socket' });
        return;
      default:
        result(sock, { ok: false, result: 'invalid', message: 'unknown command' });
    }
  };

  const server = net.createServer(
    guarded(logger, 'a control connection', (sock: net.Socket) => {
      let buf = '';
      sock.setEncoding('utf8');
      sock.on('error', () => sock.destroy());
      sock.on(
        'data',
        guarded(logger, 'a control request', (chunk: string) => {
          buf += chunk;
          const nl = buf.indexOf('\n');
          if (nl < 0) {
            if (buf.length > MAX_REQUEST)
              result(sock, { ok: false, result: 'invalid', message: 'request too long' });
            return;
          }
          const line = buf.slice(0, nl);
          buf = '';
          sock.removeAllListeners('data');
          let req: ControlRequest;
          try {
            req = JSON.parse(line) as ControlRequest;
          } catch {
            result(sock, { ok: false, result: 'invalid', message: 'not a JSON line' });
            return;
          }
          handle(sock, req);
        }),
      );
    }),
  );
  server.on('error', (err) => logger.error('control socket error', { err, path }));
  // Created 0600 from the start (no window in which another user could connect).
  const umask = process.umask(0o177);
  try {
    await new Promise<void>((res, rej) => {
      server.once('error', rej);
      server.listen(path, () => {
        server.off('error', rej);
        res();
      });
    });
  } catch (err) {
    logger.warn(
      `cannot open the control socket ${path}; status/scale and blocking reload/stop fall back to signals`,
      { err },
    );
    return undefined;
  } finally {
    process.umask(umask);
  }
  server.unref();
  logger.info(`control socket on ${path}`);

  return {
    async finish(code) {
      for (const sock of stopCallers)
        result(sock, {
          ok: code === 0,
          result: code === 0 ? 'stopped' : 'unclean',
          message: code === 0 ? 'stopped; every worker drained' : `stopped with exit code ${code}`,
          exit_code: code,
        });
      await new Promise<void>((res) => {
        server.close(() => res());
        setTimeout(res, 300).unref();
      });
      try {
        unlinkSync(path);
      } catch {
        // already gone
      }
    },
  };
}
