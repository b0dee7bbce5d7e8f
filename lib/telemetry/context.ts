// The request a piece of work belongs to, without threading it through every call: the HTTP
// layer runs each request inside this context, the logger stamps `request_id` on every line
// written within it, and the outgoing calls (LLM, plugins, knowledge, app auth) forward it as
// `X-Request-Id`.
import { AsyncLocalStorage } from 'node:async_hooks';
import { randomUUID } from 'node:crypto';

export interface RequestContext {
  requestId: string;
}

export const requestContext = new AsyncLocalStorage<RequestContext>();

/** An incoming id is kept when it is short and made of safe characters; else a fresh UUID. */
const SAFE_ID = /^[A-Za-z0-9._:@+=/-]{1,128}$/;

export function requestIdFrom(header: string | string[] | undefined): string {
  const v = Array.isArray(header) ? header[0] : header;
  return v !== undefined && SAFE_ID.test(v) ? v : randomUUID();
}

export function currentRequestId(): string | undefined {
  return requestContext.getStore()?.requestId;
}

/** `X-Request-Id` for an outgoing call made while answering a request (none outside one). */
export function requestIdHeader(): Record<string, string> {
  const id = currentRequestId();
  return id ? { 'X-Request-Id': id } : {};
}
