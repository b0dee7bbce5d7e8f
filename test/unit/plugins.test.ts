// The pure parts of the plugins (spec 8) and of the custom request (spec 3.2/3.4): OpenAPI
// operations to tool parameters (x-display / x-from, flattened bodies), the assembled run request
// and its base64 parts, Python-style ASCII JSON, workflow schemas and frames, MCP parameters, the
// line reader, and the custom endpoint's validation messages.
import { expect } from 'chai';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { SettingsError, validateSettings } from '../../lib/config/settings.js';
import { validateCustomCompletion } from '../../lib/agent/custom.js';
import { AgentError } from '../../lib/agent/errors.js';
import { pluginEndpointsFrom } from '../../lib/agent/plugins/index.js';
import {
  b64Json,
  PluginHttpClient,
  postJson,
  pyJsonAscii,
  pyTruthy,
  readLines,
} from '../../lib/agent/plugins/http.js';
import {
  assembleBody,
  assembleParameters,
  modelVisible,
  runRequest,
  schemaQueryUrl,
  toolParameters,
  toolRefs,
} from '../../lib/agent/plugins/link.js';
import { mcpParameters } from '../../lib/agent/plugins/mcp.js';
import { schemaTemplate } from '../../lib/agent/plugins/types.js';
import {
  buildWorkflowTools,
  workflowCallBody,
  workflowFrame,
  workflowTool,
} from '../../lib/agent/plugins/workflow.js';
import { RequestValidationError } from '../../lib/schema/schema.js';
import { WEATHER_OP } from '../support/openapi.js';

