// The bot-config API on the embedded SQLite default, driven through the real CLI with two
// workers: the spec section 12 scenarios, cross-worker consistency, concurrent creates, limits,
// and a few hundred malformed requests.
import { expect } from 'chai';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import {
  Client,
  clientsOnTwoWorkers,
  runId,
  sampleConfig,
  specScenarios,
  twoWorkers,
  workerExits,
} from '../support/bot-config.js';
import { malformedRequests } from '../support/malformed.js';
import { request, startService, type Service } from '../support/service.js';

describe('bot-config API on the embedded SQLite default (2 workers)', function () {
  let svc: Service;
  const id = runId();

  before(async () => {
    svc = await startService({ env: { SERVICE_WORKERS: '2', SERVICE_SCHEDULING: 'rr' } });
    await svc.waitReady();
  });
  after(async () => {
    await svc?.stop();
  });

  describe('spec section 12 scenarios', () => specScenarios(() => svc));

  it('stores rows in ./data/agent.db of the working directory, WAL mode, plain JSON columns', async () => {
    const c = new Client(svc.port);
    expect(
      (await c.post(sampleConfig(`app_file_${id}`, `bot_file_${id}`, { extra_field: 'kept?' })))
        .body.code,
    ).to.equal(0);
    const file = join(svc.cwd, 'data', 'agent.db');
    expect(existsSync(file)).to.equal(true);
    const db = new Database(file, { readonly: true });
    try {
      expect(db.pragma('journal_mode', { simple: true })).to.equal('wal');
      const row = db
        .prepare('SELECT * FROM bot_config WHERE bot_id = ?')
        .get(`bot_file_${id}`) as Record<string, unknown>;
      expect(row.app_id).to.equal(`app_file_${id}`);
      expect(JSON.parse(row.tool_ids as string)).to.deep.equal(['tool_001', 'tool_002']);
      expect(JSON.parse(row.model_config as string).instruct).to.equal(
        'You are a helpful assistant',
      );
      expect(row.is_deleted).to.equal(0);
      expect(row.create_at).to.match(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/);
    } finally {
      db.close();
    }
    // Extra keys are answered by POST but a SQL row cannot hold them (spec 6.1).
    const got = await c.get(`app_file_${id}`, `bot_file_${id}`);
    expect(got.body.data).not.to.have.property('extra_field');
  });

  it('2 workers: created through one worker, read, updated and deleted through the other', async () => {
    const [a, b] = await twoWorkers(svc.port);
    try {
      expect(a.pid).not.to.equal(b.pid);
      expect(svc.readyWorkerPids()).to.include.members([a.pid, b.pid]);
      const app = `app_xw_${id}`;
      const bot = `bot_xw_${id}`;
      expect((await a.post(sampleConfig(app, bot))).body.code).to.equal(0);
      const read = await b.get(app, bot);
      expect(read.body.code).to.equal(0);
      expect(read.body.data).to.deep.include({ app_id: app, bot_id: bot });
      expect((await b.put(sampleConfig(app, bot, { flow_ids: ['f9'] }))).body.code).to.equal(0);
      expect(((await a.get(app, bot)).body.data as Record<string, unknown>).flow_ids).to.deep.equal(
        ['f9'],
      );
      expect((await a.post(sampleConfig(app, bot))).body.code).to.equal(40053);
      expect((await a.del(app, bot)).body.code).to.equal(0);
      expect((await b.get(app, bot)).body.code).to.equal(40001);
      // Still the same two connections, still the same two workers.
      expect([await a.identify(), await b.identify()]).to.deep.equal([a.pid, b.pid]);
      expect(a.oneConnection && b.oneConnection).to.equal(true);
    } finally {
      a.close();
      b.close();
    }
  });

  it('20 concurrent creates of one bot through both workers: exactly one success, 19 x 40053', async () => {
    const clients = await clientsOnTwoWorkers(svc.port, 10);
    try {
      expect(new Set(clients.map((c) => c.pid)).size).to.equal(2);
      const cfg = sampleConfig(`app_race_${id}`, `bot_race_${id}`);
      const rs = await Promise.all(clients.map((c) => c.post(cfg)));
      const codes = rs.map((r) => r.body.code);
      expect(codes.filter((c) => c === 0)).to.have.length(1);
      expect(codes.filter((c) => c === 40053)).to.have.length(19);
    } finally {
      for (const c of clients) c.close();
    }
  });

  it('at least 200 malformed requests: each 40002 (HTTP 200) or a 4xx JSON body; no 5xx; no worker restart', async function () {
    this.timeout(120000);
    const pidsBefore = svc.readyWorkerPids().sort();
    const reqs = malformedRequests(id);
    expect(reqs.length).to.be.at.least(200);
    const problems: string[] = [];
    const tally = new Map<string, number>();
    let next = 0;
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        while (next < reqs.length) {
          const r = reqs[next++]!;
          let res;
          try {
            res = await request(svc.port, r.path, {
              method: r.method,
              body: r.body,
              headers: r.headers,
            });
          } catch (err) {
            problems.push(`${r.name}: no answer (${(err as Error).message})`);
            continue;
          }
          let body: { code?: number; message?: string; detail?: string };
          try {
            body = JSON.parse(res.body) as typeof body;
          } catch {
            problems.push(`${r.name}: HTTP ${res.status}, not JSON: ${res.body.slice(0, 80)}`);
            continue;
          }
          if (!String(res.headers['content-type']).startsWith('application/json'))
            problems.push(`${r.name}: content-type ${res.headers['content-type']}`);
          if (
            res.status === 200 &&
            body.code === 40002 &&
            /^[a-z_]+, [^,]*, .+/.test(body.message ?? '')
          ) {
            tally.set(
              `40002 ${body.message!.split(',')[0]}`,
              (tally.get(`40002 ${body.message!.split(',')[0]}`) ?? 0) + 1,
            );
          } else if (res.status >= 400 && res.status < 500 && typeof body.detail === 'string') {
            tally.set(`HTTP ${res.status}`, (tally.get(`HTTP ${res.status}`) ?? 0) + 1);
          } else problems.push(`${r.name}: HTTP ${res.status} ${res.body.slice(0, 160)}`);
        }
      }),
    );
    expect(problems, problems.join('\n')).to.deep.equal([]);
    // The mix really covers validation errors, bad JSON, 413 and other 4xx answers.
    expect(tally.get('40002 json_invalid')).to.be.at.least(30);
    expect(tally.get('40002 model_attributes_type')).to.be.at.least(10);
    expect(tally.get('40002 missing')).to.be.at.least(4);
    expect(tally.get('HTTP 413')).to.be.at.least(3);
    expect(tally.get('HTTP 405')).to.be.at.least(2);
    expect(tally.get('HTTP 400')).to.be.at.least(2);
    expect(workerExits(svc)).to.deep.equal([]);
    expect(svc.readyWorkerPids().sort()).to.deep.equal(pidsBefore);
    const health = await request(svc.port, '/health');
    expect(health.status).to.equal(200);
  });
});

