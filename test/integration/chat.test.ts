// POST /agent/v1/chat/completions and the WebSocket chat protocol, end to end: the real CLI with
// two workers (embedded SQLite, bots created through POST /agent/v1/bot-config), a fake
// OpenAI-compatible upstream, a fake knowledge service and a fake app-auth service, all on
// loopback ports; the official `openai` SDK as a client of our endpoint.
import { expect } from 'chai';
import http from 'node:http';
import type OpenAI from 'openai';
import { runId } from '../support/bot-config.js';
import {
  assistant,
  chatJson,
  chatRaw,
  chatSse,
  CHAT,
  createBot,
  parseSse,
  sdk,
  SID_RE,
  user,
  WsChatClient,
  type Chunk,
} from '../support/chat.js';
import { startFakeLlm, type FakeLlm } from '../support/fake-llm.js';
import {
  APP_AUTH_API_KEY,
  APP_AUTH_ROUTER,
  APP_AUTH_SECRET,
  startFakeAppAuth,
  startFakeKnowledge,
  type FakeService,
} from '../support/fake-services.js';
import { request, sleep, startService, type Service } from '../support/service.js';

type Completion = {
  id: string;
  object: string;
  created: number;
  model: string;
  code: number;
  message: string;
  choices: {
    finish_reason: string;
    message: {
      content: string;
      reasoning_content: string;
      tool_calls: Record<string, unknown>[];
      role: string;
    };
  }[];
  logs: unknown[];
  knowledge_metadata: unknown[];
};

const delta = (c: Chunk) => c.choices[0]!.delta;
const contentOf = (chunks: Chunk[]) => chunks.map((c) => delta(c).content ?? '').join('');
const last = <T>(xs: T[]) => xs[xs.length - 1]!;

/** The stop chunk (spec 4.2 step 3) with the given status. */
function expectStop(c: Chunk, code: number, message: string | RegExp, sid: string): void {
  expect(c.choices[0]!.finish_reason).to.equal('stop');
  expect(c.choices[0]!.delta).to.deep.equal({
    content: null,
    function_call: null,
    refusal: null,
    role: 'assistant',
    tool_calls: null,
    reasoning_content: null,
  });
  expect(c.model).to.equal('');
  expect(c.code).to.equal(code);
  if (typeof message === 'string') expect(c.message).to.equal(message);
  else expect(c.message).to.match(message);
  expect(c.id).to.equal(sid);
}

