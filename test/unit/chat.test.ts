// The pure parts of the chat endpoint: request validation, chunks and framing, aggregation,
// Python-style JSON, knowledge processing, history and prompts, the app-auth signature, the LLM
// error mapping, and the chat service's error/abort rules with a fake LLM (no sockets).
import { expect } from 'chai';
import { createHmac } from 'node:crypto';
import {
  AppAuthKeyResolver,
  EMPTY_BODY_DIGEST,
  keyFromAnswer,
  signAppAuth,
} from '../../lib/agent/app-auth.js';
import {
  Aggregator,
  chunkFrame,
  eventChunk,
  pyJson,
  sseFrame,
  SSE_DONE,
  stopChunk,
  usageChunk,
  type ChatChunk,
} from '../../lib/agent/chunks.js';
import { AgentError, CODES } from '../../lib/agent/errors.js';
import { EMPTY_HISTORY, renderHistory, splitQuestion } from '../../lib/agent/history.js';
import { formatNow } from '../../lib/schema/datetime.js';
import {
  expandReferences,
  knowledgeEvent,
  processResults,
  queryBody,
  ragTypeOf,
} from '../../lib/agent/knowledge.js';
import {
  llmCodeError,
  mapLlmError,
  RunAbortedError,
  type LlmDelta,
  type LlmStreamer,
} from '../../lib/agent/llm.js';
import { fill } from '../../lib/agent/prompts.js';
import { validateCompletion } from '../../lib/agent/request.js';
import { chatMessages } from '../../lib/agent/runners/chat.js';
import { createChatService, finalStatus, RET_CLIENT_CLOSED } from '../../lib/agent/service.js';
import { BotSkKeyResolver } from '../../lib/agent/app-auth.js';
import { KnowledgeClient } from '../../lib/agent/knowledge.js';
import { RequestValidationError } from '../../lib/schema/schema.js';
import { decodeBody } from '../../lib/http/body.js';
import { botConfigSchema } from '../../lib/store/bot-config.js';

const H: [string, string][] = [['x-consumer-username', 'app1']];
const validate = (body: unknown, headers = H) => validateCompletion({ parsed: body }, headers);
const issue = (fn: () => unknown) => {
  try {
    fn();
  } catch (err) {
    if (err instanceof RequestValidationError) return err.message;
    throw err;
  }
  throw new Error('no validation error');
};

describe('chat request validation (spec 3.1, 3.4)', () => {
  it('fills the defaults and ignores unknown fields', () => {
    const r = validate({ messages: [{ role: 'user', content: 'hi', extra: 1 }], model: 'x' });
    expect(r.appId).to.equal('app1');
    expect(r.inputs).to.deep.equal({
      bot_id: '',
      uid: '',
      messages: [{ role: 'user', content: 'hi' }],
      stream: false,
      stream_options: null,
      meta_data: { caller: 'chat_open_api', caller_sid: '' },
    });
  });

  it('an empty header value is a valid app id', () => {
    expect(
      validate({ messages: [{ role: 'user', content: 'x' }] }, [['x-consumer-username', '']]).appId,
    ).to.equal('');
  });

  it('lax booleans as pydantic: "true" and 1', () => {
    expect(
      validate({ stream: 'true', messages: [{ role: 'user', content: 'x' }] }).inputs.stream,
    ).to.equal(true);
    expect(
      validate({ stream: 1, messages: [{ role: 'user', content: 'x' }] }).inputs.stream,
    ).to.equal(true);
  });

  it('the message checks run before the header and stop at a non-object item', () => {
    expect(issue(() => validate({ messages: [{ role: 'user', content: '' }] }, []))).to.equal(
      "literal_error, content, 'content' cannot be empty",
    );
    // a non-object item ends the custom checks (no order/final check): type validation reports it
    expect(issue(() => validate({ messages: [{ role: 'user', content: 'a' }, 'x'] }))).to.equal(
      'model_attributes_type, 1, Input should be a valid dictionary or object to extract fields from',
    );
    // content is checked before role
    expect(issue(() => validate({ messages: [{ role: 'system', content: '' }] }))).to.equal(
      "literal_error, content, 'content' cannot be empty",
    );
  });

  it('raw bodies: JSON errors first (at the code-point offset), JSON null is no body, bad UTF-8 is HTTP 400', () => {
    // The HTTP routes decode the body (lib/http/body.ts), then validate the decoded value.
    const raw = (s: string | Buffer, headers = H) =>
      validateCompletion(
        { parsed: decodeBody(Buffer.isBuffer(s) ? s : Buffer.from(s), 'application/json') },
        headers,
      );
    expect(issue(() => raw('{"messages": "é', []))).to.equal('json_invalid, 13, JSON decode error');
    expect(issue(() => raw('null', []))).to.equal('missing, x-consumer-username, Field required');
    expect(issue(() => raw('null'))).to.equal('missing, body, Field required');
    expect(() => raw(Buffer.from([0x7b, 0xff, 0x7d]))).to.throw(
      'There was an error parsing the body',
    );
  });
});

