// A fake OpenAI-compatible upstream on a loopback port: `POST <any>/chat/completions`, streaming
// SSE as OpenAI does. What it does is chosen by the request's `model` (the bot's domain):
//   ok[-<tag>]        reasoning "Let me think." then content "Hello" ", world"
//   chunks-<N>        N content chunks "t0".."t<N-1>" (the bench uses chunks-50)
//   error-frame       one content chunk, then an iFlytek error frame {"code":10013,...}
//   error-object      one content chunk, then {"error":{"code":"invalid_text_request",...}}
//   http-<status>     that HTTP status with an OpenAI error body (one_api_error for 400)
//   malformed         one content chunk, then `data: not json`
//   slow              one content chunk, then silence (the stream stays open)
//   hang              never answers (no headers)
//   long              a content chunk every 50 ms for 60 s (disconnect tests)
//   paced-<N>-<ms>    N content chunks "p0 ".., one every <ms> ms (drain tests)
//   big-<N>-<KB>      N content chunks of <KB> KiB each ("b0:xxx.."), as fast as the agent reads
//                     them (the fake waits for 'drain': a healthy upstream; stalled-reader tests)
// Every request is recorded (headers, parsed body, whether it was closed before the end).
// Also runnable on its own (`tsx test/support/fake-llm.ts <port>`), for the bench.
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface RecordedLlmRequest {
  url: string;
  headers: http.IncomingHttpHeaders;
  body: Record<string, unknown>;
  rawBody: string;
  /** True once the connection closed before the fake finished its answer. */
  closedEarly: boolean;
  /** Resolves when the request's connection closes (for any reason). */
  closed: Promise<void>;
}

export interface FakeLlm {
  url: string;
  port: number;
  requests: RecordedLlmRequest[];
  /** Requests whose model is `model`. */
  byModel(model: string): RecordedLlmRequest[];
  /** Waits until a request for `model` arrives. */
  waitFor(model: string, timeoutMs?: number): Promise<RecordedLlmRequest>;
  close(): Promise<void>;
}

