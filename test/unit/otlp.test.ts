// The OTLP instruments in-process: a real MeterProvider and OTLP/HTTP exporter against the
// test receiver on loopback.
import { expect } from 'chai';
import { validateSettings } from '../../lib/config/settings.js';
import type { Logger } from '../../lib/telemetry/logger.js';
import { createWorkerMetrics, HTTP_DURATION_BUCKETS } from '../../lib/telemetry/metrics.js';
import { localIPv4 } from '../../lib/telemetry/host.js';
import { startOtlp } from '../../lib/telemetry/otlp.js';
import { OtlpReceiver } from '../support/otlp-receiver.js';
import { freePort } from '../support/service.js';

function fakeLogger() {
  const warns: [string, Record<string, unknown>][] = [];
  const logger = {
    warn: (msg: string, meta: Record<string, unknown>) => warns.push([msg, meta]),
    debug: () => {},
    info: () => {},
    error: () => {},
  } as unknown as Logger;
  return { logger, warns };
}

describe('OTLP push (in-process)', () => {
  let receiver: OtlpReceiver;
  beforeEach(async () => {
    receiver = await new OtlpReceiver().start();
  });
  afterEach(() => receiver.stop());

  it('spec 11.2 instruments with their labels, the HTTP series, resource; JSON over HTTP; flush on shutdown', async () => {
    const settings = validateSettings({
      SERVICE_NAME: 'agent-x',
      SERVICE_LOCATION: 'hf',
      OTLP_ENDPOINT: `127.0.0.1:${receiver.port}`,
      OTLP_METRIC_EXPORT_INTERVAL_MILLIS: '60000',
    });
    const metrics = createWorkerMetrics({ defaults: false });
    const { logger, warns } = fakeLogger();
    const otlp = startOtlp({ settings, metrics, logger });
    metrics.recordChatRequest({
      appId: 'app1',
      func: 'workflow-agent-node',
      ret: 0,
      durationMs: 120,
    });
    metrics.recordChatRequest({
      appId: 'app1',
      func: 'workflow-agent-node',
      ret: 0,
      durationMs: 80,
    });
    metrics.recordChatRequest({
      appId: 'app1',
      func: 'workflow-agent-node',
      ret: 40002,
      durationMs: 5,
    });
    for (let i = 0; i < 7; i++) metrics.observeRequest('GET', '/health', 200, performance.now());
    metrics.wsOpened();
    await otlp.shutdown(5000);

    expect(receiver.rejected).to.deep.equal([]);
    expect(receiver.received).to.have.length(1);
    const [r] = receiver.received;
    expect(r!.contentType).to.match(/^application\/json/);
    expect(r!.resource).to.include({
      'service.name': 'agent-x',
      'service.instance.id': otlp.instanceId,
      'process.pid': process.pid,
    });
    expect(r!.resource['host.name']).to.be.a('string').and.not.equal('');

    const base = { dc: 'hf', server_host: localIPv4(), server_name: 'agent-x', pid: process.pid };
    const total = r!.points.filter((p) => p.metric === 'server_request_total');
    expect(total.map((p) => [p.attrs, p.value])).to.have.deep.members([
      [{ ...base, app_id: 'app1', func: 'workflow-agent-node', ret: 0 }, 2],
      [{ ...base, app_id: 'app1', func: 'workflow-agent-node', ret: 40002 }, 1],
    ]);
    const time = r!.points.filter((p) => p.metric === 'server_request_time_microseconds');
    expect(time).to.have.length(1);
    expect(time[0]!.attrs).to.deep.equal({ ...base, app_id: 'app1', func: 'workflow-agent-node' });
    expect(time[0]!.value).to.equal(3);
    expect(time[0]!.sum).to.equal(205);

    expect(
      receiver.latestTotal('http_requests_total', {
        route: '/health',
        method: 'GET',
        status: '200',
      }),
    ).to.equal(7);
    expect(receiver.latestTotal('http_request_duration_seconds', { route: '/health' })).to.equal(7);
    const [hist] = r!.points.filter((p) => p.metric === 'http_request_duration_seconds');
    expect(hist!.bounds).to.deep.equal([...HTTP_DURATION_BUCKETS]);
    expect(hist!.buckets).to.have.length(HTTP_DURATION_BUCKETS.length + 1);
    expect(hist!.buckets!.reduce((a, b) => a + b, 0)).to.equal(7);
    expect(receiver.latestTotal('websocket_connections_open')).to.equal(1);
    expect(warns).to.deep.equal([]);
  });

  it('collector down: the export fails quietly, one warn a minute, recording never throws', async () => {
    const settings = validateSettings({
      OTLP_ENDPOINT: `127.0.0.1:${await freePort()}`,
      OTLP_METRIC_EXPORT_INTERVAL_MILLIS: '100',
      OTLP_METRIC_EXPORT_TIMEOUT_MILLIS: '100',
      OTLP_METRIC_TIMEOUT: '100',
    });
    const metrics = createWorkerMetrics({ defaults: false });
    const { logger, warns } = fakeLogger();
    const otlp = startOtlp({ settings, metrics, logger });
    const until = Date.now() + 800;
    while (Date.now() < until) {
      metrics.observeRequest('GET', '/health', 200, performance.now());
      await new Promise((r) => setTimeout(r, 20));
    }
    await otlp.shutdown(1000);
    expect(warns).to.have.length(1);
    expect(warns[0]![0]).to.match(/OTLP metrics export failed/);
    expect(warns[0]![1]).to.have.property('endpoint', settings.OTLP_ENDPOINT);
  });
});
