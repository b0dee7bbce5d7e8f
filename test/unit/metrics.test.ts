import { expect } from 'chai';
import type { IncomingMessage } from 'node:http';
import { AggregatorRegistry } from 'prom-client';
import { SettingsError, validateSettings } from '../../lib/config/settings.js';
import { routeLabel } from '../../lib/http/routes/metrics.js';
import type { MetricJson, MetricsPrimaryToWorker } from '../../lib/ipc.js';
import {
  ClusterScraper,
  monotonicPart,
  SnapshotStore,
  type ScrapeTarget,
} from '../../lib/supervisor/scrape.js';
import { aggregateByFamily } from '../../lib/supervisor/scrape-render.js';
import { bearerOk } from '../../lib/telemetry/bearer.js';
import {
  createWorkerMetrics,
  LabeledCells,
  LabelLimiter,
  OTHER_LABEL,
  RequestSeries,
  type IpcChannel,
} from '../../lib/telemetry/metrics.js';
import { RateLimiter } from '../../lib/telemetry/otlp.js';
import { decreases, Exposition } from '../support/prometheus.js';

const counter = (name: string, value: number, labels: Record<string, string> = {}): MetricJson => ({
  name,
  help: name,
  type: 'counter',
  aggregator: 'sum',
  values: [{ value, labels }],
});
const gauge = (name: string, value: number): MetricJson => ({
  name,
  help: name,
  type: 'gauge',
  aggregator: 'sum',
  values: [{ value, labels: {} }],
});

async function render(arrays: MetricJson[][]): Promise<Exposition> {
  return new Exposition(await AggregatorRegistry.aggregate(arrays).metrics());
}

describe('metrics: request series', () => {
  it('counts per method/route/status; histogram buckets are cumulative, with sum and count', async () => {
    const s = new RequestSeries([0.01, 0.1]);
    s.observe('GET', '/health', 200, 0.001);
    s.observe('GET', '/health', 200, 0.05);
    s.observe('GET', '/health', 200, 5);
    s.observe('POST', 'unmatched', 404, 0.01);
    const ex = await render([
      [
        s.counterJson('http_requests_total', 'h'),
        s.histogramJson('http_request_duration_seconds', 'h'),
      ],
    ]);
    expect(
      ex.value('http_requests_total', { method: 'GET', route: '/health', status: '200' }),
    ).to.equal(3);
    expect(ex.value('http_requests_total', { route: 'unmatched' })).to.equal(1);
    const [h] = ex.samples('http_request_duration_seconds', { route: '/health' });
    expect(h!.buckets).to.deep.equal({ '0.01': '1', '0.1': '2', '+Inf': '3' });
    expect(Number(h!.count)).to.equal(3);
    expect(Number(h!.sum)).to.be.closeTo(5.051, 1e-9);
    // A value equal to a bound falls in that bucket (le = less or equal).
    const [u] = ex.samples('http_request_duration_seconds', { route: 'unmatched' });
    expect(u!.buckets!['0.01']).to.equal('1');
  });

  it('route label: the matched pattern with its mount path, else one value for all unmatched URLs', () => {
    const req = (extra: object) => extra as unknown as IncomingMessage;
    expect(routeLabel(req({ url: '/bot/42', route: { path: '/:id' }, baseUrl: '/bot' }))).to.equal(
      '/bot/:id',
    );
    expect(routeLabel(req({ url: '/x/y/z' }))).to.equal('unmatched');
    expect(routeLabel(req({ url: '/a?b=c', route: { path: '/a' }, baseUrl: '' }))).to.equal('/a');
  });

  it('label limiter: first N values kept, the rest become __other__, long values cut', () => {
    const l = new LabelLimiter(2, 8);
    expect([
      l.map('a'),
      l.map('b'),
      l.map('c'),
      l.map('a'),
      l.map(7),
      l.map(undefined),
    ]).to.deep.equal(['a', 'b', OTHER_LABEL, 'a', OTHER_LABEL, OTHER_LABEL]);
    expect(new LabelLimiter(5, 8).map('0123456789')).to.equal('01234567');
  });

  it('chat series (spec 11.2): counter by app_id/func/ret, histogram in ms by app_id/func', async () => {
    const m = createWorkerMetrics({ defaults: false });
    m.recordChatRequest({ appId: 'app1', func: 'workflow-agent-node', ret: 0, durationMs: 120 });
    m.recordChatRequest({ appId: 'app1', func: 'workflow-agent-node', ret: 40002, durationMs: 30 });
    m.recordChatRequest({ appId: 'app2', func: 'x', ret: 0, durationMs: 7000 });
    const ex = new Exposition((await m.scrape()).body);
    expect(
      ex.value('server_request_total', { app_id: 'app1', func: 'workflow-agent-node', ret: '0' }),
    ).to.equal(1);
    expect(ex.value('server_request_total', { app_id: 'app1', ret: '40002' })).to.equal(1);
    expect(ex.sum('server_request_total')).to.equal(3);
    const [h] = ex.samples('server_request_time_microseconds', { app_id: 'app1' });
    expect(Number(h!.count)).to.equal(2);
    expect(Number(h!.sum)).to.equal(150);
    expect(h!.buckets!['50']).to.equal('1');
    m.close();
  });

  it('bearer token check', () => {
    expect(bearerOk('Bearer s3cret', 's3cret')).to.equal(true);
    expect(bearerOk('bearer   s3cret ', 's3cret')).to.equal(true);
    expect(bearerOk('Bearer s3cre', 's3cret')).to.equal(false);
    expect(bearerOk('Basic s3cret', 's3cret')).to.equal(false);
    expect(bearerOk(undefined, 's3cret')).to.equal(false);
  });

  it('rate limiter: one event a minute, the held-back ones counted', () => {
    let now = 0;
    const r = new RateLimiter(60_000, () => now);
    expect(r.take()).to.deep.equal({ ok: true, suppressed: 0 });
    now = 1000;
    expect(r.take().ok).to.equal(false);
    now = 59_999;
    expect(r.take().ok).to.equal(false);
    now = 60_000;
    expect(r.take()).to.deep.equal({ ok: true, suppressed: 2 });
  });
});