function chunk(
  model: string,
  delta: Record<string, unknown>,
  finish: string | null = null,
): string {
  const obj = {
    id: 'chatcmpl-fake',
    object: 'chat.completion.chunk',
    created: Math.floor(Date.now() / 1000),
    model,
    choices: [{ index: 0, delta: { role: 'assistant', ...delta }, finish_reason: finish }],
  };
  return `data: ${JSON.stringify(obj)}\n\n`;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

async function answer(model: string, res: ServerResponse, gone: () => boolean): Promise<void> {
  const sse = () =>
    res.writeHead(200, {
      'Content-Type': 'text/event-stream',
      'Cache-Control': 'no-cache',
      Connection: 'keep-alive',
    });
  const status = /^http-(\d{3})$/.exec(model);
  if (status) {
    const code = Number(status[1]);
    const body = {
      error: {
        message: `fake upstream answers ${code}`,
        type: 'server_error',
        code: code === 400 ? 'one_api_error' : null,
      },
    };
    res.writeHead(code, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify(body));
    return;
  }
  if (model === 'hang') return; // never answers
  sse();
  const n = /^chunks-(\d+)$/.exec(model);
  if (n) {
    const count = Number(n[1]);
    for (let i = 0; i < count && !gone(); i++) res.write(chunk(model, { content: `t${i}` }));
    res.end(chunk(model, {}, 'stop') + 'data: [DONE]\n\n');
    return;
  }
  const big = /^big-(\d+)-(\d+)$/.exec(model);
  if (big) {
    const fill = 'x'.repeat(Number(big[2]) * 1024);
    for (let i = 0; i < Number(big[1]) && !gone(); i++) {
      if (!res.write(chunk(model, { content: `b${i}:${fill}` }))) {
        await new Promise<void>((r) => {
          const done = () => {
            res.off('drain', done);
            res.off('close', done);
            r();
          };
          res.on('drain', done);
          res.on('close', done);
        });
      }
    }
    if (!gone()) res.end(chunk(model, {}, 'stop') + 'data: [DONE]\n\n');
    return;
  }
  const paced = /^paced-(\d+)-(\d+)$/.exec(model);
  if (paced) {
    for (let i = 0; i < Number(paced[1]) && !gone(); i++) {
      res.write(chunk(model, { content: `p${i} ` }));
      await sleep(Number(paced[2]));
    }
    if (!gone()) res.end(chunk(model, {}, 'stop') + 'data: [DONE]\n\n');
    return;
  }
  switch (model) {
    case 'error-frame':
      res.write(chunk(model, { content: 'partial' }));
      res.end(
        `data: ${JSON.stringify({ code: 10013, message: 'input moderation failed', sid: 'fake', choices: [] })}\n\n`,
      );
      return;
    case 'error-object':
      res.write(chunk(model, { content: 'partial' }));
      res.end(
        `data: ${JSON.stringify({ error: { code: 'invalid_text_request', message: 'bad text' } })}\n\n`,
      );
      return;
    case 'malformed':
      res.write(chunk(model, { content: 'partial' }));
      res.end('data: not json\n\n');
      return;
    case 'slow':
      res.write(chunk(model, { content: 'first' }));
      return; // stays open
    case 'long':
      for (let i = 0; i < 1200 && !gone(); i++) {
        res.write(chunk(model, { content: `c${i} ` }));
        await sleep(50);
      }
      if (!gone()) res.end(chunk(model, {}, 'stop') + 'data: [DONE]\n\n');
      return;
    default:
      res.write(chunk(model, { reasoning_content: 'Let me think.', content: null }));
      res.write(chunk(model, { content: 'Hello' }));
      res.write(chunk(model, { content: ', world' }));
      res.end(chunk(model, {}, 'stop') + 'data: [DONE]\n\n');
  }
}

export async function startFakeLlm(port = 0, opts: { record?: boolean } = {}): Promise<FakeLlm> {
  const record = opts.record ?? true;
  const requests: RecordedLlmRequest[] = [];
  const waiters: { model: string; resolve: (r: RecordedLlmRequest) => void }[] = [];
  const sockets = new Set<import('node:net').Socket>();

  const server = http.createServer((req: IncomingMessage, res: ServerResponse) => {
    const parts: Buffer[] = [];
    req.on('data', (c: Buffer) => parts.push(c));
    req.on('end', () => {
      const rawBody = Buffer.concat(parts).toString('utf8');
      let body: Record<string, unknown> = {};
      try {
        body = JSON.parse(rawBody) as Record<string, unknown>;
      } catch {
        /* recorded as {} */
      }
      if (req.method !== 'POST' || !(req.url ?? '').endsWith('/chat/completions')) {
        res.writeHead(404).end();
        return;
      }
      const model = typeof body.model === 'string' ? body.model : '';
      let finished = false;
      let markClosed!: () => void;
      const rec: RecordedLlmRequest = {
        url: req.url ?? '',
        headers: req.headers,
        body,
        rawBody,
        closedEarly: false,
        closed: new Promise<void>((r) => (markClosed = r)),
      };
      res.on('close', () => {
        if (!finished && !res.writableFinished) rec.closedEarly = true;
        markClosed();
      });
      res.on('finish', () => (finished = true));
      if (record) {
        requests.push(rec);
        for (const w of waiters.filter((x) => x.model === model)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(rec);
        }
      }
      void answer(model, res, () => res.destroyed || rec.closedEarly);
    });
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  const actual = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${actual}`,
    port: actual,
    requests,
    byModel: (model) => requests.filter((r) => r.body.model === model),
    waitFor(model, timeoutMs = 10_000) {
      const hit = requests.find((r) => r.body.model === model);
      if (hit) return Promise.resolve(hit);
      return new Promise((resolve, reject) => {
        const w = { model, resolve };
        waiters.push(w);
        setTimeout(() => {
          const i = waiters.indexOf(w);
          if (i >= 0) {
            waiters.splice(i, 1);
            reject(new Error(`no upstream request for model ${model} within ${timeoutMs} ms`));
          }
        }, timeoutMs).unref();
      });
    },
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

// Standalone: `tsx test/support/fake-llm.ts <port>` prints "ready <port>".
if (process.argv[1] && import.meta.filename === process.argv[1]) {
  const fake = await startFakeLlm(Number(process.argv[2] ?? 0), { record: false });
  console.log(`ready ${fake.port}`);
  process.on('SIGTERM', () => void fake.close().then(() => process.exit(0)));
}
