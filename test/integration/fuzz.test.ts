// Property-based fuzzing of the whole API (issue 13) with fast-check: generated requests (deep
// nesting, huge strings, wrong types, invalid UTF-8, duplicate keys, odd content types, truncated
// bodies, slow uploads, odd methods and paths) on every HTTP endpoint and generated messages on
// the WebSocket, against ONE service started with the real CLI (two workers, embedded SQLite, a
// fake LLM). Every answer must be one of the documented shapes (README, spec 3.4/4.2/4.4): the
// 40002 body, a GeneralResponse, a chat.completion, an SSE stream ending with [DONE], FastAPI's
// {"detail":...} for 400/404/405/413, /health's and /metrics' own answers; never a 5xx, no worker
// exit, no error-level log line. FUZZ_SEED=<n> replays a run; FUZZ_RUNS scales it.
import { expect } from 'chai';
import fc from 'fast-check';
import http from 'node:http';
import net from 'node:net';
import WebSocket from 'ws';
import { runId, workerExits } from '../support/bot-config.js';
import { CHAT, createBot } from '../support/chat.js';
import { CUSTOM } from '../support/custom-chat.js';
import { startFakeLlm, type FakeLlm } from '../support/fake-llm.js';
import { pluginEnv, startFakePlugins, type FakePlugins } from '../support/fake-plugins.js';
import { hitHealth, sleep, startService, type Service } from '../support/service.js';

const BOT_CONFIG = '/agent/v1/bot-config';
const WS_PATH = '/agent/v1/ws';
const MAX_BODY = 65536;
const SEED = Number(process.env.FUZZ_SEED ?? Date.now() % 1_000_000);
const HTTP_RUNS = Number(process.env.FUZZ_RUNS ?? 1700);
const WS_RUNS = Math.max(300, Math.round(HTTP_RUNS / 5));

// ---- generated requests ----------------------------------------------------------------------

interface FuzzRequest {
  /** The arbitraries it came from (for the figures). */
  kind: string;
  method: string;
  path: string;
  headers: Record<string, string>;
  body?: Buffer;
  /** Written in this many pieces, with a pause between them (slow upload). */
  pieces?: number;
  pauseMs?: number;
  /** Sent raw: Content-Length larger than the body, then the socket half-closed. */
  truncatedTransport?: boolean;
}

const FIELDS = [
  'app_id',
  'bot_id',
  'messages',
  'stream',
  'uid',
  'meta_data',
  'model_config',
  'regular_config',
  'knowledge_config',
  'tool_ids',
  'mcp_server_ids',
  'mcp_server_urls',
  'flow_ids',
  'max_loop_count',
  'instruction',
  'plugin',
  'role',
  'content',
  '__proto__',
  'constructor',
];

const jsonText = (v: unknown) => JSON.stringify(v) ?? 'null';

/** Any JSON value, sometimes a huge string. */
const anyValue: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 6, arbitrary: fc.jsonValue({ maxDepth: 3 }) },
  { weight: 1, arbitrary: fc.integer({ min: 1000, max: 200_000 }).map((n) => 'x'.repeat(n)) },
  { weight: 1, arbitrary: fc.constantFrom(NaN, Infinity, -0, 1e308, -1, 2 ** 53 + 1) },
);

/** Mostly the valid value, sometimes anything else (so runs reach past validation). */
const mostly = <T>(valid: fc.Arbitrary<T>, wrong: fc.Arbitrary<unknown> = anyValue) =>
  fc.oneof(
    { weight: 5, arbitrary: valid as fc.Arbitrary<unknown> },
    { weight: 1, arbitrary: wrong },
  );

/** An object text whose keys may repeat (JSON.stringify cannot make one). */
const duplicateKeys = fc
  .array(fc.tuple(fc.constantFrom(...FIELDS), anyValue), { minLength: 1, maxLength: 8 })
  .map((entries) => {
    const dup = entries.concat(entries.slice(0, 2).map(([k]) => [k, 'dup'] as [string, unknown]));
    return `{${dup.map(([k, v]) => `${JSON.stringify(k)}:${jsonText(v)}`).join(',')}}`;
  });

