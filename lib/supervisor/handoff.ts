// How SERVICE_SCHEDULING=leastconn's primary moves an accepted connection to a worker: the
// dispatcher (dispatch.ts) decides where, a transport carries it. Two transports:
// - native (handoff-native.ts): batches of descriptors over a socketpair per worker, from
//   native/handoff.c; the default where it is built;
// - ipc (handoff-ipc.ts): a net.Socket per connection over node:cluster's IPC, one message each;
//   about four times the primary's CPU per connection, and works everywhere.
import type { Worker } from 'node:cluster';
import type { Logger } from '../telemetry/logger.js';

export interface TransportOptions {
  log: Logger;
  host: string;
  port: number;
  guard: <A extends unknown[]>(where: string, fn: (...args: A) => void) => (...args: A) => void;
}

/** What a transport tells the dispatcher. */
export interface HandoffEvents<C> {
  /** A connection accepted from the listening socket. */
  connection(conn: C): void;
  /**
   * A worker's answer to a handoff, with its open count: served; refused (it drains); or not
   * now (out of descriptors: another worker takes it).
   */
  ack(workerId: number, id: number, answer: HandoffAnswer, open: number): void;
  /** A worker's count of open connections, after closes. */
  count(workerId: number, open: number): void;
}

export type HandoffAnswer = 'ok' | 'refused' | 'retry';

/** Why a handoff could not be sent: the worker's channel is gone, or full for now. */
export type SendFailure = 'gone' | 'full';

export interface Transport<C> {
  readonly kind: 'native' | 'ipc';
  /** Binds the port; rejects with the system's error (EADDRINUSE, EACCES...). */
  listen(events: HandoffEvents<C>): Promise<void>;
  /** Extra options for a fork, and what to do once it is forked (or failed: undefined). */
  prepareFork(): { env: Record<string, string>; stdio?: unknown[]; forked(w?: Worker): void };
  /** A cluster message that belongs to the transport (the IPC acks); false otherwise. */
  onMessage(worker: Worker, msg: unknown): boolean;
  /**
   * Hands `conn` to `worker` under `id`: now or, batched, before this tick ends. `failed` is
   * called (never synchronously) when it cannot be sent.
   */
  send(worker: Worker, id: number, conn: C, failed: (why: SendFailure) => void): void;
  /** Closes the primary's copy of a connection (handed over, or given up). */
  release(conn: C): void;
  /** The client already went away (nothing to hand over). */
  isClosed(conn: C): boolean;
  /** A worker process is gone: its channel closes. */
  gone(workerId: number): void;
  /** Stops accepting. */
  close(): void;
}
