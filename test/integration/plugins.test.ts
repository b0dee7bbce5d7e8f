// The plugins of spec 8 against fake services on loopback ports that record the exact requests
// they receive (query strings, headers, bodies, base64 payloads decoded), and against a real MCP
// server built with the official SDK, reached directly over Streamable HTTP. In-process: the
// plugin modules are called as the ReAct runner calls them.
import { expect } from 'chai';
import { AgentError } from '../../lib/agent/errors.js';
import { KnowledgeClient, retrieveForItems } from '../../lib/agent/knowledge.js';
import { buildToolset, type PluginEndpoints, type Toolset } from '../../lib/agent/plugins/index.js';
import type { Tool, ToolFrame } from '../../lib/agent/plugins/types.js';
import type { RunContext } from '../../lib/agent/runners/types.js';
import { startFakePlugins, wfFrame, type FakePlugins } from '../support/fake-plugins.js';
import { startRealMcpServer, type RealMcpServer } from '../support/mcp-server.js';
import { WEATHER_OP } from '../support/openapi.js';

const ctx = (signal = new AbortController().signal): RunContext => ({
  sid: 'sid-123',
  appId: 'app1',
  uid: 'user-9',
  signal,
});

function endpoints(fake: FakePlugins, over: Partial<PluginEndpoints> = {}): PluginEndpoints {
  return {
    versionsLinkUrl: `${fake.url}/link/versions`,
    runLinkUrl: `${fake.url}/link/run`,
    listMcpUrl: `${fake.url}/mcp/list`,
    runMcpUrl: `${fake.url}/mcp/call`,
    getWorkflowsUrl: `${fake.url}/workflow/protocol`,
    workflowSseBaseUrl: `${fake.url}/workflow/v1`,
    timeoutMs: 5000,
    ...over,
  };
}

const none = { tools: [], mcpServerIds: [], mcpServerUrls: [], workflowIds: [] };

async function frames(tool: Tool, args: Record<string, unknown>, c = ctx()): Promise<ToolFrame[]> {
  const out: ToolFrame[] = [];
  for await (const f of tool.run(args, c)) out.push(f);
  return out;
}

async function codeOf(p: Promise<unknown>): Promise<{ code: number; message: string }> {
  try {
    await p;
  } catch (err) {
    expect(err, String(err)).to.be.instanceOf(AgentError);
    return { code: (err as AgentError).code, message: (err as AgentError).message };
  }
  throw new Error('did not fail');
}

const named = (ts: Toolset, name: string) => ts.tools.find((t) => t.name === name)!;

