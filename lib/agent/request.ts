// The chat request (spec 3.1) and its validation (spec 3.4), with pydantic's vocabulary from the
// shared validation module. Transport-neutral: the HTTP route and the WebSocket protocol both
// hand over a parsed body (or raw bytes) and the header values.
import {
  any,
  bool,
  fail,
  isJsonContentType,
  isPlainObject,
  list,
  model,
  optional,
  parseJson,
  str,
  validateBody,
  validateParams,
  type Schema,
  type Infer,
} from '../http/validation.js';

export const APP_ID_HEADER = 'x-consumer-username';

const messageSchema = model({ role: str(), content: str() });

const metaDataSchema = model({
  caller: optional(str(), () => 'chat_open_api'),
  caller_sid: optional(str(), () => ''),
});

/** `CompletionInputs` (spec 3.1): unknown fields ignored. */
export const completionSchema = model({
  // An omitted bot_id defaults to "" without validation (then 40001 later).
  bot_id: optional(str({ minLength: 1, maxLength: 64 }), () => ''),
  uid: optional(str({ maxLength: 64 }), () => ''),
  messages: list(messageSchema),
  stream: optional(bool(), () => false),
  meta_data: optional(metaDataSchema, () => ({ caller: 'chat_open_api', caller_sid: '' })),
});

export type CompletionInputs = Infer<typeof completionSchema>;

const headerSchema = model({ [APP_ID_HEADER]: str() });

/**
 * The custom message-list checks (spec 3.4), run before any other validation and ending it at
 * once: an empty list is `missing`; per message: non-empty content, role not system, roles
 * alternating from user; finally an odd count (ends with user). A non-object item ends the
 * custom checks; the type validation then reports it.
 */
export function checkMessages(messages: unknown): void {
  if (!Array.isArray(messages)) return;
  const loc = ['body', 'messages'];
  if (messages.length === 0) fail('missing', loc, 'Field required');
  let expected = 'user';
  for (let i = 0; i < messages.length; i++) {
    const m: unknown = messages[i];
    if (!isPlainObject(m)) return;
    const at = [...loc, i];
    if (m.content === undefined || m.content === null || m.content === '') {
      fail('literal_error', [...at, 'content'], "'content' cannot be empty");
    }
    if (m.role === 'system')
      fail('literal_error', [...at, 'role'], "'role' must be user or assistant");
    if (m.role !== expected) {
      fail(
        'literal_error',
        [...at, 'role'],
        'messages role order must alternate between user and assistant',
      );
    }
    expected = expected === 'user' ? 'assistant' : 'user';
  }
  if (expected !== 'assistant')
    fail('literal_error', loc, 'messages must end with user type content');
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** A request body as the transport got it: raw bytes (HTTP) or an already parsed value (WS). */
export type BodyInput =
  { raw: Buffer | undefined; contentType: string | undefined } | { parsed: unknown };

/**
 * Validates a chat-style request in the original's order: JSON decoding, the message-list
 * checks, the header, then the body fields against `schema`. Throws RequestValidationError
 * (40002) or BodyDecodeError. Shared by /chat/completions and /custom/chat/completions.
 */
export function validateChatRequest<T>(
  schema: Schema<T>,
  body: BodyInput,
  headers: Iterable<[string, string]>,
): { appId: string; inputs: T } {
  let value: unknown;
  if ('parsed' in body) value = body.parsed;
  else if (body.raw !== undefined && body.raw.length > 0) {
    if (isJsonContentType(body.contentType)) {
      // validateBody gives the UTF-8 (400) and JSON (json_invalid) errors; parse without it only
      // to keep a JSON null as "no body" (reported after the header, as FastAPI orders it).
      let text: string | undefined;
      try {
        text = utf8.decode(body.raw);
      } catch {
        validateBody(any(), body.raw, body.contentType); // throws BodyDecodeError
      }
      value = parseJson(text ?? '', ['body']);
    } else value = body.raw;
  }
  if (isPlainObject(value)) checkMessages(value.messages);
  const header = validateParams(headerSchema, 'header', headers);
  if (value === undefined || value === null) fail('missing', ['body'], 'Field required');
  const inputs = schema.check(value, ['body']);
  return { appId: header[APP_ID_HEADER], inputs };
}

/** The /chat/completions request (spec 3.1, 3.4). */
export function validateCompletion(
  body: BodyInput,
  headers: Iterable<[string, string]>,
): { appId: string; inputs: CompletionInputs } {
  return validateChatRequest(completionSchema, body, headers);
}

/** Node's header object as name/value pairs (a repeated header's values joined, as Starlette's last wins is not reachable here). */
export function headerEntries(
  headers: Record<string, string | string[] | undefined>,
): [string, string][] {
  const out: [string, string][] = [];
  for (const [k, v] of Object.entries(headers)) {
    if (v === undefined) continue;
    out.push([k, Array.isArray(v) ? v[v.length - 1]! : v]);
  }
  return out;
}