const deep = fc
  .record({
    depth: fc.oneof(fc.integer({ min: 1, max: 300 }), fc.integer({ min: 300, max: 20_000 })),
    shape: fc.constantFrom('[', '{"a":', '{"messages":'),
    closed: fc.boolean(),
  })
  .map(({ depth, shape, closed }) => {
    const open = shape.repeat(depth);
    if (!closed) return open;
    return open + '1' + (shape === '[' ? ']' : '}').repeat(depth);
  });

const message = fc.record(
  {
    role: fc.oneof(fc.constantFrom('user', 'assistant', 'system', ''), anyValue),
    content: fc.oneof(fc.string({ maxLength: 40 }), anyValue),
  },
  { requiredKeys: [] },
);

/** A chat body close to a valid one, with some fields wrong, missing or extra. */
const chatBody = (botIds: string[]) =>
  fc
    .record(
      {
        bot_id: mostly(
          fc.constantFrom(...botIds),
          fc.oneof(fc.string({ maxLength: 70 }), anyValue),
        ),
        messages: mostly(
          fc.constantFrom(
            [{ role: 'user', content: 'hi' }],
            [
              { role: 'user', content: 'a' },
              { role: 'assistant', content: 'b' },
              { role: 'user', content: 'c' },
            ],
          ),
          fc.oneof(fc.array(message, { maxLength: 4 }), anyValue),
        ),
        stream: mostly(fc.boolean()),
        uid: mostly(fc.string({ maxLength: 40 })),
        meta_data: mostly(
          fc.record({ caller: fc.string({ maxLength: 10 }) }, { requiredKeys: [] }),
        ),
        extra: anyValue,
      },
      { requiredKeys: ['bot_id', 'messages'] },
    )
    .map(jsonText);

const customBody = (llmUrl: string) =>
  fc
    .record(
      {
        model_config: mostly(
          fc.constant({ domain: 'ok', api: llmUrl, api_key: 'k' }),
          fc.oneof(fc.record({ domain: anyValue, api: anyValue }, { requiredKeys: [] }), anyValue),
        ),
        messages: mostly(
          fc.constant([{ role: 'user', content: 'hi' }]),
          fc.array(message, { maxLength: 3 }),
        ),
        max_loop_count: mostly(fc.integer({ min: 1, max: 3 }), fc.oneof(fc.integer(), anyValue)),
        uid: mostly(fc.string({ maxLength: 10 })),
        plugin: mostly(
          fc.constant({ tools: [], mcp_server_ids: [], workflow_ids: [], knowledge: [] }),
          fc.oneof(
            fc.record({ tools: anyValue, knowledge: anyValue }, { requiredKeys: [] }),
            anyValue,
          ),
        ),
        instruction: mostly(fc.record({ reasoning: fc.string(), answer: fc.string() })),
      },
      { requiredKeys: ['model_config', 'messages', 'max_loop_count'] },
    )
    .map(jsonText);

const botConfigBody = (app: string, botIds: string[]) =>
  fc
    .record(
      {
        app_id: mostly(fc.constant(app), fc.oneof(fc.string({ maxLength: 70 }), anyValue)),
        bot_id: mostly(
          fc.oneof(fc.constantFrom(...botIds), fc.string({ minLength: 1, maxLength: 64 })),
        ),
        knowledge_config: mostly(
          fc.record({
            score_threshold: fc.double({ min: 0, max: 1, noNaN: true }),
            top_k: fc.nat(5),
          }),
        ),
        model_config: mostly(
          fc.constant({ instruct: 'x', plan: {}, summary: {} }),
          fc.oneof(fc.record({ instruct: anyValue, plan: anyValue, summary: anyValue }), anyValue),
        ),
        regular_config: mostly(fc.constant({ match: { repoId: [] }, rag: { type: 'AIUI-RAG2' } })),
        tool_ids: mostly(fc.array(fc.string({ maxLength: 8 }), { maxLength: 3 })),
        mcp_server_urls: mostly(fc.array(fc.webUrl(), { maxLength: 2 })),
      },
      { requiredKeys: ['app_id', 'bot_id', 'model_config', 'regular_config'] },
    )
    .map(jsonText);

