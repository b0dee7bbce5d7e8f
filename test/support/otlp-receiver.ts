// A test OTLP/HTTP receiver: a small http server that takes POST /v1/metrics (JSON) and
// /v1/traces (protobuf or JSON, by Content-Type), gunzipped when Content-Encoding is gzip, keeps
// every export with its arrival time (metrics in `received`, decoded spans in `spans`), and
// answers 200 like a collector (an empty body of the request's encoding).
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { gunzipSync } from 'node:zlib';
import { decodeTraceExport } from './otlp-protobuf.js';

export type Attrs = Record<string, string | number | boolean | (string | number | boolean)[]>;

interface AnyValue {
  stringValue?: string;
  intValue?: string | number;
  doubleValue?: number;
  boolValue?: boolean;
  arrayValue?: { values?: AnyValue[] };
}
interface KeyValue {
  key: string;
  value: AnyValue;
}
interface NumberPoint {
  attributes?: KeyValue[];
  asInt?: string | number;
  asDouble?: number;
  timeUnixNano?: string;
}
interface HistogramPoint {
  attributes?: KeyValue[];
  count?: string | number;
  sum?: number;
  bucketCounts?: (string | number)[];
  explicitBounds?: number[];
}
interface OtlpMetric {
  name: string;
  unit?: string;
  sum?: { dataPoints: NumberPoint[]; isMonotonic?: boolean; aggregationTemporality?: number };
  gauge?: { dataPoints: NumberPoint[] };
  histogram?: { dataPoints: HistogramPoint[]; aggregationTemporality?: number };
}
export interface ExportRequest {
  resourceMetrics: {
    resource?: { attributes?: KeyValue[] };
    scopeMetrics?: { scope?: { name?: string }; metrics?: OtlpMetric[] }[];
  }[];
}

interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind?: number;
  startTimeUnixNano?: string | number;
  endTimeUnixNano?: string | number;
  attributes?: KeyValue[];
  status?: { code?: number; message?: string };
}
export interface TraceExportRequest {
  resourceSpans: {
    resource?: { attributes?: KeyValue[] };
    scopeSpans?: { scope?: { name?: string; version?: string }; spans?: OtlpSpan[] }[];
  }[];
}

/** One exported span, decoded. Kinds: 1 internal, 2 server, 3 client. */
export interface SpanRecord {
  traceId: string;
  spanId: string;
  /** '' for a root span. */
  parentSpanId: string;
  name: string;
  kind: number;
  startMs: number;
  endMs: number;
  attrs: Attrs;
  /** 0 unset, 1 ok, 2 error. */
  status: number;
  resource: Attrs;
  scope: string;
  /** The export's encoding. */
  via: 'protobuf' | 'json';
}

/** Ids as hex whatever the JSON encoding chose (hex, or base64 of the bytes). */
function hexId(id: string | undefined): string {
  if (!id) return '';
  if (/^[0-9a-f]+$/i.test(id) && (id.length === 32 || id.length === 16)) return id.toLowerCase();
  return Buffer.from(id, 'base64').toString('hex');
}

function spansOf(body: TraceExportRequest, via: SpanRecord['via']): SpanRecord[] {
  const out: SpanRecord[] = [];
  for (const rs of body.resourceSpans ?? []) {
    const resource = attrs(rs.resource?.attributes);
    for (const ss of rs.scopeSpans ?? []) {
      for (const sp of ss.spans ?? []) {
        out.push({
          traceId: hexId(sp.traceId),
          spanId: hexId(sp.spanId),
          parentSpanId: hexId(sp.parentSpanId),
          name: sp.name,
          kind: sp.kind ?? 0,
          startMs: Number(BigInt(sp.startTimeUnixNano ?? 0) / 1_000_000n),
          endMs: Number(BigInt(sp.endTimeUnixNano ?? 0) / 1_000_000n),
          attrs: attrs(sp.attributes),
          status: sp.status?.code ?? 0,
          resource,
          scope: ss.scope?.name ?? '',
          via,
        });
      }
    }
  }
  return out;
}

/** One datapoint, flattened. `value` is the number (sum/gauge) or the count (histogram). */
export interface Point {
  metric: string;
  kind: 'sum' | 'gauge' | 'histogram';
  attrs: Attrs;
  value: number;
  sum?: number;
  buckets?: number[];
  bounds?: number[];
}

export interface Received {
  at: number;
  contentType: string;
  encoding: string;
  body: ExportRequest;
  /** Resource attributes of the first resource. */
  resource: Attrs;
  points: Point[];
}

function scalar(value: AnyValue): string | number | boolean | undefined {
  if (value.stringValue !== undefined) return value.stringValue;
  if (value.intValue !== undefined) return Number(value.intValue);
  if (value.doubleValue !== undefined) return value.doubleValue;
  if (value.boolValue !== undefined) return value.boolValue;
  return undefined;
}

export function attrs(kvs: KeyValue[] | undefined): Attrs {
  const out: Attrs = {};
  for (const { key, value } of kvs ?? []) {
    if (value.arrayValue !== undefined) {
      out[key] = (value.arrayValue.values ?? [])
        .map(scalar)
        .filter((v): v is string | number | boolean => v !== undefined);
      continue;
    }
    const v = scalar(value);
    if (v !== undefined) out[key] = v;
  }
  return out;
}

