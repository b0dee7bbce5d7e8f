// Tracing pieces that need no service: the endpoint and sampler settings, the semconv opt-in,
// error classification, the keep-alive timer, and the lazy loading of the trace SDK (a worker
// without tracing never imports it).
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { expect } from 'chai';
import { idleTimer } from '../../lib/http/keepalive.js';
import { validateSettings } from '../../lib/config/settings.js';
import { samplerFrom, tracesEndpoint, tracesProtocol } from '../../lib/telemetry/otlp-traces.js';
import {
  errorInfo,
  KIND,
  legacyGenAiWanted,
  startServerSpan,
  STATUS_ERROR,
  tracer,
  tracingOn,
} from '../../lib/telemetry/tracing.js';
import { AgentError, CODES } from '../../lib/agent/errors.js';
import { RunAbortedError } from '../../lib/agent/llm.js';
import { ROOT } from '../support/service.js';

describe('tracing settings and helpers', () => {
  it('the traces URL: the signal variable verbatim, else the base + /v1/traces, else localhost:4318', () => {
    const s = (traces: string, base: string) =>
      tracesEndpoint({
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: traces,
        OTEL_EXPORTER_OTLP_ENDPOINT: base,
      });
    expect(s('http://c:4318/custom', 'http://b:4318')).to.equal('http://c:4318/custom');
    expect(s('', 'http://b:4318')).to.equal('http://b:4318/v1/traces');
    expect(s('', 'http://b:4318/otlp/')).to.equal('http://b:4318/otlp/v1/traces');
    expect(s('', '')).to.equal('http://localhost:4318/v1/traces');
  });

  it('the encoding: the traces variable, else the general one, else http/protobuf; gRPC refused clearly', () => {
    const p = (traces: string, general: string) =>
      tracesProtocol(
        validateSettings({
          OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: traces,
          OTEL_EXPORTER_OTLP_PROTOCOL: general,
        }),
      );
    expect(p('', '')).to.equal('http/protobuf');
    expect(p('', 'http/json')).to.equal('http/json');
    expect(p('http/protobuf', 'http/json')).to.equal('http/protobuf');
    expect(p('HTTP/JSON', '')).to.equal('http/json');
    expect(() => p('grpc', '')).to.throw(
      /OTEL_EXPORTER_OTLP_TRACES_PROTOCOL.*gRPC is not supported/s,
    );
    expect(() => p('', 'thrift')).to.throw(
      /OTEL_EXPORTER_OTLP_PROTOCOL.*http\/protobuf or http\/json/s,
    );
  });

  it('OTEL_TRACES_SAMPLER and _ARG build the SDK samplers (parent-based ratio)', () => {
    expect(samplerFrom('parentbased_traceidratio', 0.25).toString()).to.match(
      /^ParentBased\{root=TraceIdRatioBased\{0\.25\}/,
    );
    expect(samplerFrom('parentbased_always_on', 1).toString()).to.match(
      /^ParentBased\{root=AlwaysOnSampler/,
    );
    expect(samplerFrom('traceidratio', 0.5).toString()).to.equal('TraceIdRatioBased{0.5}');
    expect(samplerFrom('always_off', 1).toString()).to.equal('AlwaysOffSampler');
  });

  it('OTEL_SEMCONV_STABILITY_OPT_IN: gen_ai_latest_experimental drops the deprecated attributes', () => {
    expect(legacyGenAiWanted('')).to.equal(true);
    expect(legacyGenAiWanted('http')).to.equal(true);
    expect(legacyGenAiWanted('http, gen_ai_latest_experimental')).to.equal(false);
  });

  it('error.type: the business code, cancelled, or the class name', () => {
    expect(errorInfo(new AgentError(CODES.MODEL_REQUEST))).to.deep.equal({
      type: '40303',
      code: 40303,
    });
    expect(errorInfo(new AgentError(CODES.TIMEOUT))).to.deep.equal({ type: '-1', code: -1 });
    expect(errorInfo(new RunAbortedError())).to.deep.equal({ type: 'cancelled' });
    expect(errorInfo(new TypeError('x'))).to.deep.equal({ type: 'TypeError' });
    expect(errorInfo(undefined)).to.deep.equal({ type: '_OTHER' });
  });

  it('off: no server span, and a no-op tracer (nothing recorded)', () => {
    expect(tracingOn()).to.equal(false);
    expect(startServerSpan({} as never)).to.equal(undefined);
    const span = tracer().startSpan('x');
    expect(span.isRecording()).to.equal(false);
    span.end();
  });

  it('the keep-alive timer fires after a silence, again while it lasts, and not after touches', async () => {
    let fired = 0;
    const t = idleTimer(60, () => fired++);
    const touching = setInterval(() => t.touch(), 20);
    await new Promise((r) => setTimeout(r, 200));
    clearInterval(touching);
    expect(fired).to.equal(0);
    await new Promise((r) => setTimeout(r, 200));
    t.stop();
    expect(fired).to.be.within(2, 4);
  });

  it('a worker without tracing loads no @opentelemetry package, not even the API (lazy import)', () => {
    // CommonJS builds of the OpenTelemetry packages land in require.cache when imported. The
    // sources (dist/ is a bundle; test/integration/lean.test.ts checks that one).
    const script = `
      await import(${JSON.stringify(join(ROOT, 'lib/worker/boot.ts'))});
      const { createRequire } = await import('node:module');
      const loaded = Object.keys(createRequire(import.meta.url).cache);
      console.log(JSON.stringify(loaded.filter((f) => f.includes('@opentelemetry'))));`;
    const out = execFileSync(
      process.execPath,
      ['--import=tsx', '--input-type=module', '-e', script],
      {
        cwd: ROOT,
        encoding: 'utf8',
      },
    );
    const otel = JSON.parse(out.trim().split('\n').pop()!) as string[];
    const pkgs = [...new Set(otel.map((f) => /@opentelemetry\/([^/]+)/.exec(f)![1]))];
    expect(pkgs).to.deep.equal([]);
  });

  it('our copies of the API enums equal its SpanKind and SpanStatusCode values', async () => {
    const api = await import('@opentelemetry/api');
    expect(KIND).to.deep.equal({
      INTERNAL: api.SpanKind.INTERNAL,
      SERVER: api.SpanKind.SERVER,
      CLIENT: api.SpanKind.CLIENT,
    });
    expect(STATUS_ERROR).to.equal(api.SpanStatusCode.ERROR);
  });
});
