// Helpers for the bot-config integration tests: a small client, connections pinned to distinct
// workers, and the scenarios of spec section 12 run against any backend.
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import { request, type HttpResult, type Service } from './service.js';

export const PATH = '/agent/v1/bot-config';

export interface Answer {
  status: number;
  contentType: string;
  body: { code: number; message: string; data: unknown; [k: string]: unknown };
  raw: string;
}

function parse(r: HttpResult): Answer {
  let body: Answer['body'];
  try {
    body = JSON.parse(r.body) as Answer['body'];
  } catch {
    throw new Error(`not a JSON answer (HTTP ${r.status}): ${r.body.slice(0, 300)}`);
  }
  return {
    status: r.status,
    contentType: String(r.headers['content-type'] ?? ''),
    body,
    raw: r.body,
  };
}

/** A unique suffix per test run, so parallel runs against shared MySQL/Redis never collide. */
export const runId = () => randomBytes(4).toString('hex');

export class Client {
  constructor(
    readonly port: number,
    readonly agent: http.Agent | false = false,
  ) {}

  private async send(
    method: string,
    path: string,
    body?: unknown,
    headers: Record<string, string> = {},
  ): Promise<Answer> {
    const payload =
      body === undefined
        ? undefined
        : typeof body === 'string' || Buffer.isBuffer(body)
          ? body
          : JSON.stringify(body);
    const h: Record<string, string> = { ...headers };
    if (payload !== undefined && !Object.keys(h).some((k) => k.toLowerCase() === 'content-type'))
      h['Content-Type'] = 'application/json';
    return parse(
      await request(this.port, path, { method, body: payload, headers: h, agent: this.agent }),
    );
  }

  post(cfg: unknown, headers?: Record<string, string>) {
    return this.send('POST', PATH, cfg, headers);
  }
  put(cfg: unknown, headers?: Record<string, string>) {
    return this.send('PUT', PATH, cfg, headers);
  }
  get(appId: string, botId: string) {
    return this.send(
      'GET',
      `${PATH}?app_id=${encodeURIComponent(appId)}&bot_id=${encodeURIComponent(botId)}`,
    );
  }
  del(appId: string, botId: string) {
    return this.send(
      'DELETE',
      `${PATH}?app_id=${encodeURIComponent(appId)}&bot_id=${encodeURIComponent(botId)}`,
    );
  }
  raw(method: string, path: string, body?: unknown, headers?: Record<string, string>) {
    return this.send(method, path, body, headers);
  }
  async health(): Promise<{ pid: number; status: string }> {
    const r = await request(this.port, '/health', { agent: this.agent });
    return JSON.parse(r.body) as { pid: number; status: string };
  }
}

/** A client on ONE keep-alive connection (so one worker): every request reuses the socket. */
export class PinnedClient extends Client {
  private readonly ports = new Set<number>();
  pid = 0;

  constructor(port: number) {
    super(port, new http.Agent({ keepAlive: true, maxSockets: 1, maxFreeSockets: 1 }));
    (this.agent as http.Agent).on('free', (socket) => this.ports.add(socket.localPort ?? -1));
  }

  /** The worker pid behind the connection, from GET /health on the same socket. */
  async identify(): Promise<number> {
    this.pid = (await this.health()).pid;
    return this.pid;
  }

  /** True when every request so far went over the same TCP connection. */
  get oneConnection(): boolean {
    return this.ports.size === 1;
  }

  close(): void {
    (this.agent as http.Agent).destroy();
  }
}

/**
 * Opens keep-alive connections until two of them reach different workers (their /health pid
 * differs): the proof that a request went through one worker and the next through the other.
 */
export async function twoWorkers(port: number, tries = 60): Promise<[PinnedClient, PinnedClient]> {
  const clients: PinnedClient[] = [];
  try {
    for (let i = 0; i < tries; i++) {
      const c = new PinnedClient(port);
      clients.push(c);
      await c.identify();
      const other = clients.find((o) => o.pid !== c.pid);
      if (other) {
        for (const x of clients) if (x !== c && x !== other) x.close();
        return [other, c];
      }
    }
  } catch (err) {
    for (const c of clients) c.close();
    throw err;
  }
  for (const c of clients) c.close();
  throw new Error(`${tries} connections all reached the same worker`);
}

/** Opens pinned connections until there are `n` on each of two workers. */
export async function clientsOnTwoWorkers(port: number, n: number): Promise<PinnedClient[]> {
  const byPid = new Map<number, PinnedClient[]>();
  for (let i = 0; i < n * 20; i++) {
    const c = new PinnedClient(port);
    const pid = await c.identify();
    const list = byPid.get(pid) ?? [];
    if (list.length < n) list.push(c);
    else c.close();
    byPid.set(pid, list);
    const full = [...byPid.values()].filter((l) => l.length >= n);
    if (full.length >= 2) return full.slice(0, 2).flat();
  }
  for (const l of byPid.values()) for (const c of l) c.close();
  throw new Error('could not reach two workers');
}

