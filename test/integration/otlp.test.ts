import { expect } from 'chai';
import { OtlpReceiver } from '../support/otlp-receiver.js';
import {
  freePort,
  hitHealth,
  request,
  sleep,
  startService,
  type Service,
} from '../support/service.js';

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

describe('metrics: OTLP push from every worker', function () {
  let svc: Service | undefined;
  let receiver: OtlpReceiver | undefined;
  afterEach(async () => {
    await svc?.stop('SIGKILL');
    await receiver?.stop();
    svc = undefined;
    receiver = undefined;
  });

  it('one service.instance.id per worker, exports at the configured interval, values adding up to the requests sent', async () => {
    receiver = await new OtlpReceiver().start();
    svc = await startService({
      env: {
        SERVICE_WORKERS: '2',
        SERVICE_NAME: 'agent-otlp-test',
        UPLOAD_METRICS: 'true',
        OTLP_ENDPOINT: `127.0.0.1:${receiver.port}`, // host:port form
        OTLP_METRIC_EXPORT_INTERVAL_MILLIS: '500',
        OTLP_METRIC_EXPORT_TIMEOUT_MILLIS: '500',
      },
    });
    await svc.waitReady();
    const hits = await hitHealth(svc.port, 100, 2);
    const pids = new Set(hits.pids.keys());
    expect(pids.size, 'both workers served').to.equal(2);
    await receiver.waitFor(() => {
      const by = receiver!.byInstance();
      return by.size >= 2 && [...by.values()].every((e) => e.length >= 5);
    }, 15000);

    expect(receiver.rejected).to.deep.equal([]);
    const by = receiver.byInstance();
    expect(by.size, 'distinct service.instance.id').to.equal(2);
    const workerPids = new Set<number>();
    for (const exports of by.values()) {
      const res = exports[0]!.resource;
      expect(res['service.name']).to.equal('agent-otlp-test');
      expect(res['host.name']).to.be.a('string');
      workerPids.add(Number(res['process.pid']));
      expect(exports.every((e) => e.contentType.startsWith('application/json'))).to.equal(true);
      // Spacing close to the interval (the machine is shared: a generous band around 500 ms).
      const gaps = exports.slice(1).map((e, i) => e.at - exports[i]!.at);
      expect(median(gaps), `gaps ${gaps.join(',')}`).to.be.within(400, 700);
    }
    expect([...workerPids].sort()).to.deep.equal([...pids].sort());

    await receiver.waitFor(
      () => receiver!.latestTotal('http_requests_total', { route: '/health' }) === hits.sent,
      5000,
      `${hits.sent} requests`,
    );
    expect(
      receiver.latestTotal('http_requests_total', {
        route: '/health',
        method: 'GET',
        status: '200',
      }),
    ).to.equal(hits.sent);
    expect(receiver.latestTotal('http_request_duration_seconds', { route: '/health' })).to.equal(
      hits.sent,
    );
  });

  it('SIGTERM: every worker flushes once more before it exits', async () => {
    receiver = await new OtlpReceiver().start();
    svc = await startService({
      env: {
        SERVICE_WORKERS: '2',
        UPLOAD_METRICS: 'true',
        OTLP_ENDPOINT: receiver.url,
        // No periodic export during the test: whatever arrives is the final flush.
        OTLP_METRIC_EXPORT_INTERVAL_MILLIS: '600000',
      },
    });
    await svc.waitReady();
    // At least 60: more while the kernel's split has not reached both workers yet.
    const { pids, sent } = await hitHealth(svc.port, 60, 2);
    expect(pids.size).to.equal(2);
    await sleep(300);
    expect(receiver.received).to.have.length(0);
    const res = await svc.stop('SIGTERM');
    expect(res.code).to.equal(0);
    const by = receiver.byInstance();
    expect(by.size).to.equal(2);
    for (const exports of by.values()) expect(exports).to.have.length(1);
    expect(receiver.latestTotal('http_requests_total', { route: '/health' })).to.equal(sent);
  });

  it('collector down or hanging: requests still succeed and stay fast; failures logged at most once a minute per worker', async () => {
    // Down: nothing listens on the endpoint.
    svc = await startService({
      env: {
        SERVICE_WORKERS: '2',
        UPLOAD_METRICS: 'true',
        OTLP_ENDPOINT: `127.0.0.1:${await freePort()}`,
        OTLP_METRIC_EXPORT_INTERVAL_MILLIS: '200',
        OTLP_METRIC_EXPORT_TIMEOUT_MILLIS: '200',
        OTLP_METRIC_TIMEOUT: '200',
      },
    });
    await svc.waitReady();
    const until = Date.now() + 2000;
    while (Date.now() < until) await hitHealth(svc.port, 20);
    const warns = svc.logs.filter((l) => /OTLP metrics export failed/.test(l.message ?? ''));
    expect(warns.length, 'some worker logged a failure').to.be.at.least(1);
    const perWorker = new Map<number, number>();
    for (const w of warns) {
      expect(w.level).to.equal('warn');
      perWorker.set(w.pid!, (perWorker.get(w.pid!) ?? 0) + 1);
    }
    for (const n of perWorker.values()) expect(n).to.equal(1);
    expect(svc.logs.filter((l) => /exited|killed/.test(l.message ?? ''))).to.have.length(0);
    await svc.stop('SIGKILL');

    // Hanging: the collector accepts and never answers.
    receiver = await new OtlpReceiver().start();
    receiver.mode = 'hang';
    svc = await startService({
      env: {
        SERVICE_WORKERS: '2',
        UPLOAD_METRICS: 'true',
        OTLP_ENDPOINT: receiver.url,
        OTLP_METRIC_EXPORT_INTERVAL_MILLIS: '200',
        OTLP_METRIC_EXPORT_TIMEOUT_MILLIS: '200',
        OTLP_METRIC_TIMEOUT: '300',
      },
    });
    await svc.waitReady();
    const slow: number[] = [];
    const end = Date.now() + 2000;
    while (Date.now() < end) {
      const t0 = Date.now();
      const r = await request(svc.port, '/health');
      expect(r.status).to.equal(200);
      slow.push(Date.now() - t0);
    }
    expect(slow.length).to.be.greaterThan(50);
    expect(median(slow), 'median /health latency (ms)').to.be.lessThan(50);
    expect(svc.logs.filter((l) => /exited|killed/.test(l.message ?? ''))).to.have.length(0);
    // A graceful stop is not held up by the hanging collector beyond the export timeout.
    const t0 = Date.now();
    expect((await svc.stop('SIGTERM')).code).to.equal(0);
    expect(Date.now() - t0).to.be.lessThan(5000);
  });
});