describe('chat completions (2 workers, fake upstream, SQLite)', function () {
  this.timeout(60_000);
  let svc: Service;
  let llm: FakeLlm;
  let kb: FakeService;
  const id = runId();
  const app = `app_chat_${id}`;
  const bot = (name: string) => `bot_${name}_${id}`;
  let api: string;

  before(async () => {
    [llm, kb] = await Promise.all([startFakeLlm(), startFakeKnowledge()]);
    api = `${llm.url}/v1`;
    svc = await startService({
      env: {
        SERVICE_WORKERS: '2',
        SERVICE_SCHEDULING: 'rr',
        LLM_TIMEOUT: '1500',
        LLM_MAX_RETRIES: '1',
        CHUNK_QUERY_URL: `${kb.url}/knowledge/v1/chunk/query`,
      },
    });
    await svc.waitReady();
    const models = [
      'ok',
      'error-frame',
      'error-object',
      'http-500',
      'http-400',
      'malformed',
      'slow',
      'hang',
      'long',
      'chunks-50',
    ];
    for (const m of models)
      await createBot(svc.port, app, bot(m), { domain: m, api, instruct: `instruct-for-${m}` });
    await createBot(svc.port, app, bot('kb'), {
      domain: 'ok-kb',
      api,
      repoId: ['repo-a', 'repo-b'],
      docId: ['doc-x'],
      rag: 'CBG-RAG',
    });
    await createBot(svc.port, app, bot('kbdown'), { domain: 'ok-kbdown', api, repoId: ['repo-a'] });
    await createBot(svc.port, app, bot('noapi'), { domain: 'ok-noapi', api: '' });
    await createBot(svc.port, `other_${id}`, bot('foreign'), { domain: 'ok', api });
  });
  after(async () => {
    await svc?.stop();
    await Promise.all([llm?.close(), kb?.close()]);
  });

  describe('through the official openai SDK', () => {
    let client: OpenAI;
    before(() => {
      client = sdk(svc.port, app);
    });

    it('streams reasoning_content and content; every chunk carries the sid, ms timestamps and the extension fields', async () => {
      const t0 = Date.now();
      const params = {
        model: 'ignored',
        bot_id: bot('ok'),
        uid: 'u1',
        messages: [user('Hi there')],
        stream: true,
      };
      const stream = await client.chat.completions.create(
        params as unknown as OpenAI.ChatCompletionCreateParamsStreaming,
      );
      const chunks = [] as Chunk[];
      for await (const c of stream) chunks.push(c as unknown as Chunk);
      expect(chunks.length).to.equal(4);
      const sid = chunks[0]!.id;
      expect(sid).to.match(SID_RE);
      for (const c of chunks) {
        expect(c.id).to.equal(sid);
        expect(c.object).to.equal('chat.completion.chunk');
        expect(c.created).to.be.within(t0 - 5, Date.now() + 5); // milliseconds
        expect(c.logs).to.deep.equal([]);
        expect(c.knowledge_metadata).to.deep.equal([]);
        expect(c).to.include({ service_tier: null, system_fingerprint: null, usage: null });
      }
      expect(delta(chunks[0]!)).to.include({
        reasoning_content: 'Let me think.',
        content: null,
        role: 'assistant',
      });
      expect(chunks[0]!).to.include({ model: 'ok', code: 0, message: 'success' });
      expect(chunks.slice(1, 3).map((c) => delta(c).content)).to.deep.equal(['Hello', ', world']);
      expectStop(last(chunks), 0, 'success', sid);
    });

    it('non-streaming: one aggregated chat.completion (content, reasoning_content, code, model)', async () => {
      const t0 = Date.now();
      const params = { model: 'ignored', bot_id: bot('ok'), messages: [user('Hi')] };
      const r = (await client.chat.completions.create(
        params as OpenAI.ChatCompletionCreateParamsNonStreaming,
      )) as unknown as Completion;
      expect(r.object).to.equal('chat.completion');
      expect(r.id).to.match(SID_RE);
      expect(r.created).to.be.within(t0 - 5, Date.now() + 5);
      expect(r.model).to.equal('ok');
      expect(r).to.include({ code: 0, message: 'success' });
      expect(r.choices).to.have.length(1);
      expect(r.choices[0]!.finish_reason).to.equal('stop');
      expect(r.choices[0]!.message).to.deep.include({
        content: 'Hello, world',
        reasoning_content: 'Let me think.',
        role: 'assistant',
        tool_calls: [],
      });
    });

    it('an upstream failure reaches the SDK as a business code in the stop chunk (HTTP 200)', async () => {
      const params = { model: 'x', bot_id: bot('http-500'), messages: [user('Hi')], stream: true };
      const stream = await client.chat.completions.create(
        params as unknown as OpenAI.ChatCompletionCreateParamsStreaming,
      );
      const chunks = [] as Chunk[];
      for await (const c of stream) chunks.push(c as unknown as Chunk);
      expect(chunks).to.have.length(1);
      expectStop(chunks[0]!, 40303, `Model request failed,${chunks[0]!.id}`, chunks[0]!.id);
    });
  });

  describe('the upstream call (spec 7.2, 7.4, 7.5)', () => {
    it('body exactly {messages:[system,user], model, stream:true}, Bearer key from the bot config, own prompts with history', async () => {
      const before = llm.byModel('ok').length;
      const messages = [user('What is 2+2?'), assistant('4'), user('And 3+3?')];
      const r = await chatSse(svc.port, { bot_id: bot('ok'), messages }, app);
      expect(last(r.chunks).code).to.equal(0);
      const req = llm.byModel('ok')[before]!;
      expect(req.url).to.equal('/v1/chat/completions');
      expect(req.headers.authorization).to.equal('Bearer sk-test');
      expect(Object.keys(req.body)).to.deep.equal(['messages', 'model', 'stream']);
      expect(req.body.model).to.equal('ok');
      expect(req.body.stream).to.equal(true);
      const sent = req.body.messages as { role: string; content: string }[];
      expect(sent.map((m) => m.role)).to.deep.equal(['system', 'user']);
      expect(sent[0]!.content).to.contain('instruct-for-ok');
      expect(sent[0]!.content).to.match(/\d{4}-\d\d-\d\d \d\d:\d\d:\d\d/);
      expect(sent[1]!.content).to.contain('User: What is 2+2?\nAssistant: 4');
      expect(sent[1]!.content).to.contain('And 3+3?');
      expect(sent[1]!.content).not.to.contain('User: And 3+3?');
    });

    it('an empty history renders as 无', async () => {
      const before = llm.byModel('ok').length;
      await chatSse(svc.port, { bot_id: bot('ok'), messages: [user('solo question')] }, app);
      const sent = llm.byModel('ok')[before]!.body.messages as { content: string }[];
      expect(sent[1]!.content).to.contain('\n无\n');
    });
  });

  describe('SSE framing (spec 4.2) and headers (3.1)', () => {
    it('one-line data events, the stop chunk, then data: [DONE]; no-cache and X-Accel-Buffering: no', async () => {
      const r = await chatSse(svc.port, { bot_id: bot('ok'), messages: [user('Hi')] }, app);
      expect(r.status).to.equal(200);
      expect(r.headers['content-type']).to.equal('text/event-stream; charset=utf-8');
      expect(r.headers['cache-control']).to.equal('no-cache');
      expect(r.headers['x-accel-buffering']).to.equal('no');
      expect(r.done).to.equal(true);
      expect(r.raw.endsWith('data: [DONE]\n\n')).to.equal(true);
      expect(r.chunks).to.have.length(4);
      // pydantic field order of spec 4.1
      expect(Object.keys(r.chunks[1]!)).to.deep.equal([
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
      ]);
      expect(Object.keys(delta(r.chunks[1]!))).to.deep.equal([
        'content',
        'function_call',
        'refusal',
        'role',
        'tool_calls',
        'reasoning_content',
      ]);
    });

    it('an upstream that says nothing: the headers still arrive, well before LLM_TIMEOUT', async () => {
      const req = http.request({
        host: '127.0.0.1',
        port: svc.port,
        path: CHAT,
        method: 'POST',
        headers: { 'Content-Type': 'application/json', 'x-consumer-username': app },
      });
      const t0 = Date.now();
      req.end(JSON.stringify({ bot_id: bot('hang'), stream: true, messages: [user('Hi')] }));
      const res = await new Promise<http.IncomingMessage>((r) => req.once('response', r));
      // LLM_TIMEOUT is 1500 ms here: the headers do not wait for the run's stop chunk.
      expect(Date.now() - t0).to.be.below(1000);
      expect(res.headers['content-type']).to.equal('text/event-stream; charset=utf-8');
      req.destroy();
    });

    it('every request gets its own sid (the index field counts)', async () => {
      const rs = await Promise.all(
        Array.from({ length: 8 }, () =>
          chatSse(svc.port, { bot_id: bot('ok'), messages: [user('Hi')] }, app),
        ),
      );
      const sids = rs.map((r) => r.chunks[0]!.id);
      expect(new Set(sids).size).to.equal(8);
      for (const r of rs) for (const c of r.chunks) expect(c.id).to.equal(r.chunks[0]!.id);
    });
  });

  describe('spec section 12 scenarios (test_chat_completions_v2.py), business codes asserted', () => {
    const base = () => ({
      bot_id: bot('ok'),
      uid: '12',
      meta_data: { caller: 'chat_open_api', caller_sid: '' },
    });
    const h = () => ({ 'x-consumer-username': app });

    it('1. single user message, non-stream: 200 application/json, code 0', async () => {
      const r = await chatJson<Completion>(
        svc.port,
        { ...base(), messages: [user('Hello')], stream: false },
        h(),
      );
      expect(r.status).to.equal(200);
      expect(r.headers['content-type']).to.match(/^application\/json/);
      expect(r.body.code).to.equal(0);
      expect(r.body.choices[0]!.message.content).to.equal('Hello, world');
    });

    it('2. a Chinese question: code 0; non-ASCII is sent raw, not \\u-escaped', async () => {
      const before = llm.byModel('ok').length;
      const r = await chatJson<Completion>(
        svc.port,
        { ...base(), messages: [user('你好，今天天气怎么样？')] },
        h(),
      );
      expect(r.body.code).to.equal(0);
      expect(llm.byModel('ok')[before]!.rawBody).to.contain('你好，今天天气怎么样？');
      const s = await chatRaw(svc.port, { ...base(), stream: true, messages: [user('你好')] }, h());
      expect(s.raw).not.to.match(/\\u[0-9a-f]{4}/);
      const bad = await chatSse(svc.port, { bot_id: 'missing-bot', messages: [user('你好')] }, app);
      expect(last(bad.chunks).code).to.equal(40001);
    });

    it('3. with uid: code 0', async () => {
      const r = await chatJson<Completion>(
        svc.port,
        { ...base(), uid: 'user-3', messages: [user('Hello')] },
        h(),
      );
      expect(r.body.code).to.equal(0);
    });

    it('4. user/assistant/user history: code 0', async () => {
      const r = await chatJson<Completion>(
        svc.port,
        { ...base(), messages: [user('Hi'), assistant('Hello!'), user('How are you?')] },
        h(),
      );
      expect(r.body.code).to.equal(0);
    });

    it('5. stream:true: an SSE body ending with [DONE]', async () => {
      const r = await chatSse(svc.port, { ...base(), messages: [user('Hello')] }, app);
      expect(r.done).to.equal(true);
      expect(last(r.chunks).code).to.equal(0);
    });

    it('6. bot_id "": 40002 string_too_short', async () => {
      const r = await chatJson<Completion>(
        svc.port,
        { ...base(), bot_id: '', messages: [user('Hello')] },
        h(),
      );
      expect(r.status).to.equal(200);
      expect(r.body).to.include({
        code: 40002,
        message: 'string_too_short, bot_id, String should have at least 1 character',
      });
    });

    it('7. system + user messages: 40002 role', async () => {
      const r = await chatJson<Completion>(
        svc.port,
        { ...base(), messages: [{ role: 'system', content: 'x' }, user('Hi')] },
        h(),
      );
      expect(r.body).to.include({
        code: 40002,
        message: "literal_error, role, 'role' must be user or assistant",
      });
    });

    it('8. messages []: 40002 missing messages', async () => {
      const r = await chatJson<Completion>(svc.port, { ...base(), messages: [] }, h());
      expect(r.body).to.include({ code: 40002, message: 'missing, messages, Field required' });
    });

    it('9. two consecutive user messages: 40002 order', async () => {
      const r = await chatJson<Completion>(
        svc.port,
        { ...base(), messages: [user('a'), user('b')] },
        h(),
      );
      expect(r.body).to.include({
        code: 40002,
        message:
          'literal_error, role, messages role order must alternate between user and assistant',
      });
    });

    it('10. uid of 33 characters is valid: code 0', async () => {
      const r = await chatJson<Completion>(
        svc.port,
        { ...base(), uid: 'u'.repeat(33), messages: [user('Hi')] },
        h(),
      );
      expect(r.body.code).to.equal(0);
    });

    it('11. missing x-consumer-username: 40002 missing header', async () => {
      const r = await chatJson<Completion>(svc.port, { ...base(), messages: [user('Hi')] }, {});
      expect(r.body).to.include({
        code: 40002,
        message: 'missing, x-consumer-username, Field required',
      });
    });

    it('12. five concurrent requests: all 200, code 0', async () => {
      const rs = await Promise.all(
        [1, 2, 3, 4, 5].map(() =>
          chatJson<Completion>(svc.port, { ...base(), messages: [user('Hi')] }, h()),
        ),
      );
      expect(rs.map((r) => [r.status, r.body.code])).to.deep.equal([
        [200, 0],
        [200, 0],
        [200, 0],
        [200, 0],
        [200, 0],
      ]);
    });
  });

  describe('request validation: every row of the spec 3.4 table for this endpoint (HTTP 200, 40002 body)', () => {
    const ok = () => ({ bot_id: bot('ok'), messages: [user('Hi')] });
    const cases: [string, unknown, Record<string, string> | undefined, string][] = [
      [
        'header missing',
        { bot_id: 'b', messages: [user('Hi')] },
        {},
        'missing, x-consumer-username, Field required',
      ],
      [
        'bot_id ""',
        { bot_id: '', messages: [user('Hi')] },
        undefined,
        'string_too_short, bot_id, String should have at least 1 character',
      ],
      [
        'bot_id of 65',
        { bot_id: 'b'.repeat(65), messages: [user('Hi')] },
        undefined,
        'string_too_long, bot_id, String should have at most 64 characters',
      ],
      [
        'uid of 65',
        { bot_id: 'b', uid: 'u'.repeat(65), messages: [user('Hi')] },
        undefined,
        'string_too_long, uid, String should have at most 64 characters',
      ],
      ['messages missing', { bot_id: 'b' }, undefined, 'missing, messages, Field required'],
      [
        'messages []',
        { bot_id: 'b', messages: [] },
        undefined,
        'missing, messages, Field required',
      ],
      [
        'empty content',
        { messages: [user('')] },
        undefined,
        "literal_error, content, 'content' cannot be empty",
      ],
      [
        'missing content (index 2)',
        { messages: [user('a'), assistant('b'), { role: 'user' }] },
        undefined,
        "literal_error, content, 'content' cannot be empty",
      ],
      [
        'system role',
        { messages: [{ role: 'system', content: 's' }, user('a')] },
        undefined,
        "literal_error, role, 'role' must be user or assistant",
      ],
      [
        'starts with assistant',
        { messages: [assistant('a')] },
        undefined,
        'literal_error, role, messages role order must alternate between user and assistant',
      ],
      [
        'even count',
        { messages: [user('a'), assistant('b')] },
        undefined,
        'literal_error, messages, messages must end with user type content',
      ],
      [
        'another role',
        { messages: [{ role: 'tool', content: 'x' }] },
        undefined,
        'literal_error, role, messages role order must alternate between user and assistant',
      ],
      [
        'missing role',
        { messages: [{ content: 'x' }] },
        undefined,
        'literal_error, role, messages role order must alternate between user and assistant',
      ],
      [
        'a message rule wins over the missing header',
        { messages: [user('a'), user('b')] },
        {},
        'literal_error, role, messages role order must alternate between user and assistant',
      ],
      ['body not JSON', '{"bot_id": "b",', undefined, 'json_invalid, 15, JSON decode error'],
      ['no body', '', undefined, 'missing, body, Field required'],
      [
        'stream not a bool',
        { ...ok(), stream: 'maybe' },
        undefined,
        'bool_parsing, stream, Input should be a valid boolean, unable to interpret input',
      ],
      [
        'content not a string',
        { messages: [{ role: 'user', content: 5 }] },
        undefined,
        'string_type, content, Input should be a valid string',
      ],
      [
        'meta_data.caller not a string',
        { ...ok(), meta_data: { caller: 1 } },
        undefined,
        'string_type, caller, Input should be a valid string',
      ],
    ];
    for (const [name, body, headers, message] of cases) {
      it(`${name}: "${message}"`, async () => {
        const r = await chatRaw(svc.port, body, headers ?? { 'x-consumer-username': app });
        expect(r.status).to.equal(200);
        expect(r.headers['content-type']).to.match(/^application\/json/);
        const b = JSON.parse(r.raw) as Record<string, unknown>;
        expect(b).to.deep.include({
          code: 40002,
          message,
          object: 'chat.completion.chunk',
          model: '',
          choices: [],
        });
        expect(b.id).to.match(SID_RE);
        expect(b.created).to.be.within(Date.now() / 1000 - 60, Date.now() / 1000 + 60); // seconds here
        expect(b).to.deep.include({ logs: [], knowledge_metadata: [], usage: null });
      });
    }

    it('stream:true does not change the 40002 answer into SSE', async () => {
      const r = await chatRaw(
        svc.port,
        { stream: true, messages: [] },
        { 'x-consumer-username': app },
      );
      expect(r.headers['content-type']).to.match(/^application\/json/);
      expect((JSON.parse(r.raw) as { code: number }).code).to.equal(40002);
    });

    it('unknown fields are ignored; an omitted bot_id is "" and fails later with 40001 in the stop chunk', async () => {
      const r = await chatSse(
        svc.port,
        { app_id: 'ignored', model: 'gpt', messages: [user('Hi')] },
        app,
      );
      expect(r.chunks).to.have.length(1);
      expectStop(
        r.chunks[0]!,
        40001,
        `failed to retrieve bot config,${r.chunks[0]!.id}`,
        r.chunks[0]!.id,
      );
    });

    it('a body with a non-JSON content type fails model validation', async () => {
      const r = await chatRaw(svc.port, JSON.stringify(ok()), {
        'Content-Type': 'text/plain',
        'x-consumer-username': app,
      });
      const b = JSON.parse(r.raw) as { code: number; message: string };
      expect(b.code).to.equal(40002);
      expect(b.message).to.match(/^model_attributes_type, body, /);
    });

    it('other methods: 405', async () => {
      const r = await request(svc.port, CHAT);
      expect(r.status).to.equal(405);
    });
  });

  describe('errors in the stop chunk (spec 4.3, 5.1, 5.3): HTTP 200, "<message>,<sid>"', () => {
    const run = (name: string) =>
      chatSse(svc.port, { bot_id: bot(name), messages: [user('Hi')] }, app);

    it('unknown bot: 40001 (stream and non-stream)', async () => {
      const r = await chatSse(svc.port, { bot_id: `nope_${id}`, messages: [user('Hi')] }, app);
      expect(r.status).to.equal(200);
      expect(r.chunks).to.have.length(1);
      expectStop(
        r.chunks[0]!,
        40001,
        `failed to retrieve bot config,${r.chunks[0]!.id}`,
        r.chunks[0]!.id,
      );
      expect(r.done).to.equal(true);
      const j = await chatJson<Completion>(
        svc.port,
        { bot_id: `nope_${id}`, messages: [user('Hi')] },
        { 'x-consumer-username': app },
      );
      expect(j.body).to.include({
        code: 40001,
        message: `failed to retrieve bot config,${j.body.id}`,
        model: '',
      });
      expect(j.body.choices[0]!.message).to.deep.include({
        content: '',
        reasoning_content: '',
        tool_calls: [],
      });
    });

    it('a bot owned by another app: 40001 (ownership)', async () => {
      const r = await run('foreign');
      expect(last(r.chunks).code).to.equal(40001);
    });

    it('upstream HTTP 500: 40303, after LLM_MAX_RETRIES=1 retry', async () => {
      const before = llm.byModel('http-500').length;
      const r = await run('http-500');
      expect(r.chunks).to.have.length(1);
      expectStop(r.chunks[0]!, 40303, `Model request failed,${r.chunks[0]!.id}`, r.chunks[0]!.id);
      expect(llm.byModel('http-500').length - before).to.equal(2);
    });

    it('upstream HTTP 400 with error code one_api_error: 40366 (spec 5.3), not retried', async () => {
      const before = llm.byModel('http-400').length;
      const r = await run('http-400');
      expect(last(r.chunks).code).to.equal(40366);
      expect(last(r.chunks).message).to.match(/^AppID authorization error\..*,svc/);
      expect(llm.byModel('http-400').length - before).to.equal(1);
    });

    it('an error frame with a code: the chunks already sent stay, then 40303 (integer codes never map, D4)', async () => {
      const r = await run('error-frame');
      expect(r.chunks.map((c) => delta(c).content)).to.deep.equal(['partial', null]);
      expectStop(last(r.chunks), 40303, `Model request failed,${r.chunks[0]!.id}`, r.chunks[0]!.id);
    });

    it('an error object with code invalid_text_request: 40355', async () => {
      const r = await run('error-object');
      expect(contentOf(r.chunks)).to.equal('partial');
      expect(last(r.chunks)).to.include({
        code: 40355,
        message: `User parameter value error,${r.chunks[0]!.id}`,
      });
    });

    it('malformed data: 40303', async () => {
      const r = await run('malformed');
      expect(contentOf(r.chunks)).to.equal('partial');
      expect(last(r.chunks).code).to.equal(40303);
    });

    it('an upstream that stalls mid-stream: -1 请求服务超时 after LLM_TIMEOUT', async () => {
      const t0 = Date.now();
      const r = await run('slow');
      const took = Date.now() - t0;
      expect(contentOf(r.chunks)).to.equal('first');
      expectStop(last(r.chunks), -1, `请求服务超时,${r.chunks[0]!.id}`, r.chunks[0]!.id);
      expect(took).to.be.within(1400, 5000);
      expect(r.done).to.equal(true);
    });

    it('an upstream that never answers: -1 请求服务超时', async () => {
      const r = await run('hang');
      expect(r.chunks).to.have.length(1);
      expect(last(r.chunks).code).to.equal(-1);
      expect(last(r.chunks).message).to.equal(`请求服务超时,${r.chunks[0]!.id}`);
    });

    it('a model without an api (base URL): 40303; repeated failures never accumulate sids (D3)', async () => {
      const a = await run('noapi');
      const b = await run('noapi');
      expect(last(a.chunks).message).to.equal(`Model request failed,${a.chunks[0]!.id}`);
      expect(last(b.chunks).message).to.equal(`Model request failed,${b.chunks[0]!.id}`);
    });

    it('knowledge service HTTP 500: 40500', async () => {
      const r = await chatSse(
        svc.port,
        { bot_id: bot('kbdown'), messages: [user('kb-fail please')] },
        app,
      );
      expect(r.chunks).to.have.length(1);
      expect(last(r.chunks).code).to.equal(40500);
      expect(last(r.chunks).message).to.match(
        /^Agent internal service error,knowledge query answered HTTP 500,svc/,
      );
    });
  });

  describe('knowledge (spec 7.3, 8.4)', () => {
    it('queries the knowledge service and sends the knowledge chunk first; the prompt gets the chunks', async () => {
      const kbBefore = kb.requests.length;
      const llmBefore = llm.byModel('ok-kb').length;
      const r = await chatSse(
        svc.port,
        { bot_id: bot('kb'), messages: [user('How do I start?')] },
        app,
      );
      expect(kb.requests.length - kbBefore).to.equal(1);
      const q = kb.requests[kbBefore]!;
      expect(q.method).to.equal('POST');
      expect(q.body).to.deep.equal({
        query: 'How do I start?',
        topN: '3',
        match: { repoId: ['repo-a', 'repo-b'], threshold: 0.4, docIds: ['doc-x'] },
        ragType: 'CBG-RAG',
      });
      expect(r.chunks.length).to.equal(5);
      const k = r.chunks[0]!;
      expect(k.model).to.equal('');
      expect(k.code).to.equal(0);
      const call = delta(k).tool_calls![0]!;
      expect(call).to.deep.include({ index: 0, id: null, type: 'knowledge', reason: '' });
      expect(call.function!.name).to.equal('knowledge');
      expect(call.function!.arguments).to.equal('{"query": "How do I start?"}');
      const meta = {
        metadata_list: [
          {
            source_id: 'doc-1',
            chunk: [
              { chunk_context: 'Guide\nStep one ![alt](http://img/1.png) then \n|a|b|\n.' },
              { chunk_context: 'Guide\nStep two' },
            ],
          },
          // the OpenAPI mode does not expand plain-string references
          { source_id: 'doc-2', chunk: [{ chunk_context: 'FAQ\nAnswer {plain}' }] },
        ],
      };
      expect(JSON.parse(call.function!.response!)).to.deep.equal(meta);
      expect(call.function!.response).to.contain(
        '{"metadata_list": [{"source_id": "doc-1", "chunk": [',
      );
      expect(contentOf(r.chunks)).to.equal('Hello, world');
      const system = (llm.byModel('ok-kb')[llmBefore]!.body.messages as { content: string }[])[0]!
        .content;
      expect(system).to.contain(
        'Guide\nStep one ![alt](http://img/1.png) then \n|a|b|\n.\nGuide\nStep two\nFAQ\nAnswer {plain}',
      );
    });

    it('non-stream: the knowledge call is aggregated into tool_calls with id ""', async () => {
      const r = await chatJson<Completion>(
        svc.port,
        { bot_id: bot('kb'), messages: [user('q')] },
        { 'x-consumer-username': app },
      );
      expect(r.body.code).to.equal(0);
      const calls = r.body.choices[0]!.message.tool_calls;
      expect(calls).to.have.length(1);
      expect(calls[0]).to.include({ id: '', type: 'knowledge', reason: '' });
      expect(calls[0]).not.to.have.property('index');
    });

    it('no results: no knowledge chunk; a bot without repo ids never queries', async () => {
      const before = kb.requests.length;
      const r = await chatSse(svc.port, { bot_id: bot('kb'), messages: [user('kb-none')] }, app);
      expect(r.chunks.every((c) => delta(c).tool_calls === null)).to.equal(true);
      expect(kb.requests.length - before).to.equal(1);
      await chatSse(svc.port, { bot_id: bot('ok'), messages: [user('Hi')] }, app);
      expect(kb.requests.length - before).to.equal(1);
    });
  });

  describe('client disconnect (D11)', () => {
    it('a client that goes away mid-stream makes the upstream see its request closed', async () => {
      const rec = llm.waitFor('long');
      const got: string[] = [];
      const req = http.request({
        host: '127.0.0.1',
        port: svc.port,
        path: CHAT,
        method: 'POST',
        headers: { 'Content-Type': 'application/json', 'x-consumer-username': app },
      });
      req.end(JSON.stringify({ bot_id: bot('long'), stream: true, messages: [user('go on')] }));
      const res = await new Promise<http.IncomingMessage>((r) => req.once('response', r));
      await new Promise<void>((resolve) =>
        res.on('data', (d: Buffer) => {
          got.push(d.toString());
          if (got.join('').includes('c2 ')) resolve();
        }),
      );
      const upstream = await rec;
      expect(upstream.closedEarly).to.equal(false);
      const t0 = Date.now();
      req.destroy();
      await Promise.race([upstream.closed, sleep(5000)]);
      expect(upstream.closedEarly, 'upstream request closed').to.equal(true);
      expect(Date.now() - t0).to.be.below(2000);
    });

    it('the service keeps answering afterwards', async () => {
      const r = await chatSse(svc.port, { bot_id: bot('ok'), messages: [user('Hi')] }, app);
      expect(last(r.chunks).code).to.equal(0);
    });
  });

  describe('WebSocket chat protocol on /agent/v1/ws', () => {
    const strip = (c: Chunk) => ({ ...c, id: 'X', created: 0 });

    it('gives the same chunks as SSE, then done', async () => {
      const ws = await WsChatClient.open(svc.port, { appId: app });
      try {
        const body = { bot_id: bot('kb'), messages: [user('same?')] };
        ws.chat('r1', body);
        const { chunks, done } = await ws.result('r1');
        expect(done).to.deep.equal({ request_id: 'r1', done: true });
        const sse = await chatSse(svc.port, body, app);
        expect(chunks.map(strip)).to.deep.equal(sse.chunks.map(strip));
        const sid = chunks[0]!.id;
        expect(sid).to.match(SID_RE);
        for (const c of chunks) expect(c.id).to.equal(sid);
      } finally {
        ws.close();
      }
    });

    it('several requests at once on one socket; cancel aborts one (the upstream sees it closed)', async () => {
      const ws = await WsChatClient.open(svc.port, { appId: app });
      try {
        const before = llm.byModel('long').length;
        ws.chat('long-1', { bot_id: bot('long'), messages: [user('long')] });
        ws.chat('ok-1', { bot_id: bot('ok'), messages: [user('short')] });
        ws.chat('ok-2', { bot_id: bot('error-frame'), messages: [user('short')] });
        const a = await ws.result('ok-1');
        const b = await ws.result('ok-2');
        expect(contentOf(a.chunks)).to.equal('Hello, world');
        expect(last(b.chunks).code).to.equal(40303);
        await ws.waitFor(
          (f) =>
            f.request_id === 'long-1' &&
            (f.chunk?.choices[0]?.delta.content ?? '').startsWith('c3'),
        );
        const upstream = llm.byModel('long')[before]!;
        ws.send({ type: 'cancel', request_id: 'long-1' });
        const done = await ws.waitFor((f) => f.request_id === 'long-1' && f.done === true);
        expect(done).to.deep.equal({ request_id: 'long-1', done: true, cancelled: true });
        // no stop chunk after a cancel (D11)
        expect(ws.of('long-1').some((f) => f.chunk?.choices[0]?.finish_reason === 'stop')).to.equal(
          false,
        );
        await Promise.race([upstream.closed, sleep(3000)]);
        expect(upstream.closedEarly).to.equal(true);
        ws.send({ type: 'ping' });
        expect(await ws.waitFor((f) => f.type === 'pong')).to.deep.equal({ type: 'pong' });
      } finally {
        ws.close();
      }
    });

    it('validation errors come back as a chunk frame with the 40002 body, then done', async () => {
      const ws = await WsChatClient.open(svc.port, { appId: app });
      try {
        ws.chat('v1', { bot_id: bot('ok'), messages: [user('a'), assistant('b')] });
        const { chunks, done } = await ws.result('v1');
        expect(done.done).to.equal(true);
        expect(chunks).to.have.length(1);
        expect(chunks[0]).to.deep.include({
          code: 40002,
          message: 'literal_error, messages, messages must end with user type content',
          choices: [],
        });
        ws.send({ type: 'chat', body: {} });
        const err = await ws.waitFor((f) => f.type === 'error');
        expect(err).to.deep.include({
          request_id: null,
          code: 40002,
          message: 'missing, request_id, Field required',
        });
        ws.send({ type: 'cancel', request_id: 'nothing' });
        await ws.waitFor((f) => f.type === 'error' && f.request_id === 'nothing');
      } finally {
        ws.close();
      }
    });

    it('without the header the app id comes from ?app_id=; with neither each chat is 40002 missing header', async () => {
      const viaQuery = await WsChatClient.open(svc.port, { query: `?app_id=${app}` });
      const none = await WsChatClient.open(svc.port);
      try {
        viaQuery.chat('q1', { bot_id: bot('ok'), messages: [user('Hi')] });
        expect(last((await viaQuery.result('q1')).chunks).code).to.equal(0);
        none.chat('n1', { bot_id: bot('ok'), messages: [user('Hi')] });
        const r = await none.result('n1');
        expect(r.chunks[0]).to.deep.include({
          code: 40002,
          message: 'missing, x-consumer-username, Field required',
        });
      } finally {
        viaQuery.close();
        none.close();
      }
    });

    it('closing the socket aborts its running chats (the upstream sees its request closed)', async () => {
      const ws = await WsChatClient.open(svc.port, { appId: app });
      const before = llm.byModel('long').length;
      ws.chat('l', { bot_id: bot('long'), messages: [user('long')] });
      await ws.waitFor((f) => f.request_id === 'l' && f.chunk !== undefined);
      const upstream = llm.byModel('long')[before]!;
      ws.close();
      await Promise.race([upstream.closed, sleep(3000)]);
      expect(upstream.closedEarly).to.equal(true);
    });
  });

  describe('load and metrics', () => {
    it('50 concurrent streams across both workers: all complete with code 0', async () => {
      const rs = await Promise.all(
        Array.from({ length: 50 }, () =>
          chatSse(svc.port, { bot_id: bot('chunks-50'), messages: [user('count')] }, app),
        ),
      );
      for (const r of rs) {
        expect(r.chunks).to.have.length(51);
        expect(contentOf(r.chunks)).to.equal(
          Array.from({ length: 50 }, (_, i) => `t${i}`).join(''),
        );
        expect(last(r.chunks).code).to.equal(0);
        expect(r.done).to.equal(true);
      }
      // The sid carries pid & 0xff: both workers answered.
      const pids = new Set(rs.map((r) => r.chunks[0]!.id.slice(3, 7)));
      const workers = new Set(
        svc.readyWorkerPids().map((p) => (p & 0xff).toString(16).padStart(4, '0')),
      );
      expect(workers.size).to.equal(2);
      expect([...pids].sort()).to.deep.equal([...workers].sort());
    });

    it('server_request_total by ret, server_request_time_microseconds, chat_streams_open on /metrics', async () => {
      const func = `metrics_${id}`;
      await chatSse(
        svc.port,
        { bot_id: bot('ok'), messages: [user('m')], meta_data: { caller: func } },
        app,
      );
      await chatJson(
        svc.port,
        { bot_id: `nope_${id}`, messages: [user('m')], meta_data: { caller: func } },
        { 'x-consumer-username': app },
      );
      await sleep(200);
      const m = (await request(svc.port, '/metrics')).body;
      const line = (re: RegExp) => m.split('\n').find((l) => re.test(l));
      expect(
        line(new RegExp(`^server_request_total\\{app_id="${app}",func="${func}",ret="0"\\} 1$`)),
        m,
      ).to.be.a('string');
      expect(
        line(
          new RegExp(`^server_request_total\\{app_id="${app}",func="${func}",ret="40001"\\} 1$`),
        ),
      ).to.be.a('string');
      expect(
        line(
          new RegExp(
            `^server_request_time_microseconds_count\\{app_id="${app}",func="${func}"\\} 2$`,
          ),
        ),
      ).to.be.a('string');
      expect(line(/^chat_streams_open 0$/)).to.be.a('string');
      // validation failures are not chat requests
      expect(m).not.to.match(/ret="40002"/);
    });
  });
});