/** Worker exits logged by the primary since the start (a crash or a restart would show here). */
export const workerExits = (svc: Service) =>
  svc.logs.filter(
    (l) => l.role === 'primary' && /^worker \d+ (exited|killed)/.test(l.message ?? ''),
  );

/** A config as the original's integration test sends it (sloppy nested fields included). */
export function sampleConfig(appId: string, botId: string, over: Record<string, unknown> = {}) {
  return {
    app_id: appId,
    bot_id: botId,
    knowledge_config: { score_threshold: 0.3, top_k: 3 },
    model_config: {
      instruct: 'You are a helpful assistant',
      plan: { enabled: true, max_iterations: 5 },
      summary: { enabled: true },
    },
    regular_config: { match: { repoId: ['repo1'], docId: [] }, rag: { type: 'AIUI-RAG2' } },
    tool_ids: ['tool_001', 'tool_002'],
    mcp_server_ids: ['mcp_001'],
    mcp_server_urls: ['http://localhost:3000'],
    flow_ids: ['flow_001'],
    ...over,
  };
}

const DEFAULT_DETAIL = {
  api: '',
  domain: '',
  sk: '',
  parameter: { max_tokens: 2048, question_type: 'not_knowledge', temperature: 0.5, top_k: 4 },
  patch_id: [],
  support_function_call: false,
};

/**
 * The bot-config scenarios of spec section 12 (test_bot_config_management.py), with the
 * business codes asserted, plus ownership checks. `ctx()` gives the port of a running service.
 */
