// Label cardinality of the chat series (issue 13), through the real CLI: 100k distinct
// app_id/func pairs recorded in each of two workers through the workers' real metrics (a test
// hook records them as the chat endpoints do: what a flood of cheap 40001 requests amounts to,
// without spending minutes of this 2-core machine on HTTP), plus real 40001 requests to show the
// endpoints land in the same capped series. The scrape must stay within its deadline, with every
// worker answering, and the primary's event loop (probed on METRICS_PORT, which the primary
// serves itself) must stay responsive throughout. Then the departed-worker accumulator: workers
// killed one after the other, each with label sets of its own, leave at most METRICS_MAX_SERIES
// label sets behind.
import { expect } from 'chai';
import { Exposition } from '../support/prometheus.js';
import { freePort, request, sleep, startService, type Service } from '../support/service.js';

const HOOKS = { AGENT_TEST_HOOKS: '1' };
const DEADLINE_MS = 1000;
/** METRICS_MAX_SERIES' default. */
const CAP = 500;

async function scrapeText(port: number): Promise<{ text: string; ms: number }> {
  const t = performance.now();
  const res = await request(port, '/metrics', { timeoutMs: 60_000 });
  const ms = performance.now() - t;
  expect(res.status, res.body.slice(0, 200)).to.equal(200);
  return { text: res.body, ms };
}

async function scrape(port: number): Promise<{ ex: Exposition; ms: number }> {
  const { text, ms } = await scrapeText(port);
  return { ex: new Exposition(text), ms };
}

/** Round trips to the primary's own HTTP server every 20 ms; the slowest is its loop's stall. */
function probePrimary(port: number): { stop(): Promise<{ max: number; n: number }> } {
  let stopped = false;
  let max = 0;
  let n = 0;
  const loop = (async () => {
    while (!stopped) {
      const t = performance.now();
      const r = await request(port, '/probe', { timeoutMs: 30_000 });
      expect(r.status).to.equal(404); // answered by the primary, no scrape involved
      max = Math.max(max, performance.now() - t);
      n++;
      await sleep(20);
    }
  })();
  return {
    async stop() {
      stopped = true;
      await loop;
      return { max, n };
    },
  };
}

const chatSeries = (ex: Exposition) => ex.samples('server_request_total');

describe('metrics: label cardinality of the chat series', function () {
  this.timeout(180_000);
  let svc: Service | undefined;
  afterEach(async () => {
    await svc?.stop('SIGKILL');
    svc = undefined;
  });

  it('100k distinct app_id/func pairs in each of 2 workers: series capped with an __other__ set, nothing lost, the scrape within its deadline, the primary responsive', async () => {
    const metricsPort = await freePort();
    svc = await startService({
      env: {
        ...HOOKS,
        SERVICE_WORKERS: '2',
        SERVICE_SCHEDULING: 'rr',
        METRICS_PORT: String(metricsPort),
        METRICS_SCRAPE_TIMEOUT: String(DEADLINE_MS),
      },
    });
    await svc.waitReady();
    const perPid = new Map<number, number>();
    let recorded = 0;
    for (let k = 0; k < 12 && (perPid.size < 2 || [...perPid.values()].some((n) => n < 1e5)); k++) {
      const r = await request(svc.port, `/__test/chat-records?apps=400&funcs=250&prefix=p${k}_`);
      const { recorded: n, pid } = JSON.parse(r.body) as { recorded: number; pid: number };
      expect(n).to.equal(100_000);
      perPid.set(pid, (perPid.get(pid) ?? 0) + n);
      recorded += n;
    }
    expect(perPid.size).to.equal(2);
    // and the endpoints themselves: cheap 40001 requests with their own app_id/func pairs
    for (let i = 0; i < 40; i++) {
      const r = await request(svc.port, '/agent/v1/chat/completions', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', 'x-consumer-username': `real-app-${i}` },
        body: JSON.stringify({
          bot_id: 'no-such-bot',
          uid: 'u',
          messages: [{ role: 'user', content: 'hi' }],
          stream: false,
          meta_data: { caller: `real-caller-${i}` },
        }),
      });
      expect((JSON.parse(r.body) as { code: number }).code).to.equal(40001);
    }
    recorded += 40;

    // Parsed after the probe stops: parsing here would stall this process, not the primary.
    const probe = probePrimary(metricsPort);
    const texts: { text: string; ms: number }[] = [];
    try {
      for (let i = 0; i < 3; i++) {
        texts.push(await scrapeText(svc.port));
        await sleep(100);
      }
    } finally {
      const { max, n } = await probe.stop();
      expect(n).to.be.greaterThan(5);
      console.log(`      (primary probe: ${n} answers, slowest ${max.toFixed(0)} ms)`);
      expect(
        max,
        `the primary's slowest answer during the scrapes: ${max.toFixed(0)} ms`,
      ).to.be.below(250);
    }
    for (const { text, ms } of texts) {
      const ex = new Exposition(text);
      expect(ex.value('astron_agent_metrics_missing_workers'), 'every worker answered').to.equal(0);
      expect(ex.value('astron_agent_metrics_scrape_duration_seconds')).to.be.below(
        DEADLINE_MS / 1000,
      );
      console.log(`      (scrape: ${ms.toFixed(0)} ms, ${text.length} bytes)`);
      expect(ms, 'whole scrape').to.be.below(DEADLINE_MS * 2);
      const series = chatSeries(ex);
      expect(series.length, 'label sets: 500 + __other__ per worker at most').to.be.at.most(
        2 * (CAP + 1),
      );
      expect(ex.sum('server_request_total'), 'every request counted').to.equal(recorded);
      expect(ex.sum('server_request_time_microseconds')).to.equal(recorded);
      const other = { app_id: '__other__', func: '__other__', ret: '__other__' };
      expect(ex.sum('server_request_total', other)).to.be.greaterThan(recorded - 2 * CAP - 40);
    }
    expect(svc.logs.filter((l) => l.level === 'error')).to.deep.equal([]);
  });

  it("workers killed one after another, each with label sets of its own: the primary's departed accumulator keeps at most METRICS_MAX_SERIES of them, and every count", async () => {
    const cap = 50;
    svc = await startService({
      env: { ...HOOKS, SERVICE_WORKERS: '1', METRICS_MAX_SERIES: String(cap) },
    });
    await svc.waitReady();
    let recorded = 0;
    for (let round = 0; round < 4; round++) {
      const r = await request(svc.port, `/__test/chat-records?apps=10&funcs=10&prefix=r${round}_`);
      recorded += (JSON.parse(r.body) as { recorded: number }).recorded;
      const { ex } = await scrape(svc.port); // the primary now holds this worker's snapshot
      expect(chatSeries(ex).length).to.be.at.most(2 * (cap + 1));
      const [victim] = svc.readyWorkerPids();
      const mark = svc.logs.length;
      process.kill(victim!, 'SIGKILL');
      await svc.waitForLog((l) => l.message === 'worker ready', 15000, mark);
    }
    await sleep(200);
    const { ex } = await scrape(svc.port);
    expect(ex.value('astron_agent_metrics_departed_workers_total')).to.equal(4);
    expect(chatSeries(ex).length, 'label sets left by 4 departed workers').to.be.at.most(cap + 1);
    expect(ex.sum('server_request_total')).to.equal(recorded);
    expect(ex.sum('server_request_time_microseconds')).to.equal(recorded);
  });
});