function flatten(body: ExportRequest): Point[] {
  const out: Point[] = [];
  for (const rm of body.resourceMetrics ?? []) {
    for (const sm of rm.scopeMetrics ?? []) {
      for (const m of sm.metrics ?? []) {
        for (const dp of m.sum?.dataPoints ?? []) {
          out.push({
            metric: m.name,
            kind: 'sum',
            attrs: attrs(dp.attributes),
            value: Number(dp.asInt ?? dp.asDouble ?? 0),
          });
        }
        for (const dp of m.gauge?.dataPoints ?? []) {
          out.push({
            metric: m.name,
            kind: 'gauge',
            attrs: attrs(dp.attributes),
            value: Number(dp.asInt ?? dp.asDouble ?? 0),
          });
        }
        for (const dp of m.histogram?.dataPoints ?? []) {
          out.push({
            metric: m.name,
            kind: 'histogram',
            attrs: attrs(dp.attributes),
            value: Number(dp.count ?? 0),
            sum: dp.sum,
            buckets: (dp.bucketCounts ?? []).map(Number),
            bounds: dp.explicitBounds,
          });
        }
      }
    }
  }
  return out;
}

export class OtlpReceiver {
  readonly received: Received[] = [];
  /** Every span exported to /v1/traces, in arrival order. */
  readonly spans: SpanRecord[] = [];
  /** Trace export requests received (with their arrival time and content type). */
  readonly traceExports: { at: number; contentType: string; count: number }[] = [];
  /** Bodies that were not valid OTLP JSON (should stay empty). */
  readonly rejected: string[] = [];
  private server?: http.Server;
  port = 0;
  /** 'ok' answers at once; 'hang' never answers (a slow collector). */
  mode: 'ok' | 'hang' = 'ok';
  private readonly hanging = new Set<http.ServerResponse>();

  async start(port = 0): Promise<this> {
    this.server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        if (this.mode === 'hang') {
          this.hanging.add(res);
          res.on('close', () => this.hanging.delete(res));
          return;
        }
        const encoding = String(req.headers['content-encoding'] ?? '');
        let raw = Buffer.concat(chunks);
        try {
          if (encoding === 'gzip') raw = gunzipSync(raw);
          if ((req.url ?? '').startsWith('/v1/traces')) {
            const contentType = String(req.headers['content-type'] ?? '');
            const protobuf = contentType.startsWith('application/x-protobuf');
            const spans = spansOf(
              protobuf
                ? decodeTraceExport(raw)
                : (JSON.parse(raw.toString('utf8')) as TraceExportRequest),
              protobuf ? 'protobuf' : 'json',
            );
            this.spans.push(...spans);
            this.traceExports.push({ at: Date.now(), contentType, count: spans.length });
            // An empty ExportTraceServiceResponse: no bytes in protobuf, `{}` in JSON.
            if (protobuf) res.writeHead(200, { 'Content-Type': 'application/x-protobuf' }).end();
            else res.writeHead(200, { 'Content-Type': 'application/json' }).end('{}');
            return;
          }
          const body = JSON.parse(raw.toString('utf8')) as ExportRequest;
          this.received.push({
            at: Date.now(),
            contentType: String(req.headers['content-type'] ?? ''),
            encoding,
            body,
            resource: attrs(body.resourceMetrics?.[0]?.resource?.attributes),
            points: flatten(body),
          });
          res.writeHead(200, { 'Content-Type': 'application/json' }).end('{}');
        } catch (err) {
          this.rejected.push(`${req.method} ${req.url}: ${(err as Error).message}`);
          res.writeHead(400).end();
        }
      });
    });
    await new Promise<void>((resolve) => this.server!.listen(port, '127.0.0.1', resolve));
    this.port = (this.server.address() as AddressInfo).port;
    return this;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}/v1/metrics`;
  }

  get tracesUrl(): string {
    return `http://127.0.0.1:${this.port}/v1/traces`;
  }

  /** The spans of one trace. */
  trace(traceId: string): SpanRecord[] {
    return this.spans.filter((s) => s.traceId === traceId);
  }

  async stop(): Promise<void> {
    for (const r of this.hanging) r.destroy();
    this.server?.closeAllConnections();
    await new Promise<void>((resolve) =>
      this.server ? this.server.close(() => resolve()) : resolve(),
    );
  }

  /** Exports grouped by service.instance.id. */
  byInstance(): Map<string, Received[]> {
    const out = new Map<string, Received[]>();
    for (const r of this.received) {
      const id = String(r.resource['service.instance.id']);
      out.set(id, [...(out.get(id) ?? []), r]);
    }
    return out;
  }

  /**
   * Sum over instances of the latest value (cumulative temporality) of a metric's points whose
   * attributes include `match`.
   */
  latestTotal(metric: string, match: Attrs = {}): number {
    let total = 0;
    for (const exports of this.byInstance().values()) {
      for (let i = exports.length - 1; i >= 0; i--) {
        const pts = exports[i]!.points.filter(
          (p) => p.metric === metric && Object.entries(match).every(([k, v]) => p.attrs[k] === v),
        );
        if (pts.length > 0) {
          total += pts.reduce((a, p) => a + p.value, 0);
          break;
        }
      }
    }
    return total;
  }

  async waitFor(pred: () => boolean, timeoutMs = 15000, what = 'exports'): Promise<void> {
    const end = Date.now() + timeoutMs;
    while (!pred()) {
      if (Date.now() > end)
        throw new Error(`timed out waiting for ${what}; got ${this.received.length} exports`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}