const invalidUtf8 = fc
  .tuple(
    fc.string({ maxLength: 20 }),
    fc.constantFrom([0xff], [0xc3, 0x28], [0xe2, 0x82], [0xed, 0xa0, 0x80]),
  )
  .map(([s, bad]) =>
    Buffer.concat([
      Buffer.from(`{"bot_id":"${s.replace(/["\\]/g, '')}`),
      Buffer.from(bad),
      Buffer.from('"}'),
    ]),
  );

/** A body text and the name of the arbitrary that made it. */
const bodyFor = (path: string, app: string, botIds: string[], llmUrl: string) => {
  const own =
    path === CHAT
      ? chatBody(botIds.slice(0, 2))
      : path === CUSTOM
        ? customBody(llmUrl)
        : path === BOT_CONFIG
          ? botConfigBody(app, botIds.slice(2))
          : fc.jsonValue().map(jsonText);
  return fc.oneof(
    { weight: 5, arbitrary: own.map((b) => ['near-valid', Buffer.from(b)] as const) },
    {
      weight: 2,
      arbitrary: anyValue.map((v) => ['wrong-types', Buffer.from(jsonText(v))] as const),
    },
    { weight: 1, arbitrary: duplicateKeys.map((b) => ['duplicate-keys', Buffer.from(b)] as const) },
    { weight: 2, arbitrary: deep.map((b) => ['nesting', Buffer.from(b)] as const) },
    {
      weight: 2,
      arbitrary: fc
        .tuple(own, fc.double({ min: 0, max: 1, noNaN: true }))
        .map(([b, f]) => ['truncated', Buffer.from(b.slice(0, Math.floor(b.length * f)))] as const),
    },
    { weight: 1, arbitrary: invalidUtf8.map((b) => ['invalid-utf8', b] as const) },
    {
      weight: 1,
      arbitrary: fc
        .integer({ min: MAX_BODY - 10, max: MAX_BODY * 3 })
        .map((n) => ['huge-body', Buffer.from(`{"bot_id":"${'y'.repeat(n)}"}`)] as const),
    },
    {
      weight: 1,
      arbitrary: fc
        .uint8Array({ maxLength: 64 })
        .map((b) => ['random-bytes', Buffer.from(b)] as const),
    },
    { weight: 1, arbitrary: fc.constant(['empty', Buffer.alloc(0)] as const) },
  );
};

const contentType = fc.oneof(
  { weight: 8, arbitrary: fc.constant('application/json') },
  {
    weight: 2,
    arbitrary: fc.constantFrom(
      '',
      'text/plain',
      'application/x-www-form-urlencoded',
      'multipart/form-data; boundary=x',
      'application/json; charset=latin-1',
      'application/vnd.api+json',
      'APPLICATION/JSON',
      'application/',
      'garbage',
      '*/*',
    ),
  },
);

const queryValue = fc.oneof(
  fc.string({ maxLength: 70 }),
  fc.constantFrom('', '%', '%zz', '%00', 'a&app_id=b', '😀', 'x'.repeat(100)),
);