describe('chunks, SSE framing and aggregation (spec 4.1, 4.2, 4.4)', () => {
  it('event chunks: one choice, role assistant, nulls, code 0', () => {
    const c = eventChunk('sid1', { type: 'reasoning', text: 'hm', model: 'm' }, 123);
    expect(c).to.deep.equal({
      id: 'sid1',
      choices: [
        {
          delta: {
            content: null,
            function_call: null,
            refusal: null,
            role: 'assistant',
            tool_calls: null,
            reasoning_content: 'hm',
          },
          finish_reason: null,
          index: 0,
          logprobs: null,
        },
      ],
      created: 123,
      model: 'm',
      object: 'chat.completion.chunk',
      service_tier: null,
      system_fingerprint: null,
      usage: null,
      code: 0,
      message: 'success',
      logs: [],
      knowledge_metadata: [],
    });
  });

  it('stop chunk and framing', () => {
    const s = stopChunk('sid1', 40001, 'failed to retrieve bot config,sid1', 5);
    expect(s.choices[0]!.finish_reason).to.equal('stop');
    expect(s.model).to.equal('');
    const frame = sseFrame({ a: '你好\n' });
    expect(frame).to.equal('data: {"a":"你好\\n"}\n\n');
    expect(SSE_DONE).to.equal('data: [DONE]\n\n');
  });

  it('chunkFrame: byte for byte sseFrame of every chunk a run sends', () => {
    const k = knowledgeEvent('q', {
      metadataList: [{ source_id: 'd', chunk: [{ chunk_context: 't' }] }],
      text: 't',
    });
    const odd = 'a "quote" \\ back\nnew\u2028line\u0000 你好 😀 \ud800';
    const chunks: ChatChunk[] = [
      eventChunk('sid', { type: 'content', text: 'Hello', model: 'm' }, 1_700_000_000_123),
      eventChunk('sid', { type: 'reasoning', text: odd, model: odd }),
      eventChunk('s"id', { type: 'content', text: '', model: '' }, 0),
      eventChunk('sid', k),
      stopChunk('sid', 40303, `Model request failed,${odd},sid`),
      stopChunk('sid', 0, 'success', 5),
      usageChunk('sid', { prompt_tokens: 1, completion_tokens: 2, total_tokens: 3 }),
      { ...stopChunk('sid', 0, 'success'), created: 1.5 },
      { ...stopChunk('sid', 0, 'success'), logs: ['x'] },
    ];
    for (const c of chunks) expect(chunkFrame(c)).to.equal(sseFrame(c));
  });

  it('aggregation: concatenation, tool calls with id "", last model, the stop chunk code wins', () => {
    const agg = new Aggregator('sid', 42);
    const k = knowledgeEvent('q', {
      metadataList: [{ source_id: 'd', chunk: [{ chunk_context: 't' }] }],
      text: 't',
    });
    const chunks: ChatChunk[] = [
      eventChunk('sid', k),
      eventChunk('sid', { type: 'reasoning', text: 'a', model: 'm1' }),
      eventChunk('sid', { type: 'content', text: 'b', model: 'm1' }),
      eventChunk('sid', { type: 'content', text: 'c', model: 'm2' }),
      stopChunk('sid', 40303, 'Model request failed,sid'),
    ];
    for (const c of chunks) agg.add(c);
    const r = agg.result();
    expect(r).to.deep.include({
      id: 'sid',
      created: 42,
      model: 'm2',
      object: 'chat.completion',
      code: 40303,
      message: 'Model request failed,sid',
    });
    expect(r.choices[0]!.message).to.deep.include({ content: 'bc', reasoning_content: 'a' });
    expect(r.choices[0]!.message.tool_calls).to.deep.equal([
      {
        id: '',
        function: {
          name: 'knowledge',
          arguments: '{"query": "q"}',
          response: '{"metadata_list": [{"source_id": "d", "chunk": [{"chunk_context": "t"}]}]}',
        },
        type: 'knowledge',
        reason: '',
      },
    ]);
  });

  it('pyJson: Python json.dumps separators, raw non-ASCII, escapes inside strings kept', () => {
    expect(pyJson({ a: [1, 'x, y'], b: { 'c: d': null }, e: '中文"' })).to.equal(
      '{"a": [1, "x, y"], "b": {"c: d": null}, "e": "中文\\""}',
    );
    expect(pyJson([])).to.equal('[]');
    expect(pyJson({})).to.equal('{}');
  });
});