describe('plugins against fake services (spec 8)', function () {
  this.timeout(20000);
  let fake: FakePlugins;

  beforeEach(async () => {
    fake = await startFakePlugins();
    fake.linkTools.push(
      {
        id: 'tool@1',
        version: 'V1.0',
        document: { openapi: '3.0.1', paths: { '/weather': { get: WEATHER_OP } } },
      },
      {
        id: 'tool@2',
        version: 'V2.0',
        document: {
          paths: {
            '/a': {
              post: {
                operationId: 'op_a',
                description: 'A',
                requestBody: {
                  content: {
                    'application/json': {
                      schema: { properties: { x: { type: 'string', 'x-from': 0 } } },
                    },
                  },
                },
              },
            },
            '/b': { get: { operationId: 'op_b', description: 'B' } },
          },
        },
      },
    );
  });
  afterEach(async () => fake.close());

  describe('link tools (8.1)', () => {
    it('queries the schemas with every value percent-encoded and builds one tool per operation', async () => {
      const ts = await buildToolset(
        endpoints(fake),
        {
          ...none,
          tools: [
            { tool_id: 'tool@1', version: 'V1.0' },
            { tool_id: 'tool@2', version: 'V2.0' },
          ],
        },
        ctx(),
      );
      const [q] = fake.at('/link/versions');
      expect(q!.method).to.equal('GET');
      expect(q!.rawQuery).to.equal(
        'app_id=app1&tool_ids=tool%401&versions=V1.0&tool_ids=tool%402&versions=V2.0',
      );
      expect(ts.tools.map((t) => [t.name, t.typ])).to.deep.equal([
        ['get_weather', 'link'],
        ['op_a', 'link'],
        ['op_b', 'link'],
      ]);
      expect(named(ts, 'op_a').schemaTemplate).to.equal(
        'tool_name:op_a, tool_description:A, tool_parameters:{"type": "object", "properties": {"x": {"description": "", "type": "string"}}, "required": []}',
      );
    });

    it('a request value cannot inject a parameter into the schema query (app_id, tool_ids, versions)', async () => {
      await buildToolset(
        endpoints(fake),
        {
          ...none,
          tools: [
            { tool_id: 'tool@1&tool_ids=tool@2', version: 'V1.0&versions=V2.0' },
            { tool_id: 'tool@2#frag', version: 'V1.0' },
          ],
        },
        { ...ctx(), appId: 'x&app_id=other' },
      ).catch(() => {}); // no tool matches those ids: whatever the answer, the query is the point
      const [q] = fake.at('/link/versions');
      expect(q!.query).to.deep.equal([
        ['app_id', 'x&app_id=other'],
        ['tool_ids', 'tool@1&tool_ids=tool@2'],
        ['versions', 'V1.0&versions=V2.0'],
        ['tool_ids', 'tool@2#frag'],
        ['versions', 'V1.0'],
      ]);
    });

    it('runs with the exact http_run body; header/query/body base64 of ASCII JSON; the whole answer is the observation', async () => {
      const ts = await buildToolset(
        endpoints(fake),
        { ...none, tools: [{ tool_id: 'tool@1', version: 'V1.0' }] },
        ctx(),
      );
      const out = await frames(named(ts, 'get_weather'), {
        city: '合肥',
        days: 2,
        lang: 'en',
        detail: true,
        'X-Trace': 'tr',
      });
      const [run] = fake.at('/link/run');
      expect(run!.headers['content-type']).to.equal('application/json');
      expect(run!.body.header).to.deep.equal({ app_id: 'app1', uid: 'user-9' });
      expect(run!.body.parameter).to.deep.equal({
        tool_id: 'tool@1',
        operation_id: 'get_weather',
        version: 'V1.0',
      });
      expect(run!.decoded!.text.query).to.equal(
        '{"city": "\\u5408\\u80a5", "unit": "C", "days": 2}',
      );
      expect(run!.decoded!.header).to.deep.equal({ token: 'tkn', 'X-Trace': 'tr' });
      expect(run!.decoded!.body).to.deep.equal({
        lang: 'en',
        hidden: 'h',
        free: null,
        options: { detail: true, biz: 'b', deep: { level: 3 } },
      });
      expect(out).to.have.length(1);
      expect(out[0]!.observation).to.deep.equal({
        header: { code: 0, message: 'success', sid: 'link-sid' },
        payload: { text: { text: JSON.stringify({ echo: { city: '合肥', unit: 'C', days: 2 } }) } },
      });
    });

    it('omits empty parts; a tool error inside a 200 answer is the observation, not a failure', async () => {
      fake.linkAnswer = () => ({ header: { code: 11111, message: 'quota exceeded', sid: 'x' } });
      const ts = await buildToolset(
        endpoints(fake),
        { ...none, tools: [{ tool_id: 'tool@2', version: 'V2.0' }] },
        ctx(),
      );
      const out = await frames(named(ts, 'op_b'), {});
      expect(fake.at('/link/run')[0]!.body.payload).to.deep.equal({ message: {} });
      expect(out[0]!.observation).to.deep.equal({
        header: { code: 11111, message: 'quota exceeded', sid: 'x' },
      });
    });

    it('schema query: code != 0 is 40023, HTTP 500 is 40500, a late answer 40023; a late run 40024', async () => {
      const req = { ...none, tools: [{ tool_id: 'tool@1', version: 'V1.0' }] };
      fake.linkVersions = () => ({ code: 1, message: 'no such tool' });
      expect(await codeOf(buildToolset(endpoints(fake), req, ctx()))).to.deep.equal({
        code: 40023,
        message: 'Failed to get link tool protocol',
      });
      fake.linkVersions = undefined;
      const broken = await startFakePlugins();
      try {
        const e = await codeOf(
          buildToolset(endpoints(fake, { versionsLinkUrl: `${broken.url}/nope` }), req, ctx()),
        );
        expect(e.code).to.equal(40500);
        expect(e.message).to.equal(
          'Agent internal service error,link schema query answered HTTP 404',
        );
      } finally {
        await broken.close();
      }
      fake.hang.add('/link/versions');
      const t0 = Date.now();
      expect(
        (await codeOf(buildToolset(endpoints(fake, { timeoutMs: 300 }), req, ctx()))).code,
      ).to.equal(40023);
      expect(Date.now() - t0).to.be.within(250, 3000);
      fake.hang.clear();
      const ts = await buildToolset(endpoints(fake, { timeoutMs: 300 }), req, ctx());
      fake.hang.add('/link/run');
      expect(await codeOf(frames(named(ts, 'get_weather'), { city: 'x' }))).to.deep.equal({
        code: 40024,
        message: 'Failed to execute link tool',
      });
    });

    it('no VERSIONS_LINK_URL: 40500 naming the setting; an unreachable service: 40500', async () => {
      const req = { ...none, tools: [{ tool_id: 'tool@1', version: 'V1.0' }] };
      expect(
        (await codeOf(buildToolset(endpoints(fake, { versionsLinkUrl: '' }), req, ctx()))).message,
      ).to.equal('Agent internal service error,VERSIONS_LINK_URL is not set');
      const e = await codeOf(
        buildToolset(endpoints(fake, { versionsLinkUrl: 'http://127.0.0.1:1/x' }), req, ctx()),
      );
      expect(e.code).to.equal(40500);
      expect(e.message).to.match(/^Agent internal service error,link schema query failed: /);
    });
  });

  describe('MCP through the proxy (8.2)', () => {
    beforeEach(() => {
      fake.mcpServers.push({
        server_id: 'mcp_001',
        server_url: 'http://mcp-1',
        server_status: 0,
        tools: [
          {
            name: 'lookup',
            description: 'Looks up',
            inputSchema: { type: 'object', properties: { k: { type: 'string' } }, required: ['k'] },
          },
        ],
      });
    });

    it('lists with {sid, ids, urls}; calls with the server, tool and args; the answer is the observation', async () => {
      const ts = await buildToolset(
        endpoints(fake),
        { ...none, mcpServerIds: ['mcp_001'], mcpServerUrls: ['http://localhost:3000'] },
        ctx(),
      );
      expect(fake.at('/mcp/list')[0]!.body).to.deep.equal({
        sid: 'sid-123',
        mcp_server_ids: ['mcp_001'],
        mcp_server_urls: ['http://localhost:3000'],
      });
      const t = named(ts, 'lookup');
      expect(t.typ).to.equal('mcp');
      expect(t.parameters).to.deep.equal({
        type: 'object',
        properties: { k: { type: 'string' } },
        required: ['k'],
      });
      const out = await frames(t, { k: 'v' });
      expect(fake.at('/mcp/call')[0]!.body).to.deep.equal({
        mcp_server_id: 'mcp_001',
        mcp_server_url: 'http://mcp-1',
        tool_name: 'lookup',
        tool_args: { k: 'v' },
        sid: 'sid-123',
      });
      expect(out[0]!.observation).to.deep.equal({
        code: 0,
        message: 'success',
        sid: 'sid-123',
        data: { isError: false, content: [{ type: 'text', text: 'called lookup' }] },
      });
    });

    it('40026: list code != 0, a server not ok, a late list; 40027: a late call', async () => {
      const req = { ...none, mcpServerIds: ['mcp_001'] };
      fake.mcpList = () => ({ code: 500, message: 'down' });
      expect(await codeOf(buildToolset(endpoints(fake), req, ctx()))).to.deep.equal({
        code: 40026,
        message: 'Failed to get MCP server protocol',
      });
      fake.mcpList = undefined;
      fake.mcpServers.push({
        server_id: 'mcp_002',
        server_url: 'u',
        server_status: 1,
        server_message: 'unreachable',
        tools: [],
      });
      expect((await codeOf(buildToolset(endpoints(fake), req, ctx()))).code).to.equal(40026);
      fake.mcpServers.pop();
      fake.hang.add('/mcp/list');
      expect(
        (await codeOf(buildToolset(endpoints(fake, { timeoutMs: 300 }), req, ctx()))).code,
      ).to.equal(40026);
      fake.hang.clear();
      const ts = await buildToolset(endpoints(fake, { timeoutMs: 300 }), req, ctx());
      fake.hang.add('/mcp/call');
      expect(await codeOf(frames(named(ts, 'lookup'), { k: 'v' }))).to.deep.equal({
        code: 40027,
        message: 'Failed to execute MCP server tool',
      });
    });
  });

  describe('workflows (8.3)', () => {
    beforeEach(() => {
      fake.flows.push(
        {
          id: 'flow_a',
          name: 'analyse',
          description: 'Analyses',
          outputs: [
            {
              name: 'AGENT_USER_INPUT',
              schema: { type: 'string', description: 'input' },
              required: true,
            },
          ],
          frames: [
            wfFrame('Part 1', 'thinking'),
            { code: 0, id: 'x', choices: [] },
            wfFrame(' part 2'),
            wfFrame(null, undefined, 'stop'),
          ],
        },
        {
          id: 'flow_b',
          name: 'broken',
          description: 'Fails',
          outputs: [],
          frames: [
            wfFrame('ok'),
            { code: 20001, message: 'node failed', id: 'x', choices: [] },
            wfFrame('never'),
          ],
        },
      );
    });

    it('queries each schema concurrently; the call has the headers and body of the spec; frames are read as they come', async () => {
      const ts = await buildToolset(
        endpoints(fake),
        { ...none, workflowIds: ['flow_a', 'flow_b'] },
        ctx(),
      );
      expect(fake.at('/workflow/protocol').map((r) => r.body)).to.have.deep.members([
        { flow_id: 'flow_a' },
        { flow_id: 'flow_b' },
      ]);
      const t = named(ts, 'analyse');
      expect(t.typ).to.equal('workflow');
      expect(t.schemaTemplate).to.equal(
        'tool_name:analyse, tool_description:Analyses, tool_parameters:{"type": "object", "properties": {"AGENT_USER_INPUT": {"type": "string", "description": "input"}}, "required": ["AGENT_USER_INPUT"]}',
      );
      const out = await frames(t, { AGENT_USER_INPUT: 'data' });
      const [call] = fake.at('/workflow/v1/chat/completions');
      expect(call!.headers['x-consumer-username']).to.equal('app1');
      expect(call!.headers.authorization).to.equal('Bearer no_need');
      expect(call!.body).to.deep.equal({
        model: '',
        messages: [],
        stream: true,
        flow_id: 'flow_a',
        uid: 'user-9',
        parameters: { AGENT_USER_INPUT: 'data' },
        extra_body: { bot_id: 'workflow', caller: 'agent' },
      });
      expect(out).to.deep.equal([
        {
          observation: { content: 'Part 1', reasoning_content: 'thinking' },
          content: 'Part 1',
          reasoning: 'thinking',
        },
        { observation: { content: ' part 2', reasoning_content: '' }, content: ' part 2' },
        { observation: { content: null, reasoning_content: '' } },
      ]);
      const bad = await frames(named(ts, 'broken'), {});
      expect(bad).to.deep.equal([
        { observation: { content: 'ok', reasoning_content: '' }, content: 'ok' },
        { observation: { code: 20001, message: 'node failed', id: 'x', choices: [] }, error: true },
      ]);
    });

    it('40028 for a late schema answer and a late call', async () => {
      fake.hang.add('/workflow/protocol');
      expect(
        await codeOf(
          buildToolset(
            endpoints(fake, { timeoutMs: 300 }),
            { ...none, workflowIds: ['flow_a'] },
            ctx(),
          ),
        ),
      ).to.deep.equal({
        code: 40028,
        message: 'Failed to call workflow tool',
      });
      fake.hang.clear();
      const ts = await buildToolset(
        endpoints(fake, { timeoutMs: 300 }),
        { ...none, workflowIds: ['flow_a'] },
        ctx(),
      );
      fake.hang.add('/workflow/v1/chat/completions');
      expect((await codeOf(frames(named(ts, 'analyse'), {}))).code).to.equal(40028);
    });
  });

  describe('knowledge for the custom endpoint (7.3 / 8.4)', () => {
    it('one query per item with ids, concurrently, with the exact bodies; references expanded', async () => {
      fake.knowledgeAnswer = (req) => ({
        code: 0,
        data: {
          results: [
            {
              title: `T-${String(req.body.ragType)}`,
              docId: String(req.body.ragType),
              content: 'see <img> and {pic}',
              references: {
                img: { format: 'image', link: 'http://i/1.png' },
                pic: 'http://i/2.png',
              },
            },
          ],
        },
      });
      const client = new KnowledgeClient({ url: `${fake.url}/knowledge/query`, timeoutMs: 5000 });
      const items = [
        { top_k: 2, repo_type: 1, match: { repo_ids: ['r1'], doc_ids: ['d1'] } },
        { top_k: 5, repo_type: 2, match: { repo_ids: ['r2'], doc_ids: ['d2'] } },
        { top_k: 3, repo_type: 2, match: { repo_ids: [], doc_ids: [] } },
      ];
      const res = await retrieveForItems(client, items, 'what?', new AbortController().signal);
      expect(fake.at('/knowledge/query').map((r) => r.body)).to.have.deep.members([
        {
          query: 'what?',
          topN: '2',
          match: { repoId: ['r1'], threshold: 0.3 },
          ragType: 'AIUI-RAG2',
        },
        {
          query: 'what?',
          topN: '5',
          match: { repoId: ['r2'], threshold: 0.3, docIds: ['d2'] },
          ragType: 'CBG-RAG',
        },
      ]);
      expect(res.metadataList.map((m) => m.source_id)).to.deep.equal(['AIUI-RAG2', 'CBG-RAG']);
      expect(res.text).to.include('see ![alt](http://i/1.png) and ![alt](http://i/2.png)');
    });

    it('a late knowledge answer is 40025', async () => {
      fake.hang.add('/knowledge/query');
      const client = new KnowledgeClient({ url: `${fake.url}/knowledge/query`, timeoutMs: 300 });
      const items = [{ top_k: 2, repo_type: 1, match: { repo_ids: ['r1'], doc_ids: [] } }];
      expect(
        await codeOf(retrieveForItems(client, items, 'q', new AbortController().signal)),
      ).to.deep.equal({
        code: 40025,
        message: 'Failed to query knowledge base',
      });
    });
  });
});

