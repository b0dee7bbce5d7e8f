// What the HTTP layer is given. Built once per worker (lib/worker/), or by a test.
import type { Settings } from '../config/settings.js';
import type { Logger } from '../telemetry/logger.js';

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
}
