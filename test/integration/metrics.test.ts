import { expect } from 'chai';
import WebSocket from 'ws';
import { decreases, Exposition } from '../support/prometheus.js';
import {
  freePort,
  hitHealth,
  request,
  runCli,
  sleep,
  startService,
  type Service,
} from '../support/service.js';

const HOOKS = { AGENT_TEST_HOOKS: '1' };

/** Sends `n` GET requests, each on a new connection, 10 at a time; returns pid -> answers. */
async function hit(
  port: number,
  path: string,
  n: number,
  status = 200,
): Promise<Map<number, number>> {
  const pids = new Map<number, number>();
  for (let i = 0; i < n; i += 10) {
    const batch = Math.min(10, n - i);
    const res = await Promise.all(Array.from({ length: batch }, () => request(port, path)));
    for (const r of res) {
      expect(r.status, `${path}: ${r.body}`).to.equal(status);
      const pid = (JSON.parse(r.body) as { pid?: number }).pid;
      if (pid) pids.set(pid, (pids.get(pid) ?? 0) + 1);
    }
  }
  return pids;
}

async function scrape(port: number, headers?: Record<string, string>): Promise<Exposition> {
  const res = await request(port, '/metrics', { headers });
  expect(res.status, res.body).to.equal(200);
  expect(res.headers['content-type']).to.equal('text/plain; version=0.0.4; charset=utf-8');
  return new Exposition(res.body);
}

const health = (ex: Exposition) => ex.sum('http_requests_total', { route: '/health' });