describe('metrics: settings', () => {
  it('OTLP_ENDPOINT: host:port means http://host:port/v1/metrics; full URLs kept; nonsense refused', () => {
    expect(validateSettings({ OTLP_ENDPOINT: 'collector:4318' }).OTLP_ENDPOINT).to.equal(
      'http://collector:4318/v1/metrics',
    );
    expect(
      validateSettings({ OTLP_ENDPOINT: 'https://otel.example/custom/path' }).OTLP_ENDPOINT,
    ).to.equal('https://otel.example/custom/path');
    expect(validateSettings({ OTLP_ENDPOINT: 'http://c:4318' }).OTLP_ENDPOINT).to.equal(
      'http://c:4318/v1/metrics',
    );
    expect(validateSettings({}).OTLP_ENDPOINT).to.equal('http://127.0.0.1:4318/v1/metrics');
    for (const bad of ['collector', 'ftp://x:1/', 'host:port', '']) {
      expect(() => validateSettings({ OTLP_ENDPOINT: bad }), bad).to.throw(
        SettingsError,
        /OTLP_ENDPOINT/,
      );
    }
  });

  it('export interval < export timeout: one line naming both; METRICS_PORT = SERVICE_PORT refused', () => {
    try {
      validateSettings({
        OTLP_METRIC_EXPORT_INTERVAL_MILLIS: '1000',
        OTLP_METRIC_EXPORT_TIMEOUT_MILLIS: '3000',
      });
      expect.fail('should throw');
    } catch (err) {
      expect(err).to.be.instanceOf(SettingsError);
      const p = (err as SettingsError).problems;
      expect(p).to.have.length(1);
      expect(p[0]).to.match(
        /OTLP_METRIC_EXPORT_INTERVAL_MILLIS.*OTLP_METRIC_EXPORT_TIMEOUT_MILLIS/,
      );
    }
    expect(() => validateSettings({ SERVICE_PORT: '9000', METRICS_PORT: '9000' })).to.throw(
      SettingsError,
      /METRICS_PORT/,
    );
    expect(
      validateSettings({ OTLP_METRIC_EXPORT_INTERVAL_MILLIS: '3000' })
        .OTLP_METRIC_EXPORT_TIMEOUT_MILLIS,
    ).to.equal(3000);
  });
});

