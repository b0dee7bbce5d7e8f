// The Express application. Route modules are functions of their dependencies.
import express, { type Express } from 'express';
import { IncomingMessage, ServerResponse } from 'node:http';
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

/**
 * The request and response classes for the http.Server that carries `app`.
 *
 * Express gives every request and response its app's prototypes (`app.request`, `app.response`)
 * with Object.setPrototypeOf, per request. V8 then moves each object to a new hidden class, and
 * the cost shows as garbage that survives the young generation: measured on Node 20, a
 * one-route Express 5 app took about 113 µs of CPU per request against bare node:http's 23, and
 * 26 with these classes. Their prototypes are the app's (Express's methods, `app` on it), so the
 * per-request call finds the prototype already in place and changes nothing. Sub-apps mounted
 * later still chain to them, as Express intends.
 */
export function expressHttpClasses(app: Express): {
  IncomingMessage: typeof IncomingMessage;
  ServerResponse: typeof ServerResponse;
} {
  class ExpressRequest extends IncomingMessage {}
  class ExpressResponse<R extends IncomingMessage = IncomingMessage> extends ServerResponse<R> {}
  Object.setPrototypeOf(ExpressRequest.prototype, Object.getPrototypeOf(app.request) as object);
  Object.setPrototypeOf(ExpressResponse.prototype, Object.getPrototypeOf(app.response) as object);
  // What Express's own per-app prototypes carry: the app, as an own property.
  Object.assign(ExpressRequest.prototype, { app });
  Object.assign(ExpressResponse.prototype, { app });
  app.request = ExpressRequest.prototype as unknown as Express['request'];
  app.response = ExpressResponse.prototype as unknown as Express['response'];
  return { IncomingMessage: ExpressRequest, ServerResponse: ExpressResponse };
}