describe('chat completions with app auth (spec 9)', function () {
  this.timeout(60_000);
  let svc: Service;
  let llm: FakeLlm;
  let auth: Awaited<ReturnType<typeof startFakeAppAuth>>;
  const id = runId();

  before(async () => {
    [llm, auth] = await Promise.all([startFakeLlm(), startFakeAppAuth()]);
    svc = await startService({
      env: {
        SERVICE_WORKERS: '1',
        APP_AUTH_HOST: auth.host,
        APP_AUTH_ROUTER,
        APP_AUTH_PROT: 'http',
        APP_AUTH_API_KEY,
        APP_AUTH_SECRET,
      },
    });
    await svc.waitReady();
  });
  after(async () => {
    await svc?.stop();
    await Promise.all([llm?.close(), auth?.close()]);
  });

  it('fetches the key with a valid HMAC signature and calls the LLM with "<api_key>:<api_secret>"', async () => {
    const app = `app_auth_${id}`;
    await createBot(svc.port, app, `bot_${id}`, {
      domain: 'ok-auth',
      api: `${llm.url}/v1`,
      sk: 'sk-not-used',
    });
    const verified = auth.verified;
    const r = await chatSse(svc.port, { bot_id: `bot_${id}`, messages: [user('Hi')] }, app);
    expect(last(r.chunks).code).to.equal(0);
    expect(auth.verified - verified).to.be.at.least(1);
    const q = last(auth.requests);
    expect(q.url).to.equal(`${APP_AUTH_ROUTER}?app_ids=${app},`);
    expect(q.headers).to.include({
      accept: 'application/json',
      method: 'GET',
      'content-type': 'application/json',
    });
    expect(last(llm.byModel('ok-auth')).headers.authorization).to.equal(`Bearer k-${app}:s`);
  });

  it('an empty auth list or a code != 0: 40040 in the stop chunk', async () => {
    for (const app of [`auth-none_${id}`, `auth-err_${id}`]) {
      await createBot(svc.port, app, `bot_${app}`, { domain: 'ok-auth', api: `${llm.url}/v1` });
      const r = await chatSse(svc.port, { bot_id: `bot_${app}`, messages: [user('Hi')] }, app);
      expect(r.chunks).to.have.length(1);
      expect(r.chunks[0]).to.include({
        code: 40040,
        message: `AppId authentication information query failed,${r.chunks[0]!.id}`,
      });
    }
  });
});