describe('metrics: departed-worker scheme (pure)', () => {
  it('monotonic part: counters and summed histograms only', () => {
    const hist: MetricJson = { name: 'h', help: 'h', type: 'histogram', values: [] };
    const avg: MetricJson = { ...counter('c2', 1), aggregator: 'average' };
    expect(
      monotonicPart([counter('c', 1), gauge('g', 1), hist, avg]).map((m) => m.name),
    ).to.deep.equal(['c', 'h']);
  });

  it('a worker gone keeps its counters; its gauges leave; later scrapes add it', async () => {
    const st = new SnapshotStore();
    st.update(1, 1, [counter('req', 10, { route: '/a' }), gauge('mem', 100)]);
    st.update(2, 1, [counter('req', 5, { route: '/a' }), gauge('mem', 50)]);
    const before = await render(
      st.compose(
        new Map([
          [1, st['latest'].get(1)!.metrics],
          [2, st['latest'].get(2)!.metrics],
        ]),
      ),
    );
    expect(before.value('req', { route: '/a' })).to.equal(15);
    expect(before.value('mem')).to.equal(150);

    st.depart(1);
    // Worker 2 answers with more; worker 1 is gone.
    const fresh = [
      counter('req', 7, { route: '/a' }),
      counter('req', 1, { route: '/b' }),
      gauge('mem', 60),
    ];
    const after = await render(st.compose(new Map([[2, fresh]])));
    expect(after.value('req', { route: '/a' })).to.equal(17);
    expect(after.value('req', { route: '/b' })).to.equal(1);
    expect(after.value('mem')).to.equal(60);
    expect(decreases(before, after)).to.deep.equal([]);
    expect(st.departedWorkers).to.equal(1);

    // Two departed workers add up in the accumulator.
    st.update(2, 2, fresh);
    st.depart(2);
    const none = await render(st.compose(new Map()));
    expect(none.value('req', { route: '/a' })).to.equal(17);
    expect(none.family('mem')).to.equal(undefined);
  });

  it('a worker that does not answer: its latest counters stand in, its gauges are left out', async () => {
    const st = new SnapshotStore();
    st.update(1, 1, [counter('req', 10), gauge('mem', 100)]);
    st.update(2, 1, [counter('req', 5), gauge('mem', 50)]);
    const ex = await render(st.compose(new Map([[2, [counter('req', 6), gauge('mem', 55)]]])));
    expect(ex.value('req')).to.equal(16);
    expect(ex.value('mem')).to.equal(55);
  });

  it('a worker that answered and then left during the round is counted once', async () => {
    const st = new SnapshotStore();
    st.update(1, 1, [counter('req', 10)]);
    st.depart(1);
    // A late message from a departed worker changes nothing.
    st.update(1, 2, [counter('req', 99)]);
    const ex = await render(st.compose(new Map()));
    expect(ex.value('req')).to.equal(10);
  });

  it('a final snapshot is never replaced by an older round', () => {
    const st = new SnapshotStore();
    st.update(1, 3, [counter('req', 10)], true);
    st.update(1, 4, [counter('req', 9)]);
    st.depart(1);
    expect(st.departedJson()[0]!.values[0]!.value).to.equal(10);
  });
});