describe('link tools (spec 8.1)', () => {
  it('model-visible: x-display truthy, or absent and x-from == 0', () => {
    expect(modelVisible({ 'x-display': true })).to.equal(true);
    expect(modelVisible({ 'x-display': 1, 'x-from': 1 })).to.equal(true);
    expect(modelVisible({ 'x-display': false, 'x-from': 0 })).to.equal(false);
    expect(modelVisible({ 'x-display': '' })).to.equal(false);
    expect(modelVisible({ 'x-from': 0 })).to.equal(true);
    expect(modelVisible({ 'x-from': 1 })).to.equal(false);
    expect(modelVisible({})).to.equal(false);
  });

  it('operation -> parameters: visible query params and flattened body leaves, required unioned and filtered', () => {
    expect(toolParameters(WEATHER_OP)).to.deep.equal({
      type: 'object',
      properties: {
        city: { description: 'city name', type: 'string' },
        days: { description: null, type: 'integer' },
        lang: { description: 'language', type: 'string' },
        detail: { description: 'detailed', type: 'boolean' },
        level: { description: '', type: 'integer' },
      },
      // query-required first, then the body's (nested levels first, as the original's recursion
      // collects them), only names that became properties
      required: ['city', 'detail', 'lang'],
    });
  });

  it('the body wins a name clash; an operation without parameters has none', () => {
    const op = {
      parameters: [
        {
          name: 'q',
          in: 'query',
          description: 'query',
          required: true,
          schema: { type: 'string', 'x-from': 0 },
        },
      ],
      requestBody: {
        content: {
          'application/json': {
            schema: { properties: { q: { type: 'integer', 'x-from': 0, description: 'body' } } },
          },
        },
      },
    };
    expect(toolParameters(op).properties).to.deep.equal({
      q: { description: 'body', type: 'integer' },
    });
    expect(toolParameters(op).required).to.deep.equal(['q']);
    expect(toolParameters({})).to.deep.equal({ type: 'object', properties: {}, required: [] });
  });

  it('schema template in Python json.dumps spacing, non-ASCII raw', () => {
    expect(
      schemaTemplate('get_weather', '查询天气', {
        type: 'object',
        properties: { c: { type: 'string' } },
        required: ['c'],
      }),
    ).to.equal(
      'tool_name:get_weather, tool_description:查询天气, tool_parameters:{"type": "object", "properties": {"c": {"type": "string"}}, "required": ["c"]}',
    );
  });

  it('assembles header and query: defaults, x-display / x-from rules, path ignored, null when no value', () => {
    const input = { city: 'Hefei', unit: 'F', days: 3, token: 'stolen', 'X-Trace': 't-1', id: 'p' };
    expect(assembleParameters(WEATHER_OP, input)).to.deep.equal({
      header: { token: 'tkn', 'X-Trace': 't-1' },
      query: { city: 'Hefei', unit: 'C', days: 3 },
    });
    expect(assembleParameters(WEATHER_OP, {})).to.deep.equal({
      header: { token: 'tkn', 'X-Trace': null },
      query: { city: null, unit: 'C', days: 1 },
    });
  });

  it('assembles the body as nested maps; leaves without rules take the action input', () => {
    const schema = WEATHER_OP.requestBody.content['application/json'].schema;
    expect(
      assembleBody(schema, {
        lang: 'en',
        hidden: 'x',
        free: 'f',
        detail: true,
        biz: 'no',
        level: 7,
      }),
    ).to.deep.equal({
      lang: 'en',
      hidden: 'h',
      free: 'f',
      options: { detail: true, biz: 'b', deep: { level: 7 } },
    });
    expect(assembleBody(schema, {})).to.deep.equal({
      lang: 'zh',
      hidden: 'h',
      free: null,
      options: { detail: null, biz: 'b', deep: { level: 3 } },
    });
  });

  it('the run request carries base64(ASCII JSON) parts, each only when non-empty', () => {
    const target = {
      appId: 'app',
      uid: 'u1',
      toolId: 'tool@1',
      version: 'V1.0',
      operationId: 'get_weather',
    };
    const req = runRequest(target, WEATHER_OP, {
      city: '合肥',
      lang: 'en',
      detail: false,
      free: 'x',
      level: 1,
      'X-Trace': 't',
    });
    expect(req.header).to.deep.equal({ app_id: 'app', uid: 'u1' });
    expect(req.parameter).to.deep.equal({
      tool_id: 'tool@1',
      operation_id: 'get_weather',
      version: 'V1.0',
    });
    const message = (req.payload as { message: Record<string, string> }).message;
    const decode = (s: string) => Buffer.from(s, 'base64').toString('utf8');
    expect(decode(message.query!)).to.equal('{"city": "\\u5408\\u80a5", "unit": "C", "days": 1}');
    expect(JSON.parse(decode(message.header!))).to.deep.equal({ token: 'tkn', 'X-Trace': 't' });
    expect(JSON.parse(decode(message.body!))).to.deep.equal({
      lang: 'en',
      hidden: 'h',
      free: 'x',
      options: { detail: false, biz: 'b', deep: { level: 1 } },
    });
    const bare = runRequest(target, { operationId: 'x' }, {});
    expect(bare.payload).to.deep.equal({ message: {} });
  });

  it('Python-style ASCII JSON and its base64', () => {
    expect(pyJsonAscii({ a: 'é😀\u007f', b: [1, null, true] })).to.equal(
      '{"a": "\\u00e9\\ud83d\\ude00\\u007f", "b": [1, null, true]}',
    );
    expect(b64Json({ a: 1 })).to.equal(Buffer.from('{"a": 1}').toString('base64'));
  });

  it('schema query URL: every value percent-encoded (no parameter injection), strings get V1.0', () => {
    const refs = toolRefs([
      'tool@1',
      { tool_id: 'tool@2', version: 'V2.0' },
      { tool_id: 'tool@3' },
    ]);
    expect(refs).to.deep.equal([
      { tool_id: 'tool@1', version: 'V1.0' },
      { tool_id: 'tool@2', version: 'V2.0' },
      { tool_id: 'tool@3', version: '' },
    ]);
    expect(schemaQueryUrl('http://h/api/v1/tools/versions', 'app1', refs)).to.equal(
      'http://h/api/v1/tools/versions?app_id=app1&tool_ids=tool%401&versions=V1.0&tool_ids=tool%402&versions=V2.0&tool_ids=tool%403&versions=',
    );
    const hostile = schemaQueryUrl(
      'http://h/versions?region=cn',
      'x&app_id=other',
      toolRefs([{ tool_id: 't#1&tool_ids=t2', version: 'V1 ?=%' }]),
    );
    const q = [...new URL(hostile).searchParams];
    expect(q).to.deep.equal([
      ['region', 'cn'],
      ['app_id', 'x&app_id=other'],
      ['tool_ids', 't#1&tool_ids=t2'],
      ['versions', 'V1 ?=%'],
    ]);
  });

  it('Python truthiness of observations', () => {
    for (const v of [null, undefined, {}, [], '', 0, false])
      expect(pyTruthy(v), String(v)).to.equal(false);
    for (const v of [{ a: 1 }, [0], 'x', 1, true]) expect(pyTruthy(v)).to.equal(true);
  });
});