describe('chat completions: a bad app-auth secret is refused by the service (401 -> 40500)', function () {
  this.timeout(60_000);
  it('the fake app-auth rejects a wrong signature; the run ends with 40500', async () => {
    const [llm, auth] = await Promise.all([startFakeLlm(), startFakeAppAuth()]);
    const svc = await startService({
      env: {
        SERVICE_WORKERS: '1',
        APP_AUTH_HOST: auth.host,
        APP_AUTH_ROUTER,
        APP_AUTH_API_KEY,
        APP_AUTH_SECRET: 'wrong-secret',
      },
    });
    try {
      await svc.waitReady();
      await createBot(svc.port, 'app_bad_sig', 'bot_bad_sig', {
        domain: 'ok',
        api: `${llm.url}/v1`,
      });
      const r = await chatSse(
        svc.port,
        { bot_id: 'bot_bad_sig', messages: [user('Hi')] },
        'app_bad_sig',
      );
      expect(auth.verified).to.equal(0);
      expect(r.chunks[0]).to.include({ code: 40500 });
      expect(r.chunks[0]!.message).to.match(
        /^Agent internal service error,app-auth answered HTTP 401,svc/,
      );
      expect(llm.requests).to.have.length(0);
    } finally {
      await svc.stop();
      await Promise.all([llm.close(), auth.close()]);
    }
  });
});