describe('knowledge processing (spec 7.3, 8.4)', () => {
  it('request body: docIds only for CBG-RAG, topN a string', () => {
    const q = { query: 'q', repoIds: ['r'], docIds: ['d'], topK: 3, threshold: 0.3 };
    expect(queryBody({ ...q, ragType: 'AIUI-RAG2' })).to.deep.equal({
      query: 'q',
      topN: '3',
      match: { repoId: ['r'], threshold: 0.3 },
      ragType: 'AIUI-RAG2',
    });
    expect(queryBody({ ...q, ragType: 'CBG-RAG' })).to.deep.equal({
      query: 'q',
      topN: '3',
      match: { repoId: ['r'], threshold: 0.3, docIds: ['d'] },
      ragType: 'CBG-RAG',
    });
    expect([1, 2, 3].map(ragTypeOf)).to.deep.equal(['AIUI-RAG2', 'CBG-RAG', 'AIUI-RAG2']);
  });

  it('references: image and table everywhere (every occurrence), plain strings only in the custom mode', () => {
    const refs = {
      i: { format: 'image', link: 'L' },
      t: { format: 'table', content: 'T' },
      s: 'S',
      o: { format: 'other' },
    };
    const text = '<i> <i> <t> {s} <o>';
    expect(expandReferences(text, refs, 'openapi')).to.equal('![alt](L) ![alt](L) \nT\n {s} <o>');
    expect(expandReferences(text, refs, 'custom')).to.equal(
      '![alt](L) ![alt](L) \nT\n ![alt](S) <o>',
    );
  });

  it('groups by document in first-seen order; the text joins every chunk context', () => {
    const r = processResults(
      [
        {
          data: {
            results: [
              { title: 'A', docId: '1', content: 'x' },
              { title: 'B', docId: '2', content: 'y' },
            ],
          },
        },
        { data: { results: [{ title: 'C', docId: '1', content: 'z' }] } },
        {},
        { data: null },
      ],
      'custom',
    );
    expect(r.metadataList).to.deep.equal([
      { source_id: '1', chunk: [{ chunk_context: 'A\nx' }, { chunk_context: 'C\nz' }] },
      { source_id: '2', chunk: [{ chunk_context: 'B\ny' }] },
    ]);
    expect(r.text).to.equal('A\nx\nC\nz\nB\ny');
    expect(processResults([{ data: { results: [] } }], 'openapi').metadataList).to.deep.equal([]);
  });

  it('no repo ids: no request at all (spec 8.4)', async () => {
    const kb = new KnowledgeClient({ url: 'http://127.0.0.1:9/never' });
    expect(
      await kb.query(
        { query: 'q', repoIds: [], docIds: ['d'], topK: 3, threshold: 0.3, ragType: 'CBG-RAG' },
        new AbortController().signal,
      ),
    ).to.deep.equal({});
  });

  it('CHUNK_QUERY_URL empty with repo ids: 40500', async () => {
    const kb = new KnowledgeClient({ url: '' });
    const err = await kb
      .query(
        { query: 'q', repoIds: ['r'], docIds: [], topK: 3, threshold: 0.3, ragType: 'AIUI-RAG2' },
        new AbortController().signal,
      )
      .catch((e: unknown) => e);
    expect(err).to.be.instanceOf(AgentError);
    expect((err as AgentError).code).to.equal(40500);
  });
});

