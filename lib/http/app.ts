// The Express application. Route modules are functions of their dependencies.
import express, { type Express } from 'express';
import type { AppDeps } from './deps.js';
import { errorHandler, notFound } from './errors.js';
import { mountBotConfig } from './routes/bot-config.js';
import { mountChat } from './routes/chat.js';
import { mountCustomChat } from './routes/custom-chat.js';
import { testHooksRouter } from './routes/test-hooks.js';

export function createApp(deps: AppDeps): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  // Nothing global: `Connection: close` while draining, the request id, metrics and the server
  // span are set in lib/http/server.ts before a request reaches Express.
  if (deps.testHooks) app.use(testHooksRouter(deps));
  // Body parsing lives inside the route (POST/PUT only), not here: /health and GETs never pay for it.
  if (deps.botStore) {
    mountBotConfig(app, { ...deps, botStore: deps.botStore });
  }
  if (deps.chat) mountChat(app, { ...deps, chat: deps.chat });
  if (deps.chat && deps.custom) {
    mountCustomChat(app, { ...deps, chat: deps.chat, custom: deps.custom });
  }
  app.use(notFound);
  app.use(errorHandler(deps));
  return app;
}
