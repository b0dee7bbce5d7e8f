// What the HTTP layer is given. Built once per worker (lib/worker/), or by a test.
import type { Settings } from '../config/settings.js';
import { SidGenerator } from '../agent/sid.js';
import type { ChatService } from '../agent/service.js';
import type { CustomDeps } from '../agent/custom.js';
import type { BotStore } from '../store/types.js';
import type { Logger } from '../telemetry/logger.js';
import type { WorkerMetrics } from '../telemetry/metrics.js';

export interface Lifecycle {
  /** Set once the worker drains: new responses carry `Connection: close`. */
  draining: boolean;
  /** Set when the whole service stops: /health answers 503 (not during a rolling reload). */
  stopping: boolean;
}

export interface AppDeps {
  settings: Settings;
  logger: Logger;
  workerId: number;
  startedAt: number;
  lifecycle: Lifecycle;
  /** Test-only routes under /__test (AGENT_TEST_HOOKS=1). */
  testHooks?: boolean;
  /** Request/WebSocket/chat series and the cluster scrape; absent when metrics are off. */
  metrics?: WorkerMetrics;
  /** Bot configs (MySQL or SQLite, Redis cache in front when configured); the bot-config routes are mounted when set. */
  botStore?: BotStore;
  /** Per-request trace ids (spec 11.1); one generator per worker. */
  sid?: SidGenerator;
  /** The chat service (LLM client, key resolver, knowledge); the chat route and WS chat need it. */
  chat?: ChatService;
  /** The workflow agent's plugins and knowledge client; with `chat`, the custom route is mounted. */
  custom?: CustomDeps;
  /** The whole service's requests in flight (asked of the primary); undefined if it did not answer. */
  backlog?: () => Promise<{ inflight: number; workers: number } | undefined>;
}

/**
 * The worker's sid generator; a test that builds an app without one gets a generator of its
 * own (loopback address), one per route module.
 */
export function sidsFor(deps: AppDeps): SidGenerator {
  return (
    deps.sid ??
    new SidGenerator({
      sub: deps.settings.SERVICE_SUB,
      location: deps.settings.SERVICE_LOCATION || 'src',
      port: deps.settings.SERVICE_PORT,
      ip: '127.0.0.1',
    })
  );
}
