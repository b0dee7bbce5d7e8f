// Link tools (spec 8.1): HTTP tools described by OpenAPI 3 documents that the link service keeps.
// The schema query turns every operation into one tool whose parameters are the model-visible
// query parameters and request-body leaves (nested objects flattened); a run assembles the
// header, query and body maps (defaults, x-display / x-from rules, nested bodies rebuilt) and
// posts them base64-encoded to the link service, whose whole answer is the observation.
import { isPlainObject } from '../../schema/object.js';
import { AgentError, CODES } from '../errors.js';
import type { RunContext } from '../runners/types.js';
import {
  b64Json,
  callJson,
  pyJsonAscii,
  pyTruthy,
  type CallOptions,
  type PluginHttpClient,
} from './http.js';
import { makeTool, type Tool, type ToolParameters } from './types.js';
import { parseBoundedJson } from '../../schema/json.js';

/** A link tool id and version; a plain string id means version V1.0 (spec 3.2). */
export interface LinkToolRef {
  tool_id: string;
  version: string;
}

export const DEFAULT_TOOL_VERSION = 'V1.0';

export function toolRefs(
  tools: readonly (string | { tool_id: string; version?: string })[],
): LinkToolRef[] {
  return tools.map((t) =>
    typeof t === 'string'
      ? { tool_id: t, version: DEFAULT_TOOL_VERSION }
      : { tool_id: t.tool_id, version: t.version ?? '' },
  );
}

export interface LinkOptions {
  /** VERSIONS_LINK_URL */
  versionsUrl: string;
  /** RUN_LINK_URL */
  runUrl: string;
  /** PLUGIN_TIMEOUT */
  timeoutMs: number;
  client: PluginHttpClient;
}

/**
 * `GET {VERSIONS_LINK_URL}?app_id=..&tool_ids=..&versions=..`, every value percent-encoded (the
 * original sends them as they are, so an app_id `x&app_id=other` injected a parameter; issue 13).
 * Parameters already in VERSIONS_LINK_URL are kept ahead of them.
 */
export function schemaQueryUrl(base: string, appId: string, refs: readonly LinkToolRef[]): string {
  const url = new URL(base);
  url.searchParams.append('app_id', appId);
  for (const r of refs) {
    url.searchParams.append('tool_ids', r.tool_id);
    url.searchParams.append('versions', r.version);
  }
  return url.href;
}

// ---- OpenAPI operation -> tool parameters ------------------------------------------------------

type Json = Record<string, unknown>;
const obj = (v: unknown): Json => (isPlainObject(v) ? v : {});
const has = (o: Json, k: string) => Object.hasOwn(o, k);
/** Python's `x == 0` / `x == 1` for a decoded JSON value (False == 0, True == 1). */
const pyEq = (v: unknown, n: 0 | 1) => v === n || v === (n === 1);

/** Model-visible: `x-display` present and truthy, or absent and `x-from == 0`. */
export function modelVisible(schema: Json): boolean {
  if (has(schema, 'x-display')) return pyTruthy(schema['x-display']);
  return pyEq(schema['x-from'], 0);
}

/** The JSON schema of an operation's application/json request body ({} when none). */
export function bodySchema(op: Json): Json {
  return obj(obj(obj(obj(op.requestBody).content)['application/json']).schema);
}

function operationParameters(op: Json): Json[] {
  return Array.isArray(op.parameters) ? op.parameters.filter(isPlainObject) : [];
}

/** Query parameters the model fills in: `{description, type}` each, and the required names. */
function queryParameters(op: Json): { properties: Json; required: string[] } {
  const properties: Json = {};
  const required: string[] = [];
  for (const p of operationParameters(op)) {
    const name = p.name;
    if (typeof name !== 'string' || p.in !== 'query') continue;
    const schema = obj(p.schema);
    if (!modelVisible(schema)) continue;
    properties[name] = { description: p.description ?? null, type: schema.type ?? null };
    if (pyTruthy(p.required) && !required.includes(name)) required.push(name);
  }
  return { properties, required };
}

/** Body leaves the model fills in (nested objects flattened) and the union of `required`. */
function bodyParameters(schema: Json, properties: Json, required: string[]): void {
  for (const [name, detail] of Object.entries(obj(schema.properties))) {
    const d = obj(detail);
    if (d.type === 'object') bodyParameters(d, properties, required);
    else if (modelVisible(d))
      properties[name] = { description: d.description ?? '', type: d.type ?? null };
  }
  if (Array.isArray(schema.required)) {
    for (const r of schema.required)
      if (typeof r === 'string' && !required.includes(r)) required.push(r);
  }
}

/** The tool parameters of one operation (spec 8.1): query ∪ body (body wins), required in that order. */
export function toolParameters(op: Json): ToolParameters {
  const query = queryParameters(op);
  const body: Json = {};
  const bodyRequired: string[] = [];
  bodyParameters(bodySchema(op), body, bodyRequired);
  const required = [...query.required];
  for (const r of bodyRequired) if (has(body, r) && !required.includes(r)) required.push(r);
  return { type: 'object', properties: { ...query.properties, ...body }, required };
}

// ---- run ---------------------------------------------------------------------------------------

/** One value: the default, replaced by the action input when the x-display / x-from rules say so. */
function valueOf(schema: Json, name: string, input: Json, leafOfBody: boolean): unknown {
  const fallback = has(schema, 'default') ? schema.default : null;
  const fromInput = () => (has(input, name) ? input[name] : fallback);
  if (has(schema, 'x-display')) return pyTruthy(schema['x-display']) ? fromInput() : fallback;
  const xFrom = schema['x-from'];
  if (pyEq(xFrom, 0)) return fromInput();
  if (pyEq(xFrom, 1)) return fallback; // business input: always empty here
  return leafOfBody ? fromInput() : fallback;
}

