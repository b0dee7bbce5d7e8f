// Helpers for the chat tests: bots pointing at the fake upstream, a raw SSE reader, a WebSocket
// chat client.
import http from 'node:http';
import OpenAI from 'openai';
import WebSocket from 'ws';
import { PATH as BOT_CONFIG_PATH } from './bot-config.js';
import { request } from './service.js';

export const CHAT = '/agent/v1/chat/completions';
/** spec 11.1: {sub}{pid:04x}{index:04x}@{location}{ts11}{ip4hex}{port2}2 */
export const SID_RE = /^svc[0-9a-f]{4}[0-9a-f]{4}@src[0-9a-f]{11}[0-9a-f]{4}\d{2}2$/;

export interface Chunk {
  id: string;
  choices: {
    delta: {
      content: string | null;
      reasoning_content: string | null;
      tool_calls:
        | {
            type: string;
            reason: string;
            id: null;
            index: number;
            function: Record<string, string>;
          }[]
        | null;
      role: string;
      function_call: null;
      refusal: null;
    };
    finish_reason: string | null;
    index: number;
    logprobs: null;
  }[];
  created: number;
  model: string;
  object: string;
  code: number;
  message: string;
  logs: unknown[];
  knowledge_metadata: unknown[];
  service_tier: null;
  system_fingerprint: null;
  usage: null;
}

export interface BotOptions {
  domain: string;
  api: string;
  sk?: string;
  instruct?: string;
  repoId?: string[];
  docId?: string[];
  rag?: string;
  extra?: Record<string, unknown>;
}

export async function createBot(
  port: number,
  appId: string,
  botId: string,
  o: BotOptions,
): Promise<void> {
  const detail = { api: o.api, domain: o.domain, sk: o.sk ?? 'sk-test' };
  const cfg = {
    app_id: appId,
    bot_id: botId,
    knowledge_config: { score_threshold: 0.4, top_k: 3 },
    model_config: { instruct: o.instruct ?? 'Be brief.', plan: detail, summary: detail },
    regular_config: {
      match: { repoId: o.repoId ?? [], docId: o.docId ?? [] },
      rag: { type: o.rag ?? 'AIUI-RAG2' },
    },
    tool_ids: [],
    mcp_server_ids: [],
    mcp_server_urls: [],
    flow_ids: [],
    ...o.extra,
  };
  const r = await request(port, BOT_CONFIG_PATH, {
    method: 'POST',
    body: JSON.stringify(cfg),
    headers: { 'Content-Type': 'application/json' },
  });
  const body = JSON.parse(r.body) as { code: number; message: string };
  if (body.code !== 0) throw new Error(`bot ${botId} not created: ${r.body}`);
}

export interface SseResult {
  status: number;
  headers: http.IncomingHttpHeaders;
  raw: string;
  /** Parsed `data:` JSON objects, in order ([DONE] excluded). */
  chunks: Chunk[];
  /** The last event was `data: [DONE]`. */
  done: boolean;
}

/** Splits an SSE body into its events; checks the framing of spec 4.2 strictly. */
export function parseSse(raw: string): { chunks: Chunk[]; done: boolean } {
  if (!raw.endsWith('\n\n'))
    throw new Error(`SSE body does not end with a blank line: ${JSON.stringify(raw.slice(-80))}`);
  const events = raw.slice(0, -2).split('\n\n');
  const chunks: Chunk[] = [];
  let done = false;
  for (const ev of events) {
    if (!ev.startsWith('data: ') || ev.includes('\n'))
      throw new Error(`not a one-line data event: ${JSON.stringify(ev.slice(0, 200))}`);
    const data = ev.slice(6);
    if (done) throw new Error('an event after [DONE]');
    if (data === '[DONE]') done = true;
    else chunks.push(JSON.parse(data) as Chunk);
  }
  return { chunks, done };
}

export async function chatRaw(
  port: number,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; headers: http.IncomingHttpHeaders; raw: string }> {
  const payload = typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body);
  const h: Record<string, string> = { 'Content-Type': 'application/json', ...headers };
  const r = await request(port, CHAT, {
    method: 'POST',
    body: payload,
    headers: h,
    timeoutMs: 30_000,
  });
  return { status: r.status, headers: r.headers, raw: r.body };
}

