// A test OTLP/HTTP receiver: a small http server that takes POST /v1/metrics with a JSON body
// (gunzipped when Content-Encoding is gzip), keeps every export with its arrival time, and
// answers 200 `{}` like a collector.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { gunzipSync } from 'node:zlib';

export type Attrs = Record<string, string | number | boolean>;

interface AnyValue {
  stringValue?: string;
  intValue?: string | number;
  doubleValue?: number;
  boolValue?: boolean;
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

export function attrs(kvs: KeyValue[] | undefined): Attrs {
  const out: Attrs = {};
  for (const { key, value } of kvs ?? []) {
    if (value.stringValue !== undefined) out[key] = value.stringValue;
    else if (value.intValue !== undefined) out[key] = Number(value.intValue);
    else if (value.doubleValue !== undefined) out[key] = value.doubleValue;
    else if (value.boolValue !== undefined) out[key] = value.boolValue;
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
