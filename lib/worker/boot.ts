// A worker's life: settings -> dependencies -> app -> listen -> ready; heartbeat; drain on
// request (or on SIGTERM) and exit.
import cluster from 'node:cluster';
import { randomUUID } from 'node:crypto';
import { validateSettings } from '../config/settings.js';
import { createHttpService } from '../http/server.js';
import type { AppDeps } from '../http/deps.js';
import {
  drainDeadlines,
  isPrimaryMessage,
  WS_CLOSE_GOING_AWAY,
  WS_CLOSE_SERVICE_RESTART,
  type DrainReason,
  type HandoffMessage,
  type WorkerToPrimary,
} from '../ipc.js';
import { createLogger } from '../telemetry/logger.js';
import { detectLocalIp } from '../telemetry/host.js';
import { SidGenerator } from '../agent/sid.js';
import { openBotStore } from '../store/index.js';
import { chatServiceFrom } from '../agent/service.js';
import { customDepsFrom } from '../agent/custom.js';
import { LlmClient } from '../agent/llm.js';
import { pluginEndpointsFrom } from '../agent/plugins/index.js';
import { openApiReactSelector } from '../agent/runners/react.js';
import { createWorkerMetrics, processChannel } from '../telemetry/metrics.js';
import { acceptFromPrimary } from './handoff.js';

function send(msg: WorkerToPrimary | HandoffMessage): void {
  if (process.send && process.connected) process.send(msg);
}

