// Keep-alive while a chat run is silent (a knowledge query, a tool call, a slow model): after
// SERVICE_SSE_KEEPALIVE_INTERVAL without output, an SSE stream gets a comment line and a
// WebSocket a ping, so that a proxy's read timeout (60 s is common) does not cut the run. Kept
// apart from stream.ts and ws-chat.ts: they only wrap their emit with `touch()`.
import type { Response } from 'express';
import type { WebSocket } from 'ws';

/** An SSE comment: every client ignores it (the EventSource standard; the openai SDK does). */
export const SSE_KEEPALIVE = ': keep-alive\n\n';

export interface IdleTimer {
  /** Output was sent: the silence starts again. */
  touch(): void;
  stop(): void;
}

/** Calls `onIdle` after `ms` without a touch, and again every `ms` while the silence lasts. */
export function idleTimer(ms: number, onIdle: () => void): IdleTimer {
  const timer: NodeJS.Timeout = setTimeout(() => {
    onIdle();
    timer.refresh(); // re-arms the same timer: nothing is allocated per tick
  }, ms).unref();
  return { touch: () => timer.refresh(), stop: () => clearTimeout(timer) };
}

/** Wraps an emitter so that every chunk it sends resets the timer. */
export function touching<A extends unknown[], R>(
  timer: IdleTimer | undefined,
  emit: (...a: A) => R,
): (...a: A) => R {
  if (!timer) return emit;
  return (...a) => {
    timer.touch();
    return emit(...a);
  };
}

/** The SSE keep-alive of a response; undefined when `ms` is 0 (off). */
export function sseKeepAlive(res: Response, ms: number): IdleTimer | undefined {
  if (ms <= 0) return undefined;
  return idleTimer(ms, () => {
    // A full socket buffer means the stream is not idle, only slow to drain: write nothing.
    if (!res.destroyed && !res.writableEnded && !res.writableNeedDrain) res.write(SSE_KEEPALIVE);
  });
}

/** The WebSocket keep-alive of a running chat: a ping frame; undefined when `ms` is 0. */
export function wsKeepAlive(ws: WebSocket, ms: number): IdleTimer | undefined {
  if (ms <= 0) return undefined;
  return idleTimer(ms, () => {
    if (ws.readyState === ws.OPEN) ws.ping();
  });
}
