// The request a piece of work belongs to. The HTTP layer names each request (its caller's
// `X-Request-Id` when safe, else a fresh UUID) and the id travels explicitly from there: on the
// request object, in a chat run's RunContext, into the outgoing calls (LLM, plugins, knowledge)
// as `X-Request-Id` and onto the log lines written for the request as `request_id`.
//
// Not an AsyncLocalStorage: on Node 20 one enabled store turns on V8's promise hooks for every
// promise the process makes, and a streamed chat makes several per token. Measured on the chat
// bench, the store alone cost about 10 % of a token's CPU and 12 % of a stream's set-up.
import type { IncomingMessage } from 'node:http';
import { randomUUID } from 'node:crypto';

/** An incoming id is kept when it is short and made of safe characters; else a fresh UUID. */
const SAFE_ID = /^[A-Za-z0-9._:@+=/-]{1,128}$/;

export function requestIdFrom(header: string | string[] | undefined): string {
  const v = Array.isArray(header) ? header[0] : header;
  return v !== undefined && SAFE_ID.test(v) ? v : randomUUID();
}

const ID = Symbol('astron.requestId');
type Carrier = IncomingMessage & { [ID]?: string };

/** Names a request (an HTTP request, or a WebSocket's upgrade request for all its chats). */
export function setRequestId(req: IncomingMessage, id: string): void {
  (req as Carrier)[ID] = id;
}

export function requestIdOf(req: IncomingMessage): string | undefined {
  return (req as Carrier)[ID];
}

/** `X-Request-Id` for an outgoing call made while answering request `id` (none outside one). */
export function requestIdHeader(id: string | undefined): Record<string, string> {
  return id ? { 'X-Request-Id': id } : {};
}
