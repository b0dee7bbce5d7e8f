// POST /agent/v1/custom/chat/completions and the ReAct runner end to end: the real CLI (two
// workers), a scripted fake LLM that follows the ReAct format over several steps, fake link,
// MCP-proxy, workflow, knowledge and app-auth services that record the exact requests, and a real
// MCP server (official SDK) reached directly. Every custom-endpoint scenario of spec section 12,
// with its business code asserted, plus the ReAct paths of spec 7.6/7.7 and the plugin timeouts.
import { expect } from 'chai';
import http from 'node:http';
import { chatJson, createBot, SID_RE, type Chunk } from '../support/chat.js';
import {
  customRaw,
  customStream,
  workflowNodeRead,
  type CustomResult,
} from '../support/custom-chat.js';
import {
  act,
  finish,
  startFakeReactLlm,
  SUMMARY_MARK,
  type FakeReactLlm,
} from '../support/fake-react-llm.js';
import { pluginEnv, startFakePlugins, wfFrame, type FakePlugins } from '../support/fake-plugins.js';
import {
  APP_AUTH_API_KEY,
  APP_AUTH_ROUTER,
  APP_AUTH_SECRET,
  startFakeAppAuth,
  type FakeService,
} from '../support/fake-services.js';
import { startRealMcpServer, type RealMcpServer } from '../support/mcp-server.js';
import { WEATHER_OP } from '../support/openapi.js';
import { sleep, startService, type Service } from '../support/service.js';

const user = (content: string) => ({ role: 'user', content });
const assistant = (content: string) => ({ role: 'assistant', content });
const delta = (c: Chunk) => c.choices[0]!.delta;

let modelSeq = 0;
const nextModel = (tag: string) => `react-${tag}-${++modelSeq}`;

function expectStop(r: CustomResult, code: number, message?: string): void {
  expect(r.status).to.equal(200);
  expect(r.contentType).to.equal('application/json');
  expect(r.done, 'ends with data: [DONE]').to.equal(true);
  expect(r.stop.choices[0]!.finish_reason).to.equal('stop');
  expect(r.stop.code, r.stop.message).to.equal(code);
  expect(r.stop.model).to.equal('');
  if (code === 0) expect(r.stop.message).to.equal('success');
  else if (message !== undefined) expect(r.stop.message).to.equal(`${message},${r.stop.id}`);
  for (const c of r.chunks) expect(c.id).to.equal(r.stop.id);
  expect(r.stop.id).to.match(SID_RE);
}

/** The tool-call chunks of a result, as the spec shapes them (4.1). */
const toolChunks = (r: CustomResult) => r.chunks.filter((c) => delta(c).tool_calls);