describe('workflow tools (spec 8.3)', () => {
  const noRun = () => async function* () {};

  it('parameters from the first start node; name and description of the flow', () => {
    const answer = {
      code: 0,
      data: {
        data: {
          id: 'flow-9',
          name: 'analyse',
          description: 'analyses data',
          data: {
            nodes: [
              {
                id: 'node-llm::1',
                data: { outputs: [{ name: 'nope', schema: { type: 'string' } }] },
              },
              {
                id: 'node-start::abc',
                data: {
                  outputs: [
                    {
                      name: 'AGENT_USER_INPUT',
                      schema: { type: 'string', description: 'input' },
                      required: true,
                    },
                    { name: 'limit', schema: { type: 'integer' } },
                  ],
                },
              },
            ],
          },
        },
      },
    };
    let flowId = '';
    const t = workflowTool(answer, 'requested', (id) => {
      flowId = id;
      return noRun();
    });
    expect(flowId).to.equal('flow-9');
    expect([t.name, t.description, t.typ]).to.deep.equal(['analyse', 'analyses data', 'workflow']);
    expect(t.parameters).to.deep.equal({
      type: 'object',
      properties: {
        AGENT_USER_INPUT: { type: 'string', description: 'input' },
        limit: { type: 'integer' },
      },
      required: ['AGENT_USER_INPUT'],
    });
  });

  it('no start node: the "unknown" tool with empty parameters', () => {
    let flowId = '';
    const t = workflowTool(
      { data: { data: { name: 'x', data: { nodes: [] } } } },
      'req-1',
      (id) => {
        flowId = id;
        return noRun();
      },
    );
    expect(t.schemaTemplate).to.equal(
      'tool_name:unknown, tool_description:unknown workflow, tool_parameters:{}',
    );
    expect(t.name).to.equal('unknown');
    expect(flowId).to.equal('req-1');
  });

  it('the call body', () => {
    expect(workflowCallBody('f1', 'u1', { a: 1 })).to.deep.equal({
      model: '',
      messages: [],
      stream: true,
      flow_id: 'f1',
      uid: 'u1',
      parameters: { a: 1 },
      extra_body: { bot_id: 'workflow', caller: 'agent' },
    });
  });

  it('frames: code != 0 or missing is an error frame; empty choices skipped; content/reasoning read', () => {
    const err = { code: 20001, message: 'boom', id: 's', choices: [] };
    expect(workflowFrame(err)).to.deep.equal({ observation: err, error: true });
    expect(workflowFrame({ choices: [{ delta: { content: 'x' } }] })!.error).to.equal(true);
    expect(workflowFrame({ code: 0, choices: [] })).to.equal(undefined);
    expect(
      workflowFrame({ code: 0, choices: [{ delta: { content: 'Hi', reasoning_content: 'r' } }] }),
    ).to.deep.equal({
      observation: { content: 'Hi', reasoning_content: 'r' },
      content: 'Hi',
      reasoning: 'r',
    });
    expect(workflowFrame({ code: 0, choices: [{ delta: {} }] })).to.deep.equal({
      observation: { content: null, reasoning_content: '' },
    });
  });
});

describe('MCP tools (spec 8.2) and the line reader', () => {
  it('parameters are inputSchema.properties / required verbatim', () => {
    expect(
      mcpParameters({
        type: 'object',
        properties: { a: { type: 'number' } },
        required: ['a'],
        additionalProperties: false,
      }),
    ).to.deep.equal({
      type: 'object',
      properties: { a: { type: 'number' } },
      required: ['a'],
    });
    expect(mcpParameters(undefined)).to.deep.equal({
      type: 'object',
      properties: {},
      required: [],
    });
  });

  it('reads lines across chunk boundaries, CRLF included, and a multi-byte character split in two', async () => {
    const bytes = Buffer.from('data: a\r\n\r\ndata: 合\ndata: b\rlast');
    const parts = [
      bytes.subarray(0, 8),
      bytes.subarray(8, 9),
      bytes.subarray(9, 17),
      bytes.subarray(17),
    ];
    const lines: string[] = [];
    for await (const l of readLines(
      (async function* () {
        yield* parts;
      })(),
    ))
      lines.push(l);
    expect(lines).to.deep.equal(['data: a', '', 'data: 合', 'data: b', 'last']);
  });
});