// parseSse is strict about the framing: a sanity check of the checker itself.
describe('SSE framing checker (test support)', () => {
  it('rejects multi-line events and events after [DONE]', () => {
    expect(() => parseSse('data: {"a":1}\ndata: 2\n\n')).to.throw();
    expect(() => parseSse('data: [DONE]\n\ndata: {}\n\n')).to.throw();
    expect(parseSse('data: {"a":1}\n\ndata: [DONE]\n\n').done).to.equal(true);
  });
});

describe('chat streams during a drain (SIGTERM)', function () {
  this.timeout(60_000);

  it('an in-flight SSE stream and a WebSocket chat finish cleanly before the worker exits (WS then closed with 1001)', async () => {
    const llm = await startFakeLlm();
    const svc = await startService({
      env: { SERVICE_WORKERS: '1', SERVICE_GRACEFUL_TIMEOUT: '20000' },
    });
    try {
      await svc.waitReady();
      const app = 'app_drain';
      await createBot(svc.port, app, 'bot_paced', { domain: 'paced-20-100', api: `${llm.url}/v1` });
      const sse = chatSse(svc.port, { bot_id: 'bot_paced', messages: [user('go')] }, app);
      const ws = await WsChatClient.open(svc.port, { appId: app });
      const wsClosed = new Promise<number>((r) => ws.ws.once('close', (code) => r(code)));
      ws.chat('w', { bot_id: 'bot_paced', messages: [user('go')] });
      await ws.waitFor((f) => f.request_id === 'w' && f.chunk !== undefined);
      await llm.waitFor('paced-20-100');
      await sleep(200);
      svc.proc.kill('SIGTERM');
      const r = await sse;
      expect(r.done).to.equal(true);
      expect(contentOf(r.chunks).trim().split(' ')).to.have.length(20);
      expect(last(r.chunks).code).to.equal(0);
      const wsr = await ws.result('w');
      expect(last(wsr.chunks).code).to.equal(0);
      expect(contentOf(wsr.chunks).trim().split(' ')).to.have.length(20);
      expect(await wsClosed).to.equal(1001);
      expect((await svc.exited).code).to.equal(0);
    } finally {
      await svc.stop('SIGKILL');
      await llm.close();
    }
  });

  it('at the graceful deadline a stream still running is cut and its upstream request aborted', async () => {
    const llm = await startFakeLlm();
    const svc = await startService({
      env: { SERVICE_WORKERS: '1', SERVICE_GRACEFUL_TIMEOUT: '1000' },
    });
    try {
      await svc.waitReady();
      await createBot(svc.port, 'app_cut', 'bot_long', { domain: 'long', api: `${llm.url}/v1` });
      const sse = chatRaw(
        svc.port,
        { bot_id: 'bot_long', stream: true, messages: [user('go')] },
        { 'x-consumer-username': 'app_cut' },
      ).catch((e: Error) => e);
      const upstream = await llm.waitFor('long');
      svc.proc.kill('SIGTERM');
      await Promise.race([upstream.closed, sleep(10_000)]);
      expect(upstream.closedEarly).to.equal(true);
      const r = await sse;
      // The client saw the stream break without [DONE] (a cut, not a clean end).
      if (!(r instanceof Error)) expect(r.raw.endsWith('data: [DONE]\n\n')).to.equal(false);
      await svc.exited;
    } finally {
      await svc.stop('SIGKILL');
      await llm.close();
    }
  });
});
