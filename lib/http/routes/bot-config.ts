// POST/PUT/GET/DELETE /agent/v1/bot-config (spec 3.3): HTTP 200 with the GeneralResponse body
// {code, message, data} for every business outcome; request validation answers the 40002 chunk
// body (spec 3.4) with HTTP 200, not the original's HTTP 500 (defect D1); POST and PUT answer
// code 0 with the stored config (defect D2). The body is read (up to SERVICE_MAX_BODY_SIZE,
// else 413 from the error handler) on POST and PUT only.
//
// Lean by design (issue 14): the routes sit on the app's router itself (no mounted sub-router),
// answers are written directly (one JSON.stringify, no res.json machinery), a GET answers from
// the store's text of the config (memoised per stored value: a cache hit parses nothing; its
// answer's bytes are kept too), synchronously when the store knows it without I/O (SQLite, a
// Redis near-cache hit), and a sid is made only when something is logged.
import type { ServerResponse } from 'node:http';
import type { Express, Request, RequestHandler, Response } from 'express';
import { AgentError, CODES, DataError } from '../../agent/errors.js';
import { model, str, validateParams } from '../../schema/schema.js';
import { botConfigSchema, type BotConfig } from '../../store/bot-config.js';
import type { BotStore } from '../../store/types.js';
import { requestIdOf } from '../../telemetry/context.js';
import { answerUnreadable, rawBody, validateBody } from '../body.js';
import { sidsFor, type AppDeps } from '../deps.js';
import { methodNotAllowed } from '../errors.js';

export const BOT_CONFIG_PATH = '/agent/v1/bot-config';

const idsSchema = model({
  app_id: str({ minLength: 1, maxLength: 64 }),
  bot_id: str({ minLength: 1, maxLength: 64 }),
});

/** The text of an error for a client: its message, else its code (e.g. an empty AggregateError). */
function errorText(err: unknown): string {
  const e = err as { message?: string; code?: string; errors?: { message?: string }[] } | null;
  return e?.message || e?.errors?.[0]?.message || e?.code || String(err);
}

const JSON_TYPE = 'application/json; charset=utf-8';
const SUCCESS_PREFIX = `{"code":${CODES.SUCCESS.code},"message":${JSON.stringify(CODES.SUCCESS.message)},"data":`;

/** HTTP 200 with a JSON body (the headers res.json would send, without its machinery). */
function send200(res: ServerResponse, body: string | Buffer): void {
  res.writeHead(200, { 'Content-Type': JSON_TYPE, 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

/**
 * The success answers of recent GETs, as bytes, by the config's text (the memoised text is the
 * same string on every hit, so the lookup hashes nothing new): a hit builds and encodes nothing.
 */
class AnswerBodies {
  private readonly map = new Map<string, Buffer>();
  constructor(private readonly max = 256) {}
  of(text: string): Buffer {
    let body = this.map.get(text);
    if (body === undefined) {
      if (this.map.size >= this.max) this.map.clear();
      body = Buffer.from(`${SUCCESS_PREFIX}${text}}`);
      this.map.set(text, body);
    }
    return body;
  }
}

function queryOf(req: Request): URLSearchParams {
  const url = req.originalUrl ?? req.url;
  const q = url.indexOf('?');
  return new URLSearchParams(q < 0 ? '' : url.slice(q + 1));
}

/** Mounts the bot-config routes on the app. */
export function mountBotConfig(app: Express, deps: AppDeps & { botStore: BotStore }): void {
  const store = deps.botStore;
  const sids = sidsFor(deps);
  const bodies = new AnswerBodies();
  const readBody = rawBody(deps.settings.SERVICE_MAX_BODY_SIZE);

  const general = (res: Response, code: number, message: string, data: unknown = null) => {
    send200(res, JSON.stringify({ code, message, data }));
  };

  /**
   * Runs an operation and turns every outcome into its answer; nothing escapes to crash. `run`
   * answers the config (or null), or, as a string, the config's JSON text.
   */
  const handle =
    (op: string, run: (req: Request) => Promise<BotConfig | string | null>): RequestHandler =>
    async (req, res) => {
      try {
        const data = await run(req);
        if (typeof data === 'string') send200(res, bodies.of(data));
        else general(res, CODES.SUCCESS.code, CODES.SUCCESS.message, data);
      } catch (err) {
        const sid = sids.next();
        if (answerUnreadable(res, err, sid)) return;
        const request_id = requestIdOf(req);
        if (err instanceof AgentError) {
          if (err.code === CODES.REDIS_PING.code || err.code === CODES.BOT_CONFIG_DELETE.code) {
            deps.logger.warn(`bot-config ${op} refused: the cache could not be updated`, {
              sid,
              request_id,
              error: errorText(err.cause),
            });
          }
          general(res, err.code, err.message);
        } else if (err instanceof DataError) {
          deps.logger.warn(`bot-config ${op}: stored data unreadable`, {
            sid,
            request_id,
            error: err.message,
          });
          general(
            res,
            CODES.INTERNAL.code,
            `${CODES.INTERNAL.message}: Data processing error - ${err.message}`,
          );
        } else {
          deps.logger.error(`bot-config ${op} failed`, {
            sid,
            request_id,
            error: errorText(err),
            code: (err as { code?: string })?.code,
          });
          general(
            res,
            CODES.INTERNAL.code,
            `${CODES.INTERNAL.message}: Unexpected error - ${errorText(err)}`,
          );
        }
      }
    };

  const body = (req: Request) =>
    validateBody(botConfigSchema, req.body as Buffer | undefined, req.headers['content-type']);
  const ids = (req: Request) => validateParams(idsSchema, 'query', queryOf(req));
  const readAsync = handle('read', async (req) => {
    const { app_id, bot_id } = ids(req);
    const cfg = store.getText
      ? await store.getText(app_id, bot_id)
      : await store.get(app_id, bot_id);
    if (!cfg) throw new AgentError(CODES.BOT_CONFIG_NOT_FOUND);
    return cfg;
  });

  app
    .route(BOT_CONFIG_PATH)
    .post(
      readBody,
      handle('create', async (req) => {
        const cfg = body(req);
        if (!(await store.create(cfg))) throw new AgentError(CODES.BOT_CONFIG_EXISTS);
        return cfg;
      }),
    )
    .put(
      readBody,
      handle('update', async (req) => {
        const cfg = body(req);
        if (!(await store.update(cfg))) throw new AgentError(CODES.BOT_CONFIG_NOT_FOUND);
        return cfg;
      }),
    )
    .get(
      // A config the store knows without I/O (SQLite, a Redis near-cache hit) is answered
      // synchronously: no promise, no microtask. Anything else (a miss, not found, an invalid
      // query, an error) takes the asynchronous path, which answers it.
      (req, res, next) => {
        let text: string | null | undefined;
        try {
          const { app_id, bot_id } = ids(req);
          text = store.peekText?.(app_id, bot_id);
        } catch {
          text = undefined;
        }
        if (typeof text === 'string') send200(res, bodies.of(text));
        else readAsync(req, res, next);
      },
    )
    .delete(
      handle('delete', async (req) => {
        const { app_id, bot_id } = ids(req);
        if (!(await store.delete(app_id, bot_id))) throw new AgentError(CODES.BOT_CONFIG_NOT_FOUND);
        return null;
      }),
    )
    .all(methodNotAllowed('GET, POST, PUT, DELETE'));
}