describe('history and prompts (spec 7.4, 7.5)', () => {
  it('renders User:/Assistant: lines; empty history is 无', () => {
    expect(renderHistory([])).to.equal(EMPTY_HISTORY);
    expect(EMPTY_HISTORY).to.equal('无');
    expect(
      renderHistory([
        { role: 'user', content: 'a' },
        { role: 'assistant', content: 'b' },
      ]),
    ).to.equal('User: a\nAssistant: b');
    expect(
      splitQuestion([
        { role: 'user', content: 'a' },
        { role: 'assistant', content: 'b' },
        { role: 'user', content: 'c' },
      ]),
    ).to.deep.equal({
      question: 'c',
      history: [
        { role: 'user', content: 'a' },
        { role: 'assistant', content: 'b' },
      ],
    });
  });

  it('now is local YYYY-MM-DD HH:MM:SS', () => {
    expect(formatNow(new Date(2024, 0, 2, 3, 4, 5))).to.equal('2024-01-02 03:04:05');
  });

  it('placeholders: plain substitution in one pass ($ patterns and placeholders in values stay as they are)', () => {
    expect(fill('{a}|{b}|{c}', { a: '$&{b}', b: 'x' })).to.equal('$&{b}|x|{c}');
  });

  it('the chat runner sends [system, user] with instruct, knowledge, history and question', () => {
    const [system, userMsg] = chatMessages(
      {
        instruct: 'INSTR',
        knowledge: 'KNOW',
        question: 'Q?',
        history: [
          { role: 'user', content: 'h' },
          { role: 'assistant', content: 'i' },
        ],
      },
      new Date(2024, 0, 2, 3, 4, 5),
    );
    expect(system!.role).to.equal('system');
    expect(system!.content)
      .to.contain('2024-01-02 03:04:05')
      .and.contain('INSTR')
      .and.contain('KNOW');
    expect(userMsg!.role).to.equal('user');
    expect(userMsg!.content).to.contain('User: h\nAssistant: i').and.contain('Q?');
    expect(system!.content).not.to.match(/\{(now|instruct|knowledge)\}/);
  });
});

describe('app auth (spec 9)', () => {
  const opts = {
    host: 'auth.example:8080',
    router: '/api-services/v2/app/details',
    apiKey: 'AK',
    secret: 'SK',
  };

  it('signs host, date, request line and the empty-body digest with HMAC-SHA256', () => {
    const date = new Date(Date.UTC(2006, 0, 2, 15, 4, 5));
    const h = signAppAuth(opts, date);
    expect(h.Date).to.equal('Mon, 02 Jan 2006 15:04:05 GMT');
    expect(h.Digest).to.equal('SHA256=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=');
    expect(EMPTY_BODY_DIGEST).to.equal(h.Digest);
    const toSign = `host: auth.example:8080\ndate: Mon, 02 Jan 2006 15:04:05 GMT\nGET /api-services/v2/app/details HTTP/1.1\ndigest: ${h.Digest}`;
    const sig = createHmac('sha256', 'SK').update(toSign).digest('base64');
    expect(h.Authorization).to.equal(
      `api_key="AK", algorithm="hmac-sha256", headers="host date request-line digest", signature="${sig}"`,
    );
    expect(h).to.include({
      Host: 'auth.example:8080',
      Method: 'GET',
      Accept: 'application/json',
      'Content-Type': 'application/json',
    });
  });

  it('key = "<api_key>:<api_secret>" of the first entry; anything unusable is 40040', () => {
    expect(
      keyFromAnswer({
        code: 0,
        data: [
          {
            auth_list: [
              { api_key: 'a', api_secret: 'b' },
              { api_key: 'x', api_secret: 'y' },
            ],
          },
        ],
      }),
    ).to.equal('a:b');
    for (const bad of [
      { code: 1, data: [] },
      { code: 0, data: [] },
      { code: 0, data: [{ auth_list: [] }] },
      null,
      'x',
    ]) {
      expect(() => keyFromAnswer(bad))
        .to.throw(AgentError)
        .with.property('code', 40040);
    }
  });

  it('a connection failure is 40500', async () => {
    const r = new AppAuthKeyResolver({
      ...opts,
      host: '127.0.0.1:9',
      prot: 'http',
      timeoutMs: 500,
    });
    const err = await r
      .resolve({ appId: 'a', domain: 'd', sk: '' }, new AbortController().signal)
      .catch((e: unknown) => e);
    expect(err).to.be.instanceOf(AgentError).with.property('code', 40500);
  });
});

describe('LLM error mapping (spec 5.1, 5.3)', () => {
  it('only the two string codes map; integers (D4) and unknown strings are 40303', () => {
    expect(llmCodeError('invalid_text_request', 'm').code).to.equal(40355);
    expect(llmCodeError('one_api_error', 'm').code).to.equal(40366);
    expect(llmCodeError(10013, 'm').code).to.equal(40303);
    expect(llmCodeError('other', 'm').code).to.equal(40303);
    expect(llmCodeError('toString', 'm').code).to.equal(40303);
    expect(llmCodeError(10013, 'moderation').message).to.equal('Model request failed');
  });

  it('timeout -1; abort; anything else 40303', () => {
    expect(
      (mapLlmError(new Error('x'), { timedOut: true, aborted: false }) as AgentError).code,
    ).to.equal(-1);
    expect(mapLlmError(new Error('x'), { timedOut: false, aborted: true })).to.be.instanceOf(
      RunAbortedError,
    );
    expect(
      (mapLlmError(new SyntaxError('bad json'), { timedOut: false, aborted: false }) as AgentError)
        .code,
    ).to.equal(40303);
  });
});