describe('metrics: one cluster-wide Prometheus view', function () {
  let svc: Service | undefined;
  const stopped: number[] = [];
  afterEach(async () => {
    for (const pid of stopped.splice(0)) {
      try {
        process.kill(pid, 'SIGCONT');
      } catch {
        /* gone */
      }
    }
    await svc?.stop('SIGKILL');
    svc = undefined;
  });

  it('2 workers: every scrape has the whole cluster; counts add up to the requests sent; route labels bounded', async () => {
    svc = await startService({ env: { SERVICE_WORKERS: '2', ...HOOKS } });
    await svc.waitReady();
    const pids = await hit(svc.port, '/health', 200);
    expect(pids.size, 'both workers served /health').to.equal(2);
    for (let i = 0; i < 30; i++) {
      const r = await request(svc.port, `/no/such/${i}-${Math.random().toString(36).slice(2)}`);
      expect(r.status).to.equal(404);
    }
    await hit(svc.port, '/__test/sleep?ms=1', 10);

    for (let i = 0; i < 4; i++) {
      const ex = await scrape(svc.port);
      expect(health(ex)).to.equal(200);
      expect(ex.sum('http_requests_total', { route: 'unmatched', status: '404' })).to.equal(30);
      expect(
        ex.sum('http_requests_total', { route: '/__test/sleep', method: 'GET', status: '200' }),
      ).to.equal(10);
      const [h] = ex.samples('http_request_duration_seconds', {
        route: '/health',
        method: 'GET',
        status: '200',
      });
      expect(Number(h!.count)).to.equal(200);
      expect(Number(h!.buckets!['+Inf'])).to.equal(200);
      expect(Number(h!.sum)).to.be.greaterThan(0);
      // Bounded labels: patterns only, never a raw URL.
      const routes = new Set(ex.samples('http_requests_total').map((s) => s.labels!.route));
      expect([...routes].sort()).to.deep.equal(
        i === 0
          ? ['/__test/sleep', '/health', 'unmatched']
          : ['/__test/sleep', '/health', '/metrics', 'unmatched'],
      );
      expect(ex.text).not.to.contain('/no/such');
      // Supervisor series.
      expect(ex.value('astron_agent_workers_ready')).to.equal(2);
      expect(ex.value('astron_agent_metrics_missing_workers')).to.equal(0);
      for (const reason of ['crash', 'hung', 'memory', 'requests', 'reload']) {
        expect(ex.value('astron_agent_worker_restarts_total', { reason })).to.equal(0);
      }
      expect(ex.value('astron_agent_reloads_total', { result: 'ok' })).to.equal(0);
      expect(ex.value('astron_agent_worker_processes', { state: 'ready' })).to.equal(2);
      // Process defaults, summed over the workers (and the primary's under its own prefix).
      expect(ex.value('process_cpu_seconds_total')).to.be.greaterThan(0);
      expect(ex.value('nodejs_heap_size_used_bytes')).to.be.greaterThan(0);
      expect(ex.samples('nodejs_version_info')).to.have.length(1);
      expect(ex.value('astron_agent_primary_process_cpu_seconds_total')).to.be.greaterThan(0);
    }
    // The scrapes themselves are counted too (each one after it was answered).
    expect((await scrape(svc.port)).sum('http_requests_total', { route: '/metrics' })).to.equal(4);
  });

  it('open WebSocket connections are a gauge across workers', async () => {
    svc = await startService({ env: { SERVICE_WORKERS: '2' } });
    await svc.waitReady();
    const url = `ws://127.0.0.1:${svc.port}/agent/v1/ws`;
    const sockets = await Promise.all(
      Array.from(
        { length: 3 },
        () =>
          new Promise<WebSocket>((res, rej) => {
            const ws = new WebSocket(url);
            ws.once('open', () => res(ws));
            ws.once('error', rej);
          }),
      ),
    );
    let ex = await scrape(svc.port);
    expect(ex.value('websocket_connections_open')).to.equal(3);
    expect(ex.value('websocket_connections_total')).to.equal(3);
    await Promise.all(sockets.map((ws) => new Promise((r) => (ws.once('close', r), ws.close()))));
    await sleep(100);
    ex = await scrape(svc.port);
    expect(ex.value('websocket_connections_open')).to.equal(0);
    expect(ex.value('websocket_connections_total')).to.equal(3);
  });

  it('kill -9 of a worker: no counter decreases; the crash is counted', async () => {
    svc = await startService({ env: { SERVICE_WORKERS: '2' } });
    await svc.waitReady();
    const { pids, sent } = await hitHealth(svc.port, 100, 2);
    expect(pids.size).to.equal(2);
    const before = await scrape(svc.port);
    expect(health(before)).to.equal(sent);

    const [victim] = svc.readyWorkerPids();
    const mark = svc.logs.length;
    process.kill(victim!, 'SIGKILL');
    await svc.waitForLog((l) => l.message === 'worker ready', 10000, mark);
    const after = await scrape(svc.port);
    expect(decreases(before, after)).to.deep.equal([]);
    expect(health(after)).to.equal(sent);
    expect(after.value('astron_agent_worker_restarts_total', { reason: 'crash' })).to.equal(1);
    expect(after.value('astron_agent_metrics_departed_workers_total')).to.equal(1);
    expect(after.value('astron_agent_workers_ready')).to.equal(2);

    await hit(svc.port, '/health', 50);
    const later = await scrape(svc.port);
    expect(decreases(after, later)).to.deep.equal([]);
    expect(health(later)).to.equal(sent + 50);
  });

  it('rolling reload: counters carry over exactly (final snapshots); reload series', async () => {
    svc = await startService({ env: { SERVICE_WORKERS: '2' } });
    await svc.waitReady();
    // No scrape before the reload: only the drained workers' final snapshots can carry these.
    await hit(svc.port, '/health', 120);
    const mark = svc.logs.length;
    svc.proc.kill('SIGHUP');
    await svc.waitForLog((l) => l.message === 'rolling reload done', 30000, mark);
    // Both old workers exited (drained).
    for (let n = 0; n < 2; n++) {
      await svc.waitForLog(
        (l) =>
          /^worker \d+ exited with code 0 \(reload\)/.test(l.message ?? '') &&
          svc!.logs.indexOf(l) > mark,
        10000,
        mark,
      );
      await sleep(10);
      const exits = svc.logs
        .slice(mark)
        .filter((l) => /^worker \d+ exited with code 0 \(reload\)/.test(l.message ?? ''));
      if (exits.length >= 2) break;
    }
    await sleep(200);
    const ex = await scrape(svc.port);
    expect(health(ex)).to.equal(120);
    expect(ex.value('astron_agent_reloads_total', { result: 'ok' })).to.equal(1);
    expect(ex.value('astron_agent_worker_restarts_total', { reason: 'reload' })).to.equal(2);
    expect(ex.value('astron_agent_metrics_departed_workers_total')).to.equal(2);
    const [d] = ex.samples('astron_agent_reload_duration_seconds', { result: 'ok' });
    expect(Number(d!.count)).to.equal(1);
    expect(Number(d!.sum)).to.be.greaterThan(0);
  });

  it("one worker's event loop stopped for 3 s: a scrape answers within 1.5 s, missing gauge 1, counters kept", async () => {
    // The kernel's distribution (none): the stopped worker accepts nothing, so the scrape and the
    // requests below reach the other one. Under leastconn the primary could hand the stopped
    // worker a connection before noticing (test/integration/dispatch.test.ts covers that).
    svc = await startService({ env: { SERVICE_WORKERS: '2', SERVICE_SCHEDULING: 'none' } });
    await svc.waitReady();
    await hit(svc.port, '/health', 100);
    const before = await scrape(svc.port);
    expect(health(before)).to.equal(100);

    const [victim] = svc.readyWorkerPids();
    process.kill(victim!, 'SIGSTOP');
    stopped.push(victim!);
    const stoppedAt = Date.now();
    const t0 = Date.now();
    const during = await scrape(svc.port);
    const took = Date.now() - t0;
    expect(took, 'scrape latency with a stopped worker').to.be.lessThan(1500);
    expect(took, 'the deadline was waited for').to.be.at.least(900);
    expect(during.value('astron_agent_metrics_missing_workers')).to.equal(1);
    expect(decreases(before, during)).to.deep.equal([]);
    expect(health(during)).to.equal(100);
    // The other worker still serves.
    const served = await hit(svc.port, '/health', 20);
    expect([...served.keys()]).not.to.include(victim);

    await sleep(Math.max(0, 3000 - (Date.now() - stoppedAt)));
    process.kill(victim!, 'SIGCONT');
    stopped.length = 0;
    await sleep(100);
    const after = await scrape(svc.port);
    expect(after.value('astron_agent_metrics_missing_workers')).to.equal(0);
    expect(decreases(during, after)).to.deep.equal([]);
    expect(health(after)).to.equal(120);
    expect(svc.readyWorkerPids()).to.include(victim);
  });

  it("one worker's event loop blocked (busy) for 3 s: a scrape answers within 1.5 s with missing gauge 1", async () => {
    svc = await startService({ env: { SERVICE_WORKERS: '2', AGENT_TEST_HOOKS: '1' } });
    await svc.waitReady();
    await hit(svc.port, '/health', 50);
    const before = await scrape(svc.port);
    // A busy loop in whichever worker takes this request: its event loop answers nothing.
    const blocked = request(svc.port, '/__test/block?ms=3000').then(
      (r) => JSON.parse(r.body) as { pid: number },
    );
    await sleep(200);
    const t0 = Date.now();
    const during = await scrape(svc.port);
    const took = Date.now() - t0;
    expect(took, 'scrape latency with a blocked worker').to.be.lessThan(1500);
    expect(during.value('astron_agent_metrics_missing_workers')).to.equal(1);
    expect(decreases(before, during)).to.deep.equal([]);
    const { pid } = await blocked;
    expect(svc.readyWorkerPids()).to.include(pid);
    await sleep(100);
    const after = await scrape(svc.port);
    expect(after.value('astron_agent_metrics_missing_workers')).to.equal(0);
    expect(decreases(during, after)).to.deep.equal([]);
  });

  it('METRICS_PORT serves the same from the primary; METRICS_TOKEN requires a bearer token on both ports', async () => {
    const metricsPort = await freePort();
    const token = 'tok-PLANTED-9f8e7d';
    svc = await startService({
      env: { SERVICE_WORKERS: '2', METRICS_PORT: String(metricsPort), METRICS_TOKEN: token },
    });
    await svc.waitReady();
    await hit(svc.port, '/health', 40);
    for (const port of [svc.port, metricsPort]) {
      expect((await request(port, '/metrics')).status).to.equal(401);
      expect(
        (await request(port, '/metrics', { headers: { Authorization: 'Bearer nope' } })).status,
      ).to.equal(401);
    }
    const auth = { Authorization: `Bearer ${token}` };
    const viaService = await scrape(svc.port, auth);
    const viaPrimary = await scrape(metricsPort, auth);
    expect(health(viaService)).to.equal(40);
    expect(health(viaPrimary)).to.equal(40);
    expect(viaPrimary.value('astron_agent_workers_ready')).to.equal(2);
    expect([...viaPrimary.families.keys()].sort()).to.deep.equal(
      [...viaService.families.keys()].sort(),
    );
    expect((await request(metricsPort, '/other', { headers: auth })).status).to.equal(404);
    expect(svc.output).not.to.contain(token);
  });

  it('METRICS_ENABLE=false: no /metrics', async () => {
    svc = await startService({ env: { METRICS_ENABLE: 'false' } });
    await svc.waitReady();
    expect((await request(svc.port, '/metrics')).status).to.equal(404);
    expect((await request(svc.port, '/health')).status).to.equal(200);
  });

  it('metrics settings: bad combinations exit 2 with one line naming the variables', async () => {
    const r = await runCli({
      env: {
        OTLP_METRIC_EXPORT_INTERVAL_MILLIS: '1000',
        OTLP_METRIC_EXPORT_TIMEOUT_MILLIS: '3000',
      },
    });
    expect(r.code).to.equal(2);
    const lines = r.stderr.split('\n').filter((l) => l.startsWith('invalid setting'));
    expect(lines).to.have.length(1);
    expect(lines[0])
      .to.contain('OTLP_METRIC_EXPORT_INTERVAL_MILLIS')
      .and.to.contain('OTLP_METRIC_EXPORT_TIMEOUT_MILLIS');
    expect(r.svc.logs.filter((l) => l.message === 'worker ready')).to.have.length(0);

    const port = await freePort();
    const same = await runCli({ env: { SERVICE_PORT: String(port), METRICS_PORT: String(port) } });
    expect(same.code).to.equal(2);
    expect(same.stderr).to.match(/METRICS_PORT/);

    const badUrl = await runCli({ env: { OTLP_ENDPOINT: 'just-a-host' } });
    expect(badUrl.code).to.equal(2);
    expect(badUrl.stderr).to.match(
      /invalid setting OTLP_ENDPOINT: expected an http\(s\) URL, or host:port/,
    );

    const shown = await runCli({ args: ['config'], env: { OTLP_ENDPOINT: 'collector:4318' } });
    expect(shown.stdout).to.match(/OTLP_ENDPOINT\s+= http:\/\/collector:4318\/v1\/metrics/);
  });
});