describe('custom request validation (spec 3.2 / 3.4)', () => {
  const good = {
    model_config: { domain: 'm', api: 'http://x/v1', temperature: 0.5 },
    messages: [{ role: 'user', content: 'hi' }],
    max_loop_count: 3,
  };
  const headers: [string, string][] = [['x-consumer-username', 'app1']];
  const check = (body: unknown, h = headers) => validateCustomCompletion({ parsed: body }, h);
  const msg = (body: unknown, h = headers) => {
    try {
      check(body, h);
    } catch (err) {
      expect(err).to.be.instanceOf(RequestValidationError);
      return (err as Error).message;
    }
    throw new Error('valid');
  };

  it('fills the defaults and ignores unknown fields', () => {
    const { appId, inputs } = check({ ...good, app_id: 'ignored' });
    expect(appId).to.equal('app1');
    expect(inputs).to.deep.equal({
      uid: '',
      messages: [{ role: 'user', content: 'hi' }],
      stream: false,
      stream_options: null,
      meta_data: { caller: 'chat_open_api', caller_sid: '' },
      model_config: { domain: 'm', api: 'http://x/v1', api_key: '' },
      instruction: { reasoning: '', answer: '' },
      plugin: {
        tools: [],
        mcp_server_ids: [],
        mcp_server_urls: [],
        workflow_ids: [],
        knowledge: [],
      },
      max_loop_count: 3,
    });
  });

  it('tools as strings or objects; knowledge items with their defaults', () => {
    const { inputs } = check({
      ...good,
      plugin: {
        tools: ['t1', { tool_id: 't2', version: 'V2.0' }],
        knowledge: [{ name: 'kb', description: '', top_k: 5, repo_type: 2 }],
      },
    });
    expect(inputs.plugin.tools).to.deep.equal(['t1', { tool_id: 't2', version: 'V2.0' }]);
    expect(inputs.plugin.knowledge).to.deep.equal([
      { name: 'kb', description: '', top_k: 5, match: { repo_ids: [], doc_ids: [] }, repo_type: 2 },
    ]);
  });

  it('the messages of spec 3.4', () => {
    const { max_loop_count: _m, ...noLoop } = good;
    expect(msg(noLoop)).to.equal('missing, max_loop_count, Field required');
    expect(msg({ invalid_field: 'test', messages: [] })).to.equal(
      'missing, messages, Field required',
    );
    expect(msg(good, [])).to.equal('missing, x-consumer-username, Field required');
    const { model_config: _mc, ...noModel } = good;
    expect(msg(noModel)).to.equal('missing, model_config, Field required');
    expect(msg({ ...good, model_config: { api: 'x' } })).to.equal(
      'missing, domain, Field required',
    );
    const kb = { name: 'kb', description: 'd', top_k: 9, repo_type: 1 };
    expect(msg({ ...good, plugin: { knowledge: [kb] } })).to.equal(
      'less_than_equal, top_k, Input should be less than or equal to 5',
    );
    expect(msg({ ...good, plugin: { knowledge: [{ ...kb, top_k: 0 }] } })).to.equal(
      'greater_than_equal, top_k, Input should be greater than or equal to 1',
    );
    expect(msg({ ...good, plugin: { knowledge: [{ ...kb, top_k: 1, repo_type: 3 }] } })).to.equal(
      'less_than_equal, repo_type, Input should be less than or equal to 2',
    );
    expect(msg({ ...good, plugin: { knowledge: [{ ...kb, top_k: 1, name: '' }] } })).to.equal(
      'string_too_short, name, String should have at least 1 character',
    );
    expect(
      msg({ ...good, plugin: { knowledge: [{ ...kb, top_k: 1, description: 'x'.repeat(1025) }] } }),
    ).to.equal('string_too_long, description, String should have at most 1024 characters');
    expect(msg({ ...good, plugin: { tools: [5] } })).to.equal(
      'string_type, str, Input should be a valid string',
    );
    expect(msg({ ...good, plugin: { mcp_server_urls: 'http://x' } })).to.equal(
      'list_type, mcp_server_urls, Input should be a valid list',
    );
    expect(msg({ ...good, max_loop_count: 'many' })).to.equal(
      'int_parsing, max_loop_count, Input should be a valid integer, unable to parse string as an integer',
    );
    expect(
      msg({
        ...good,
        messages: [
          { role: 'user', content: 'a' },
          { role: 'user', content: 'b' },
        ],
      }),
    ).to.equal(
      'literal_error, role, messages role order must alternate between user and assistant',
    );
  });

  it('max_loop_count has no bounds', () => {
    expect(check({ ...good, max_loop_count: -5 }).inputs.max_loop_count).to.equal(-5);
    expect(check({ ...good, max_loop_count: 10_000 }).inputs.max_loop_count).to.equal(10_000);
  });
});