export async function bootWorker(): Promise<void> {
  // Ctrl-C reaches the whole process group, this worker too, whether it is starting, a spare or
  // serving: the primary coordinates the stop.
  process.on('SIGINT', () => {});
  if (process.env.AGENT_TEST_HOOKS === '1' && process.env.AGENT_TEST_BOOT_FAIL === '1') {
    throw new Error('AGENT_TEST_BOOT_FAIL=1: this worker refuses to boot (test hook)');
  }
  const settings = validateSettings(process.env);
  const workerId = cluster.worker?.id ?? 0;
  const logger = createLogger({
    role: 'worker',
    workerId,
    level: settings.LOG_LEVEL,
    format: settings.LOG_FORMAT,
  });
  const deps: AppDeps = {
    settings,
    logger,
    workerId,
    startedAt: Date.now(),
    lifecycle: { draining: false, stopping: false },
    testHooks: process.env.AGENT_TEST_HOOKS === '1',
  };
  // Metrics: one registry per worker; the OTLP SDK is loaded only when the push is on.
  const push = settings.UPLOAD_METRICS && settings.OTLP_ENABLE;
  if (settings.METRICS_ENABLE || push) {
    deps.metrics = createWorkerMetrics({
      channel: settings.METRICS_ENABLE ? processChannel() : undefined,
      scrapeTimeoutMs: settings.METRICS_SCRAPE_TIMEOUT,
      awaitSink: push,
    });
  }
  let otlp: Promise<{ shutdown(ms: number): Promise<void> } | undefined> | undefined;
  // One service.instance.id for this worker's metrics push and trace export.
  const instanceId = randomUUID();
  // Traces: the SDK is imported only when on, and before listen, so that every request is traced.
  let tracing: { shutdown(ms: number): Promise<void> } | undefined;
  if (settings.OTEL_TRACES_EXPORTER === 'otlp') {
    try {
      const { startTracing } = await import('../telemetry/otlp-traces.js');
      tracing = await startTracing({ settings, logger, instanceId });
    } catch (err) {
      logger.error('OTLP trace export not started', { err });
    }
  }
  if (deps.testHooks) logger.warn('AGENT_TEST_HOOKS=1: test-only routes under /__test are on');
  // Bot-config storage: one store (pool / file / Redis client) per worker, built before listen.
  const [botStore, localIp] = await Promise.all([openBotStore(settings, logger), detectLocalIp()]);
  deps.botStore = botStore;
  deps.sid = new SidGenerator({
    sub: settings.SERVICE_SUB,
    location: settings.SERVICE_LOCATION || 'src',
    port: settings.SERVICE_PORT,
    ip: localIp,
  });
  logger.debug('bot config store ready', { store: botStore.kind });
  // Chat: the LLM client (connection reuse per upstream), key resolver and knowledge client.
  // One LLM client for both chat endpoints; bots with plugins go to the ReAct runner.
  const llm = new LlmClient({
    timeoutMs: settings.LLM_TIMEOUT,
    maxRetries: settings.LLM_MAX_RETRIES,
  });
  deps.chat = chatServiceFrom(settings, {
    botStore,
    logger,
    metrics: deps.metrics,
    llm,
    selectRunner: openApiReactSelector(pluginEndpointsFrom(settings)),
  });
  deps.custom = customDepsFrom(settings, { llm, keys: deps.chat.keys });
  logger.debug('chat service ready', { keys: deps.chat.keys.kind });
  const http = createHttpService(deps);

  // A spare (warm standby) worker stops here, fully initialised, until the primary needs it:
  // replacing a crashed worker then costs a listen, not a Node start-up and its imports.
  if (process.env.AGENT_WORKER_SPARE === '1') {
    await new Promise<void>((resolve) => {
      const onMessage = (m: unknown) => {
        if (!isPrimaryMessage(m) || m.t !== 'activate') return;
        process.off('message', onMessage);
        resolve();
      };
      process.on('message', onMessage);
      send({ t: 'standby' });
    });
    deps.startedAt = Date.now();
  }

  if (settings.SERVICE_SCHEDULING === 'leastconn') {
    // The primary listens and hands connections over (lib/supervisor/dispatch.ts).
    acceptFromPrimary(http.server, {
      draining: () => deps.lifecycle.draining,
      send,
      log: (message, fields) => logger.warn(message, fields),
    });
  } else {
    await new Promise<void>((resolve, reject) => {
      http.server.once('error', reject);
      http.server.listen(settings.SERVICE_PORT, settings.SERVICE_HOST, () => {
        http.server.off('error', reject);
        resolve();
      });
    });
  }
  http.server.on('error', (err) => logger.error('server error', { err }));

  // Heartbeat from the main event loop: a blocked loop goes silent and the primary notices.
  const beatEvery = Math.max(200, Math.min(1000, Math.floor(settings.SERVICE_WORKER_TIMEOUT / 4)));
  const heartbeat = () => {
    const now = http.inFlight();
    send({
      t: 'heartbeat',
      requests: http.requestCount(),
      rss: process.memoryUsage.rss(),
      inflight: now.requests,
      streams: now.streams,
    });
  };
  const beat = setInterval(heartbeat, beatEvery);
  beat.unref();
  // Reaching the request limit is reported at once (the primary decides on the recycling).
  const maxRequests = Number(process.env.AGENT_WORKER_MAX_REQUESTS) || 0;
  if (maxRequests > 0) http.onRequestCount(maxRequests, heartbeat);

  let draining: Promise<void> | undefined;
  const drain = (reason: DrainReason, timeoutMs: number): Promise<void> => {
    draining ??= (async () => {
      deps.lifecycle.stopping = reason === 'stop';
      logger.info('draining', { reason });
      const code = reason === 'stop' ? WS_CLOSE_GOING_AWAY : WS_CLOSE_SERVICE_RESTART;
      // Requests get the deadline minus a cleanup margin, so that a drain that ends in time also
      // closes the store, delivers its final metrics and flushes OTLP before the primary's kill.
      const { requestsMs, cleanupMs } = drainDeadlines(timeoutMs);
      const clean = await http.drain(code, requestsMs);
      const cleanupEnd = Date.now() + cleanupMs;
      const left = () => Math.max(0, cleanupEnd - Date.now());
      // Last values to the primary first (cluster counters stay exact; it takes a millisecond).
      await deps.metrics?.sendFinal(Math.min(1000, left()));
      // Connections to MySQL/Redis and the SQLite file close after the last request is answered.
      const closeStore = botStore
        .close()
        .catch((err: unknown) => logger.warn('bot config store did not close cleanly', { err }));
      const flushOtlp = otlp?.then((o) => o?.shutdown(left()));
      const flushTraces = tracing?.shutdown(left());
      await Promise.race([
        Promise.allSettled([closeStore, flushOtlp, flushTraces]),
        new Promise((r) => setTimeout(r, left()).unref()),
      ]);
      logger.info(clean ? 'drained, exiting' : 'drain deadline reached, exiting', { reason });
      clearInterval(beat);
      process.exit(clean ? 0 : 1);
    })();
    return draining;
  };

  const backlogWaiters = new Map<number, (r: { inflight: number; workers: number }) => void>();
  let backlogId = 0;
  deps.backlog = () =>
    new Promise((resolve) => {
      const id = ++backlogId;
      const t = setTimeout(() => {
        backlogWaiters.delete(id);
        resolve(undefined);
      }, 500);
      backlogWaiters.set(id, (r) => {
        clearTimeout(t);
        resolve(r);
      });
      send({ t: 'backlog', id });
    });
  process.on('message', (m: unknown) => {
    if (!isPrimaryMessage(m)) return;
    if (m.t === 'drain') void drain(m.reason, m.timeoutMs);
    else if (m.t === 'backlog-result') {
      backlogWaiters.get(m.id)?.(m);
      backlogWaiters.delete(m.id);
    }
  });
  // systemd's control-group kill and `kill <worker>` send SIGTERM to workers directly.
  process.on('SIGTERM', () => void drain('stop', settings.SERVICE_GRACEFUL_TIMEOUT));

  // What this boot cost, from the process's start (the bench reads it at LOG_LEVEL=debug).
  const cpu = process.cpuUsage();
  logger.debug('worker booted', {
    boot_ms: Math.round(performance.now()),
    cpu_ms: Math.round((cpu.user + cpu.system) / 1000),
  });
  send({ t: 'ready', host: settings.SERVICE_HOST, port: settings.SERVICE_PORT });
  // The metrics registry (prom-client) and the OTLP SDK load after ready: out of the start-up path.
  const metrics = deps.metrics;
  void metrics?.init();
  if (push && metrics) {
    otlp = import('../telemetry/otlp.js').then(
      (m) => m.startOtlp({ settings, metrics, logger, instanceId }),
      (err: unknown) => {
        metrics.setSink(undefined);
        logger.error('OTLP metrics push not started', { err });
        return undefined;
      },
    );
  }
}
