// What the plugins share: a JSON call with a per-call deadline whose expiry is the plugin's own
// code (spec 5.1: 40023-40028), the base64 payloads of link tools, and a line reader for
// streamed answers. Transport failures (connection refused, HTTP >= 400, an answer that is not
// JSON) are 40500 with a detail; the caller's abort is RunAbortedError.
//
// The calls use node:http with keep-alive agents, not fetch: on Node 20 a fetch costs about five
// times the CPU of an http.request on loopback (~700 us against ~130 us for client and server
// together), and a ReAct run makes several plugin calls per step.
import http, { type IncomingMessage } from 'node:http';
import https from 'node:https';
import type { Context } from '@opentelemetry/api';
import { requestIdHeader } from '../../telemetry/context.js';
import { injectTraceHeaders } from '../../telemetry/tracing.js';
import { pyJson } from '../chunks.js';
import { AgentError, CODES, type CodeDef } from '../errors.js';
import { RunAbortedError } from '../llm.js';
import { parseBoundedJson } from '../../schema/json.js';

export interface RequestInit {
  method: 'GET' | 'POST';
  headers?: Record<string, string>;
  body?: string;
  /** The span the call belongs to: its traceparent goes along, so the service's trace continues. */
  trace?: Context;
  /** Sent as `X-Request-Id`: the request the call is made for. */
  requestId?: string;
}

/** The plugins' HTTP client: one per worker (its agents keep connections to the services open). */
export class PluginHttpClient {
  private readonly httpAgent: http.Agent;
  private readonly httpsAgent: https.Agent;

  constructor(opts: { keepAlive?: boolean; maxSockets?: number } = {}) {
    const o = {
      keepAlive: opts.keepAlive ?? true,
      maxSockets: opts.maxSockets ?? 256,
      scheduling: 'lifo' as const,
    };
    this.httpAgent = new http.Agent(o);
    this.httpsAgent = new https.Agent(o);
  }

  /** Sends a request; resolves with the response once its head arrived. `signal` aborts both. */
  send(url: string, init: RequestInit, signal: AbortSignal): Promise<IncomingMessage> {
    return new Promise((resolve, reject) => {
      let target: URL;
      try {
        target = new URL(url);
      } catch (err) {
        reject(err);
        return;
      }
      const secure = target.protocol === 'https:';
      const headers: Record<string, string | number> = {
        ...requestIdHeader(init.requestId),
        ...init.headers,
      };
      if (init.body !== undefined) headers['Content-Length'] = Buffer.byteLength(init.body);
      injectTraceHeaders(init.trace, headers);
      const req = (secure ? https : http).request(
        target,
        { method: init.method, headers, agent: secure ? this.httpsAgent : this.httpAgent, signal },
        resolve,
      );
      req.on('error', reject);
      req.end(init.body);
    });
  }

  close(): void {
    this.httpAgent.destroy();
    this.httpsAgent.destroy();
  }
}

/** The whole body of a response as text (UTF-8). */
export async function readText(res: IncomingMessage): Promise<string> {
  const parts: Buffer[] = [];
  for await (const c of res) parts.push(c as Buffer);
  return Buffer.concat(parts).toString('utf8');
}

export interface CallOptions {
  client: PluginHttpClient;
  /** Names the call in error details and logs, e.g. "link tool run". */
  what: string;
  /** PLUGIN_TIMEOUT: the whole call (answer and body) must finish within it. */
  timeoutMs: number;
  /** The code of a call that ran past its deadline. */
  timeoutCode: CodeDef;
  signal: AbortSignal;
  /** The span the call belongs to (see RequestInit.trace). */
  trace?: Context;
  /** See RequestInit.requestId. */
  requestId?: string;
}

/** A deadline and the caller's signal as one signal; `dispose()` must be called when done. */
export function deadline(signal: AbortSignal, timeoutMs: number) {
  const controller = new AbortController();
  const state = { timedOut: false };
  const onAbort = () => controller.abort();
  if (signal.aborted) controller.abort();
  else signal.addEventListener('abort', onAbort, { once: true });
  let timer: NodeJS.Timeout | undefined;
  const arm = () => {
    if (timer) clearTimeout(timer);
    timer = setTimeout(() => {
      state.timedOut = true;
      controller.abort();
    }, timeoutMs);
  };
  arm();
  return {
    signal: controller.signal,
    state,
    /** Restarts the deadline (a stream that made progress). */
    rearm: arm,
    /**
     * Stops it until the next rearm: while the consumer holds a frame (blocked on its own
     * client's back-pressure) the stream is not read, and that wait is not the service's.
     */
    hold() {
      if (timer) clearTimeout(timer);
      timer = undefined;
    },
    /** Ends what the signal guards (an unfinished streamed answer). */
    abort: () => controller.abort(),
    dispose() {
      if (timer) clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
    },
  };
}