export function specScenarios(ctx: () => { port: number }): void {
  const id = runId();
  const c = () => new Client(ctx().port);
  // App ids stay within MySQL's varchar(32) and bot ids within varchar(40) (spec D9).
  const ids = (name: string) => [`app_${name}_${id}`, `bot_${name}_${id}`] as const;

  it('1. creates a basic config: code 0 and the normalised config (unknown nested keys dropped)', async () => {
    const [app, bot] = ids('basic');
    const r = await c().post(sampleConfig(app, bot));
    expect(r.status).to.equal(200);
    expect(r.contentType).to.match(/^application\/json/);
    expect(r.body).to.deep.include({ code: 0, message: 'success' });
    const data = r.body.data as Record<string, unknown>;
    expect(data).to.deep.include({ app_id: app, bot_id: bot, tool_ids: ['tool_001', 'tool_002'] });
    expect((data.model_config as Record<string, unknown>).plan).to.deep.equal(DEFAULT_DETAIL);
  });

  it('2. creates with a custom instruct, threshold 0.5 and three tools', async () => {
    const [app, bot] = ids('custom');
    const cfg = sampleConfig(app, bot, {
      knowledge_config: { score_threshold: 0.5, top_k: 3 },
      model_config: { instruct: 'custom instruct' },
      tool_ids: ['t1', 't2', 't3'],
    });
    const r = await c().post(cfg);
    expect(r.body.code).to.equal(0);
    const got = await c().get(app, bot);
    expect(got.body.code).to.equal(0);
    const data = got.body.data as Record<string, Record<string, unknown>>;
    expect(data.knowledge_config!.score_threshold).to.equal(0.5);
    expect(data.model_config!.instruct).to.equal('custom instruct');
    expect(data.tool_ids).to.deep.equal(['t1', 't2', 't3']);
  });

  it('3. create then GET: code 0 with data.app_id and data.bot_id', async () => {
    const [app, bot] = ids('query');
    expect((await c().post(sampleConfig(app, bot))).body.code).to.equal(0);
    const r = await c().get(app, bot);
    expect(r.status).to.equal(200);
    expect(r.body).to.deep.include({ code: 0, message: 'success' });
    expect(r.body.data).to.deep.include({ app_id: app, bot_id: bot });
  });

  it('4. GET of a config that does not exist: 40001', async () => {
    const r = await c().get(`nonexistent_app_${id}`, `nonexistent_bot_${id}`);
    expect(r.status).to.equal(200);
    expect(r.body).to.deep.equal({
      code: 40001,
      message: 'failed to retrieve bot config',
      data: null,
    });
  });

  it('5. create then PUT (instruct, top_k 5, one more tool): code 0, and GET sees the change', async () => {
    const [app, bot] = ids('update');
    expect((await c().post(sampleConfig(app, bot))).body.code).to.equal(0);
    const next = sampleConfig(app, bot, {
      knowledge_config: { score_threshold: 0.3, top_k: 5 },
      model_config: { instruct: 'updated instruct' },
      tool_ids: ['tool_001', 'tool_002', 'tool_003'],
    });
    const r = await c().put(next);
    expect(r.body).to.deep.include({ code: 0, message: 'success' });
    expect((r.body.data as Record<string, unknown>).tool_ids).to.deep.equal([
      'tool_001',
      'tool_002',
      'tool_003',
    ]);
    const got = (await c().get(app, bot)).body.data as Record<string, Record<string, unknown>>;
    expect(got.knowledge_config!.top_k).to.equal(5);
    expect(got.model_config!.instruct).to.equal('updated instruct');
    expect(got.tool_ids).to.deep.equal(['tool_001', 'tool_002', 'tool_003']);
  });

  it('6. create then DELETE: code 0 with data null; a GET afterwards is 40001; a second DELETE 40001', async () => {
    const [app, bot] = ids('delete');
    expect((await c().post(sampleConfig(app, bot))).body.code).to.equal(0);
    expect((await c().del(app, bot)).body).to.deep.equal({
      code: 0,
      message: 'success',
      data: null,
    });
    expect((await c().get(app, bot)).body.code).to.equal(40001);
    expect((await c().del(app, bot)).body.code).to.equal(40001);
  });

  it('7. POST without bot_id (and an empty model_config): 40002 "missing, bot_id, Field required"', async () => {
    const r = await c().post({ app_id: `app_x_${id}`, model_config: {}, regular_config: {} });
    expect(r.status).to.equal(200);
    expect(r.contentType).to.match(/^application\/json/);
    expect(r.body.code).to.equal(40002);
    expect(r.body.message).to.equal('missing, bot_id, Field required');
    expect(r.body).to.include({ object: 'chat.completion.chunk', model: '' });
    expect(r.body.choices).to.deep.equal([]);
    expect(r.body.id).to.be.a('string').and.match(/@/);
    expect(r.body.created).to.be.within(Date.now() / 1000 - 60, Date.now() / 1000 + 60);
  });

  it('8. POST of the same config twice: the second is 40053', async () => {
    const [app, bot] = ids('dup');
    expect((await c().post(sampleConfig(app, bot))).body.code).to.equal(0);
    const r = await c().post(sampleConfig(app, bot));
    expect(r.body).to.deep.equal({
      code: 40053,
      message: 'bot config already exists, cannot create',
      data: null,
    });
  });

  it('9. POST with an app_id of 65 characters: 40002 string_too_long', async () => {
    const r = await c().post(sampleConfig('a'.repeat(65), `bot_long_${id}`));
    expect(r.body.code).to.equal(40002);
    expect(r.body.message).to.equal(
      'string_too_long, app_id, String should have at most 64 characters',
    );
  });

  it('10. three concurrent creates of distinct bots: all code 0', async () => {
    const rs = await Promise.all(
      [1, 2, 3].map((n) => c().post(sampleConfig(`app_conc_${id}`, `bot_conc${n}_${id}`))),
    );
    expect(rs.map((r) => r.body.code)).to.deep.equal([0, 0, 0]);
  });

  it('ownership: GET, PUT and DELETE by another app_id are 40001 and change nothing', async () => {
    const [app, bot] = ids('owner');
    expect((await c().post(sampleConfig(app, bot))).body.code).to.equal(0);
    expect((await c().get(`other_${id}`, bot)).body.code).to.equal(40001);
    expect((await c().put(sampleConfig(`other_${id}`, bot, { tool_ids: [] }))).body.code).to.equal(
      40001,
    );
    expect((await c().del(`other_${id}`, bot)).body.code).to.equal(40001);
    const still = await c().get(app, bot);
    expect(still.body.code).to.equal(0);
    expect((still.body.data as Record<string, unknown>).tool_ids).to.deep.equal([
      'tool_001',
      'tool_002',
    ]);
  });

  it('PUT of a config that does not exist: 40001', async () => {
    const r = await c().put(sampleConfig(`app_none_${id}`, `bot_none_${id}`));
    expect(r.body).to.deep.equal({
      code: 40001,
      message: 'failed to retrieve bot config',
      data: null,
    });
  });

  it('query and body validation messages (spec 3.4 table)', async () => {
    const cases: [Promise<Answer>, string][] = [
      [c().raw('GET', `${PATH}?bot_id=x`), 'missing, app_id, Field required'],
      [
        c().raw('GET', `${PATH}?app_id=&bot_id=x`),
        'string_too_short, app_id, String should have at least 1 character',
      ],
      [
        c().raw('DELETE', `${PATH}?app_id=a&bot_id=${'b'.repeat(65)}`),
        'string_too_long, bot_id, String should have at most 64 characters',
      ],
      [
        c().post({ app_id: 'a', bot_id: 'b', regular_config: {} }),
        'missing, model_config, Field required',
      ],
      [
        c().post({ app_id: 'a', bot_id: 'b', model_config: {} }),
        'missing, regular_config, Field required',
      ],
      [
        c().post({ app_id: 'a', bot_id: '', model_config: {}, regular_config: {} }),
        'string_too_short, bot_id, String should have at least 1 character',
      ],
      [c().post('{"app_id": "a",'), 'json_invalid, 15, JSON decode error'],
      [
        c().post({
          app_id: 'a',
          bot_id: 'b',
          model_config: {},
          regular_config: {},
          tool_ids: ['ok', 7],
        }),
        'string_type, 1, Input should be a valid string',
      ],
    ];
    for (const [p, message] of cases) {
      const r = await p;
      expect(r.status).to.equal(200);
      expect(r.body.code, r.raw).to.equal(40002);
      expect(r.body.message).to.equal(message);
    }
  });
}
