// The native connection handoff of SERVICE_SCHEDULING=leastconn (native/handoff.c), loaded by the
// primary (lib/supervisor/handoff-native.ts) and by a worker (lib/worker/handoff.ts). Built by the
// install script when a compiler is there; when it is not, leastconn uses node:cluster's IPC.
//
// The channel between the primary and a worker is a SOCK_SEQPACKET socketpair given to the worker
// as a stdio descriptor. Each message is Int32 words, with descriptors attached:
// - primary -> worker: one connection id per attached descriptor, in order;
// - worker -> primary: records of [kind, id, open] (HANDOFF_*), the worker's open connections
//   after it.
import { constants } from 'node:os';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from './version.js';

/** A record kind of a worker's message: served (the primary closes its copy). */
export const HANDOFF_OK = 1;
/** Not served, this worker drains (the primary hands it to another). */
export const HANDOFF_REFUSED = 2;
/** Only the count of open connections, after closes (id 0). */
export const HANDOFF_COUNT = 3;
/** Not served, not now: this worker is out of descriptors (the primary tries another). */
export const HANDOFF_RETRY = 4;
/** Errors on a channel that mean the other side is gone; any other (EAGAIN, ENOBUFS...) may pass. */
export const CHANNEL_GONE: ReadonlySet<number> = new Set(
  (['EPIPE', 'ECONNRESET', 'ENOTCONN', 'EBADF'] as const).map((c) => constants.errno[c]),
);
/** Descriptors in one message (the C side's limit). */
export const HANDOFF_BATCH = 64;
/** The descriptor number a worker finds its end of the channel at (stdio index). */
export const HANDOFF_CHANNEL_FD = 4;

export type Watch = object & { readonly __watch: unique symbol };

/** Every call returns a negative errno on failure; none throws but `watch` (bad arguments). */
export interface NativeHandoff {
  listen(family: 4 | 6, address: string, port: number, backlog: number): number;
  /** Up to `max` accepted connections; a negative errno when the first accept fails. */
  accept(fd: number, max: number): number[] | number;
  socketpair(): [number, number] | number;
  cloexec(fd: number): number;
  send(fd: number, words: Int32Array, fds: number[]): number;
  /** null: nothing waits; 0: the peer closed; < 0: errno. */
  recv(fd: number): [Int32Array, number[]] | null | number;
  close(fd: number): number;
  watch(fd: number, onReadable: (status: number) => void): Watch;
  unwatch(w: Watch): void;
  pause(w: Watch): void;
  resume(w: Watch): void;
}

let loaded: { native?: NativeHandoff; why?: string } | undefined;

/** The native module, or why it cannot be used (not built, not Linux). Loaded once. */
export function nativeHandoff(): { native?: NativeHandoff; why?: string } {
  if (loaded) return loaded;
  if (process.platform !== 'linux') return (loaded = { why: 'it is Linux only' });
  const file = join(packageRoot(), 'build', 'Release', 'handoff.node');
  try {
    // process.dlopen, not require: no module resolution for a path known in full.
    const mod = { exports: {} as NativeHandoff };
    process.dlopen(mod, file);
    loaded = { native: mod.exports };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    loaded = {
      why:
        code === 'ERR_DLOPEN_FAILED' && !existsSync(file)
          ? `${file} is not built (npm run build:native)`
          : `${file} does not load: ${(err as Error).message}`,
    };
  }
  return loaded;
}