describe('MCP servers reached directly with the MCP SDK (no proxy)', function () {
  this.timeout(20000);
  let mcp: RealMcpServer;
  let fake: FakePlugins;
  beforeEach(async () => {
    mcp = await startRealMcpServer();
    fake = await startFakePlugins();
  });
  afterEach(async () => {
    await mcp.close();
    await fake.close();
  });
  const direct = (over: Partial<PluginEndpoints> = {}) =>
    endpoints(fake, { listMcpUrl: '', runMcpUrl: '', ...over });

  it('lists the tools of a real server and calls them over one session, closed at the end', async () => {
    const ts = await buildToolset(direct(), { ...none, mcpServerUrls: [mcp.url] }, ctx());
    expect(ts.tools.map((t) => t.name).sort()).to.deep.equal(['add', 'echo', 'fail', 'slow']);
    const add = named(ts, 'add');
    expect(add.typ).to.equal('mcp');
    expect(add.parameters.required).to.deep.equal(['a', 'b']);
    expect(add.parameters.properties).to.deep.equal({
      a: { type: 'number', description: 'first' },
      b: { type: 'number', description: 'second' },
    });
    expect((await frames(add, { a: 2, b: 3 }))[0]!.observation).to.deep.equal({
      code: 0,
      message: 'success',
      sid: 'sid-123',
      data: { isError: false, content: [{ type: 'text', text: '5' }] },
    });
    const echo = (await frames(named(ts, 'echo'), { text: 'héllo' }))[0]!.observation as {
      data: Record<string, unknown>;
    };
    expect(echo.data).to.deep.equal({
      isError: false,
      content: [{ type: 'text', text: 'héllo' }],
      structuredContent: { length: 5 },
    });
    // the server's own failure is the observation
    const fail = (await frames(named(ts, 'fail'), {}))[0]!.observation as {
      data: Record<string, unknown>;
    };
    expect(fail.data).to.deep.equal({
      isError: true,
      content: [{ type: 'text', text: 'it broke' }],
    });
    // arguments the server rejects: still an observation, not a failure of the run
    const bad = (await frames(add, { a: 'x' }))[0]!.observation as {
      code: number;
      data: { isError?: boolean } | null;
    };
    expect(bad.code !== 0 || bad.data?.isError === true, JSON.stringify(bad)).to.equal(true);
    expect(mcp.calls.map((c) => c.tool)).to.deep.equal(['add', 'echo', 'fail']);
    expect(new Set(mcp.calls.map((c) => c.session)).size).to.equal(1);
    expect(mcp.sessionsOpened).to.equal(1);
    await ts.close();
    expect(mcp.sessionsClosed).to.equal(1);
  });

  it('a call past the deadline is 40027; an unreachable server is 40026; ids without a proxy 40500', async () => {
    const ts = await buildToolset(
      direct({ timeoutMs: 400 }),
      { ...none, mcpServerUrls: [mcp.url] },
      ctx(),
    );
    expect(await codeOf(frames(named(ts, 'slow'), { ms: 3000 }))).to.deep.equal({
      code: 40027,
      message: 'Failed to execute MCP server tool',
    });
    await ts.close();
    expect(
      await codeOf(
        buildToolset(direct(), { ...none, mcpServerUrls: ['http://127.0.0.1:1/mcp'] }, ctx()),
      ),
    ).to.deep.equal({
      code: 40026,
      message: 'Failed to get MCP server protocol',
    });
    expect(
      await codeOf(
        buildToolset(direct(), { ...none, mcpServerUrls: [`${fake.url}/not-mcp`] }, ctx()),
      ),
    ).to.deep.include({ code: 40026 });
    expect(
      (await codeOf(buildToolset(direct(), { ...none, mcpServerIds: ['mcp_001'] }, ctx()))).message,
    ).to.equal(
      'Agent internal service error,LIST_MCP_PLUGIN_URL is not set: mcp_server_ids need the MCP proxy',
    );
  });
});