function requestArb(app: string, botIds: string[], llmUrl: string): fc.Arbitrary<FuzzRequest> {
  const headersArb = fc.record({
    ct: contentType,
    appHeader: mostly(fc.constant(app), fc.oneof(fc.constant(''), fc.string({ maxLength: 70 }))),
  });
  const slow = fc.oneof(
    { weight: 9, arbitrary: fc.constant(undefined) },
    {
      weight: 1,
      arbitrary: fc.record({
        pieces: fc.integer({ min: 2, max: 4 }),
        pauseMs: fc.integer({ min: 5, max: 40 }),
      }),
    },
  );
  const withBody = (path: string, method: string) =>
    fc
      .tuple(bodyFor(path, app, botIds, llmUrl), headersArb, slow, fc.nat(40))
      .map(([[bodyKind, body], h, s, t]): FuzzRequest => {
        const headers: Record<string, string> = {};
        if (h.ct !== '') headers['content-type'] = h.ct;
        if (typeof h.appHeader === 'string' && h.appHeader !== '')
          headers['x-consumer-username'] = h.appHeader;
        const kinds = [`${method} ${path}`, bodyKind, `ct:${h.ct || 'none'}`];
        if (s) kinds.push('slow-upload');
        // Rarely: the body announced longer than it is, the socket half-closed.
        const truncatedTransport = t === 0;
        if (truncatedTransport) kinds.push('truncated-transport');
        return { kind: kinds.join(' '), method, path, headers, body, ...s, truncatedTransport };
      });
  const query = fc
    .record(
      {
        app_id: mostly(fc.constant(app), queryValue),
        bot_id: mostly(fc.constantFrom(...botIds.slice(2)), queryValue),
      },
      { requiredKeys: [] },
    )
    .map((q) =>
      Object.entries(q)
        .map(([k, raw]) => {
          const v = typeof raw === 'string' ? raw : JSON.stringify(raw);
          // Printable ASCII with a % goes as it is (bad escapes reach the service).
          return /%/.test(v) && /^[!-~]*$/.test(v) ? `${k}=${v}` : `${k}=${encodeURIComponent(v)}`;
        })
        .join('&'),
    );
  const noBody = (method: string) =>
    query.map((q): FuzzRequest => ({
      kind: `${method} ${BOT_CONFIG} query`,
      method,
      path: `${BOT_CONFIG}?${q}`,
      headers: {},
    }));
  const odd = fc
    .record({
      method: fc.constantFrom('GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'HEAD'),
      path: fc.oneof(
        fc.constantFrom(
          CHAT,
          CUSTOM,
          BOT_CONFIG,
          '/health',
          '/metrics',
          '/',
          '/agent/v1',
          '/agent/v1/ws',
          `${CHAT}/extra`,
          '/agent/v1/bot-config/..%2f',
          '/%ff',
        ),
        fc.webPath().map((p) => (p.startsWith('/') ? p : `/${p}`)),
      ),
    })
    .map(({ method, path }): FuzzRequest => ({
      kind: `${method} ${/^\/agent\/v1\/(chat|custom|bot-config|ws)|^\/(health|metrics)$/.test(path) ? path.split('?')[0] : 'other-path'}`,
      method,
      path,
      headers: {},
    }));
  return fc.oneof(
    { weight: 4, arbitrary: withBody(CHAT, 'POST') },
    { weight: 3, arbitrary: withBody(CUSTOM, 'POST') },
    { weight: 3, arbitrary: withBody(BOT_CONFIG, 'POST') },
    { weight: 2, arbitrary: withBody(BOT_CONFIG, 'PUT') },
    { weight: 1, arbitrary: noBody('GET') },
    { weight: 1, arbitrary: noBody('DELETE') },
    { weight: 2, arbitrary: odd },
  );
}

// ---- sending and checking --------------------------------------------------------------------

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });

function send(port: number, r: FuzzRequest): Promise<Answer | 'no-answer'> {
  if (r.truncatedTransport) return sendTruncated(port, r);
  return new Promise((resolve, reject) => {
    const body = r.body ?? Buffer.alloc(0);
    const headers = { ...r.headers };
    if (r.body !== undefined) headers['content-length'] = String(body.length);
    const req = http.request(
      { host: '127.0.0.1', port, method: r.method, path: r.path, headers, agent, timeout: 20_000 },
      (res) => {
        const parts: Buffer[] = [];
        res.on('data', (d: Buffer) => parts.push(d));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(parts),
          }),
        );
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error('no answer within 20 s')));
    req.on('error', reject);
    void (async () => {
      const n = r.pieces ?? 1;
      const size = Math.ceil(body.length / n);
      for (let i = 0; i < n; i++) {
        if (i > 0) await sleep(r.pauseMs ?? 0);
        if (size > 0) req.write(body.subarray(i * size, (i + 1) * size));
      }
      req.end();
    })();
  });
}

