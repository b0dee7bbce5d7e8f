// GET /metrics: the whole cluster's metrics in the Prometheus text format, whichever worker
// takes the request (it asks the primary, which collects from every worker). Answered before
// Express's router, like /health. METRICS_TOKEN, when set, requires a bearer token.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { bearerOk } from '../../telemetry/bearer.js';
import { UNMATCHED_ROUTE, type WorkerMetrics } from '../../telemetry/metrics.js';
import type { AppDeps } from '../deps.js';

export const METRICS_PATH = '/metrics';

/** True for GET/HEAD /metrics (with or without a query string). */
export function isMetricsRequest(req: IncomingMessage): boolean {
  const url = req.url ?? '';
  return (
    (req.method === 'GET' || req.method === 'HEAD') &&
    (url === METRICS_PATH || url.startsWith(`${METRICS_PATH}?`))
  );
}

export function metricsHandler(deps: AppDeps, metrics: WorkerMetrics) {
  const token = deps.settings.METRICS_TOKEN;
  return (req: IncomingMessage, res: ServerResponse): void => {
    if (token && !bearerOk(req.headers.authorization, token)) {
      const body = JSON.stringify({ detail: 'Unauthorized' });
      res.writeHead(401, {
        'Content-Type': 'application/json',
        'Content-Length': Buffer.byteLength(body),
        'WWW-Authenticate': 'Bearer',
      });
      res.end(body);
      return;
    }
    metrics.scrape().then(
      (r) => {
        if (res.destroyed) return;
        res.writeHead(r.status, {
          'Content-Type': r.contentType,
          'Content-Length': Buffer.byteLength(r.body),
          'Cache-Control': 'no-store',
        });
        res.end(req.method === 'HEAD' ? undefined : r.body);
      },
      (err: unknown) => {
        deps.logger.warn('metrics scrape failed', { err });
        if (!res.headersSent) res.writeHead(503, { 'Content-Type': 'text/plain' });
        res.end('metrics unavailable\n');
      },
    );
  };
}

/**
 * The `route` label of a request Express answered: the matched route's pattern (mount path +
 * route path: every bot-config request is `/agent/v1/bot-config/`, whatever its query), never
 * the raw URL; `unmatched` when no route matched.
 */
export function routeLabel(req: IncomingMessage): string {
  const r = req as IncomingMessage & { route?: { path?: unknown }; baseUrl?: string };
  const path = r.route?.path;
  return path === undefined ? UNMATCHED_ROUTE : `${r.baseUrl ?? ''}${String(path)}`;
}
