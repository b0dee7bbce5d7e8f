// JSON answers for requests that never reach a route, and the last-resort error handler.
import type { NextFunction, Request, Response } from 'express';
import type { AppDeps } from './deps.js';
import { requestIdOf } from '../telemetry/context.js';

/** 405 with an Allow header, FastAPI's body: for `.all()` after a route's methods. */
export function methodNotAllowed(allow: string) {
  return (_req: Request, res: Response): void => {
    res.setHeader('Allow', allow);
    res.status(405).json({ detail: 'Method Not Allowed' });
  };
}

export function notFound(_req: Request, res: Response): void {
  res.status(404).json({ detail: 'Not Found' });
}

interface HttpishError {
  status?: number;
  statusCode?: number;
  type?: string;
  expose?: boolean;
  message?: string;
}

/** body-parser and friends attach `status`/`type`; everything else is a 500 that never crashes. */
export function errorHandler(deps: AppDeps) {
  return (err: unknown, req: Request, res: Response, _next: NextFunction): void => {
    const e = (err ?? {}) as HttpishError;
    const status = e.status ?? e.statusCode ?? 500;
    if (status >= 500)
      deps.logger.error('request failed', {
        request_id: requestIdOf(req),
        method: req.method,
        path: req.path,
        err,
      });
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const detail =
      e.type === 'entity.too.large'
        ? `Request body too large (limit ${deps.settings.SERVICE_MAX_BODY_SIZE} bytes)`
        : status < 500 && e.expose !== false && e.message
          ? e.message
          : 'Internal Server Error';
    res.status(status).json({ detail });
  };
}