/** Content-Length promises more than is sent; the client then half-closes its socket. */
function sendTruncated(port: number, r: FuzzRequest): Promise<Answer | 'no-answer'> {
  return new Promise((resolve) => {
    const body = r.body ?? Buffer.alloc(0);
    const socket = net.connect(port, '127.0.0.1');
    const head = Object.entries(r.headers)
      .map(([k, v]) => `${k}: ${v}\r\n`)
      .join('');
    socket.write(
      `${r.method} ${r.path} HTTP/1.1\r\nHost: x\r\n${head}Content-Length: ${body.length + 10}\r\n\r\n`,
    );
    socket.write(body);
    socket.end();
    const parts: Buffer[] = [];
    socket.on('data', (d: Buffer) => parts.push(d));
    socket.on('error', () => {});
    const timer = setTimeout(() => socket.destroy(), 2000);
    socket.on('close', () => {
      clearTimeout(timer);
      const raw = Buffer.concat(parts).toString('latin1');
      const m = /^HTTP\/1\.1 (\d{3})[^\r]*\r\n([\s\S]*?)\r\n\r\n([\s\S]*)$/.exec(raw);
      if (!m) return resolve('no-answer');
      const headers: http.IncomingHttpHeaders = {};
      for (const line of m[2]!.split('\r\n')) {
        const i = line.indexOf(':');
        headers[line.slice(0, i).toLowerCase()] = line.slice(i + 1).trim();
      }
      resolve({ status: Number(m[1]), headers, body: Buffer.from(m[3]!, 'latin1') });
    });
  });
}

const isObj = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/** The 40002 body of spec 3.4. */
function validationShape(j: Record<string, unknown>): string {
  expect(Object.keys(j).sort()).to.deep.equal(
    [
      'id',
      'choices',
      'created',
      'model',
      'object',
      'service_tier',
      'system_fingerprint',
      'usage',
      'code',
      'message',
      'logs',
      'knowledge_metadata',
    ].sort(),
  );
  expect(j).to.deep.include({
    choices: [],
    model: '',
    object: 'chat.completion.chunk',
    code: 40002,
  });
  expect(j.message)
    .to.be.a('string')
    .and.match(/^[a-z_]+, [^,]*, .+/s);
  return `40002 ${String(j.message).split(',', 1)[0]}`;
}

/** A chat chunk (spec 4.1/4.2): every chunk carries a numeric code and a message. */
function chunkShape(c: unknown): Record<string, unknown> {
  expect(isObj(c), JSON.stringify(c)).to.equal(true);
  const j = c as Record<string, unknown>;
  expect(j.object).to.equal('chat.completion.chunk');
  expect(j.code).to.be.a('number');
  expect(j.message).to.be.a('string');
  expect(j.choices).to.be.an('array');
  return j;
}

/** An SSE body (spec 4.2): one-line `data:` events, the stop chunk, then `data: [DONE]`. */
function sseShape(text: string): string {
  const events = text.split('\n\n');
  expect(events.pop(), 'ends with a blank line').to.equal('');
  expect(events[events.length - 1]).to.equal('data: [DONE]');
  const chunks = events.slice(0, -1).map((e) => {
    expect(e.startsWith('data: ') && !e.includes('\n'), e.slice(0, 100)).to.equal(true);
    return chunkShape(JSON.parse(e.slice(6)));
  });
  const stop = chunks[chunks.length - 1]!;
  expect((stop.choices as { finish_reason: unknown }[])[0]!.finish_reason).to.equal('stop');
  return `sse code ${String(stop.code)}`;
}

