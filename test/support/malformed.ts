// Generated malformed bot-config requests: bad JSON, wrong types, missing and oversized fields,
// oversized bodies, odd content types and encodings, bad query strings. Every one of them must be
// answered with 40002 (HTTP 200) or a 4xx JSON body: never a 5xx, never a dropped connection.
import { PATH, sampleConfig } from './bot-config.js';

export interface RawRequest {
  name: string;
  method: string;
  path: string;
  body?: string | Buffer;
  headers?: Record<string, string>;
}

type Kind = 'str' | 'int' | 'float' | 'bool' | 'list' | 'model';

/** Values that are wrong for a type even under pydantic's lax conversions. */
const WRONG: Record<Kind, unknown[]> = {
  str: [5, 1.5, true, null, [], {}, ['x']],
  int: ['abc', 1.5, null, [], {}, '1.5'],
  float: ['abc', null, [], {}, 'one'],
  bool: [2, 'maybe', null, [], {}],
  list: ['x', 5, null, {}, [1], [null], [[]]],
  model: ['x', 5, null, [], true],
};

const FIELDS: [string, Kind][] = [
  ['app_id', 'str'],
  ['bot_id', 'str'],
  ['knowledge_config', 'model'],
  ['knowledge_config.score_threshold', 'float'],
  ['knowledge_config.top_k', 'int'],
  ['model_config', 'model'],
  ['model_config.instruct', 'str'],
  ['model_config.plan', 'model'],
  ['model_config.plan.api', 'str'],
  ['model_config.plan.domain', 'str'],
  ['model_config.plan.parameter', 'model'],
  ['model_config.plan.parameter.max_tokens', 'int'],
  ['model_config.plan.parameter.temperature', 'float'],
  ['model_config.plan.patch_id', 'list'],
  ['model_config.plan.support_function_call', 'bool'],
  ['model_config.summary', 'model'],
  ['model_config.summary.sk', 'str'],
  ['regular_config', 'model'],
  ['regular_config.match', 'model'],
  ['regular_config.match.repoId', 'list'],
  ['regular_config.rag', 'model'],
  ['regular_config.rag.type', 'str'],
  ['tool_ids', 'list'],
  ['mcp_server_ids', 'list'],
  ['mcp_server_urls', 'list'],
  ['flow_ids', 'list'],
];

function setPath(obj: Record<string, unknown>, path: string, value: unknown): void {
  const keys = path.split('.');
  let o = obj;
  for (const k of keys.slice(0, -1)) {
    if (typeof o[k] !== 'object' || o[k] === null) o[k] = {};
    o = o[k] as Record<string, unknown>;
  }
  o[keys[keys.length - 1]!] = value;
}

const json = { 'Content-Type': 'application/json' };

