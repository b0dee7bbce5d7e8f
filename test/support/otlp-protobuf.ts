// Decodes an OTLP/HTTP protobuf trace export (ExportTraceServiceRequest, opentelemetry-proto
// trace/v1) into the shape of its JSON encoding, so that the test receiver reads both the same
// way. Only the fields the tests read; the wire format is protobuf's own (varint, 64-bit, length
// delimited, 32-bit), read by hand so that the tests need no protobuf library.
import type { TraceExportRequest } from './otlp-receiver.js';

interface Field {
  no: number;
  /** Varint: the value; LEN and I64 and I32: the bytes. */
  int?: bigint;
  bytes?: Buffer;
}

function varint(buf: Buffer, at: { i: number }): bigint {
  let v = 0n;
  for (let shift = 0n; ; shift += 7n) {
    if (at.i >= buf.length) throw new Error('truncated varint');
    const b = buf[at.i++]!;
    v |= BigInt(b & 0x7f) << shift;
    if (b < 0x80) return v;
  }
}

function fields(buf: Buffer): Field[] {
  const out: Field[] = [];
  const at = { i: 0 };
  while (at.i < buf.length) {
    const key = Number(varint(buf, at));
    const no = key >>> 3;
    const take = (n: number) => {
      if (at.i + n > buf.length) throw new Error(`field ${no}: truncated`);
      const b = buf.subarray(at.i, at.i + n);
      at.i += n;
      return b;
    };
    switch (key & 7) {
      case 0:
        out.push({ no, int: varint(buf, at) });
        break;
      case 1:
        out.push({ no, bytes: take(8) });
        break;
      case 2:
        out.push({ no, bytes: take(Number(varint(buf, at))) });
        break;
      case 5:
        out.push({ no, bytes: take(4) });
        break;
      default:
        throw new Error(`field ${no}: wire type ${key & 7} not supported`);
    }
  }
  return out;
}

const all = (fs: Field[], no: number) => fs.filter((f) => f.no === no);
const one = (fs: Field[], no: number) => fs.find((f) => f.no === no);
const str = (f: Field | undefined) => f?.bytes?.toString('utf8');
const hex = (f: Field | undefined) => f?.bytes?.toString('hex') ?? '';
const u64 = (f: Field | undefined) => (f?.bytes ? f.bytes.readBigUInt64LE(0).toString() : '0');

type AnyValue = NonNullable<
  NonNullable<TraceExportRequest['resourceSpans'][number]['resource']>['attributes']
>[number]['value'];

function anyValue(buf: Buffer): AnyValue {
  const f = fields(buf)[0];
  if (!f) return {};
  switch (f.no) {
    case 1:
      return { stringValue: str(f) };
    case 2:
      return { boolValue: f.int !== 0n };
    case 3:
      return { intValue: Number(BigInt.asIntN(64, f.int!)) };
    case 4:
      return { doubleValue: f.bytes!.readDoubleLE(0) };
    case 5:
      return { arrayValue: { values: all(fields(f.bytes!), 1).map((v) => anyValue(v.bytes!)) } };
    default:
      return {};
  }
}

const keyValues = (fs: Field[], no: number) =>
  all(fs, no).map((kv) => {
    const f = fields(kv.bytes!);
    const value = one(f, 2);
    return { key: str(one(f, 1)) ?? '', value: value ? anyValue(value.bytes!) : {} };
  });

export function decodeTraceExport(body: Buffer): TraceExportRequest {
  return {
    resourceSpans: all(fields(body), 1).map((rsField) => {
      const rs = fields(rsField.bytes!);
      const resource = one(rs, 1);
      return {
        resource: resource ? { attributes: keyValues(fields(resource.bytes!), 1) } : undefined,
        scopeSpans: all(rs, 2).map((ssField) => {
          const ss = fields(ssField.bytes!);
          const scope = one(ss, 1);
          const sf = scope ? fields(scope.bytes!) : [];
          return {
            scope: { name: str(one(sf, 1)), version: str(one(sf, 2)) },
            spans: all(ss, 2).map((spField) => {
              const sp = fields(spField.bytes!);
              const status = one(sp, 15);
              const st = status ? fields(status.bytes!) : [];
              return {
                traceId: hex(one(sp, 1)),
                spanId: hex(one(sp, 2)),
                parentSpanId: hex(one(sp, 4)),
                name: str(one(sp, 5)) ?? '',
                kind: Number(one(sp, 6)?.int ?? 0n),
                startTimeUnixNano: u64(one(sp, 7)),
                endTimeUnixNano: u64(one(sp, 8)),
                attributes: keyValues(sp, 9),
                status: { code: Number(one(st, 3)?.int ?? 0n), message: str(one(st, 2)) },
              };
            }),
          };
        }),
      };
    }),
  };
}
