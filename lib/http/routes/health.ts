// GET /health: 200 while serving (also while this worker is replaced in a rolling reload),
// 503 only while the whole service stops.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AppDeps } from '../deps.js';

export function healthHandler(deps: AppDeps) {
  return (_req: IncomingMessage, res: ServerResponse): void => {
    const stopping = deps.lifecycle.stopping;
    const body = JSON.stringify({
      status: stopping ? 'stopping' : 'ok',
      worker: deps.workerId,
      pid: process.pid,
      uptime: Math.round((Date.now() - deps.startedAt) / 1000),
    });
    res.writeHead(stopping ? 503 : 200, {
      'Content-Type': 'application/json',
      'Content-Length': Buffer.byteLength(body),
      'Cache-Control': 'no-store',
    });
    res.end(body);
  };
}
