// Traces, GenAI metrics, usage in streams and keep-alive, end to end: the real CLI with
// OTEL_TRACES_EXPORTER=otlp exporting to a test OTLP/HTTP receiver that decodes the spans; a bot
// with a link tool (fake link service), a real MCP server reached directly and a knowledge repo
// (fake knowledge service); a scripted ReAct upstream that reports token usage. The openai SDK is
// the client where the issue says so (include_usage chunk, keep-alive comments ignored).
import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import type OpenAI from 'openai';
import { chatRaw, createBot, parseSse, sdk, WsChatClient, type Chunk } from '../support/chat.js';
import { act, finish, startFakeReactLlm, type FakeReactLlm } from '../support/fake-react-llm.js';
import { pluginEnv, startFakePlugins, wfFrame, type FakePlugins } from '../support/fake-plugins.js';
import { startRealMcpServer, type RealMcpServer } from '../support/mcp-server.js';
import { WEATHER_OP } from '../support/openapi.js';
import { OtlpReceiver, type SpanRecord } from '../support/otlp-receiver.js';
import { request, startService, type Service } from '../support/service.js';

const APP = 'app-trace';
const SERVER = 2;
const CLIENT = 3;
const CONTENT_KEYS = [
  'gen_ai.input.messages',
  'gen_ai.output.messages',
  'gen_ai.tool.call.arguments',
  'gen_ai.tool.call.result',
  'gen_ai.retrieval.query.text',
  'gen_ai.retrieval.documents',
];
const USAGE = { prompt_tokens: 11, completion_tokens: 7 };

const hex = (bytes: number) => randomBytes(bytes).toString('hex');
const user = (content: string) => ({ role: 'user', content });
/** The SSE body without its keep-alive comments (parseSse checks the data framing strictly). */
const withoutComments = (raw: string) => raw.split(': keep-alive\n\n').join('');