describe('metrics: label cardinality (issue 13)', () => {
  it('a metric keeps at most maxSeries label sets; the rest count in one all-__other__ set', () => {
    const cells = new LabeledCells(['app_id', 'func'], [10, 100], 3);
    const counted: string[][] = [];
    for (let i = 0; i < 10; i++) counted.push(cells.observe([`a${i}`, `f${i}`], i));
    cells.observe(['a0', 'f0'], 5); // a kept set stays its own
    expect(counted.slice(0, 3)).to.deep.equal([
      ['a0', 'f0'],
      ['a1', 'f1'],
      ['a2', 'f2'],
    ]);
    for (const c of counted.slice(3)) expect(c).to.deep.equal([OTHER_LABEL, OTHER_LABEL]);
    expect(cells.size).to.equal(4);
    const json = cells.histogramJson('h', 'h');
    const counts = json.values.filter((v) => v.metricName === 'h_count');
    expect(counts.map((v) => [v.labels.app_id, v.value])).to.deep.equal([
      ['a0', 2],
      ['a1', 1],
      ['a2', 1],
      [OTHER_LABEL, 7],
    ]);
  });

  it('a worker: 100k distinct app_id/func pairs make at most METRICS_MAX_SERIES + 1 series a chat metric, every request counted, the OTLP sink gets the same labels', async () => {
    const m = createWorkerMetrics({ defaults: false, maxSeries: 100 });
    const sunk = new Set<string>();
    m.setSink({ chat: (r) => sunk.add(`${r.appId}|${r.func}|${r.ret}`) });
    for (let i = 0; i < 400; i++)
      for (let j = 0; j < 250; j++)
        m.recordChatRequest({ appId: `a${i}`, func: `f${j}`, ret: 40001, durationMs: 3 });
    const snap = await m.snapshot();
    const total = snap.find((x) => x.name === 'server_request_total')!;
    expect(total.values).to.have.length(101);
    expect(total.values.reduce((n, v) => n + v.value, 0)).to.equal(100_000);
    const time = snap.find((x) => x.name === 'server_request_time_microseconds')!;
    expect(time.values.filter((v) => v.metricName?.endsWith('_count'))).to.have.length(101);
    expect(sunk.size).to.equal(101);
    m.limitSeries(200); // raised later (the settings reach the metrics after they are built)
    m.recordChatRequest({ appId: 'new', func: 'new', ret: 0, durationMs: 1 });
    const again = (await m.snapshot()).find((x) => x.name === 'server_request_total')!;
    expect(again.values).to.have.length(102);
  });

  it("the primary's departed accumulator keeps at most maxSeries label sets a metric (histograms whole), and every count", async () => {
    const st = new SnapshotStore(3);
    const hist = (labels: Record<string, string>, n: number): MetricJson => ({
      name: 'h',
      help: 'h',
      type: 'histogram',
      aggregator: 'sum',
      values: [
        { value: 0, labels: { ...labels, le: 1 }, metricName: 'h_bucket' },
        { value: n, labels: { ...labels, le: '+Inf' }, metricName: 'h_bucket' },
        { value: n * 2, labels, metricName: 'h_sum' },
        { value: n, labels, metricName: 'h_count' },
      ],
    });
    let id = 0;
    for (let w = 0; w < 5; w++) {
      // every worker has two label sets of its own
      st.update(++id, 1, [
        counter('c', 1, { app: `w${w}a` }),
        counter('c', 1, { app: `w${w}b` }),
        hist({ app: `w${w}a` }, 2),
        hist({ app: `w${w}b` }, 2),
      ]);
      st.depart(id);
    }
    const departed = st.departedJson();
    const c = departed.find((m) => m.name === 'c')!;
    expect(c.values.map((v) => v.labels.app)).to.deep.equal(['w0a', 'w0b', 'w1a', OTHER_LABEL]);
    expect(c.values.reduce((n, v) => n + v.value, 0)).to.equal(10);
    const ex = await render([departed]);
    const h = ex.samples('h');
    expect(h.map((x) => x.labels?.app)).to.deep.equal(['w0a', 'w0b', 'w1a', OTHER_LABEL]);
    const other = h[3]!;
    expect([other.count, other.sum, other.buckets]).to.deep.equal([
      '14',
      '28',
      { '1': '0', '+Inf': '14' },
    ]);
  });

  it('aggregating one family at a time renders what one aggregate() renders', async () => {
    const w1 = createWorkerMetrics();
    const w2 = createWorkerMetrics();
    for (const [m, n] of [
      [w1, 3],
      [w2, 5],
    ] as const) {
      m.observeRequest('GET', '/health', 200, performance.now() - 2);
      for (let i = 0; i < n; i++)
        m.recordChatRequest({ appId: `a${i}`, func: 'f', ret: 0, durationMs: 10 * i });
    }
    const arrays = [await w1.snapshot(), await w2.snapshot()];
    const whole = await AggregatorRegistry.aggregate(
      JSON.parse(JSON.stringify(arrays)) as MetricJson[][],
    ).metrics();
    const sliced = await aggregateByFamily(JSON.parse(JSON.stringify(arrays)) as MetricJson[][]);
    expect(sliced).to.equal(whole);
    // and a large family cut in slices of whole label sets, one slice per label set at the least
    for (const maxValues of [1, 5, 20]) {
      const cut = await aggregateByFamily(
        JSON.parse(JSON.stringify(arrays)) as MetricJson[][],
        maxValues,
      );
      expect(cut, `slices of ${maxValues} values`).to.equal(whole);
    }
  });
});