/** The innermost message of a fetch failure ("fetch failed" hides the cause). */
export function causeText(err: unknown): string {
  if (err instanceof Error) {
    const cause = err.cause;
    if (cause instanceof Error)
      return cause.message || (cause as { code?: string }).code || err.message;
    return err.message;
  }
  return String(err);
}

/** Maps what a call threw (or `state`) to the error the run ends with. */
export function callError(err: unknown, opts: CallOptions, timedOut: boolean): Error {
  if (err instanceof AgentError || err instanceof RunAbortedError) return err;
  if (timedOut) {
    return new AgentError(opts.timeoutCode, undefined, {
      origin: { message: `${opts.what} timed out after ${opts.timeoutMs} ms`, name: 'plugin' },
      cause: err,
    });
  }
  if (opts.signal.aborted) return new RunAbortedError();
  return new AgentError(CODES.INTERNAL, `${opts.what} failed: ${causeText(err)}`, { cause: err });
}

/** Sends a request and reads its JSON answer within the deadline. */
export async function callJson(
  url: string,
  init: RequestInit,
  opts: CallOptions,
): Promise<unknown> {
  if (opts.signal.aborted) throw new RunAbortedError();
  const d = deadline(opts.signal, opts.timeoutMs);
  try {
    const res = await opts.client.send(
      url,
      { ...init, trace: opts.trace, requestId: opts.requestId },
      d.signal,
    );
    const status = res.statusCode ?? 0;
    if (status >= 400) {
      res.resume();
      throw new AgentError(CODES.INTERNAL, `${opts.what} answered HTTP ${status}`);
    }
    const text = await readText(res);
    try {
      return parseBoundedJson(text);
    } catch (err) {
      throw new AgentError(CODES.INTERNAL, `${opts.what} answer is not JSON`, { cause: err });
    }
  } catch (err) {
    throw callError(err, opts, d.state.timedOut);
  } finally {
    d.dispose();
  }
}

/** A JSON POST (Content-Type: application/json). */
export function postJson(
  url: string,
  body: unknown,
  opts: CallOptions,
  headers: Record<string, string> = {},
): Promise<unknown> {
  return callJson(
    url,
    {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', ...headers },
      body: JSON.stringify(body),
    },
    opts,
  );
}

/** Python's `json.dumps(value)` (ensure_ascii=True): non-ASCII and DEL as lower-case \uXXXX. */
export function pyJsonAscii(value: unknown): string {
  return pyJson(value).replace(
    /[\u007f-\uffff]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}

/** base64 of the ASCII JSON text of a map (the link tool payload parts of spec 8.1). */
export function b64Json(value: unknown): string {
  return Buffer.from(pyJsonAscii(value), 'utf8').toString('base64');
}

/** Lines of a streamed body ("\n", "\r\n" or "\r" endings), decoded as UTF-8. */
export async function* readLines(body: AsyncIterable<Uint8Array>): AsyncGenerator<string> {
  const decoder = new TextDecoder('utf-8');
  let buf = '';
  for await (const part of body) {
    buf += decoder.decode(part, { stream: true });
    let nl: number;
    while ((nl = buf.search(/\r\n|\n|\r/)) >= 0) {
      // A "\r" at the very end may be the first half of "\r\n": wait for the next part.
      if (buf[nl] === '\r' && nl === buf.length - 1) break;
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + (buf[nl] === '\r' && buf[nl + 1] === '\n' ? 2 : 1));
      yield line;
    }
  }
  buf += decoder.decode();
  if (buf !== '') yield buf;
}

/** Python truthiness of a decoded JSON value. */
export function pyTruthy(v: unknown): boolean {
  if (v === null || v === undefined || v === false || v === 0 || v === '') return false;
  if (Array.isArray(v)) return v.length > 0;
  if (typeof v === 'object') return Object.keys(v).length > 0;
  return true;
}
