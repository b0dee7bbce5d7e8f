// The business codes the service answers with (spec 5.1), as data, and the one error class
// that carries them. A code's message is built fresh for every error (never by mutating a
// shared instance: the original's defect D3).
import { redactString } from '../telemetry/redact.js';

export interface CodeDef {
  readonly code: number;
  readonly message: string;
}

/** Codes actually produced (spec 5.1). The texts are sent as they are. */
export const CODES = {
  SUCCESS: { code: 0, message: 'success' },
  BOT_CONFIG_NOT_FOUND: { code: 40001, message: 'failed to retrieve bot config' },
  /** The message of a 40002 is the validation issue itself ("type, loc, msg"). */
  VALIDATION: { code: 40002, message: 'request validation failed' },
  INVALID_BOT_CONFIG: { code: 40003, message: 'invalid bot config' },
  COT_FORMAT: { code: 40022, message: 'Model returned reasoning content format is incorrect' },
  LINK_PROTOCOL: { code: 40023, message: 'Failed to get link tool protocol' },
  LINK_RUN: { code: 40024, message: 'Failed to execute link tool' },
  KNOWLEDGE_QUERY: { code: 40025, message: 'Failed to query knowledge base' },
  MCP_PROTOCOL: { code: 40026, message: 'Failed to get MCP server protocol' },
  MCP_RUN: { code: 40027, message: 'Failed to execute MCP server tool' },
  WORKFLOW_CALL: { code: 40028, message: 'Failed to call workflow tool' },
  APP_AUTH: { code: 40040, message: 'AppId authentication information query failed' },
  REDIS_PING: { code: 40041, message: 'Ping Redis failed' },
  BOT_CONFIG_DELETE: { code: 40051, message: 'failed to delete bot config' },
  BOT_CONFIG_EXISTS: { code: 40053, message: 'bot config already exists, cannot create' },
  MODEL_REQUEST: { code: 40303, message: 'Model request failed' },
  USER_PARAMETER: { code: 40355, message: 'User parameter value error' },
  APP_AUTHORIZATION: {
    code: 40366,
    message:
      'AppID authorization error. Examples: feature not enabled, version not enabled, insufficient tokens, concurrency exceeds authorization, etc.',
  },
  TIMEOUT: { code: -1, message: '请求服务超时' },
  INTERNAL: { code: 40500, message: 'Agent internal service error' },
} as const satisfies Record<string, CodeDef>;

export type CodeName = keyof typeof CODES;

/** Where an error came from; logged, never shown to a client (spec 2.2 `oc`, `om`, `on`). */
export interface ErrorOrigin {
  code?: number | string;
  message?: string;
  name?: string;
}

/**
 * A business error: `code` and the `message` a client sees. Built from a declared code, with an
 * optional detail appended as `"<text>,<detail>"` (comma, no space: spec 2.2).
 */
export class AgentError extends Error {
  readonly code: number;
  /** The declared text, without detail. */
  readonly text: string;
  readonly detail: string | undefined;
  readonly origin: ErrorOrigin | undefined;

  constructor(def: CodeDef, detail?: string, opts: { origin?: ErrorOrigin; cause?: unknown } = {}) {
    // A detail quotes upstream answers and URLs (an MCP server's, an endpoint's): their
    // credentials never reach a client, who may not be the one that configured them.
    const shown = detail === undefined || detail === '' ? undefined : redactString(detail);
    super(shown === undefined ? def.message : `${def.message},${shown}`, {
      cause: opts.cause,
    });
    this.name = 'AgentError';
    this.code = def.code;
    this.text = def.message;
    this.detail = shown;
    this.origin = opts.origin;
  }

  /** A fresh error of the same code with a detail appended to the declared text. */
  withDetail(detail: string): AgentError {
    return new AgentError({ code: this.code, message: this.text }, detail, {
      origin: this.origin,
      cause: this.cause,
    });
  }

  /** The chat endpoints' final message: `"<message>,<sid>"` (spec 5.4). */
  messageWithSid(sid: string): string {
    return `${this.message},${sid}`;
  }
}

export function isAgentError(err: unknown): err is AgentError {
  return err instanceof AgentError;
}

/**
 * A value that could not be turned into what the code expects (a stored row or cache entry of
 * the wrong shape): the original's ValueError/TypeError/KeyError family, answered as
 * "Data processing error" on the bot-config endpoints.
 */
export class DataError extends Error {
  constructor(message: string, opts: { cause?: unknown } = {}) {
    super(message, opts);
    this.name = 'DataError';
  }
}