export async function chatSse(
  port: number,
  body: Record<string, unknown>,
  appId: string,
): Promise<SseResult> {
  const r = await chatRaw(port, { stream: true, ...body }, { 'x-consumer-username': appId });
  if (!String(r.headers['content-type']).startsWith('text/event-stream')) {
    throw new Error(
      `not SSE (HTTP ${r.status}, ${String(r.headers['content-type'])}): ${r.raw.slice(0, 300)}`,
    );
  }
  return { ...r, ...parseSse(r.raw) };
}

export async function chatJson<T = Record<string, unknown>>(
  port: number,
  body: unknown,
  headers: Record<string, string>,
): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: T; raw: string }> {
  const r = await chatRaw(port, body, headers);
  return { ...r, body: JSON.parse(r.raw) as T };
}

/** The official SDK as a client of OUR endpoint. */
export function sdk(port: number, appId: string): OpenAI {
  return new OpenAI({
    baseURL: `http://127.0.0.1:${port}/agent/v1`,
    apiKey: 'unused-by-the-agent',
    defaultHeaders: { 'x-consumer-username': appId },
    maxRetries: 0,
    timeout: 30_000,
  });
}

export const user = (content: string) => ({ role: 'user', content });
export const assistant = (content: string) => ({ role: 'assistant', content });

// ---- WebSocket -----------------------------------------------------------------------------------

export interface WsFrame {
  request_id?: string | null;
  chunk?: Chunk;
  done?: boolean;
  cancelled?: boolean;
  type?: string;
  code?: number;
  message?: string;
}

export class WsChatClient {
  readonly frames: WsFrame[] = [];
  private listeners: (() => void)[] = [];

  private constructor(readonly ws: WebSocket) {
    ws.on('message', (d) => {
      this.frames.push(JSON.parse(d.toString()) as WsFrame);
      for (const l of this.listeners) l();
    });
  }

  static open(
    port: number,
    opts: { appId?: string; query?: string; headers?: Record<string, string> } = {},
  ): Promise<WsChatClient> {
    const headers = {
      ...(opts.appId === undefined ? {} : { 'x-consumer-username': opts.appId }),
      ...opts.headers,
    };
    const ws = new WebSocket(`ws://127.0.0.1:${port}/agent/v1/ws${opts.query ?? ''}`, { headers });
    return new Promise((resolve, reject) => {
      ws.once('open', () => resolve(new WsChatClient(ws)));
      ws.once('error', reject);
    });
  }

  send(msg: unknown): void {
    this.ws.send(JSON.stringify(msg));
  }

  chat(requestId: string, body: Record<string, unknown>): void {
    this.send({ type: 'chat', request_id: requestId, body });
  }

  /** Frames of one request. */
  of(requestId: string): WsFrame[] {
    return this.frames.filter((f) => f.request_id === requestId);
  }

  /** Waits until a frame matches. */
  waitFor(pred: (f: WsFrame) => boolean, timeoutMs = 15_000): Promise<WsFrame> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const hit = this.frames.find(pred);
        if (!hit) return false;
        this.listeners = this.listeners.filter((l) => l !== listener);
        clearTimeout(timer);
        resolve(hit);
        return true;
      };
      const listener = () => void check();
      const timer = setTimeout(() => {
        this.listeners = this.listeners.filter((l) => l !== listener);
        reject(
          new Error(
            `no matching WebSocket frame within ${timeoutMs} ms; got ${JSON.stringify(this.frames).slice(0, 500)}`,
          ),
        );
      }, timeoutMs);
      if (!check()) this.listeners.push(listener);
    });
  }

  /** Waits for `done` of a request and returns its chunks. */
  async result(requestId: string): Promise<{ chunks: Chunk[]; done: WsFrame }> {
    const done = await this.waitFor((f) => f.request_id === requestId && f.done === true);
    return { chunks: this.of(requestId).flatMap((f) => (f.chunk ? [f.chunk] : [])), done };
  }

  close(): void {
    this.ws.close();
  }
}