/** The header and query maps of a run (path parameters are ignored). */
export function assembleParameters(op: Json, input: Json): { header: Json; query: Json } {
  const header: Json = {};
  const query: Json = {};
  for (const p of operationParameters(op)) {
    if (p.in !== 'header' && p.in !== 'query') continue;
    const name = typeof p.name === 'string' ? p.name : 'unknown_field';
    (p.in === 'header' ? header : query)[name] = valueOf(obj(p.schema), name, input, false);
  }
  return { header, query };
}

/** The body map of a run: nested objects rebuilt as nested maps. */
export function assembleBody(schema: Json, input: Json): Json {
  const out: Json = {};
  for (const [name, detail] of Object.entries(obj(schema.properties))) {
    const d = obj(detail);
    out[name] = d.type === 'object' ? assembleBody(d, input) : valueOf(d, name, input, true);
  }
  return out;
}

export interface LinkRunTarget {
  appId: string;
  uid: string;
  toolId: string;
  version: string;
  operationId: string;
}

/** The `http_run` request of spec 8.1: each of header/query/body only when non-empty. */
export function runRequest(target: LinkRunTarget, op: Json, input: Json): Json {
  const { header, query } = assembleParameters(op, input);
  const body = assembleBody(bodySchema(op), input);
  const message: Json = {};
  if (Object.keys(header).length > 0) message.header = b64Json(header);
  if (Object.keys(query).length > 0) message.query = b64Json(query);
  if (Object.keys(body).length > 0) message.body = b64Json(body);
  return {
    header: { app_id: target.appId, uid: target.uid },
    parameter: {
      tool_id: target.toolId,
      operation_id: target.operationId,
      version: target.version,
    },
    payload: { message },
  };
}

// ---- build -------------------------------------------------------------------------------------

function parseDocument(schema: unknown, toolId: string): Json {
  if (isPlainObject(schema)) return schema;
  if (schema === undefined || schema === null || schema === '') return {};
  if (typeof schema !== 'string')
    throw new AgentError(CODES.INTERNAL, `link tool ${toolId}: schema is not an OpenAPI document`);
  try {
    return obj(parseBoundedJson(schema));
  } catch (err) {
    throw new AgentError(CODES.INTERNAL, `link tool ${toolId}: schema is not JSON`, { cause: err });
  }
}

/** Queries the schemas of the given tools and builds one tool per OpenAPI operation. */
export async function buildLinkTools(
  opts: LinkOptions,
  refs: readonly LinkToolRef[],
  ctx: RunContext,
): Promise<Tool[]> {
  if (refs.length === 0) return [];
  if (!opts.versionsUrl) throw new AgentError(CODES.INTERNAL, 'VERSIONS_LINK_URL is not set');
  const call: CallOptions = {
    client: opts.client,
    what: 'link schema query',
    timeoutMs: opts.timeoutMs,
    timeoutCode: CODES.LINK_PROTOCOL,
    signal: ctx.signal,
    trace: ctx.trace,
    requestId: ctx.requestId,
  };
  const answer = obj(
    await callJson(schemaQueryUrl(opts.versionsUrl, ctx.appId, refs), { method: 'GET' }, call),
  );
  if (answer.code !== 0) {
    throw new AgentError(CODES.LINK_PROTOCOL, undefined, {
      origin: {
        code:
          typeof answer.code === 'number' || typeof answer.code === 'string'
            ? answer.code
            : undefined,
        message: typeof answer.message === 'string' ? answer.message : undefined,
        name: 'link',
      },
    });
  }
  const items = obj(answer.data).tools;
  const tools: Tool[] = [];
  for (const item of Array.isArray(items) ? items : []) {
    const it = obj(item);
    if (it.id === undefined || it.id === null || it.version === undefined || it.version === null)
      continue;
    const toolId = String(it.id);
    const version = String(it.version);
    const doc = parseDocument(it.schema, toolId);
    for (const pathItem of Object.values(obj(doc.paths))) {
      for (const op of Object.values(obj(pathItem))) {
        if (!isPlainObject(op)) continue;
        const name = typeof op.operationId === 'string' ? op.operationId : '';
        const description = typeof op.description === 'string' ? op.description : '';
        const target: LinkRunTarget = {
          appId: ctx.appId,
          uid: ctx.uid,
          toolId,
          version,
          operationId: name,
        };
        tools.push(
          makeTool('link', name, description, toolParameters(op), (args, runCtx) =>
            runLink(opts, target, op, args, runCtx),
          ),
        );
      }
    }
  }
  return tools;
}

async function* runLink(
  opts: LinkOptions,
  target: LinkRunTarget,
  op: Json,
  input: Json,
  ctx: RunContext,
) {
  if (!opts.runUrl) throw new AgentError(CODES.INTERNAL, 'RUN_LINK_URL is not set');
  const body = runRequest(target, op, input);
  const observation = await callJson(
    opts.runUrl,
    { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: pyJsonAscii(body) },
    {
      client: opts.client,
      what: 'link tool run',
      timeoutMs: opts.timeoutMs,
      timeoutCode: CODES.LINK_RUN,
      signal: ctx.signal,
      trace: ctx.trace,
      requestId: ctx.requestId,
    },
  );
  yield { observation };
}
