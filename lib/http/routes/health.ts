// The health endpoints, answered before Express (the cheapest path for probes):
//   /health          200 while serving (also while this worker is replaced in a rolling reload),
//                    503 only while the whole service stops (kept as it was, for compatibility)
//   /health/live     200 while this worker's event loop answers; never looks at dependencies
//   /health/ready    200 when the service takes traffic; 503 from the first moment of a stop, and
//                    503 with the reason while a required dependency does not answer (checked at
//                    most once a second: a probe must not hit MySQL per request)
//   /health/backlog  requests in flight in the whole service (from the primary), for autoscaling
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AppDeps } from '../deps.js';

/** How long one dependency check answers /health/ready, and the deadline of a check. */
const READY_CACHE_MS = 1000;
const READY_PROBE_MS = 1000;

export const HEALTH_PATHS = new Set([
  '/health',
  '/health/live',
  '/health/ready',
  '/health/backlog',
]);

function json(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(text),
    'Cache-Control': 'no-store',
  });
  res.end(text);
}

export function healthHandler(deps: AppDeps) {
  const who = () => ({
    worker: deps.workerId,
    pid: process.pid,
    uptime: Math.round((Date.now() - deps.startedAt) / 1000),
  });
  let checked: { at: number; reasons: Record<string, string> } | undefined;
  let checking: Promise<Record<string, string>> | undefined;
  const dependencies = (): Promise<Record<string, string>> => {
    const store = deps.botStore;
    if (!store || (!deps.settings.HEALTH_READY_STORE && !deps.settings.HEALTH_READY_CACHE))
      return Promise.resolve({});
    if (checked && Date.now() - checked.at < READY_CACHE_MS)
      return Promise.resolve(checked.reasons);
    checking ??= store
      .health(READY_PROBE_MS)
      .then((h) => {
        const reasons: Record<string, string> = {};
        if (deps.settings.HEALTH_READY_STORE && h.store) reasons.store = h.store;
        if (deps.settings.HEALTH_READY_CACHE && h.cache) reasons.cache = h.cache;
        checked = { at: Date.now(), reasons };
        return reasons;
      })
      .finally(() => {
        checking = undefined;
      });
    return checking;
  };

  return (req: IncomingMessage, res: ServerResponse): void => {
    const path = req.url ?? '/health';
    if (path === '/health/live') {
      json(res, 200, { status: 'ok', ...who() });
      return;
    }
    if (path === '/health/ready') {
      if (deps.lifecycle.stopping) {
        json(res, 503, { status: 'stopping', ...who() });
        return;
      }
      dependencies().then(
        (reasons) => {
          if (Object.keys(reasons).length === 0) json(res, 200, { status: 'ready', ...who() });
          else json(res, 503, { status: 'unavailable', reasons, ...who() });
        },
        (err: unknown) =>
          json(res, 503, { status: 'unavailable', reasons: { check: String(err) }, ...who() }),
      );
      return;
    }
    if (path === '/health/backlog') {
      void (deps.backlog?.() ?? Promise.resolve(undefined)).then((b) =>
        b
          ? json(res, 200, { inflight: b.inflight, workers: b.workers })
          : json(res, 503, { status: 'unknown', detail: 'the supervisor did not answer' }),
      );
      return;
    }
    const stopping = deps.lifecycle.stopping;
    json(res, stopping ? 503 : 200, { status: stopping ? 'stopping' : 'ok', ...who() });
  };
}
