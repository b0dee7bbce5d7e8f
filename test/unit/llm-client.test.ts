// The LLM client (lib/agent/llm.ts) against small upstreams on loopback sockets: the SSE framing
// variants a real upstream sends, retries as the openai SDK does them, connection reuse, and
// the failures that must end a run with a code instead of crashing the worker.
import { expect } from 'chai';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { AgentError } from '../../lib/agent/errors.js';
import {
  httpError,
  LlmClient,
  retryDelayMs,
  RunAbortedError,
  type LlmDelta,
  type LlmModel,
} from '../../lib/agent/llm.js';

type Handler = (req: IncomingMessage, res: ServerResponse, n: number) => void;

interface Upstream {
  model: LlmModel;
  /** Requests seen, and the distinct connections they came on. */
  requests: number;
  connections: number;
  bodies: string[];
  sockets: Set<Socket>;
  close(): Promise<void>;
}

async function upstream(handler: Handler): Promise<Upstream> {
  const u = {
    requests: 0,
    connections: 0,
    bodies: [] as string[],
    sockets: new Set<Socket>(),
  } as Upstream;
  const server = http.createServer((req, res) => {
    const n = u.requests++;
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (d: string) => (body += d));
    req.on('end', () => {
      u.bodies.push(body);
      handler(req, res, n);
    });
  });
  server.on('connection', (s: Socket) => {
    u.connections++;
    u.sockets.add(s);
    s.on('close', () => u.sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  u.model = { domain: 'm', api: `http://127.0.0.1:${port}/v1/`, key: 'sk-1' };
  u.close = () => {
    for (const s of u.sockets) s.destroy();
    return new Promise((r) => server.close(() => r()));
  };
  return u;
}

const sse = (res: ServerResponse) =>
  res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache' });
const data = (delta: Record<string, unknown>) =>
  `data: ${JSON.stringify({ choices: [{ index: 0, delta }] })}\n\n`;

async function collect(
  client: LlmClient,
  model: LlmModel,
  signal = new AbortController().signal,
): Promise<{ deltas: LlmDelta[]; error?: Error }> {
  const deltas: LlmDelta[] = [];
  try {
    for await (const d of client.stream(model, [{ role: 'user', content: 'hi' }], signal))
      deltas.push(d);
    return { deltas };
  } catch (err) {
    return { deltas, error: err as Error };
  }
}

const codeOf = (err: Error | undefined) => (err instanceof AgentError ? err.code : undefined);
const text = (ds: LlmDelta[]) => ds.map((d) => d.content ?? '').join('');

describe('LLM client over real sockets (spec 7.2)', () => {
  const ups: Upstream[] = [];
  const make = async (h: Handler) => {
    const u = await upstream(h);
    ups.push(u);
    return u;
  };
  afterEach(async () => {
    await Promise.all(ups.splice(0).map((u) => u.close()));
  });
  const client = (over: Partial<ConstructorParameters<typeof LlmClient>[0]> = {}) =>
    new LlmClient({ timeoutMs: 3000, maxRetries: 2, ...over });

  it('sends exactly POST {api}/chat/completions, the Bearer key and {messages, model, stream}', async () => {
    let seen: IncomingMessage | undefined;
    const u = await make((req, res) => {
      seen = req;
      sse(res);
      res.end(data({ content: 'ok' }) + 'data: [DONE]\n\n');
    });
    const r = await collect(client(), u.model);
    expect(r.error).to.equal(undefined);
    expect(seen!.method).to.equal('POST');
    expect(seen!.url).to.equal('/v1/chat/completions');
    expect(seen!.headers.authorization).to.equal('Bearer sk-1');
    expect(seen!.headers['content-type']).to.equal('application/json');
    expect(JSON.parse(u.bodies[0]!)).to.deep.equal({
      messages: [{ role: 'user', content: 'hi' }],
      model: 'm',
      stream: true,
    });
  });

  it('SSE variants: CRLF lines, "data:" without a space, comments, split writes, multi-byte text cut mid-character', async () => {
    const u = await make((_req, res) => {
      sse(res);
      const bytes = Buffer.from(
        ': keep-alive\r\n\r\n' +
          `data:${JSON.stringify({ choices: [{ delta: { reasoning_content: '想一想' } }] })}\r\n\r\n` +
          data({ content: '你好，' }) +
          `event: message\nid: 7\n${data({ content: 'world 🌍' })}` +
          data({ content: '' }) +
          `data: ${JSON.stringify({ choices: [] })}\n\n` +
          'data: [DONE]\n\n',
      );
      // One byte at a time for the first 120 bytes (cuts every multi-byte character), then the rest.
      let i = 0;
      const step = () => {
        if (i < 120) {
          res.write(bytes.subarray(i, i + 1));
          i++;
          setImmediate(step);
        } else res.end(bytes.subarray(i));
      };
      step();
    });
    const r = await collect(client(), u.model);
    expect(r.error).to.equal(undefined);
    expect(r.deltas).to.deep.equal([
      { reasoning: '想一想' },
      { content: '你好，' },
      { content: 'world 🌍' },
    ]);
  });

  it('connections are reused across calls (keep-alive), also after a [DONE] that precedes the end of the body', async () => {
    let ended = 0;
    const u = await make((_req, res) => {
      sse(res);
      res.write(data({ content: 'a' }) + 'data: [DONE]\n\n');
      setTimeout(() => res.end(': trailing\n\n', () => ended++), 20);
    });
    const c = client();
    for (let i = 0; i < 5; i++) {
      expect(text((await collect(c, u.model)).deltas)).to.equal('a');
      // The rest of the body (20 ms later) is drained, and the connection goes back to the pool:
      // waited for on the server's side first, so that a loaded machine is not a failure.
      while (ended <= i) await new Promise((r) => setTimeout(r, 10));
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(u.requests).to.equal(5);
    expect(u.connections).to.equal(1);
  });

  it('HTTP 5xx is retried (maxRetries), then 40303 with the status; 4xx is not retried', async () => {
    const u = await make((req, res) => {
      res.writeHead(req.url!.includes('/bad/') ? 400 : 503, {
        'Content-Type': 'application/json',
        'retry-after-ms': '10',
      });
      res.end(JSON.stringify({ error: { message: 'nope', code: null } }));
    });
    const r = await collect(client({ maxRetries: 2 }), u.model);
    expect(codeOf(r.error)).to.equal(40303);
    expect((r.error as AgentError).origin).to.deep.include({
      code: 503,
      message: 'HTTP 503: nope',
    });
    expect(u.requests).to.equal(3);
    const bad = await collect(client({ maxRetries: 2 }), {
      ...u.model,
      api: u.model.api + 'bad/',
    });
    expect((bad.error as AgentError).origin).to.deep.include({ code: 400 });
    expect(u.requests).to.equal(4);
  });

  it('x-should-retry: false stops retries; retry-after is honoured', async () => {
    const times: number[] = [];
    const u = await make((_req, res, n) => {
      times.push(Date.now());
      if (n === 0) {
        res.writeHead(429, { 'retry-after': '0.3' });
        res.end('slow down');
      } else {
        res.writeHead(500, { 'x-should-retry': 'false' });
        res.end('{"error":{"code":"one_api_error","message":"quota"}}');
      }
    });
    const r = await collect(client({ maxRetries: 5 }), u.model);
    expect(u.requests).to.equal(2);
    expect(times[1]! - times[0]!).to.be.at.least(280);
    expect(codeOf(r.error)).to.equal(40366);
  });

  it('a refused connection is retried, then 40303; the caller never sees the raw error', async () => {
    const u = await make(() => {});
    const model = { ...u.model };
    await u.close();
    ups.pop();
    const r = await collect(client({ maxRetries: 1 }), model);
    expect(codeOf(r.error)).to.equal(40303);
    expect((r.error as AgentError).origin!.message).to.match(/ECONNREFUSED/);
  });

  it('a keep-alive connection the upstream closed while idle is replaced without an error (maxRetries 0)', async () => {
    const u = await make((_req, res) => {
      sse(res);
      res.end(data({ content: 'x' }) + 'data: [DONE]\n\n');
    });
    const c = client({ maxRetries: 0 });
    expect(text((await collect(c, u.model)).deltas)).to.equal('x');
    for (const s of u.sockets) s.destroy(); // the upstream drops its idle connections
    await new Promise((r) => setTimeout(r, 50));
    const r = await collect(c, u.model);
    expect(r.error).to.equal(undefined);
    expect(text(r.deltas)).to.equal('x');
  });

  it('a reused connection found closed is replaced at once, not counted as a retry (maxRetries 0)', async () => {
    const u = await make((req, res, n) => {
      if (n === 1) {
        // The upstream dropped the kept-alive connection just as the request came on it.
        req.socket.destroy();
        return;
      }
      sse(res);
      res.end(data({ content: `r${n}` }) + 'data: [DONE]\n\n');
    });
    const c = client({ maxRetries: 0 });
    expect(text((await collect(c, u.model)).deltas)).to.equal('r0');
    await new Promise((r) => setTimeout(r, 50)); // the connection is back in the pool
    const t0 = Date.now();
    const r = await collect(c, u.model);
    expect(r.error, JSON.stringify((r.error as AgentError | undefined)?.origin)).to.equal(
      undefined,
    );
    expect(text(r.deltas)).to.equal('r2');
    expect(Date.now() - t0).to.be.below(300); // no back-off pause
    expect(u.connections).to.equal(2);
  });

  it('a connection reset mid-stream: the chunks before it, then 40303; nothing thrown elsewhere', async () => {
    const u = await make((_req, res) => {
      sse(res);
      res.write(data({ content: 'part' }));
      setTimeout(() => res.socket!.resetAndDestroy(), 30);
    });
    const r = await collect(client(), u.model);
    expect(text(r.deltas)).to.equal('part');
    expect(codeOf(r.error)).to.equal(40303);
  });

  it('a 200 JSON answer (a gateway error without a stream) maps its code', async () => {
    const u = await make((_req, res) => {
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ code: 'invalid_text_request', message: 'bad input' }));
    });
    const r = await collect(client(), u.model);
    expect(codeOf(r.error)).to.equal(40355);
  });

  it('an event that never ends past the size cap: 40303, not unbounded memory', async function () {
    this.timeout(20_000);
    const u = await make((_req, res) => {
      sse(res);
      const piece = 'data: ' + 'x'.repeat(1024 * 1024);
      let n = 0;
      const more = () => {
        while (n < 12 && res.write(piece)) n++;
        if (n < 12) res.once('drain', more);
        else res.end();
      };
      more();
    });
    const r = await collect(client(), u.model);
    expect(codeOf(r.error)).to.equal(40303);
    expect((r.error as AgentError).origin!.message).to.match(/over \d+ characters/);
  });

  it('the caller aborting mid-stream: RunAbortedError and the upstream sees its request closed', async () => {
    let closed!: Promise<void>;
    const u = await make((_req, res) => {
      closed = new Promise((r) => res.on('close', () => r()));
      sse(res);
      res.write(data({ content: 'first' }));
    });
    const ac = new AbortController();
    const got: LlmDelta[] = [];
    let error: unknown;
    try {
      for await (const d of client().stream(
        u.model,
        [{ role: 'user', content: 'hi' }],
        ac.signal,
      )) {
        got.push(d);
        ac.abort();
      }
    } catch (err) {
      error = err;
    }
    expect(got).to.deep.equal([{ content: 'first' }]);
    expect(error).to.be.instanceOf(RunAbortedError);
    await closed;
  });

  it('silence longer than the timeout: -1, also while waiting between retries', async () => {
    const u = await make((_req, res) => {
      res.writeHead(503, { 'retry-after': '30' }); // 30 s: past the timeout
      res.end();
    });
    const t0 = Date.now();
    const r = await collect(client({ timeoutMs: 300, maxRetries: 3 }), u.model);
    expect(codeOf(r.error)).to.equal(-1);
    expect(Date.now() - t0).to.be.below(2000);
  });

  it('the idle timeout measures the upstream only: a consumer that holds a chunk (its own client stalled) longer than the timeout gets the rest, with no -1', async () => {
    const u = await make((_req, res) => {
      sse(res);
      let i = 0;
      const tick = setInterval(() => {
        if (res.destroyed) return clearInterval(tick);
        if (i < 10) res.write(data({ content: `k${i++} ` }));
        else {
          clearInterval(tick);
          res.end('data: [DONE]\n\n');
        }
      }, 30);
    });
    const deltas: LlmDelta[] = [];
    let error: Error | undefined;
    try {
      const stream = client({ timeoutMs: 300, maxRetries: 0 }).stream(
        u.model,
        [{ role: 'user', content: 'hi' }],
        new AbortController().signal,
      );
      for await (const d of stream) {
        deltas.push(d);
        // Blocked on our own client's back-pressure, three idle timeouts long.
        if (deltas.length === 2) await new Promise((r) => setTimeout(r, 1000));
      }
    } catch (err) {
      error = err as Error;
    }
    expect(error, error?.message).to.equal(undefined);
    expect(text(deltas)).to.equal(Array.from({ length: 10 }, (_, i) => `k${i} `).join(''));
  });

  it('an upstream silent while the consumer waits for it still times out: -1', async () => {
    const u = await make((_req, res) => {
      sse(res);
      res.write(data({ content: 'a' }));
      res.write(data({ content: 'b' }));
      // then silence, the connection open
    });
    const t0 = Date.now();
    const deltas: LlmDelta[] = [];
    let error: Error | undefined;
    try {
      for await (const d of client({ timeoutMs: 300, maxRetries: 0 }).stream(
        u.model,
        [{ role: 'user', content: 'hi' }],
        new AbortController().signal,
      )) {
        deltas.push(d);
        await new Promise((r) => setTimeout(r, 500));
      }
    } catch (err) {
      error = err as Error;
    }
    expect(text(deltas)).to.equal('ab');
    expect(codeOf(error)).to.equal(-1);
    expect(Date.now() - t0).to.be.within(1000, 3000);
  });

  it('an api that is not an http(s) URL: 40303 before any request', async () => {
    const r = await collect(client(), { domain: 'm', api: 'ftp://x', key: 'k' });
    expect(codeOf(r.error)).to.equal(40303);
    const r2 = await collect(client(), { domain: 'm', api: 'not a url', key: 'k' });
    expect(codeOf(r2.error)).to.equal(40303);
  });

  it('retry pauses: the upstream hint under a minute, else 0.5 s doubling to 8 s with jitter', () => {
    expect(retryDelayMs(0, { 'retry-after-ms': '250' })).to.equal(250);
    expect(retryDelayMs(0, { 'retry-after': '2' })).to.equal(2000);
    const d0 = retryDelayMs(0);
    expect(d0).to.be.within(375, 500);
    expect(retryDelayMs(10)).to.be.within(6000, 8000);
    expect(retryDelayMs(0, { 'retry-after': '120' })).to.be.within(375, 500);
  });

  it('HTTP error bodies: error.code, a top-level code, or the status', () => {
    expect(httpError(400, '{"error":{"code":"one_api_error","message":"m"}}').code).to.equal(40366);
    expect(httpError(400, '{"code":"invalid_text_request","message":"m"}').code).to.equal(40355);
    const plain = httpError(502, '<html>bad gateway</html>');
    expect(plain.code).to.equal(40303);
    expect(plain.origin).to.deep.include({
      code: 502,
      message: 'HTTP 502: <html>bad gateway</html>',
    });
  });
});