describe('bot-config request size limit', function () {
  it('SERVICE_MAX_BODY_SIZE is configurable: above it 413 with a JSON body, below it accepted', async () => {
    const svc = await startService({ env: { SERVICE_MAX_BODY_SIZE: '4096' } });
    try {
      await svc.waitReady();
      const c = new Client(svc.port);
      const small = sampleConfig('app_lim', 'bot_lim', {
        model_config: { instruct: 'x'.repeat(3000) },
      });
      expect((await c.post(small)).body.code).to.equal(0);
      const big = sampleConfig('app_lim', 'bot_lim2', {
        model_config: { instruct: 'x'.repeat(5000) },
      });
      const r = await c.post(big);
      expect(r.status).to.equal(413);
      expect(r.contentType).to.match(/^application\/json/);
      expect(r.body).to.deep.equal({ detail: 'Request body too large (limit 4096 bytes)' });
      // Chunked (no Content-Length): the limit holds while reading.
      const chunked = await request(svc.port, '/agent/v1/bot-config', {
        method: 'PUT',
        body: JSON.stringify(big),
        headers: { 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked' },
      });
      expect(chunked.status).to.equal(413);
      expect((await c.get('app_lim', 'bot_lim2')).body.code).to.equal(40001);
    } finally {
      await svc.stop();
    }
  });
});