export function malformedRequests(id: string, maxBody = 1048576): RawRequest[] {
  const out: RawRequest[] = [];
  const base = () =>
    structuredClone(sampleConfig(`app_fz_${id}`, `bot_fz_${id}`)) as Record<string, unknown>;
  const post = (
    name: string,
    body: string | Buffer,
    headers: Record<string, string> = json,
    method = 'POST',
  ) => out.push({ name, method, path: PATH, body, headers });

  // wrong types, at every level
  for (const [path, kind] of FIELDS) {
    for (const v of WRONG[kind]) {
      const cfg = base();
      setPath(cfg, path, v);
      post(
        `${path} = ${JSON.stringify(v)}`,
        JSON.stringify(cfg),
        json,
        out.length % 2 ? 'POST' : 'PUT',
      );
    }
  }
  // missing required fields
  for (const f of ['app_id', 'bot_id', 'model_config', 'regular_config']) {
    const cfg = base();
    delete cfg[f];
    post(`missing ${f}`, JSON.stringify(cfg));
  }
  // oversized and empty fields
  for (const [f, n] of [
    ['app_id', 65],
    ['app_id', 1000],
    ['app_id', 200000],
    ['bot_id', 65],
    ['bot_id', 5000],
    ['app_id', 0],
    ['bot_id', 0],
  ] as const) {
    const cfg = base();
    cfg[f] = 'x'.repeat(n);
    post(`${f} of ${n} characters`, JSON.stringify(cfg));
  }
  // bad JSON: truncations of a valid body, and classic mistakes
  const text = JSON.stringify(base());
  for (let i = 1; i < 40; i++)
    post(
      `truncated at ${Math.floor((text.length * i) / 40)}`,
      text.slice(0, Math.floor((text.length * i) / 40)),
    );
  for (const bad of [
    '',
    ' ',
    'null',
    '[]',
    '"a string"',
    '123',
    'true',
    '{',
    '}',
    '{"a"}',
    '{"a":}',
    "{'app_id': 'x'}",
    '{"app_id":"a",}',
    '[1,2',
    'NaN',
    'undefined',
    '\u0000',
    `${text}garbage`,
    `${text}${text}`,
    '{"app_id":"a\u0001b"}',
    '{"app_id":"\\x"}',
    '{"app_id":"\\u12"}',
    '{"app_id": 01}',
    '{"bot_id": -}',
  ]) {
    post(`bad JSON ${JSON.stringify(bad).slice(0, 40)}`, bad);
  }
  post('invalid UTF-8', Buffer.from([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xff, 0xfe, 0x22, 0x7d]));
  post(
    'a lone continuation byte',
    Buffer.concat([Buffer.from('{"app_id":"'), Buffer.from([0x80]), Buffer.from('"}')]),
  );
  // odd content types with a VALID config: not JSON, so raw bytes that fail the model
  for (const ct of [
    'text/plain',
    'multipart/form-data; boundary=xyz',
    'application/x-www-form-urlencoded',
    'application/xml',
    'application',
    'json',
    'application/json+',
    'text/json',
    '*/*',
    'image/png',
  ]) {
    post(`content-type ${ct}`, text, { 'Content-Type': ct });
  }
  // encodings the body parser cannot read
  post('content-encoding gzip, not gzip', text, { ...json, 'Content-Encoding': 'gzip' });
  post('content-encoding deflate, not deflate', text, { ...json, 'Content-Encoding': 'deflate' });
  post('content-encoding unknown', text, { ...json, 'Content-Encoding': 'x-unknown' });
  // oversized bodies
  const big = base();
  (big.model_config as Record<string, unknown>).instruct = 'i'.repeat(maxBody);
  post('body of limit + ~1 KiB', JSON.stringify(big));
  post('body of 2x the limit, not JSON', Buffer.alloc(maxBody * 2, 0x41));
  post(
    'body of 3x the limit, as PUT',
    JSON.stringify({ ...big, tool_ids: ['t'.repeat(maxBody * 2)] }),
    json,
    'PUT',
  );
  // query strings
  for (const q of [
    '',
    '?',
    '?app_id=a',
    '?bot_id=b',
    '?app_id=&bot_id=b',
    '?app_id=a&bot_id=',
    `?app_id=${'a'.repeat(65)}&bot_id=b`,
    `?app_id=a&bot_id=${'b'.repeat(5000)}`,
    '?app_id[]=a&bot_id=b&app_id=',
    '?appid=a&botid=b',
  ]) {
    out.push({ name: `GET ${q.slice(0, 40)}`, method: 'GET', path: `${PATH}${q}` });
    out.push({ name: `DELETE ${q.slice(0, 40)}`, method: 'DELETE', path: `${PATH}${q}` });
  }
  // methods that do not exist
  // (Node's client sends an OPTIONS body without framing unless told its length.)
  const framed = { ...json, 'Content-Length': String(Buffer.byteLength(text)) };
  for (const m of ['PATCH', 'OPTIONS'])
    out.push({ name: m, method: m, path: PATH, body: text, headers: framed });
  return out;
}
