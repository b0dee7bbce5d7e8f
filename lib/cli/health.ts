// `astron-agent health`: exit 0 only if GET /health answers 200 within the timeout.
// It is what a container HEALTHCHECK calls (slim images have no curl).
import http from 'node:http';
import { loadOrReport, type LoadOptions } from '../config/load.js';

export function probeHost(host: string): string {
  if (host === '0.0.0.0' || host === '') return '127.0.0.1';
  if (host === '::' || host === '[::]') return '::1';
  return host;
}

export async function checkHealth(opts: LoadOptions, timeoutMs: number): Promise<number> {
  const config = loadOrReport(opts);
  if (!config) return 2;
  const host = probeHost(config.settings.SERVICE_HOST);
  const port = config.settings.SERVICE_PORT;
  const started = Date.now();
  const status = await new Promise<number | string>((resolve) => {
    const req = http.get(
      { host, port, path: '/health', timeout: timeoutMs, agent: false },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      },
    );
    req.on('timeout', () => {
      req.destroy();
      resolve(`no answer within ${timeoutMs} ms`);
    });
    req.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
  });
  const target = `http://${host.includes(':') ? `[${host}]` : host}:${port}/health`;
  if (status === 200) {
    process.stdout.write(`healthy: ${target} answered 200 in ${Date.now() - started} ms\n`);
    return 0;
  }
  process.stderr.write(
    `unhealthy: ${target}: ${typeof status === 'number' ? `HTTP ${status}` : status}\n`,
  );
  return 1;
}
