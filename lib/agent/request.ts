// The chat request (spec 3.1) and its validation (spec 3.4), with pydantic's vocabulary from
// lib/schema/. Transport-neutral: the HTTP routes (which decode the body first, lib/http/body.ts)
// and the WebSocket protocol both hand over a decoded body and the header values.
import { isPlainObject } from '../schema/object.js';
import {
  bool,
  fail,
  list,
  model,
  nullable,
  optional,
  str,
  validateParams,
  type Infer,
  type Schema,
} from '../schema/schema.js';

export const APP_ID_HEADER = 'x-consumer-username';

/** A message of `messages` (both chat requests). */
export const messageSchema = model({ role: str(), content: str() });

/** `meta_data` (both chat requests). */
export const metaDataSchema = model({
  caller: optional(str(), () => 'chat_open_api'),
  caller_sid: optional(str(), () => ''),
});

/** `meta_data` when the request has none. */
export const defaultMetaData = () => ({ caller: 'chat_open_api', caller_sid: '' });

/**
 * OpenAI's `stream_options` (new): `include_usage: true` ends a stream with a usage chunk.
 * Shared by both chat requests.
 */
export const streamOptionsField = optional(
  nullable(model({ include_usage: optional(bool(), () => false) })),
  () => null,
);

/** `CompletionInputs` (spec 3.1): unknown fields ignored. */
export const completionSchema = model({
  // An omitted bot_id defaults to "" without validation (then 40001 later).
  bot_id: optional(str({ minLength: 1, maxLength: 64 }), () => ''),
  uid: optional(str({ maxLength: 64 }), () => ''),
  messages: list(messageSchema),
  stream: optional(bool(), () => false),
  stream_options: streamOptionsField,
  meta_data: optional(metaDataSchema, defaultMetaData),
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

/**
 * A request body as the transport decoded it: the JSON value, raw bytes when the HTTP
 * Content-Type was not JSON (they fail the model), undefined when there was none.
 */
export type BodyInput = { parsed: unknown };

/**
 * Validates a chat-style request in the original's order (after the transport's JSON decoding):
 * the message-list checks, the header, then the body fields against `schema`. Throws
 * RequestValidationError (40002). Shared by /chat/completions and /custom/chat/completions.
 */
export function validateChatRequest<T>(
  schema: Schema<T>,
  body: BodyInput,
  headers: Iterable<[string, string]>,
): { appId: string; inputs: T } {
  const value = body.parsed;
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