describe('plugin settings', () => {
  it('PLUGIN_TIMEOUT defaults to 40 s; the MCP proxy URLs go together', () => {
    const s = validateSettings({});
    expect(s.PLUGIN_TIMEOUT).to.equal(40000);
    const e = pluginEndpointsFrom(
      validateSettings({ PLUGIN_TIMEOUT: '1500', VERSIONS_LINK_URL: 'http://l/v' }),
    );
    expect(e).to.deep.include({ timeoutMs: 1500, versionsLinkUrl: 'http://l/v', listMcpUrl: '' });
    e.client?.close();
    expect(() => validateSettings({ LIST_MCP_PLUGIN_URL: 'http://p/list' })).to.throw(
      SettingsError,
      /LIST_MCP_PLUGIN_URL and RUN_MCP_PLUGIN_URL: set both/,
    );
    expect(() => validateSettings({ RUN_LINK_URL: 'ftp://x' })).to.throw(
      SettingsError,
      /RUN_LINK_URL/,
    );
  });
});

describe('workflow call over a real socket: PLUGIN_TIMEOUT measures the workflow service only', () => {
  it('a consumer that holds a frame (its own client stalled) longer than the timeout gets the rest; silence still times out', async () => {
    const server = http.createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        if (req.url === '/schema') {
          res.writeHead(200, { 'Content-Type': 'application/json' });
          res.end(JSON.stringify({ code: 0, data: { data: { id: 'f1', name: 'wf', data: {} } } }));
          return;
        }
        res.writeHead(200, { 'Content-Type': 'text/event-stream' });
        let i = 0;
        const silent = req.url === '/silent/chat/completions';
        const tick = setInterval(() => {
          if (res.destroyed) return clearInterval(tick);
          if (silent && i === 2) return; // then nothing more, the connection open
          if (i < 30) {
            const frame = { code: 0, choices: [{ delta: { content: `w${i++} ` } }] };
            res.write(`data: ${JSON.stringify(frame)}\n\n`);
          } else {
            clearInterval(tick);
            res.end('data: [DONE]\n\n');
          }
        }, 50);
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const client = new PluginHttpClient();
    const ctx = { sid: 's', appId: 'a', uid: 'u', signal: new AbortController().signal };
    const run = async (sseBase: string) => {
      const [tool] = await buildWorkflowTools(
        { schemaUrl: `${base}/schema`, sseBaseUrl: sseBase, timeoutMs: 300, client },
        ['f1'],
        ctx,
      );
      const got: string[] = [];
      try {
        for await (const f of tool!.run({}, ctx)) {
          got.push(f.content ?? '');
          if (got.length === 2) await new Promise((r) => setTimeout(r, 1000));
        }
        return { got, error: undefined };
      } catch (err) {
        return { got, error: err as Error };
      }
    };
    try {
      const held = await run(base);
      expect(held.error, held.error?.message).to.equal(undefined);
      expect(held.got.join('')).to.equal(Array.from({ length: 30 }, (_, i) => `w${i} `).join(''));
      const silent = await run(`${base}/silent`);
      expect(silent.got).to.deep.equal(['w0 ', 'w1 ']);
      expect((silent.error as AgentError | undefined)?.origin?.message).to.equal(
        'workflow call timed out after 300 ms',
      );
    } finally {
      server.close();
    }
  });
});

describe('plugin answers nested past MAX_JSON_DEPTH', () => {
  it('are refused as not JSON (40500, no stack-exhausting value reaches the run)', async () => {
    const deepAnswer = `{"code": 0, "data": ${'['.repeat(5000)}${']'.repeat(5000)}}`;
    const server = http.createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.end(req.url === '/deep' ? deepAnswer : '{"code": 0, "data": [[1]]}');
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const call = {
      client: new PluginHttpClient(),
      what: 'test call',
      timeoutMs: 5000,
      timeoutCode: { code: -1, message: 'timeout' },
      signal: new AbortController().signal,
    };
    try {
      expect(await postJson(`${base}/flat`, {}, call)).to.deep.equal({ code: 0, data: [[1]] });
      const err = await postJson(`${base}/deep`, {}, call).then(
        () => undefined,
        (e: unknown) => e as AgentError,
      );
      expect(err).to.be.instanceOf(AgentError);
      expect(err!.code).to.equal(40500);
      expect(err!.message).to.match(/test call answer is not JSON/);
    } finally {
      server.close();
    }
  });
});
