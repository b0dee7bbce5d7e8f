// LLM key resolution. Two KeyResolvers:
//  - AppAuthKeyResolver (spec 9): the HMAC-signed app-auth lookup by app id, used when
//    APP_AUTH_HOST is set; the key is "<api_key>:<api_secret>" of the first auth entry.
//  - BotSkKeyResolver (new behaviour, not in the original): the key stored in the bot config's
//    model detail (`sk`), so the service works without the original's gateway.
import { createHash, createHmac } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import { AgentError, CODES } from './errors.js';
import { RunAbortedError } from './llm.js';

export interface KeyRequest {
  appId: string;
  /** The model's name (domain) and its configured key (`sk`; "" when none). */
  domain: string;
  sk: string;
}

export interface KeyResolver {
  readonly kind: string;
  resolve(req: KeyRequest, signal: AbortSignal): Promise<string>;
}

/** The bot config's own key (`model_config.summary.sk` / `plan.sk`). */
export class BotSkKeyResolver implements KeyResolver {
  readonly kind = 'bot-config-sk';
  resolve(req: KeyRequest): Promise<string> {
    return Promise.resolve(req.sk);
  }
}

export interface AppAuthOptions {
  host: string;
  router: string;
  prot: 'http' | 'https';
  apiKey: string;
  secret: string;
  /** Spec 9: 3 s total. */
  timeoutMs?: number;
  now?: () => Date;
}

/** base64(sha256("")): the body of the GET is empty. */
export const EMPTY_BODY_DIGEST = `SHA256=${createHash('sha256').update('').digest('base64')}`;

/** The signed headers of spec 9 for one request at `date`. */
export function signAppAuth(
  opts: Pick<AppAuthOptions, 'host' | 'router' | 'apiKey' | 'secret'>,
  date: Date,
) {
  const day = date.toUTCString(); // RFC 1123: "Mon, 02 Jan 2006 15:04:05 GMT"
  const toSign = `host: ${opts.host}\ndate: ${day}\nGET ${opts.router} HTTP/1.1\ndigest: ${EMPTY_BODY_DIGEST}`;
  const signature = createHmac('sha256', opts.secret).update(toSign).digest('base64');
  return {
    'Content-Type': 'application/json',
    Accept: 'application/json',
    Method: 'GET',
    Host: opts.host,
    Date: day,
    Digest: EMPTY_BODY_DIGEST,
    Authorization: `api_key="${opts.apiKey}", algorithm="hmac-sha256", headers="host date request-line digest", signature="${signature}"`,
  };
}

/** The key in an app-auth answer, or a 40040 (spec 9). */
export function keyFromAnswer(body: unknown): string {
  const b = body as {
    code?: unknown;
    data?: { auth_list?: { api_key?: unknown; api_secret?: unknown }[] }[];
  } | null;
  const entry = b && b.code === 0 && Array.isArray(b.data) ? b.data[0]?.auth_list?.[0] : undefined;
  if (!entry) {
    throw new AgentError(CODES.APP_AUTH, undefined, {
      origin: {
        code: typeof b?.code === 'number' ? b.code : undefined,
        message: 'no auth entry',
        name: 'app-auth',
      },
    });
  }
  return `${String(entry.api_key ?? '')}:${String(entry.api_secret ?? '')}`;
}

export class AppAuthKeyResolver implements KeyResolver {
  readonly kind = 'app-auth';
  constructor(private readonly opts: AppAuthOptions) {}

  async resolve(req: KeyRequest, signal: AbortSignal): Promise<string> {
    const { host, router, prot } = this.opts;
    const url = `${prot}://${host}${router}?app_ids=${encodeURIComponent(req.appId)},`;
    const headers = signAppAuth(this.opts, (this.opts.now ?? (() => new Date()))());
    const timeoutMs = this.opts.timeoutMs ?? 3000;
    const { status, text } = await get(url, headers, timeoutMs, signal);
    if (status >= 400) throw new AgentError(CODES.INTERNAL, `app-auth answered HTTP ${status}`);
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch (err) {
      throw new AgentError(CODES.INTERNAL, 'app-auth answer is not JSON', { cause: err });
    }
    return keyFromAnswer(body);
  }
}

/** A GET with exact headers (node:http: the Host header is the one signed), a total deadline. */
function get(
  url: string,
  headers: Record<string, string>,
  timeoutMs: number,
  signal: AbortSignal,
): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(new RunAbortedError());
      return;
    }
    const mod = url.startsWith('https:') ? https : http;
    let settled = false;
    const finish = (err: Error | null, value?: { status: number; text: string }) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
      if (err) reject(err);
      else resolve(value!);
    };
    const req = mod.request(url, { method: 'GET', headers }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (c: Buffer) => parts.push(c));
      res.on('end', () =>
        finish(null, { status: res.statusCode ?? 0, text: Buffer.concat(parts).toString('utf8') }),
      );
      res.on('error', (e) =>
        finish(new AgentError(CODES.INTERNAL, `app-auth failed: ${e.message}`, { cause: e })),
      );
    });
    const timer = setTimeout(() => {
      req.destroy();
      finish(new AgentError(CODES.INTERNAL, `app-auth timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    const onAbort = () => {
      req.destroy();
      finish(new RunAbortedError());
    };
    signal.addEventListener('abort', onAbort, { once: true });
    req.on('error', (e) =>
      finish(new AgentError(CODES.INTERNAL, `app-auth failed: ${e.message}`, { cause: e })),
    );
    req.end();
  });
}
