// The BotConfig model (spec 6.1) and its encodings: the Redis value (JSON of the whole config,
// `model_config` by alias, extra top-level keys kept) and the SQL row (one JSON column per
// sub-object, double-encoded as the original writes them; spec 6.2).
import { AgentError, CODES, DataError } from '../agent/errors.js';
import {
  bool,
  float,
  int,
  list,
  model,
  optional,
  RequestValidationError,
  str,
  type Infer,
  type Schema,
} from '../schema/schema.js';

const strList = () => optional(list(str()), () => [] as string[]);

const parameterSchema = model({
  max_tokens: optional(int(), () => 2048),
  question_type: optional(str(), () => 'not_knowledge'),
  temperature: optional(float(), () => 0.5),
  top_k: optional(int(), () => 4),
});
const defaults =
  <T>(schema: Schema<T>) =>
  () =>
    schema.check({}, []);

const modelDetailSchema = model({
  api: optional(str(), () => ''),
  domain: optional(str(), () => ''),
  sk: optional(str(), () => ''),
  parameter: optional(parameterSchema, defaults(parameterSchema)),
  patch_id: strList(),
  support_function_call: optional(bool(), () => false),
});

const knowledgeSchema = model({
  score_threshold: optional(float(), () => 0.3),
  top_k: optional(int(), () => 3),
});

const modelConfigSchema = model({
  instruct: optional(str(), () => ''),
  plan: optional(modelDetailSchema, defaults(modelDetailSchema)),
  summary: optional(modelDetailSchema, defaults(modelDetailSchema)),
});

const matchSchema = model({ repoId: strList(), docId: strList() });
const ragSchema = model({ type: optional(str(), () => 'AIUI-RAG2') });
const regularSchema = model({
  match: optional(matchSchema, defaults(matchSchema)),
  rag: optional(ragSchema, defaults(ragSchema)),
});

/** `BotConfig`: extra top-level keys are kept; unknown keys in nested objects are dropped. */
export const botConfigSchema = model(
  {
    app_id: str({ minLength: 1, maxLength: 64 }),
    bot_id: str({ minLength: 1, maxLength: 64 }),
    knowledge_config: optional(knowledgeSchema, defaults(knowledgeSchema)),
    model_config: modelConfigSchema,
    regular_config: regularSchema,
    tool_ids: strList(),
    mcp_server_ids: strList(),
    mcp_server_urls: strList(),
    flow_ids: strList(),
  },
  { extra: 'allow' },
);

export type BotConfig = Infer<typeof botConfigSchema>;
export type BotModelConfig = Infer<typeof modelConfigSchema>;
export type BotModelDetail = Infer<typeof modelDetailSchema>;

/** The JSON columns of the `bot_config` table, in table order. */
export const JSON_COLUMNS = [
  'knowledge_config',
  'model_config',
  'regular_config',
  'tool_ids',
  'mcp_server_ids',
  'mcp_server_urls',
  'flow_ids',
] as const;
export type JsonColumn = (typeof JSON_COLUMNS)[number];

/** The config without extra keys: what a SQL row can hold. */
export function withoutExtras(cfg: BotConfig): BotConfig {
  const out: Record<string, unknown> = {};
  for (const k of botConfigSchema.fields) out[k] = cfg[k];
  return out as BotConfig;
}

/** Stored data (a cached value, a row) as a BotConfig; a shape that does not fit is a DataError. */
function checkStored(value: unknown): BotConfig {
  try {
    return botConfigSchema.check(value, []);
  } catch (err) {
    if (err instanceof RequestValidationError) {
      const { type, loc, msg } = err.issue;
      const where = loc.join('.') || '(root)';
      throw new DataError(`1 validation error for BotConfig: ${where}: ${msg} [type=${type}]`, {
        cause: err,
      });
    }
    throw err;
  }
}

// ---- Redis value -----------------------------------------------------------------------------

export function toCacheValue(cfg: BotConfig): string {
  return JSON.stringify(cfg);
}

/** A cached value: not JSON is 40003 `invalid bot config`; the wrong shape a DataError. */
export function fromCacheValue(text: string): BotConfig {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new AgentError(CODES.INVALID_BOT_CONFIG, undefined, { cause: err });
  }
  return checkStored(value);
}

// ---- SQL row ---------------------------------------------------------------------------------

/**
 * How JSON columns are written. `python`: as the original writes them, a JSON *string* whose
 * content is the JSON text (pydantic's compact dump for objects, `json.dumps` with ", " for
 * lists), so a Python instance can share the table. `plain`: native JSON text.
 */
export type ColumnEncoding = 'python' | 'plain';

/** Python's json.dumps(list_of_strings, ensure_ascii=False). */
function pythonListText(items: unknown): string {
  return Array.isArray(items)
    ? `[${items.map((v) => JSON.stringify(v)).join(', ')}]`
    : JSON.stringify(items);
}

