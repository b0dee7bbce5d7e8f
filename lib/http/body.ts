// Reading a request as FastAPI reads it: the raw body (up to SERVICE_MAX_BODY_SIZE, else 413
// from the error handler), its media type, UTF-8 and JSON decoding, and the header values. The
// schemas that check the decoded value live in lib/schema/; the domain's request checks in
// lib/agent/ receive what decodeBody gives, so they never parse JSON or UTF-8 themselves.
import express, { type RequestHandler, type Response } from 'express';
import { validationBody } from '../agent/chunks.js';
import { parseJson } from '../schema/json.js';
import { fail, RequestValidationError, type Schema } from '../schema/schema.js';

/** The body as bytes, whatever the Content-Type; mounted per route (POST/PUT), never globally. */
export function rawBody(limit: number): RequestHandler {
  return express.raw({ type: () => true, limit });
}

/** FastAPI reads a body as JSON when there is no Content-Type or it is application/json or +json. */
export function isJsonContentType(contentType: string | undefined): boolean {
  if (contentType === undefined || contentType.trim() === '') return true;
  const media = contentType.split(';', 1)[0]!.trim().toLowerCase();
  const parts = media.split('/');
  if (parts.length !== 2) return false; // Python's email parser reads it as text/plain
  return parts[0] === 'application' && (parts[1] === 'json' || parts[1]!.endsWith('+json'));
}

/** The body could not be read as text: FastAPI answers HTTP 400 with this detail. */
export class BodyDecodeError extends Error {
  readonly status = 400;
  constructor() {
    super('There was an error parsing the body');
    this.name = 'BodyDecodeError';
  }
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * The body's value: undefined when there is none; raw bytes for a non-JSON Content-Type (they
 * fail any model); else the parsed JSON (null stays null). Malformed JSON is `json_invalid` at
 * its offset; bytes that are not UTF-8 throw BodyDecodeError (HTTP 400).
 */
export function decodeBody(body: Buffer | undefined, contentType: string | undefined): unknown {
  if (body === undefined || body.length === 0) return undefined;
  if (!isJsonContentType(contentType)) return body;
  let text: string;
  try {
    text = utf8.decode(body); // drops a UTF-8 BOM, as Python's json.loads(bytes) does
  } catch {
    throw new BodyDecodeError();
  }
  return parseJson(text, ['body']);
}

/**
 * Validates a request body against a schema as FastAPI does for a single body model: no body
 * (or JSON null) is `missing, body`; otherwise the decoded value (see decodeBody) is checked.
 */
export function validateBody<T>(
  schema: Schema<T>,
  body: Buffer | undefined,
  contentType: string | undefined,
): T {
  const value = decodeBody(body, contentType);
  if (value === undefined || value === null) fail('missing', ['body'], 'Field required');
  return schema.check(value, ['body']);
}

/**
 * Node's header object as name/value pairs. Node has already joined most repeated headers with
 * ", " (Starlette's "last value wins" cannot be had for those); of the few it keeps as an array,
 * the last value counts.
 */
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

/**
 * Answers a request that could not be read: a validation issue with the 40002 body (HTTP 200,
 * spec 3.4), an undecodable body with FastAPI's HTTP 400. False for any other error.
 */
export function answerUnreadable(res: Response, err: unknown, sid: string): boolean {
  if (err instanceof RequestValidationError) {
    res.status(200).json(validationBody(err, sid));
    return true;
  }
  if (err instanceof BodyDecodeError) {
    res.status(err.status).json({ detail: err.message });
    return true;
  }
  return false;
}
