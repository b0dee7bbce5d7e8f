// The Express application. Route modules are functions of their dependencies.
import express, { type Express } from 'express';
import type { AppDeps } from './deps.js';
import { errorHandler, notFound } from './errors.js';
import { testHooksRouter } from './routes/test-hooks.js';

export function createApp(deps: AppDeps): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.use((_req, res, next) => {
    if (deps.lifecycle.draining) res.setHeader('Connection', 'close');
    next();
  });
  if (deps.testHooks) app.use(testHooksRouter());
  app.use(notFound);
  app.use(errorHandler(deps));
  return app;
}