describe('metrics: fan-out with a deadline (fake workers)', () => {
  function fakeTargets(
    answer: (id: number, round: number) => MetricJson[] | undefined,
    ids: number[],
    scraper: () => ClusterScraper,
  ) {
    return (): ScrapeTarget[] =>
      ids.map((id) => ({
        id,
        send: (msg: MetricsPrimaryToWorker) => {
          if (msg.t !== 'metrics-collect') return;
          const metrics = answer(id, msg.round);
          if (metrics)
            setTimeout(
              () => scraper().onSnapshot(id, { t: 'metrics-snapshot', round: msg.round, metrics }),
              5,
            );
        },
      }));
  }

  it('a silent worker: the round ends at the deadline with the others intact and missing = 1', async () => {
    const s: ClusterScraper = new ClusterScraper(
      200,
      fakeTargets(
        (id) => (id === 2 ? undefined : [counter('req', id * 10)]),
        [1, 2, 3],
        () => s,
      ),
    );
    const t0 = Date.now();
    const r = await s.collect();
    const took = Date.now() - t0;
    expect(took).to.be.within(190, 600);
    expect(r.expected).to.equal(3);
    expect(r.missing).to.equal(1);
    expect((await render(r.arrays)).value('req')).to.equal(40);
  });

  it('all answer: the round ends at once; concurrent scrapes share one round', async () => {
    let rounds = 0;
    const s: ClusterScraper = new ClusterScraper(
      5000,
      fakeTargets(
        (id, round) => {
          if (id === 1) rounds = Math.max(rounds, round);
          return [counter('req', 1)];
        },
        [1, 2],
        () => s,
      ),
    );
    const t0 = Date.now();
    const [a, b] = await Promise.all([s.collect(), s.collect()]);
    expect(Date.now() - t0).to.be.lessThan(1000);
    expect(a).to.equal(b);
    expect(rounds).to.equal(1);
    expect(a.missing).to.equal(0);
  });

  it('a worker that answered, then exited before the round ended: not counted twice', async () => {
    const s: ClusterScraper = new ClusterScraper(
      300,
      fakeTargets(
        (id) => (id === 2 ? undefined : [counter('req', 10)]),
        [1, 2],
        () => s,
      ),
    );
    const pending = s.collect();
    await new Promise((r) => setTimeout(r, 50)); // worker 1 has answered, 2 is silent
    s.onGone(1);
    const r = await pending;
    expect((await render(r.arrays)).value('req')).to.equal(10);
    expect(r.missing).to.equal(1);
  });

  it('worker side: answers a collect over its channel, asks the primary on scrape', async () => {
    const sent: unknown[] = [];
    const listeners: ((m: unknown) => void)[] = [];
    const channel: IpcChannel = {
      send: (msg, done) => {
        sent.push(msg);
        done?.(null);
      },
      on: (_e, fn) => listeners.push(fn),
      off: () => {},
      connected: true,
    };
    const m = createWorkerMetrics({ channel, defaults: false, scrapeTimeoutMs: 100 });
    m.observeRequest('GET', '/health', 200, performance.now());
    for (const l of listeners) l({ t: 'metrics-collect', round: 7 });
    await new Promise((r) => setTimeout(r, 50));
    const snap = sent.find((x) => (x as { t: string }).t === 'metrics-snapshot') as {
      round: number;
      metrics: MetricJson[];
    };
    expect(snap.round).to.equal(7);
    expect(snap.metrics.find((x) => x.name === 'http_requests_total')!.values[0]!.value).to.equal(
      1,
    );

    const pending = m.scrape();
    const ask = sent.find((x) => (x as { t: string }).t === 'metrics-scrape') as { id: number };
    for (const l of listeners)
      l({ t: 'metrics-result', id: ask.id, status: 200, contentType: 'text/plain', body: 'x 1\n' });
    expect((await pending).body).to.equal('x 1\n');
    // No answer from the primary: a 504 after the scrape timeout + 2 s.
    const t0 = Date.now();
    const late = await m.scrape();
    expect(late.status).to.equal(504);
    expect(Date.now() - t0).to.be.within(2000, 3500);
    m.close();
  });
});
