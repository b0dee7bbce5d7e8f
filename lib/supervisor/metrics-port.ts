// METRICS_PORT: the cluster's metrics text served by the primary on a port of its own (the
// primary has no Express). Imported only when METRICS_PORT is set.
import http from 'node:http';
import type { Settings } from '../config/settings.js';
import type { Logger } from '../telemetry/logger.js';
import { bearerOk } from '../telemetry/bearer.js';
import type { ScrapeResult } from '../telemetry/metrics.js';
import { guarded } from './guard.js';

/** METRICS_PORT: the same text from the primary, on its own port (no Express in the primary). */
export function serveMetricsPort(
  settings: Settings,
  logger: Logger,
  render: () => Promise<ScrapeResult>,
): http.Server {
  const token = settings.METRICS_TOKEN;
  const server = http.createServer(
    guarded(
      logger,
      'the METRICS_PORT handler',
      (req: http.IncomingMessage, res: http.ServerResponse) => {
        const path = (req.url ?? '').split('?')[0];
        if (path !== '/metrics' || (req.method !== 'GET' && req.method !== 'HEAD')) {
          res.writeHead(404, { 'Content-Type': 'application/json' }).end('{"detail":"Not Found"}');
          return;
        }
        if (token && !bearerOk(req.headers.authorization, token)) {
          res
            .writeHead(401, { 'Content-Type': 'text/plain', 'WWW-Authenticate': 'Bearer' })
            .end('unauthorized\n');
          return;
        }
        void render()
          .then((r) => {
            res.writeHead(r.status, {
              'Content-Type': r.contentType,
              'Content-Length': Buffer.byteLength(r.body),
              'Cache-Control': 'no-store',
            });
            res.end(req.method === 'HEAD' ? undefined : r.body);
          })
          .catch((err: unknown) => {
            logger.error('metrics answer failed', { err });
            res.destroy();
          });
      },
    ),
  );
  server.on('error', (err) =>
    logger.error(`METRICS_PORT ${settings.METRICS_PORT}: cannot serve metrics`, { err }),
  );
  server.listen(settings.METRICS_PORT, settings.SERVICE_HOST, () =>
    logger.info(`metrics on http://${settings.SERVICE_HOST}:${settings.METRICS_PORT}/metrics`),
  );
  return server;
}