describe('chat service rules (fake LLM, memory bot)', () => {
  const cfg = botConfigSchema.check(
    {
      app_id: 'app',
      bot_id: 'bot',
      model_config: { instruct: 'I', summary: { api: 'http://llm', domain: 'dom', sk: 'k' } },
      regular_config: {},
    },
    [],
  );
  const store = {
    get: (a: string, b: string) => Promise.resolve(a === 'app' && b === 'bot' ? cfg : null),
  };
  const logger = { warn: () => {}, info: () => {}, debug: () => {}, error: () => {} };
  const inputs = {
    bot_id: 'bot',
    uid: '',
    stream: true,
    stream_options: null,
    messages: [{ role: 'user', content: 'q' }],
    meta_data: { caller: 'c', caller_sid: '' },
  };

  function service(gen: (signal: AbortSignal) => AsyncGenerator<LlmDelta>) {
    const records: { ret: number | string; func: string }[] = [];
    let open = 0;
    const llm: LlmStreamer = { stream: (_m, _msgs, signal) => gen(signal) };
    const svc = createChatService({
      botStore: store,
      keys: new BotSkKeyResolver(),
      llm,
      knowledge: new KnowledgeClient({ url: '' }),
      logger,
      metrics: {
        recordChatRequest: (r) => records.push({ ret: r.ret, func: r.func }),
        chatStreamOpened: () => void open++,
        chatStreamClosed: () => void open--,
      },
    });
    return { svc, records, open: () => open };
  }

  it('success: event chunks then the stop chunk; metrics with ret 0', async () => {
    const { svc, records, open } = service(async function* () {
      yield { reasoning: 'r', content: 'c' };
    });
    const chunks: ChatChunk[] = [];
    const out = await svc.completions(
      { sid: 'S', appId: 'app', inputs },
      new AbortController().signal,
      (c) => void chunks.push(c),
    );
    expect(out).to.deep.equal({ code: 0, aborted: false });
    expect(
      chunks.map((c) => [
        c.choices[0]!.delta.reasoning_content,
        c.choices[0]!.delta.content,
        c.choices[0]!.finish_reason,
      ]),
    ).to.deep.equal([
      ['r', null, null],
      [null, 'c', null],
      [null, null, 'stop'],
    ]);
    expect(records).to.deep.equal([{ ret: 0, func: 'c' }]);
    expect(open()).to.equal(0);
  });

  it('a non-agent error is 40500 "Agent internal service error,<text>,<sid>"', async () => {
    const { svc } = service(async function* () {
      yield { content: 'x' };
      throw new TypeError('boom');
    });
    const chunks: ChatChunk[] = [];
    await svc.completions(
      { sid: 'S', appId: 'app', inputs },
      new AbortController().signal,
      (c) => void chunks.push(c),
    );
    expect(chunks[chunks.length - 1]).to.include({
      code: 40500,
      message: 'Agent internal service error,boom,S',
    });
    expect(finalStatus(new AgentError(CODES.TIMEOUT), 'S')).to.deep.equal({
      code: -1,
      message: '请求服务超时,S',
    });
  });

  it('an abort: no stop chunk, ret client_closed, the LLM generator is closed', async () => {
    let closed = false;
    const controller = new AbortController();
    const { svc, records } = service(async function* () {
      try {
        yield { content: 'a' };
        controller.abort();
        yield { content: 'b' };
        yield { content: 'c' };
      } finally {
        closed = true;
      }
    });
    const chunks: ChatChunk[] = [];
    const out = await svc.completions(
      { sid: 'S', appId: 'app', inputs },
      controller.signal,
      (c) => void chunks.push(c),
    );
    expect(out.aborted).to.equal(true);
    expect(chunks.map((c) => c.choices[0]!.delta.content)).to.deep.equal(['a']);
    expect(closed).to.equal(true);
    expect(records[0]!.ret).to.equal(RET_CLIENT_CLOSED);
  });

  it('unknown bot or another app: 40001', async () => {
    const { svc } = service(async function* () {});
    for (const [appId, bot] of [
      ['app', 'nope'],
      ['other', 'bot'],
    ] as const) {
      const chunks: ChatChunk[] = [];
      await svc.completions(
        { sid: 'S', appId, inputs: { ...inputs, bot_id: bot } },
        new AbortController().signal,
        (c) => void chunks.push(c),
      );
      expect(chunks).to.have.length(1);
      expect(chunks[0]).to.include({ code: 40001, message: 'failed to retrieve bot config,S' });
    }
  });
});