describe('custom chat completions and the ReAct runner (end to end)', function () {
  this.timeout(60000);
  let llm: FakeReactLlm;
  let fake: FakePlugins;
  let auth: FakeService;
  let mcp: RealMcpServer;
  let svc: Service;
  let direct: Service;

  const body = (model: string, over: Record<string, unknown> = {}) => ({
    model_config: { domain: model, api: llm.url, api_key: 'key-1' },
    instruction: { reasoning: 'prefer tools', answer: 'answer briefly' },
    messages: [user('What is the weather in Hefei?')],
    uid: 'u1',
    meta_data: { caller: 'workflow-agent-node', caller_sid: 'spf0011029a@hf19615f729015741782' },
    stream: true,
    max_loop_count: 10,
    ...over,
  });
  const plugin = (p: Record<string, unknown>) => ({
    plugin: {
      tools: [],
      mcp_server_ids: [],
      mcp_server_urls: [],
      workflow_ids: [],
      knowledge: [],
      ...p,
    },
  });

  before(async () => {
    [llm, fake, auth, mcp] = await Promise.all([
      startFakeReactLlm(),
      startFakePlugins(),
      startFakeAppAuth(),
      startRealMcpServer(),
    ]);
    fake.linkTools.push({
      id: 'tool@664882907021000',
      version: 'V1.0',
      document: { openapi: '3.0.1', paths: { '/weather': { get: WEATHER_OP } } },
    });
    fake.mcpServers.push({
      server_id: 'mcp_server_001',
      server_url: 'http://localhost:3000',
      server_status: 0,
      tools: [
        {
          name: 'lookup',
          description: 'Looks a key up',
          inputSchema: {
            type: 'object',
            properties: { key: { type: 'string' } },
            required: ['key'],
          },
        },
      ],
    });
    fake.flows.push({
      id: 'data_analysis_workflow',
      name: 'analyse_data',
      description: 'Analyses a data set',
      outputs: [
        {
          name: 'AGENT_USER_INPUT',
          schema: { type: 'string', description: 'what to analyse' },
          required: true,
        },
      ],
      frames: [
        wfFrame('Part 1', 'wf-thinking'),
        wfFrame(' and part 2'),
        wfFrame(null, undefined, 'stop'),
      ],
    });
    const common = {
      SERVICE_WORKERS: '2',
      LLM_MAX_RETRIES: '0',
      APP_AUTH_HOST: auth.host,
      APP_AUTH_ROUTER,
      APP_AUTH_API_KEY,
      APP_AUTH_SECRET,
    };
    [svc, direct] = await Promise.all([
      startService({ env: { ...common, ...pluginEnv(fake) } }),
      startService({ env: { ...common, ...pluginEnv(fake, { directMcp: true, timeoutMs: 800 }) } }),
    ]);
    await Promise.all([svc.waitReady(), direct.waitReady()]);
  });

  after(async () => {
    await Promise.all([svc?.stop(), direct?.stop()]);
    await Promise.all([llm?.close(), fake?.close(), auth?.close(), mcp?.close()]);
  });

  beforeEach(() => {
    fake.hang.clear();
    fake.requests.length = 0;
  });

  // ---- spec 12, test_custom_chat_completions.py ------------------------------------------------

  it('12.1 basic question: no plugins -> chat runner; application/json streaming; only model/messages/stream upstream', async () => {
    const model = nextModel('basic');
    llm.script(model, { plan: [[{ reasoning: 'hmm' }, 'Hello from the chat runner.']] });
    const r = await customStream(svc.port, body(model), 'app-basic');
    expectStop(r, 0);
    expect(r.content).to.equal('Hello from the chat runner.');
    expect(r.reasoning).to.equal('hmm');
    expect(r.chunks.filter((c) => delta(c).content).every((c) => c.model === model)).to.equal(true);
    const [call] = llm.byModel(model);
    expect(call!.headers.authorization).to.equal('Bearer key-1');
    expect(Object.keys(call!.body).sort()).to.deep.equal(['messages', 'model', 'stream']);
    expect(call!.system).to.include('answer briefly').and.not.include('Action Input:');
  });

  it('12.2 one knowledge item: queried with the item, the knowledge chunk first, the text in the prompt', async () => {
    const model = nextModel('kb');
    llm.script(model, { plan: [['From the reviews: good.']] });
    fake.knowledgeAnswer = () => ({
      code: 0,
      data: {
        results: [
          {
            title: 'Review',
            docId: '79a3',
            content: 'The car is good <img1>',
            references: { img1: { format: 'image', link: 'http://i/1' } },
          },
        ],
      },
    });
    const r = await customStream(
      svc.port,
      body(
        model,
        plugin({
          knowledge: [
            {
              name: 'car reviews',
              description: 'reviews',
              top_k: 3,
              repo_type: 2,
              match: { repo_ids: ['b226'], doc_ids: ['79a3'] },
            },
          ],
        }),
      ),
      'app-kb',
    );
    expectStop(r, 0);
    expect(fake.at('/knowledge/query').map((q) => q.body)).to.deep.equal([
      {
        query: 'What is the weather in Hefei?',
        topN: '3',
        match: { repoId: ['b226'], threshold: 0.3, docIds: ['79a3'] },
        ragType: 'CBG-RAG',
      },
    ]);
    const first = delta(r.chunks[0]!).tool_calls![0]!;
    expect(first.type).to.equal('knowledge');
    expect(first.function.name).to.equal('knowledge');
    expect(first.function.arguments).to.equal('{"query": "What is the weather in Hefei?"}');
    expect(first.function.response).to.equal(
      '{"metadata_list": [{"source_id": "79a3", "chunk": [{"chunk_context": "Review\\nThe car is good ![alt](http://i/1)"}]}]}',
    );
    expect(llm.byModel(model)[0]!.system).to.include('Review\nThe car is good ![alt](http://i/1)');
    fake.knowledgeAnswer = () => ({ code: 0, data: { results: [] } });
  });

  it('12.3 a link tool: schema query, run, the tool-call chunk, then the summarised answer', async () => {
    const model = nextModel('link');
    llm.script(model, {
      plan: [
        [act('I need the weather', 'get_weather', { city: '合肥', days: 2 })],
        [finish('I have it')],
      ],
      summary: ['It is sunny in Hefei.'],
    });
    const r = await customStream(
      svc.port,
      body(model, plugin({ tools: ['tool@664882907021000'] })),
      'app-link',
    );
    expectStop(r, 0);
    expect(fake.at('/link/versions')[0]!.rawQuery).to.equal(
      'app_id=app-link&tool_ids=tool%40664882907021000&versions=V1.0', // percent-encoded (issue 13)
    );
    const run = fake.at('/link/run')[0]!;
    expect(run.body.header).to.deep.equal({ app_id: 'app-link', uid: 'u1' });
    expect(run.body.parameter).to.deep.equal({
      tool_id: 'tool@664882907021000',
      operation_id: 'get_weather',
      version: 'V1.0',
    });
    expect(run.decoded!.query).to.deep.equal({ city: '合肥', unit: 'C', days: 2 });
    const tc = toolChunks(r);
    expect(tc).to.have.length(1);
    expect(tc[0]!.model).to.equal(model);
    expect(delta(tc[0]!).tool_calls).to.deep.equal([
      {
        index: 0,
        id: null,
        function: {
          arguments: '{"city": "合肥", "days": 2}',
          name: 'get_weather',
          response: `{"header": {"code": 0, "message": "success", "sid": "link-sid"}, "payload": {"text": {"text": ${JSON.stringify(JSON.stringify({ echo: { city: '合肥', unit: 'C', days: 2 } }))}}}}`,
        },
        type: 'tool',
        reason: 'I need the weather',
      },
    ]);
    expect(r.content).to.equal('It is sunny in Hefei.');
    const calls = llm.byModel(model);
    expect(calls.map((c) => c.kind)).to.deep.equal(['plan', 'plan', 'summary']);
    expect(calls[0]!.system)
      .to.include('prefer tools')
      .and.include('tool_name:get_weather, tool_description:查询天气');
    expect(calls[2]!.system).to.include('answer briefly');
  });

  it('12.4 a workflow (max_loop_count 5): its output is streamed as content, the planner sees the first frame', async () => {
    const model = nextModel('wf');
    llm.script(model, {
      plan: [
        [act('run the analysis', 'analyse_data', { AGENT_USER_INPUT: 'sales' })],
        [finish('done')],
      ],
      summary: [' Summary.'],
    });
    const r = await customStream(
      svc.port,
      body(model, { max_loop_count: 5, ...plugin({ workflow_ids: ['data_analysis_workflow'] }) }),
      'app-wf',
    );
    expectStop(r, 0);
    const call = fake.at('/workflow/v1/chat/completions')[0]!;
    expect(call.headers['x-consumer-username']).to.equal('app-wf');
    expect(call.body).to.deep.include({
      flow_id: 'data_analysis_workflow',
      uid: 'u1',
      parameters: { AGENT_USER_INPUT: 'sales' },
    });
    const kinds = r.chunks.slice(0, 4).map((c) => {
      const d = delta(c);
      return d.tool_calls
        ? `tool:${d.tool_calls[0]!.type}`
        : d.content !== null
          ? `content:${d.content}`
          : `reasoning:${d.reasoning_content}`;
    });
    expect(kinds).to.deep.equal([
      'tool:workflow',
      'reasoning:wf-thinking',
      'content:Part 1',
      'content: and part 2',
    ]);
    expect(delta(toolChunks(r)[0]!).tool_calls![0]!.function.response).to.equal(
      '{"content": "Part 1", "reasoning_content": "wf-thinking"}',
    );
    expect(r.content).to.equal('Part 1 and part 2 Summary.');
    expect(llm.byModel(model)[1]!.user).to.include(
      'Observation: {"content": "Part 1", "reasoning_content": "wf-thinking"}',
    );
  });

  it('12.5 MCP ids and urls through the proxy', async () => {
    const model = nextModel('mcp');
    llm.script(model, {
      plan: [[act('look it up', 'lookup', { key: 'k1' })], [finish('ok')]],
      summary: ['Found.'],
    });
    const r = await customStream(
      svc.port,
      body(
        model,
        plugin({ mcp_server_ids: ['mcp_server_001'], mcp_server_urls: ['http://localhost:3000'] }),
      ),
      'app-mcp',
    );
    expectStop(r, 0);
    const list = fake.at('/mcp/list')[0]!.body;
    expect(list).to.deep.equal({
      sid: r.stop.id,
      mcp_server_ids: ['mcp_server_001'],
      mcp_server_urls: ['http://localhost:3000'],
    });
    expect(fake.at('/mcp/call')[0]!.body).to.deep.equal({
      mcp_server_id: 'mcp_server_001',
      mcp_server_url: 'http://localhost:3000',
      tool_name: 'lookup',
      tool_args: { key: 'k1' },
      sid: r.stop.id,
    });
    expect(delta(toolChunks(r)[0]!).tool_calls![0]!.type).to.equal('tool');
    expect(r.content).to.equal('Found.');
  });

  it('12.6 a three-message history is rendered into the prompt', async () => {
    const model = nextModel('hist');
    llm.script(model, { plan: [['Sure.']] });
    const r = await customStream(
      svc.port,
      body(model, {
        messages: [user('Hi'), assistant('Hello, how can I help?'), user('Tell me more')],
      }),
      'app-hist',
    );
    expectStop(r, 0);
    const call = llm.byModel(model)[0]!;
    expect(call.user)
      .to.include('User: Hi\nAssistant: Hello, how can I help?')
      .and.include('Tell me more');
  });

  it('12.7 / 12.8 stream true and false: always streamed, Content-Type application/json, no-cache', async () => {
    for (const stream of [true, false]) {
      const model = nextModel(`stream-${stream}`);
      llm.script(model, { plan: [['ok']] });
      const raw = await customRaw(svc.port, body(model, { stream }), {
        'x-consumer-username': 'app-s',
      });
      expect(raw.headers['content-type']).to.equal('application/json');
      expect(raw.headers['cache-control']).to.equal('no-cache');
      expect(raw.headers['x-accel-buffering']).to.equal('no');
      expect(raw.raw.startsWith('data: {')).to.equal(true);
      expect(raw.raw.endsWith('data: [DONE]\n\n')).to.equal(true);
    }
  });

  it('12.9 extra model_config keys are ignored; an unreachable model is a business code in the stream', async () => {
    const r = await customStream(
      svc.port,
      body('fake-domain', {
        model_config: {
          domain: 'fake-domain',
          api: 'http://127.0.0.1:1/v1',
          api_key: 'k',
          temperature: 0.7,
          max_tokens: 100,
        },
      }),
      'app-bad-model',
    );
    expectStop(r, 40303, 'Model request failed');
    expect(r.chunks).to.have.length(1);
  });

  it('12.10 missing header: HTTP 200, the 40002 body (not a stream)', async () => {
    const raw = await customRaw(svc.port, body('x'));
    expect(raw.status).to.equal(200);
    expect(raw.headers['content-type']).to.match(/^application\/json/);
    const b = JSON.parse(raw.raw) as Record<string, unknown>;
    expect(b).to.deep.include({
      code: 40002,
      message: 'missing, x-consumer-username, Field required',
      choices: [],
      object: 'chat.completion.chunk',
    });
    expect(b.id).to.match(SID_RE);
    expect(String(b.created)).to.have.length(10); // seconds
  });

  it('12.11 {"invalid_field":"test","messages":[]} -> 40002 missing messages; other limits', async () => {
    const h = { 'x-consumer-username': 'app-v' };
    const msg = async (b: unknown) =>
      JSON.parse((await customRaw(svc.port, b, h)).raw) as { code: number; message: string };
    expect(await msg({ invalid_field: 'test', messages: [] })).to.deep.include({
      code: 40002,
      message: 'missing, messages, Field required',
    });
    const { max_loop_count: _m, ...noLoop } = body('x');
    expect((await msg(noLoop)).message).to.equal('missing, max_loop_count, Field required');
    const kb = { name: 'n', description: 'd', top_k: 9, repo_type: 1 };
    expect((await msg(body('x', plugin({ knowledge: [kb] })))).message).to.equal(
      'less_than_equal, top_k, Input should be less than or equal to 5',
    );
    expect((await msg('{"messages": [')).message).to.match(
      /^json_invalid, \d+, JSON decode error$/,
    );
  });

  it('12.12 three concurrent requests with distinct caller_sid: all answered, distinct sids', async () => {
    const model = nextModel('conc');
    llm.script(model, { plan: [['fine']] });
    const rs = await Promise.all(
      [1, 2, 3].map((i) =>
        customStream(
          svc.port,
          body(model, { meta_data: { caller: 'workflow-agent-node', caller_sid: `caller-${i}` } }),
          'app-c',
        ),
      ),
    );
    for (const r of rs) expectStop(r, 0);
    expect(new Set(rs.map((r) => r.stop.id)).size).to.equal(3);
  });

  // ---- ReAct paths -------------------------------------------------------------------------------

  it('two tools (link and MCP): two tool-call chunks, reasoning shown, planner text never, a summarised answer', async () => {
    const model = nextModel('two');
    llm.script(model, {
      plan: [
        [{ reasoning: 'planning...' }, act('weather first', 'get_weather', { city: 'Hefei' })],
        [act('then the key', 'lookup', { key: 'hefei' })],
        [finish('both done', 'should not be shown')],
      ],
      summary: [{ reasoning: 'summing up' }, 'Sunny, and the key is found.'],
    });
    const r = await customStream(
      svc.port,
      body(
        model,
        plugin({
          tools: [{ tool_id: 'tool@664882907021000', version: 'V1.0' }],
          mcp_server_ids: ['mcp_server_001'],
        }),
      ),
      'app-two',
    );
    expectStop(r, 0);
    const tcs = toolChunks(r).map((c) => delta(c).tool_calls![0]!);
    expect(tcs.map((t) => [t.function.name, t.type, t.reason, t.function.arguments])).to.deep.equal(
      [
        ['get_weather', 'tool', 'weather first', '{"city": "Hefei"}'],
        ['lookup', 'tool', 'then the key', '{"key": "hefei"}'],
      ],
    );
    expect(JSON.parse(tcs[1]!.function.response)).to.deep.equal({
      code: 0,
      message: 'success',
      sid: r.stop.id,
      data: { isError: false, content: [{ type: 'text', text: 'called lookup' }] },
    });
    expect(r.reasoning).to.equal('planning...summing up');
    expect(r.content).to.equal('Sunny, and the key is found.');
    expect(r.raw).to.not.include('Action Input').and.not.include('should not be shown');
    const calls = llm.byModel(model);
    expect(calls.map((c) => `${c.kind}${c.loop}`)).to.deep.equal([
      'plan0',
      'plan1',
      'plan2',
      'summary0',
    ]);
    expect(calls[2]!.user).to.include(
      'Action: get_weather\nAction Input: {"city": "Hefei"}\nObservation: {"header": ',
    );
    expect(calls[3]!.user)
      .to.include(SUMMARY_MARK)
      .and.include('"call tool": {"name": "lookup", "input": {"key": "hefei"}}');
  });

  it('a direct final answer on the first loop is streamed as content (marker split across chunks)', async () => {
    const model = nextModel('direct');
    llm.script(model, {
      plan: [['Thought: I know this\nFinal Answer: Hello there, friend.']],
      piece: 5,
    });
    const r = await customStream(
      svc.port,
      body(model, plugin({ tools: ['tool@664882907021000'] })),
      'app-direct',
    );
    expectStop(r, 0);
    expect(r.content).to.equal(' Hello there, friend.');
    expect(toolChunks(r)).to.have.length(0);
    expect(llm.byModel(model)).to.have.length(1);
    expect(fake.at('/link/run')).to.have.length(0);
  });

  it('the loop limit hands the steps to the summariser; max_loop_count 0 summarises at once', async () => {
    const model = nextModel('limit');
    llm.script(model, {
      plan: [[act('again', 'get_weather', { city: 'x' })]],
      summary: ['Gave up looping.'],
    });
    const r = await customStream(
      svc.port,
      body(model, { max_loop_count: 3, ...plugin({ tools: ['tool@664882907021000'] }) }),
      'app-limit',
    );
    expectStop(r, 0);
    expect(toolChunks(r)).to.have.length(3);
    expect(r.content).to.equal('Gave up looping.');
    expect(llm.byModel(model).map((c) => c.kind)).to.deep.equal([
      'plan',
      'plan',
      'plan',
      'summary',
    ]);

    const zero = nextModel('zero');
    llm.script(zero, { plan: [['never']], summary: ['Straight to the answer.'] });
    const z = await customStream(
      svc.port,
      body(zero, { max_loop_count: 0, ...plugin({ tools: ['tool@664882907021000'] }) }),
      'app-zero',
    );
    expectStop(z, 0);
    expect(z.content).to.equal('Straight to the answer.');
    expect(llm.byModel(zero).map((c) => c.kind)).to.deep.equal(['summary']);
  });

  it('malformed planner output ends the run with 40022', async () => {
    const model = nextModel('bad');
    llm.script(model, { plan: [[{ reasoning: 'hm' }, 'I think the answer is 42.']] });
    const r = await customStream(
      svc.port,
      body(model, plugin({ tools: ['tool@664882907021000'] })),
      'app-bad',
    );
    expectStop(r, 40022, 'Model returned reasoning content format is incorrect');
    expect(r.content).to.equal('');
    expect(r.reasoning).to.equal('hm');
    const bad2 = nextModel('bad2');
    llm.script(bad2, { plan: [[act('t', 'no_such_tool', {})]] });
    expectStop(
      await customStream(
        svc.port,
        body(bad2, plugin({ tools: ['tool@664882907021000'] })),
        'app-bad',
      ),
      40022,
    );
  });

  it('an empty tool output ends the run: the tool-call chunk, then the stop chunk, no answer', async () => {
    const model = nextModel('empty');
    llm.script(model, { plan: [[act('t', 'get_weather', { city: 'x' })]], summary: ['never'] });
    const saved = fake.linkAnswer;
    fake.linkAnswer = () => ({});
    try {
      const r = await customStream(
        svc.port,
        body(model, plugin({ tools: ['tool@664882907021000'] })),
        'app-empty',
      );
      expectStop(r, 0);
      expect(r.chunks).to.have.length(2);
      expect(delta(r.chunks[0]!).tool_calls![0]!.function.response).to.equal('{}');
      expect(llm.byModel(model)).to.have.length(1);
    } finally {
      fake.linkAnswer = saved;
    }
  });

  it('without model_config.api_key the key comes from app-auth', async () => {
    const model = nextModel('auth');
    llm.script(model, { plan: [['ok']] });
    const b = body(model);
    const r = await customStream(
      svc.port,
      { ...b, model_config: { domain: model, api: llm.url } },
      'app-authed',
    );
    expectStop(r, 0);
    expect(llm.byModel(model)[0]!.headers.authorization).to.equal('Bearer k-app-authed:s');
  });

  it("the workflow engine's reader: line by line until finish_reason stop, accumulating content and tool calls", async () => {
    const model = nextModel('node');
    llm.script(model, {
      plan: [
        [act('weather', 'get_weather', { city: 'Hefei' })],
        [act('analyse', 'analyse_data', { AGENT_USER_INPUT: 'w' })],
        [finish('ok')],
      ],
      summary: [' Done.'],
    });
    const res = await workflowNodeRead(
      svc.port,
      body(
        model,
        plugin({
          tools: [{ tool_id: 'tool@664882907021000', version: 'V1.0' }],
          workflow_ids: ['data_analysis_workflow'],
        }),
      ),
      'app-node',
    );
    expect(res.status).to.equal(200);
    expect(res.error).to.equal(undefined);
    expect(res.stoppedAtStop).to.equal(true);
    expect(res.content).to.equal('Part 1 and part 2 Done.');
    expect(res.reasoning).to.equal('wf-thinking');
    expect(res.toolCalls.map((t) => t.type)).to.deep.equal(['tool', 'workflow']);

    const bad = nextModel('node-bad');
    llm.script(bad, { plan: [['no format here']] });
    const failed = await workflowNodeRead(
      svc.port,
      body(bad, plugin({ tools: ['tool@664882907021000'] })),
      'app-node',
    );
    expect(failed.error!.code).to.equal(40022);
  });

  it('/chat/completions: a bot with plugins is answered by the ReAct runner (aggregated)', async () => {
    const model = nextModel('bot');
    llm.script(model, {
      plan: [[act('weather', 'get_weather', { city: 'Hefei' })], [finish('ok')]],
      summary: ['Bot answer.'],
    });
    const appId = 'app-bot';
    await createBot(svc.port, appId, 'bot-react-1', {
      domain: model,
      api: llm.url,
      instruct: 'bot instruct',
      extra: { tool_ids: ['tool@664882907021000'], flow_ids: ['data_analysis_workflow'] },
    });
    const r = await chatJson<{
      code: number;
      choices: {
        message: { content: string; tool_calls: { type: string; function: { name: string } }[] };
      }[];
    }>(
      svc.port,
      { bot_id: 'bot-react-1', uid: 'u2', messages: [user('weather?')], stream: false },
      { 'x-consumer-username': appId },
    );
    expect(r.body.code).to.equal(0);
    expect(r.body.choices[0]!.message.content).to.equal('Bot answer.');
    expect(
      r.body.choices[0]!.message.tool_calls.map((t) => [t.type, t.function.name]),
    ).to.deep.equal([['tool', 'get_weather']]);
    const calls = llm.byModel(model);
    expect(calls[0]!.system).to.include('bot instruct').and.include('tool_name:analyse_data');
    expect(calls[0]!.headers.authorization).to.equal(`Bearer k-${appId}:s`);
    expect(fake.at('/workflow/protocol').map((q) => q.body)).to.deep.equal([
      { flow_id: 'data_analysis_workflow' },
    ]);
  });

  it('a client that goes away aborts the tool call in flight', async () => {
    const model = nextModel('gone');
    llm.script(model, { plan: [[act('t', 'get_weather', { city: 'x' })]], summary: ['never'] });
    fake.hang.add('/link/run');
    const req = http.request({
      host: '127.0.0.1',
      port: svc.port,
      path: '/agent/v1/custom/chat/completions',
      method: 'POST',
      headers: { 'Content-Type': 'application/json', 'x-consumer-username': 'app-gone' },
    });
    req.on('error', () => {});
    req.end(JSON.stringify(body(model, plugin({ tools: ['tool@664882907021000'] }))));
    for (let i = 0; i < 100 && fake.at('/link/run').length === 0; i++) await sleep(20);
    const run = fake.at('/link/run')[0]!;
    expect(run.aborted).to.equal(false);
    req.destroy();
    for (let i = 0; i < 100 && !run.aborted; i++) await sleep(20);
    expect(run.aborted, 'the link run request was closed').to.equal(true);
    expect(llm.byModel(model).map((c) => c.kind)).to.deep.equal(['plan']);
  });

  // ---- MCP reached directly, plugin timeouts (PLUGIN_TIMEOUT=800) ----------------------------------

  it('a real MCP server reached directly (no proxy configured): list, call, session closed', async () => {
    const model = nextModel('direct-mcp');
    llm.script(model, {
      plan: [[act('add them', 'add', { a: 2, b: 40 })], [finish('ok')]],
      summary: ['42.'],
    });
    const closedBefore = mcp.sessionsClosed;
    const r = await customStream(
      direct.port,
      body(model, plugin({ mcp_server_urls: [mcp.url] })),
      'app-direct-mcp',
    );
    expectStop(r, 0);
    const tc = delta(toolChunks(r)[0]!).tool_calls![0]!;
    expect(tc.function.name).to.equal('add');
    expect(JSON.parse(tc.function.response)).to.deep.equal({
      code: 0,
      message: 'success',
      sid: r.stop.id,
      data: { isError: false, content: [{ type: 'text', text: '42' }] },
    });
    expect(mcp.calls.at(-1)).to.deep.include({ tool: 'add', args: { a: 2, b: 40 } });
    expect(llm.byModel(model)[0]!.system).to.include(
      'tool_name:add, tool_description:Adds two numbers',
    );
    for (let i = 0; i < 50 && mcp.sessionsClosed === closedBefore; i++) await sleep(50);
    expect(mcp.sessionsClosed).to.equal(closedBefore + 1);
  });

  const timeoutCases: [string, number, string, () => Record<string, unknown>, string[]][] = [
    [
      'link schema query',
      40023,
      'Failed to get link tool protocol',
      () => plugin({ tools: ['tool@664882907021000'] }),
      ['/link/versions'],
    ],
    [
      'link run',
      40024,
      'Failed to execute link tool',
      () => plugin({ tools: ['tool@664882907021000'] }),
      ['/link/run'],
    ],
    [
      'knowledge query',
      40025,
      'Failed to query knowledge base',
      () =>
        plugin({
          knowledge: [
            {
              name: 'k',
              description: '',
              top_k: 1,
              repo_type: 1,
              match: { repo_ids: ['r'], doc_ids: [] },
            },
          ],
        }),
      ['/knowledge/query'],
    ],
    [
      'MCP list (a server that never answers)',
      40026,
      'Failed to get MCP server protocol',
      () => plugin({ mcp_server_urls: [`${fake.url}/mcp-hang`] }),
      ['/mcp-hang'],
    ],
    [
      'MCP call (a real server, a slow tool)',
      40027,
      'Failed to execute MCP server tool',
      () => plugin({ mcp_server_urls: [mcp.url] }),
      [],
    ],
    [
      'workflow call',
      40028,
      'Failed to call workflow tool',
      () => plugin({ workflow_ids: ['data_analysis_workflow'] }),
      ['/workflow/v1/chat/completions'],
    ],
  ];
  for (const [what, code, text, plugins, hang] of timeoutCases) {
    it(`a late ${what} gives ${code}`, async () => {
      const model = nextModel(`late-${code}`);
      const action: Record<number, string> = {
        40024: act('t', 'get_weather', { city: 'x' }),
        40027: act('t', 'slow', { ms: 5000 }),
        40028: act('t', 'analyse_data', { AGENT_USER_INPUT: 'x' }),
      };
      llm.script(model, {
        plan: [[action[code] ?? 'Thought: x\nFinal Answer: unreachable']],
        summary: ['never'],
      });
      for (const p of hang) fake.hang.add(p);
      const t0 = Date.now();
      const r = await customStream(direct.port, body(model, plugins()), 'app-late');
      expectStop(r, code, text);
      expect(Date.now() - t0).to.be.within(700, 10000);
    });
  }
});