/** Checks an answer against the documented shapes; returns the shape's name. */
function shapeOf(r: FuzzRequest, a: Answer | 'no-answer'): string {
  if (a === 'no-answer') {
    expect(r.truncatedTransport, 'only a truncated upload may go unanswered').to.equal(true);
    return 'no answer (truncated upload)';
  }
  const what = `${r.kind}: ${a.status} ${a.body.toString().slice(0, 300)}`;
  expect(a.status, what).to.be.below(500);
  const ct = String(a.headers['content-type'] ?? '');
  const path = r.path.split('?')[0]!;
  if (r.method === 'HEAD') {
    expect(a.body.length, what).to.equal(0);
    return `HEAD ${a.status}`;
  }
  if (path === '/metrics' && r.method === 'GET') {
    expect(a.status, what).to.equal(200);
    expect(ct).to.match(/^text\/plain; version=0\.0\.4/);
    expect(a.body.toString()).to.match(/^# HELP /m);
    return 'metrics text';
  }
  const text = a.body.toString();
  if (a.status === 200 && ct.startsWith('text/event-stream')) return sseShape(text);
  if (a.status === 200 && path === CUSTOM && text.startsWith('data: ')) {
    expect(ct, what).to.equal('application/json');
    return `custom ${sseShape(text)}`;
  }
  expect(ct, what).to.match(/^application\/json/);
  const j = JSON.parse(text) as unknown;
  expect(isObj(j), what).to.equal(true);
  const o = j as Record<string, unknown>;
  if (a.status !== 200) {
    expect(Object.keys(o), what).to.deep.equal(['detail']);
    expect(o.detail, what).to.be.a('string');
    if (a.status === 404) expect(o.detail).to.equal('Not Found');
    else if (a.status === 405) {
      expect(o.detail).to.equal('Method Not Allowed');
      expect(a.headers.allow, what).to.be.a('string');
    } else if (a.status === 413) expect(o.detail).to.match(/^Request body too large/);
    else if (a.status === 400) {
      expect(o.detail).to.match(/^There was an error parsing the body$|aborted|Bad Request/);
    } else expect.fail(`undocumented status: ${what}`);
    return `${a.status} detail`;
  }
  if (path === '/health') {
    expect(o).to.include.keys('status', 'worker', 'pid', 'uptime');
    return 'health';
  }
  if (o.code === 40002 && Array.isArray(o.choices) && o.choices.length === 0) {
    return validationShape(o);
  }
  if (path === BOT_CONFIG) {
    expect(Object.keys(o).sort(), what).to.deep.equal(['code', 'data', 'message']);
    expect(o.code, what).to.be.a('number');
    expect(o.message, what).to.be.a('string');
    return `general code ${String(o.code)}`;
  }
  if (path === CHAT) {
    expect(o.object, what).to.equal('chat.completion');
    expect(o.code, what).to.be.a('number');
    return `chat.completion code ${String(o.code)}`;
  }
  return expect.fail(`undocumented answer: ${what}`);
}

// ---- WebSocket -------------------------------------------------------------------------------

type WsMsg =
  | { kind: 'ping' }
  | { kind: 'text'; text: string; tag: string }
  | { kind: 'binary' }
  | { kind: 'bad-utf8' }
  | { kind: 'too-big' };

function wsArb(botIds: string[]): fc.Arbitrary<WsMsg> {
  const text = (tag: string, a: fc.Arbitrary<string>) =>
    a.map((t): WsMsg => ({ kind: 'text', text: t, tag }));
  const rid = fc.oneof({ weight: 6, arbitrary: fc.uuid() }, { weight: 1, arbitrary: anyValue });
  const chat = fc
    .record(
      {
        type: fc.constant('chat'),
        request_id: rid,
        body: chatBody(botIds.slice(0, 2)).map((b) => JSON.parse(b) as unknown),
      },
      { requiredKeys: ['type'] },
    )
    .map(jsonText);
  return fc.oneof(
    { weight: 1, arbitrary: fc.constant<WsMsg>({ kind: 'ping' }) },
    { weight: 6, arbitrary: text('ws chat', chat) },
    {
      weight: 1,
      arbitrary: text(
        'ws cancel',
        fc.record({ type: fc.constant('cancel'), request_id: rid }).map(jsonText),
      ),
    },
    { weight: 2, arbitrary: text('ws any json', anyValue.map(jsonText)) },
    { weight: 1, arbitrary: text('ws duplicate keys', duplicateKeys) },
    { weight: 1, arbitrary: text('ws nesting', deep) },
    { weight: 1, arbitrary: text('ws garbage', fc.string({ maxLength: 50 })) },
    {
      weight: 1,
      arbitrary: fc.constantFrom<WsMsg>(
        { kind: 'binary' },
        { kind: 'bad-utf8' },
        { kind: 'too-big' },
      ),
    },
  );
}

interface WsFrame {
  type?: string;
  request_id?: unknown;
  chunk?: unknown;
  done?: boolean;
  cancelled?: boolean;
  code?: unknown;
  message?: unknown;
}

function wsFrameShape(f: WsFrame): string {
  if (f.type === 'pong') {
    expect(f).to.deep.equal({ type: 'pong' });
    return 'ws pong';
  }
  if (f.type === 'error') {
    expect(f.code).to.be.a('number');
    expect(f.message).to.be.a('string');
    return `ws error ${String(f.code)} ${String(f.message).split(',', 1)[0]}`;
  }
  expect(f.request_id, JSON.stringify(f)).to.be.a('string');
  if (f.done === true) {
    expect([
      ['done', 'request_id'],
      ['cancelled', 'done', 'request_id'],
    ]).to.deep.include(Object.keys(f).sort());
    return 'ws done';
  }
  const c = chunkShape(f.chunk);
  if (c.code === 40002 && (c.choices as unknown[]).length === 0) return `ws ${validationShape(c)}`;
  return `ws chunk code ${String(c.code)}`;
}

class WsProbe {
  frames: WsFrame[] = [];
  closeCode?: number;
  private wake?: () => void;
  private constructor(readonly ws: WebSocket) {
    ws.on('message', (d, isBinary) => {
      expect(isBinary).to.equal(false);
      this.frames.push(JSON.parse(d.toString()) as WsFrame);
      this.wake?.();
    });
    ws.on('close', (code) => {
      this.closeCode = code;
      this.wake?.();
    });
    ws.on('error', () => {});
  }
  static open(port: number, app: string): Promise<WsProbe> {
    const ws = new WebSocket(`ws://127.0.0.1:${port}${WS_PATH}`, {
      headers: { 'x-consumer-username': app },
    });
    return new Promise((res, rej) => {
      ws.once('open', () => res(new WsProbe(ws)));
      ws.once('error', rej);
    });
  }
  async until(pred: () => boolean, ms = 15_000): Promise<void> {
    const end = Date.now() + ms;
    while (!pred()) {
      if (Date.now() > end)
        throw new Error(`WebSocket: no answer; frames ${JSON.stringify(this.frames).slice(-500)}`);
      await new Promise<void>((r) => {
        this.wake = r;
        setTimeout(r, 200);
      });
    }
  }
}

// ---- the run ---------------------------------------------------------------------------------

describe('fuzz: generated hostile requests on every endpoint and the WebSocket (fast-check)', function () {
  this.timeout(240_000);
  let svc: Service;
  let llm: FakeLlm;
  let plugins: FakePlugins;
  const id = runId();
  const app = `app_fuzz_${id}`;
  // The chats' bots (one healthy, one absent), then the ones bot-config requests write and delete.
  const botIds = [`bot_ok_${id}`, `bot_missing_${id}`, `bot_cfg1_${id}`, `bot_cfg2_${id}`];

  before(async () => {
    [llm, plugins] = await Promise.all([startFakeLlm(0, { record: false }), startFakePlugins()]);
    // Configured as in production: the plugin services exist (here, fakes).
    svc = await startService({
      env: {
        ...pluginEnv(plugins, { timeoutMs: 2000 }),
        SERVICE_WORKERS: '2',
        SERVICE_SPARE_WORKERS: '0',
        SERVICE_MAX_BODY_SIZE: String(MAX_BODY),
        LLM_TIMEOUT: '3000',
        LLM_MAX_RETRIES: '0',
        // Generated URLs never leave the machine.
        AGENT_ALLOWED_UPSTREAM_HOSTS: '127.0.0.1',
      },
    });
    await svc.waitReady();
    await hitHealth(svc.port, 4, 2);
    await createBot(svc.port, app, botIds[0]!, { domain: 'ok', api: `${llm.url}/v1` });
  });
  after(async () => {
    agent.destroy();
    await svc?.stop();
    await Promise.all([llm?.close(), plugins?.close()]);
  });

  it(`${HTTP_RUNS} HTTP requests and ${WS_RUNS} WebSocket messages: documented shapes only, no 5xx, no worker exit, no error log (FUZZ_SEED=${SEED})`, async () => {
    const started = Date.now();
    const pids = svc.childPids().sort();
    const ready = svc.readyWorkerPids().sort();
    expect(ready).to.deep.equal(pids);
    expect(pids).to.have.length(2);
    const logFrom = svc.logs.length;
    const shapes = new Map<string, number>();
    const kinds = new Set<string>();
    const tally = (m: Map<string, number>, k: string) => m.set(k, (m.get(k) ?? 0) + 1);
    let httpSent = 0;
    let wsSent = 0;

    await fc.assert(
      fc.asyncProperty(requestArb(app, botIds, `${llm.url}/v1`), async (r) => {
        const a = await send(svc.port, r);
        httpSent++;
        for (const k of r.kind.split(' ')) kinds.add(k);
        tally(shapes, shapeOf(r, a));
      }),
      { numRuns: HTTP_RUNS, seed: SEED, endOnFailure: true },
    );

    let probe = await WsProbe.open(svc.port, app);
    await fc.assert(
      fc.asyncProperty(wsArb(botIds), async (m) => {
        if (probe.closeCode !== undefined) probe = await WsProbe.open(svc.port, app);
        const from = probe.frames.length;
        wsSent++;
        kinds.add(m.kind === 'text' ? m.tag : `ws ${m.kind}`);
        if (m.kind === 'binary' || m.kind === 'bad-utf8' || m.kind === 'too-big') {
          if (m.kind === 'binary') probe.ws.send(Buffer.from([1, 2, 3]), { binary: true });
          else if (m.kind === 'bad-utf8')
            probe.ws.send(Buffer.from([0x7b, 0xff, 0x7d]), { binary: false });
          else probe.ws.send(`"${'z'.repeat(MAX_BODY + 1)}"`);
          await probe.until(() => probe.closeCode !== undefined);
          expect(probe.closeCode).to.equal(
            { binary: 1003, 'bad-utf8': 1007, 'too-big': 1009 }[m.kind],
          );
          tally(shapes, `ws close ${probe.closeCode}`);
          return;
        }
        const text = m.kind === 'ping' ? '{"type":"ping"}' : m.text;
        probe.ws.send(text);
        if (Buffer.byteLength(text) > MAX_BODY) {
          await probe.until(() => probe.closeCode !== undefined);
          expect(probe.closeCode, 'a message over SERVICE_MAX_BODY_SIZE').to.equal(1009);
          tally(shapes, `ws close ${probe.closeCode}`);
          return;
        }
        // A ping after it: its pong comes after any synchronous answer to the message.
        probe.ws.send('{"type":"ping"}');
        await probe.until(() => probe.frames.slice(from).some((f) => f.type === 'pong'));
        let parsed: unknown;
        try {
          parsed = JSON.parse(text);
        } catch {
          parsed = undefined;
        }
        const rid = isObj(parsed) ? parsed.request_id : undefined;
        const running =
          isObj(parsed) && parsed.type === 'chat' && typeof rid === 'string' && rid !== '';
        if (running) {
          // Its own answer: `done`, or an error frame naming it.
          await probe.until(() =>
            probe.frames
              .slice(from)
              .some((f) => f.request_id === rid && (f.done === true || f.type === 'error')),
          );
        }
        for (const f of probe.frames.slice(from)) tally(shapes, wsFrameShape(f));
      }),
      { numRuns: WS_RUNS, seed: SEED, endOnFailure: true },
    );
    probe.ws.close();

    // The service is whole: same workers, nothing crashed, nothing logged at error level.
    await sleep(300);
    expect(svc.alive).to.equal(true);
    expect(svc.childPids().sort(), 'worker pids unchanged').to.deep.equal(pids);
    const lines = svc.logs.slice(logFrom);
    expect(workerExits(svc), 'the primary logged no worker exit').to.deep.equal([]);
    expect(svc.readyWorkerPids().sort()).to.deep.equal(ready);
    const errors = lines.filter((l) => l.level === 'error');
    expect(errors, JSON.stringify(errors.slice(0, 3))).to.deep.equal([]);
    const health = await send(svc.port, {
      kind: 'health',
      method: 'GET',
      path: '/health',
      headers: {},
    });
    expect(health !== 'no-answer' && health.status).to.equal(200);

    const secs = ((Date.now() - started) / 1000).toFixed(1);
    const warn = lines.filter((l) => l.level === 'warn').length;
    console.log(
      `      fuzz (FUZZ_SEED=${SEED}): ${httpSent + wsSent} requests (${httpSent} HTTP, ${wsSent} WebSocket) in ${secs} s; ` +
        `${kinds.size} distinct arbitraries hit, ${shapes.size} distinct answer shapes; ` +
        `${lines.length} log lines (${warn} warn, ${errors.length} error); 0 failures`,
    );
    console.log(
      `      shapes: ${[...shapes.entries()]
        .sort((a, b) => b[1] - a[1])
        .map(([k, n]) => `${k} x${n}`)
        .join('; ')}`,
    );
    expect(httpSent + wsSent).to.be.at.least(2000);
  });
});