describe('traces, GenAI metrics, usage and keep-alive (end to end)', function () {
  this.timeout(60000);
  let llm: FakeReactLlm;
  let fake: FakePlugins;
  let mcp: RealMcpServer;
  let otlp: OtlpReceiver;
  let svc: Service;
  let capture: Service;
  let seq = 0;

  const env = (extra: Record<string, string> = {}) => ({
    SERVICE_WORKERS: '1',
    SERVICE_SPARE_WORKERS: '0',
    LLM_MAX_RETRIES: '0',
    ...pluginEnv(fake, { directMcp: true }),
    OTEL_TRACES_EXPORTER: 'otlp',
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: otlp.tracesUrl,
    OTLP_TRACE_SCHEDULE_DELAY_MILLIS: '100',
    UPLOAD_METRICS: 'true',
    OTLP_ENDPOINT: otlp.url,
    OTLP_METRIC_EXPORT_INTERVAL_MILLIS: '300',
    OTLP_METRIC_EXPORT_TIMEOUT_MILLIS: '300',
    SERVICE_SSE_KEEPALIVE_INTERVAL: '200',
    ...extra,
  });

  /** A bot with the link tool, the MCP server and a knowledge repo, on a fresh scripted model. */
  async function reactBot(on: Service, plan: string[][] = defaultPlan()) {
    const model = `trace-model-${++seq}`;
    llm.script(model, { plan, summary: ['The answer is 5.'], usage: USAGE });
    const botId = `bot-${seq}`;
    await createBot(on.port, APP, botId, {
      domain: model,
      api: llm.url,
      repoId: ['repo-1'],
      extra: { tool_ids: ['tool@1'], mcp_server_urls: [mcp.url] },
    });
    return { model, botId };
  }

  const defaultPlan = () => [
    [act('the weather first', 'get_weather', { city: 'Hefei', lang: 'en' })],
    [act('now add', 'add', { a: 2, b: 3 })],
    [finish('enough')],
  ];

  async function waitForTrace(traceId: string, names: number): Promise<SpanRecord[]> {
    await otlp.waitFor(() => otlp.trace(traceId).length >= names, 15000, `${names} spans`);
    // Spans of one request may arrive in two batches: give the last one a moment.
    await new Promise((r) => setTimeout(r, 300));
    return otlp.trace(traceId);
  }

  before(async () => {
    [llm, fake, mcp, otlp] = await Promise.all([
      startFakeReactLlm(),
      startFakePlugins(),
      startRealMcpServer(),
      new OtlpReceiver().start(),
    ]);
    fake.linkTools.push({
      id: 'tool@1',
      version: 'V1.0',
      document: { openapi: '3.0.1', paths: { '/weather': { get: WEATHER_OP } } },
    });
    fake.knowledgeAnswer = () => ({
      code: 0,
      data: { results: [{ title: 'Guide', docId: 'doc-1', content: 'Hefei is warm.' }] },
    });
    [svc, capture] = await Promise.all([
      startService({ env: env() }),
      startService({
        env: env({
          OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT: 'true',
          OTEL_SEMCONV_STABILITY_OPT_IN: 'http,gen_ai_latest_experimental',
          // The other encoding: the general variable, as the traces one is not set.
          OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
        }),
      }),
    ]);
    await Promise.all([svc.waitReady(), capture.waitReady()]);
  });

  after(async () => {
    await Promise.all([svc?.stop(), capture?.stop()]);
    await Promise.all([llm?.close(), fake?.close(), mcp?.close(), otlp?.stop()]);
  });

  it('a ReAct run with a link tool, an MCP tool and a knowledge query is one trace under the caller’s', async () => {
    const { model, botId } = await reactBot(svc);
    const traceId = hex(16);
    const callerSpan = hex(8);
    const mcpSeen = mcp.requestIds.length;
    const sentAt = Date.now();
    const r = await chatRaw(
      svc.port,
      {
        bot_id: botId,
        messages: [user('What is 2+3 in Hefei?')],
        stream: true,
        stream_options: { include_usage: true },
        meta_data: { caller: 'gateway', caller_sid: 'conv-42' },
      },
      {
        'x-consumer-username': APP,
        traceparent: `00-${traceId}-${callerSpan}-01`,
        tracestate: 'gw=1',
        'X-Request-Id': `rid-react-${traceId}`,
      },
    );
    const answeredAt = Date.now();
    const { chunks, done } = parseSse(withoutComments(r.raw));
    expect(done).to.equal(true);
    const stop = chunks[chunks.length - 2]!;
    expect(stop.choices[0]!.finish_reason).to.equal('stop');
    expect(stop.code, stop.message).to.equal(0);

    // 4 LLM calls (3 planner steps, the summary), 2 tools, 1 MCP call, 1 retrieval, run, HTTP.
    const spans = await waitForTrace(traceId, 10);
    const names = spans.map((s) => s.name).sort();
    expect(names).to.deep.equal(
      [
        'POST /agent/v1/chat/completions',
        `invoke_agent ${botId}`,
        'retrieval',
        `chat ${model}`,
        `chat ${model}`,
        `chat ${model}`,
        `chat ${model}`,
        'execute_tool get_weather',
        'execute_tool add',
        'tools/call add',
      ].sort(),
    );
    const one = (name: string) => spans.find((s) => s.name === name)!;
    const http = one('POST /agent/v1/chat/completions');
    const agent = one(`invoke_agent ${botId}`);
    const retrieval = one('retrieval');
    const link = one('execute_tool get_weather');
    const addTool = one('execute_tool add');
    const mcpCall = one('tools/call add');
    const chats = spans.filter((s) => s.name === `chat ${model}`);

    // The tree: the caller's span -> HTTP -> invoke_agent -> (retrieval, chats, tools) -> MCP call.
    expect(http.parentSpanId).to.equal(callerSpan);
    expect(http.kind).to.equal(SERVER);
    expect(agent.parentSpanId).to.equal(http.spanId);
    for (const s of [retrieval, link, addTool, ...chats])
      expect(s.parentSpanId, s.name).to.equal(agent.spanId);
    expect(mcpCall.parentSpanId).to.equal(addTool.spanId);
    for (const s of spans) expect(s.traceId).to.equal(traceId);
    // The times: the spans end in batches after the fact (with the end times taken when they
    // ended) and the server span starts with the run (at the request's arrival time), so each
    // span must still lie within its parent and the request within the client's view of it
    // (ms, truncated; 2 ms for the worker's clock offset, read once per span).
    expect(http.startMs).to.be.within(sentAt - 2, answeredAt);
    expect(http.endMs).to.be.within(http.startMs, answeredAt + 2);
    const byId = new Map(spans.map((s) => [s.spanId, s]));
    for (const s of spans) {
      expect(s.endMs, s.name).to.be.at.least(s.startMs);
      const parent = byId.get(s.parentSpanId);
      if (!parent) continue;
      expect(s.startMs, s.name).to.be.at.least(parent.startMs - 2);
      expect(s.endMs, s.name).to.be.at.most(parent.endMs + 2);
    }
    // Exported as protobuf, the OTLP default (the receiver decodes the bytes by hand).
    for (const s of spans) expect(s.via, s.name).to.equal('protobuf');
    expect(otlp.rejected).to.deep.equal([]);

    // The resource of the metrics push.
    expect(http.resource['service.name']).to.equal('Agent');
    expect(http.resource['service.instance.id']).to.be.a('string').and.not.equal('');
    const instance = http.resource['service.instance.id'];
    await otlp.waitFor(() => otlp.received.length > 0, 10000, 'a metrics export');
    expect([...otlp.byInstance().keys()]).to.include(instance);

    expect(http.attrs).to.include({
      'http.request.method': 'POST',
      'http.route': '/agent/v1/chat/completions',
      'http.response.status_code': 200,
      'url.path': '/agent/v1/chat/completions',
    });
    expect(agent.attrs).to.include({
      'gen_ai.operation.name': 'invoke_agent',
      'gen_ai.agent.name': botId,
      'gen_ai.conversation.id': 'conv-42',
      'astron_agent.app_id': APP,
      'astron_agent.caller': 'gateway',
      'astron_agent.code': 0,
      'gen_ai.usage.input_tokens': 4 * USAGE.prompt_tokens,
      'gen_ai.usage.output_tokens': 4 * USAGE.completion_tokens,
    });
    expect(retrieval.kind).to.equal(CLIENT);
    expect(retrieval.attrs).to.include({
      'gen_ai.operation.name': 'retrieval',
      'gen_ai.data_source.id': 'repo-1',
      'gen_ai.request.top_k': 3,
      'server.address': '127.0.0.1',
    });
    for (const c of chats) {
      expect(c.kind).to.equal(CLIENT);
      expect(c.attrs).to.include({
        'gen_ai.operation.name': 'chat',
        'gen_ai.provider.name': 'openai_compatible',
        'gen_ai.system': 'openai_compatible', // deprecated, emitted without the opt-in
        'gen_ai.request.model': model,
        'gen_ai.request.stream': true,
        'gen_ai.response.model': model,
        'gen_ai.response.id': 'chatcmpl-react',
        'server.address': '127.0.0.1',
        'gen_ai.usage.input_tokens': USAGE.prompt_tokens,
        'gen_ai.usage.output_tokens': USAGE.completion_tokens,
      });
      expect(c.attrs['server.port']).to.equal(Number(new URL(llm.url).port));
      expect(c.attrs['gen_ai.response.finish_reasons']).to.deep.equal(['stop']);
      expect(c.attrs['gen_ai.response.time_to_first_chunk']).to.be.a('number').within(0, 5);
    }
    expect(link.attrs).to.include({
      'gen_ai.operation.name': 'execute_tool',
      'gen_ai.tool.name': 'get_weather',
      'gen_ai.tool.type': 'extension',
      'astron_agent.plugin.type': 'link',
    });
    expect(link.attrs['gen_ai.tool.call.id']).to.match(/:1$/);
    expect(addTool.attrs).to.include({
      'gen_ai.tool.name': 'add',
      'astron_agent.plugin.type': 'mcp',
    });
    expect(addTool.attrs['gen_ai.tool.call.id']).to.match(/:2$/);
    expect(mcpCall.kind).to.equal(CLIENT);
    expect(mcpCall.attrs).to.include({
      'mcp.method.name': 'tools/call',
      'gen_ai.operation.name': 'execute_tool',
      'gen_ai.tool.name': 'add',
      'server.address': '127.0.0.1',
    });
    expect(mcpCall.attrs['mcp.session.id']).to.be.a('string').and.not.equal('');

    // Contents are not recorded by default.
    for (const s of spans)
      for (const k of CONTENT_KEYS) expect(s.attrs, `${s.name} ${k}`).not.to.have.property(k);

    // The upstream got the chat span's traceparent, and usage was asked for (the client asked).
    const calls = llm.byModel(model);
    expect(calls).to.have.length(4);
    const chatIds = new Set(chats.map((c) => c.spanId));
    for (const c of calls) {
      const m = /^00-([0-9a-f]{32})-([0-9a-f]{16})-01$/.exec(String(c.headers.traceparent));
      expect(m, String(c.headers.traceparent)).to.not.equal(null);
      expect(m![1]).to.equal(traceId);
      expect(chatIds.has(m![2]!)).to.equal(true);
      expect(c.body.stream_options).to.deep.equal({ include_usage: true });
    }

    // The plugin services get the trace too: the link run and the knowledge query carry their
    // own span's traceparent (execute_tool, retrieval), the link schema query the run's.
    const parentsAt = (path: string) =>
      fake
        .at(path)
        .map((q) => /^00-([0-9a-f]{32})-([0-9a-f]{16})-01$/.exec(String(q.headers.traceparent)))
        .filter((m) => m?.[1] === traceId)
        .map((m) => m![2]);
    expect(parentsAt('/link/versions')).to.deep.equal([agent.spanId]);
    expect(parentsAt('/link/run')).to.deep.equal([link.spanId]);
    expect(parentsAt('/knowledge/query')).to.deep.equal([retrieval.spanId]);

    // And the caller's X-Request-Id: on every call the run made, the MCP server's included.
    const rid = `rid-react-${traceId}`;
    expect(calls.map((c) => c.headers['x-request-id'])).to.deep.equal(calls.map(() => rid));
    for (const path of ['/link/versions', '/link/run', '/knowledge/query']) {
      const ids = fake.at(path).map((q) => q.headers['x-request-id']);
      expect(ids, path).to.include(rid);
    }
    const mcpIds = mcp.requestIds.slice(mcpSeen);
    expect(mcpIds.length).to.be.greaterThan(0);
    expect(mcpIds, 'MCP requests').to.deep.equal(mcpIds.map(() => rid));

    // include_usage: the last chunk before [DONE] has no choices and the run's usage.
    const last = chunks[chunks.length - 1]!;
    expect(last.choices).to.deep.equal([]);
    expect(last.usage).to.deep.equal({
      prompt_tokens: 44,
      completion_tokens: 28,
      total_tokens: 72,
    });
  });

  it('a workflow tool: its schema query and its call carry the trace (run’s and tool’s span)', async () => {
    const flowId = `flow-trace-${++seq}`;
    fake.flows.push({
      id: flowId,
      name: 'summarise',
      description: 'Summarises',
      outputs: [
        {
          name: 'AGENT_USER_INPUT',
          schema: { type: 'string', description: 'input' },
          required: true,
        },
      ],
      frames: [wfFrame('flow says hi'), wfFrame(null, undefined, 'stop')],
    });
    const model = `wf-model-${seq}`;
    llm.script(model, {
      plan: [[act('use the flow', 'summarise', { AGENT_USER_INPUT: 'x' })], [finish('done')]],
      summary: ['Done.'],
    });
    const botId = `bot-wf-${seq}`;
    await createBot(svc.port, APP, botId, {
      domain: model,
      api: llm.url,
      extra: { flow_ids: [flowId] },
    });
    const traceId = hex(16);
    const r = await chatRaw(
      svc.port,
      { bot_id: botId, messages: [user('summarise')], stream: true },
      {
        'x-consumer-username': APP,
        traceparent: `00-${traceId}-${hex(8)}-01`,
        'X-Request-Id': `rid-wf-${traceId}`,
      },
    );
    expect(parseSse(withoutComments(r.raw)).chunks.at(-1)!.code).to.equal(0);
    const spans = await waitForTrace(traceId, 6);
    const agent = spans.find((s) => s.name === `invoke_agent ${botId}`)!;
    const tool = spans.find((s) => s.name === 'execute_tool summarise')!;
    expect(tool.attrs['astron_agent.plugin.type']).to.equal('workflow');
    const parentsAt = (path: string, body: (b: Record<string, unknown>) => boolean) =>
      fake
        .at(path)
        .filter((q) => body(q.body))
        .map((q) => /^00-([0-9a-f]{32})-([0-9a-f]{16})-01$/.exec(String(q.headers.traceparent)))
        .map((m) => (m?.[1] === traceId ? m[2] : String(m)));
    expect(parentsAt('/workflow/protocol', (b) => b.flow_id === flowId)).to.deep.equal([
      agent.spanId,
    ]);
    expect(
      parentsAt('/workflow/v1/chat/completions', (b) => JSON.stringify(b).includes(flowId)),
    ).to.deep.equal([tool.spanId]);
    const idsAt = (path: string, body: (b: Record<string, unknown>) => boolean) =>
      fake
        .at(path)
        .filter((q) => body(q.body))
        .map((q) => q.headers['x-request-id']);
    const rid = `rid-wf-${traceId}`;
    expect(idsAt('/workflow/protocol', (b) => b.flow_id === flowId)).to.deep.equal([rid]);
    expect(
      idsAt('/workflow/v1/chat/completions', (b) => JSON.stringify(b).includes(flowId)),
    ).to.deep.equal([rid]);
  });

  it('a WebSocket chat continues the trace of its upgrade request: every run under the caller’s span', async () => {
    const model = `ws-model-${++seq}`;
    llm.script(model, { plan: [['hello over ws']] });
    const botId = `bot-ws-${seq}`;
    await createBot(svc.port, APP, botId, { domain: model, api: llm.url });
    const traceId = hex(16);
    const callerSpan = hex(8);
    const ws = await WsChatClient.open(svc.port, {
      appId: APP,
      headers: {
        traceparent: `00-${traceId}-${callerSpan}-01`,
        'X-Request-Id': `rid-ws-${traceId}`,
      },
    });
    try {
      const body = { bot_id: botId, messages: [user('hi')], stream: true };
      ws.chat('w1', body);
      ws.chat('w2', body);
      for (const id of ['w1', 'w2']) expect((await ws.result(id)).chunks.at(-1)!.code).to.equal(0);
    } finally {
      ws.ws.close();
    }
    // Two runs, each with its LLM call; no HTTP server span (the upgrade is not a request).
    const spans = await waitForTrace(traceId, 4);
    const agents = spans.filter((s) => s.name === `invoke_agent ${botId}`);
    const chats = spans.filter((s) => s.name === `chat ${model}`);
    expect(spans.map((s) => s.name).sort()).to.deep.equal(
      [...agents, ...chats].map((s) => s.name).sort(),
    );
    expect(agents).to.have.length(2);
    expect(chats).to.have.length(2);
    for (const a of agents) expect(a.parentSpanId).to.equal(callerSpan);
    expect(chats.map((c) => c.parentSpanId).sort()).to.deep.equal(
      agents.map((a) => a.spanId).sort(),
    );
    for (const c of llm.byModel(model)) {
      expect(String(c.headers.traceparent)).to.match(new RegExp(`^00-${traceId}-[0-9a-f]{16}-01$`));
      // The upgrade's X-Request-Id names every chat on the socket.
      expect(c.headers['x-request-id']).to.equal(`rid-ws-${traceId}`);
    }
  });

  it('a caller that did not sample (flags 00): nothing recorded, the decision and trace id go upstream', async () => {
    const model = `unsampled-model-${++seq}`;
    llm.script(model, { plan: [['not sampled'], ['sampled']] });
    const botId = `bot-unsampled-${seq}`;
    await createBot(svc.port, APP, botId, { domain: model, api: llm.url });
    const body = { bot_id: botId, messages: [user('hi')], stream: true };
    const unsampled = hex(16);
    const callerSpan = hex(8);
    const r = await chatRaw(svc.port, body, {
      'x-consumer-username': APP,
      traceparent: `00-${unsampled}-${callerSpan}-00`,
    });
    expect(parseSse(withoutComments(r.raw)).done).to.equal(true);
    // A sampled request after it: once its spans are in, the first request's would be too.
    const sampled = hex(16);
    const r2 = await chatRaw(svc.port, body, {
      'x-consumer-username': APP,
      traceparent: `00-${sampled}-${hex(8)}-01`,
    });
    expect(parseSse(withoutComments(r2.raw)).done).to.equal(true);
    expect(await waitForTrace(sampled, 3)).to.have.length(3);
    expect(otlp.trace(unsampled)).to.deep.equal([]);
    const [first, second] = llm.byModel(model).map((c) => String(c.headers.traceparent));
    // The chat span's own id (not the caller's), the caller's trace, not sampled.
    const m = new RegExp(`^00-${unsampled}-([0-9a-f]{16})-00$`).exec(first!);
    expect(m, first).to.not.equal(null);
    expect(m![1]).to.not.equal(callerSpan).and.not.equal('0000000000000000');
    expect(second).to.match(new RegExp(`^00-${sampled}-[0-9a-f]{16}-01$`));
  });

  it('records contents when OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT is on (and only the latest conventions with the opt-in)', async () => {
    const { model, botId } = await reactBot(capture);
    const traceId = hex(16);
    const r = await chatRaw(
      capture.port,
      { bot_id: botId, messages: [user('What is 2+3 in Hefei?')], stream: true },
      { 'x-consumer-username': APP, traceparent: `00-${traceId}-${hex(8)}-01` },
    );
    expect(parseSse(withoutComments(r.raw)).done).to.equal(true);
    const spans = await waitForTrace(traceId, 10);
    // OTEL_EXPORTER_OTLP_PROTOCOL=http/json: the same spans, JSON-encoded.
    for (const s of spans) expect(s.via, s.name).to.equal('json');
    const chats = spans.filter((s) => s.name === `chat ${model}`);
    expect(chats).to.have.length(4);
    for (const c of chats) {
      expect(c.attrs).not.to.have.property('gen_ai.system');
      const input = JSON.parse(String(c.attrs['gen_ai.input.messages'])) as {
        role: string;
        parts: { type: string; content: string }[];
      }[];
      expect(input.map((m) => m.role)).to.deep.equal(['system', 'user']);
      expect(input[0]!.parts[0]!.type).to.equal('text');
      const output = JSON.parse(String(c.attrs['gen_ai.output.messages'])) as {
        role: string;
        parts: { content: string }[];
        finish_reason: string;
      }[];
      expect(output[0]!.role).to.equal('assistant');
      expect(output[0]!.finish_reason).to.equal('stop');
    }
    const summary = chats.find((c) => String(c.attrs['gen_ai.output.messages']).includes('5.'));
    expect(summary, 'the summary call records its answer').to.not.equal(undefined);
    const link = spans.find((s) => s.name === 'execute_tool get_weather')!;
    expect(JSON.parse(String(link.attrs['gen_ai.tool.call.arguments']))).to.deep.equal({
      city: 'Hefei',
      lang: 'en',
    });
    expect(link.attrs['gen_ai.tool.call.result']).to.be.a('string');
    const mcpCall = spans.find((s) => s.name === 'tools/call add')!;
    expect(String(mcpCall.attrs['gen_ai.tool.call.result'])).to.include('"5"');
    const retrieval = spans.find((s) => s.name === 'retrieval')!;
    expect(retrieval.attrs['gen_ai.retrieval.query.text']).to.equal('What is 2+3 in Hefei?');
    expect(JSON.parse(String(retrieval.attrs['gen_ai.retrieval.documents']))).to.deep.equal([
      { id: 'doc-1', content: 'Hefei is warm.' },
    ]);
    // Without include_usage the upstream is not asked for usage (spec 7.2's body).
    for (const c of llm.byModel(model)) expect(c.body).not.to.have.property('stream_options');
  });

  it('token usage reaches the include_usage chunk (openai SDK), the span and the GenAI metrics', async () => {
    const model = `usage-model-${++seq}`;
    llm.script(model, { plan: [], summary: ['Hello there.'], usage: USAGE });
    const botId = `bot-usage-${seq}`;
    await createBot(svc.port, APP, botId, { domain: model, api: llm.url });
    const client = sdk(svc.port, APP);
    // A bot without plugins: the chat runner (one call, the summary script does not apply).
    llm.script(model, { plan: [['Hello there.']], usage: USAGE });
    const stream = await client.chat.completions.create({
      model: 'ignored',
      bot_id: botId,
      messages: [user('hi')],
      stream: true,
      stream_options: { include_usage: true },
    } as unknown as OpenAI.ChatCompletionCreateParamsStreaming);
    const got: Chunk[] = [];
    for await (const c of stream) got.push(c as unknown as Chunk);
    const last = got[got.length - 1]!;
    expect(last.choices).to.deep.equal([]);
    expect(last.usage).to.deep.equal({ prompt_tokens: 11, completion_tokens: 7, total_tokens: 18 });
    expect(got[got.length - 2]!.choices[0]!.finish_reason).to.equal('stop');

    // Non-streaming: usage when the upstream reports it unasked.
    const always = `usage-always-${++seq}`;
    llm.script(always, { plan: [['Hi.']], usage: { ...USAGE, always: true } });
    await createBot(svc.port, APP, `${botId}-json`, { domain: always, api: llm.url });
    const json = await chatRaw(
      svc.port,
      { bot_id: `${botId}-json`, messages: [user('hi')], stream: false },
      { 'x-consumer-username': APP },
    );
    expect((JSON.parse(json.raw) as { usage: unknown }).usage).to.deep.equal({
      prompt_tokens: 11,
      completion_tokens: 7,
      total_tokens: 18,
    });

    // The span of the streamed call.
    await otlp.waitFor(
      () => otlp.spans.some((s) => s.name === `chat ${model}`),
      15000,
      'the chat span',
    );
    const span = otlp.spans.find((s) => s.name === `chat ${model}`)!;
    expect(span.attrs).to.include({
      'gen_ai.usage.input_tokens': 11,
      'gen_ai.usage.output_tokens': 7,
    });

    // /metrics (Prometheus names of the OTel mapping) ...
    const text = (await request(svc.port, '/metrics')).body;
    const line = (name: string, ...labels: string[]) =>
      text.split('\n').find((l) => l.startsWith(`${name}{`) && labels.every((x) => l.includes(x)));
    const sel = `gen_ai_request_model="${model}"`;
    expect(line('gen_ai_client_token_usage_sum', sel, 'gen_ai_token_type="input"')).to.match(
      / 11$/,
    );
    expect(line('gen_ai_client_token_usage_sum', sel, 'gen_ai_token_type="output"')).to.match(
      / 7$/,
    );
    expect(
      line('gen_ai_client_token_usage_bucket', sel, 'gen_ai_token_type="input"', 'le="16"'),
    ).to.match(/ 1$/);
    expect(line('gen_ai_client_operation_duration_seconds_count', sel)).to.match(/ 1$/);
    expect(line('gen_ai_client_operation_duration_seconds_bucket', sel, 'le="81.92"')).to.match(
      / 1$/,
    );
    expect(line('gen_ai_client_operation_time_to_first_chunk_seconds_count', sel)).to.match(/ 1$/);
    expect(line('gen_ai_client_operation_duration_seconds_count', sel)).to.include(
      'gen_ai_provider_name="openai_compatible"',
    );

    // ... and the OTLP push (OTel names, units, the conventions' boundaries).
    await otlp.waitFor(
      () =>
        otlp.received.some((r) =>
          r.points.some(
            (p) =>
              p.metric === 'gen_ai.client.token.usage' && p.attrs['gen_ai.request.model'] === model,
          ),
        ),
      10000,
      'the token usage push',
    );
    const pushed = otlp.received
      .flatMap((r) => r.points)
      .filter(
        (p) =>
          p.metric === 'gen_ai.client.token.usage' && p.attrs['gen_ai.request.model'] === model,
      );
    const input = pushed.filter((p) => p.attrs['gen_ai.token.type'] === 'input').at(-1)!;
    expect(input.sum).to.equal(11);
    expect(input.bounds).to.deep.equal([
      1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
    ]);
    const duration = otlp.received
      .flatMap((r) => r.points)
      .find(
        (p) =>
          p.metric === 'gen_ai.client.operation.duration' &&
          p.attrs['gen_ai.request.model'] === model,
      )!;
    expect(duration.bounds![0]).to.equal(0.01);
    expect(duration.attrs['gen_ai.operation.name']).to.equal('chat');
  });

  it('sends `: keep-alive` during a slow tool call (the openai SDK ignores it), a ping on the WebSocket', async () => {
    const model = `slow-model-${++seq}`;
    llm.script(model, {
      plan: [[act('wait', 'slow', { ms: 900 })], [finish('done')]],
      summary: ['Waited.'],
    });
    const botId = `bot-slow-${seq}`;
    await createBot(svc.port, APP, botId, {
      domain: model,
      api: llm.url,
      extra: { mcp_server_urls: [mcp.url] },
    });
    const body = { bot_id: botId, messages: [user('wait please')], stream: true };
    const r = await chatRaw(svc.port, body, { 'x-consumer-username': APP });
    const comments = r.raw.split(': keep-alive\n\n').length - 1;
    expect(comments, r.raw.slice(0, 500)).to.be.at.least(2); // 900 ms at a 200 ms interval
    const { chunks, done } = parseSse(withoutComments(r.raw));
    expect(done).to.equal(true);
    expect(chunks.at(-1)!.code).to.equal(0);

    const stream = await sdk(svc.port, APP).chat.completions.create(
      body as unknown as OpenAI.ChatCompletionCreateParamsStreaming,
    );
    const got: Chunk[] = [];
    for await (const c of stream) got.push(c as unknown as Chunk);
    expect(got.map((c) => c.choices[0]?.delta.content ?? '').join('')).to.include('Waited.');
    expect(got.at(-1)!.choices[0]!.finish_reason).to.equal('stop');

    // The WebSocket chat: ping frames while the tool runs, none once it is idle.
    const ws = await WsChatClient.open(svc.port, { appId: APP });
    try {
      let pings = 0;
      ws.ws.on('ping', () => pings++);
      ws.chat('r1', body);
      const { chunks: wsChunks } = await ws.result('r1');
      expect(wsChunks.at(-1)!.code).to.equal(0);
      expect(pings, 'pings during the 900 ms tool call').to.be.at.least(2);
      const after = pings;
      await new Promise((r) => setTimeout(r, 500));
      expect(pings, 'no ping once no chat runs').to.equal(after);
    } finally {
      ws.close();
    }
  });

  it('a collector that hangs never slows a request', async () => {
    const hung = await new OtlpReceiver().start();
    hung.mode = 'hang';
    const slowCollector = await startService({
      env: env({
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: hung.tracesUrl,
        OTLP_ENDPOINT: hung.url,
        OTLP_TRACE_SCHEDULE_DELAY_MILLIS: '20',
        OTLP_TRACE_TIMEOUT: '30000',
        OTLP_TRACE_EXPORT_TIMEOUT_MILLIS: '30000',
        OTLP_TRACE_MAX_QUEUE_SIZE: '64',
        OTLP_TRACE_MAX_EXPORT_BATCH_SIZE: '8',
        SERVICE_SSE_KEEPALIVE_INTERVAL: '0',
      }),
    });
    try {
      await slowCollector.waitReady();
      const model = `hang-model-${++seq}`;
      llm.script(model, { plan: [['ok']] });
      await createBot(slowCollector.port, APP, `bot-hang-${seq}`, { domain: model, api: llm.url });
      const times: number[] = [];
      for (let i = 0; i < 40; i++) {
        const t0 = performance.now();
        const r = await chatRaw(
          slowCollector.port,
          { bot_id: `bot-hang-${seq}`, messages: [user('hi')], stream: true },
          { 'x-consumer-username': APP },
        );
        times.push(performance.now() - t0);
        expect(parseSse(r.raw).chunks.at(-1)!.code).to.equal(0);
      }
      // The exports are stuck (the collector never answers) while every request is answered
      // at the speed of the fake upstream.
      expect(hung.spans).to.have.length(0);
      times.sort((a, b) => a - b);
      expect(times[Math.floor(times.length / 2)], `median of ${times.join(',')}`).to.be.below(250);
      expect(times.at(-1), 'slowest').to.be.below(1500);
    } finally {
      await slowCollector.stop();
      await hung.stop();
    }
  });

  it('tracing off (the default): no traceparent and spec 7.2’s body upstream, whatever the caller sent', async () => {
    const plain = await startService({
      env: {
        SERVICE_WORKERS: '1',
        SERVICE_SPARE_WORKERS: '0',
        LLM_MAX_RETRIES: '0',
      },
    });
    try {
      await plain.waitReady();
      const model = `plain-model-${++seq}`;
      llm.script(model, { plan: [['plain']] });
      await createBot(plain.port, APP, `bot-plain-${seq}`, { domain: model, api: llm.url });
      const r = await chatRaw(
        plain.port,
        { bot_id: `bot-plain-${seq}`, messages: [user('hi')], stream: true },
        { 'x-consumer-username': APP, traceparent: `00-${hex(16)}-${hex(8)}-01` },
      );
      expect(parseSse(r.raw).chunks.at(-1)!.code).to.equal(0);
      const [call] = llm.byModel(model);
      expect(call!.headers).not.to.have.property('traceparent');
      expect(call!.body).to.deep.equal({
        messages: call!.body.messages,
        model,
        stream: true,
      });
    } finally {
      await plain.stop();
    }
  });
});