export function encodeColumns(
  cfg: BotConfig,
  encoding: ColumnEncoding,
): Record<JsonColumn, string> {
  const out = {} as Record<JsonColumn, string>;
  for (const col of JSON_COLUMNS) {
    const value = cfg[col];
    if (encoding === 'plain') out[col] = JSON.stringify(value);
    else
      out[col] = JSON.stringify(
        Array.isArray(value) ? pythonListText(value) : JSON.stringify(value),
      );
  }
  return out;
}

/**
 * Reads a JSON column in either encoding: parse, and parse again while the result is a string
 * (the double-encoded form). A driver may hand over text, a Buffer or an already parsed value.
 */
export function decodeColumn(raw: unknown, column: string): unknown {
  let v: unknown = Buffer.isBuffer(raw) ? raw.toString('utf8') : raw;
  for (let depth = 0; typeof v === 'string' && depth < 3; depth++) {
    try {
      v = JSON.parse(v);
    } catch (err) {
      throw new DataError(`column ${column} does not hold JSON`, { cause: err });
    }
  }
  return v;
}

export interface BotConfigRow {
  app_id: unknown;
  bot_id: unknown;
  knowledge_config: unknown;
  model_config: unknown;
  regular_config: unknown;
  tool_ids: unknown;
  mcp_server_ids: unknown;
  mcp_server_urls: unknown;
  flow_ids: unknown;
}

/** A row as a BotConfig (defaults filled in); a row that does not fit is a DataError. */
export function fromRow(row: BotConfigRow): BotConfig {
  const value: Record<string, unknown> = { app_id: String(row.app_id), bot_id: String(row.bot_id) };
  for (const col of JSON_COLUMNS) value[col] = decodeColumn(row[col], col);
  return checkStored(value);
}

// ---- stored value memo ----------------------------------------------------------------------

/** Freezes a checked config and everything in it (a memoised config is shared by readers). */
function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

export interface MemoEntry {
  readonly raw: readonly unknown[];
  readonly cfg: BotConfig;
  /** JSON of `cfg`, made by the first read that asked for it. */
  text?: string;
}

/**
 * The configs (and their answer text, JSON of the checked config) of stored values read
 * recently, by bot_id: a read that finds the same stored value again (the same cached string,
 * the same column texts) skips the parse, the check and the serialisation, and shares one
 * frozen config with the other readers. Bounded (oldest entries dropped first); only values that
 * were read successfully are kept, so errors are raised as before.
 */
export class StoredValueMemo {
  private readonly map = new Map<string, MemoEntry>();

  constructor(private readonly max = 1024) {}

  private lookup(botId: string, raw: readonly unknown[]): MemoEntry | undefined {
    const e = this.map.get(botId);
    if (e === undefined || e.raw.length !== raw.length) return undefined;
    for (let i = 0; i < raw.length; i++) if (e.raw[i] !== raw[i]) return undefined;
    return e;
  }

  private remember(botId: string, raw: readonly unknown[], cfg: BotConfig): MemoEntry {
    const e: MemoEntry = { raw, cfg: deepFreeze(cfg) };
    // Strings only: a parsed or binary column (some drivers) is not compared, nor kept.
    if (!raw.every((v) => typeof v === 'string')) return e;
    if (this.map.size >= this.max && !this.map.has(botId)) {
      const oldest = this.map.keys().next();
      if (!oldest.done) this.map.delete(oldest.value);
    }
    this.map.set(botId, e);
    return e;
  }

  /** The entry of a stored value (frozen config, text once asked); `read` decodes it when new. */
  entry(botId: string, raw: readonly unknown[], read: () => BotConfig): MemoEntry {
    return this.lookup(botId, raw) ?? this.remember(botId, raw, read());
  }

  /** The (frozen) config of a stored value; `read` decodes and checks it when it is new. */
  config(botId: string, raw: readonly unknown[], read: () => BotConfig): BotConfig {
    return (this.lookup(botId, raw) ?? this.remember(botId, raw, read())).cfg;
  }

  /** The config's app_id and JSON text; `read` decodes and checks the value when it is new. */
  text(
    botId: string,
    raw: readonly unknown[],
    read: () => BotConfig,
  ): { appId: string; text: string } {
    const e = this.lookup(botId, raw) ?? this.remember(botId, raw, read());
    e.text ??= JSON.stringify(e.cfg);
    return { appId: e.cfg.app_id, text: e.text };
  }
}

/** The column values of a row in table order (app_id, bot_id, then the JSON columns). */
export function rowValues(row: BotConfigRow): unknown[] {
  return [
    row.app_id,
    row.bot_id,
    row.knowledge_config,
    row.model_config,
    row.regular_config,
    row.tool_ids,
    row.mcp_server_ids,
    row.mcp_server_urls,
    row.flow_ids,
  ];
}
