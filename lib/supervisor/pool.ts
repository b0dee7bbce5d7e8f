// The worker pool: one state machine for spawn, ready, restart, drain, reload, scale, stop.
// Signals and file events only enqueue commands (see signals.ts, watch.ts); this is the one
// place where the pool's state changes.
import cluster, { type Worker } from 'node:cluster';
import { EventEmitter } from 'node:events';
import { fileURLToPath } from 'node:url';
import type { LoadedConfig } from '../config/load.js';
import { SettingsError, type Settings } from '../config/settings.js';
import { isWorkerMessage, type DrainReason, type PrimaryToWorker } from '../ipc.js';
import type { Logger } from '../telemetry/logger.js';
import { CrashTracker, describeExit, type RestartPolicy } from './policy.js';

export type Command =
  | { kind: 'stop'; force?: boolean; signal?: string }
  | { kind: 'reload'; reason: string }
  | { kind: 'scale'; delta: 1 | -1 }
  | { kind: 'recycle'; id: number; reason: 'memory' | 'requests' };

/** Why a worker was (re)started: decides what a failure to boot means. */
type Purpose = 'boot' | 'replace' | 'reload' | 'scale' | 'recycle' | 'hung' | 'spare';
/** A stop signal this soon after the first is the same stop, repeated by a wrapper. */
export const REPEATED_SIGNAL_MS = 500;
/** Purposes a warm spare may serve (a reload needs the new code, so it always forks). */
const SPARE_SERVES: ReadonlySet<Purpose> = new Set(['replace', 'hung', 'scale', 'recycle']);
export type RestartReason = 'crash' | 'hung' | 'memory' | 'requests' | 'reload';

interface Slot {
  worker: Worker;
  id: number;
  pid: number;
  purpose: Purpose;
  /** standby: a spare, initialised but not listening and not counted, until activated. */
  state: 'starting' | 'standby' | 'ready' | 'draining';
  /** The configuration generation it was forked with (a reload starts a new one). */
  generation: number;
  forkedAt: number;
  readyAt: number;
  lastBeat: number;
  requests: number;
  rss: number;
  /** Requests after which this worker is recycled (0 = never); jittered per worker. */
  maxRequests: number;
  /** Set when the pool itself ended this worker: its exit is expected, not a crash. */
  retired?: DrainReason | 'killed' | 'hung';
  recycling?: boolean;
  bootError?: string;
  readyTimer?: NodeJS.Timeout;
  killTimer?: NodeJS.Timeout;
  waiters: ((r: 'ready' | 'failed') => void)[];
}

export interface PoolOptions {
  logger: Logger;
  config: LoadedConfig;
  /** Re-reads config.env with the original environment (for reloads); throws SettingsError. */
  reloadConfig: () => LoadedConfig;
  /** Ends the primary. */
  exit: (code: number) => void;
  random?: () => number;
}

export interface PoolEvents {
  ready: [count: number];
  reloading: [];
  reloaded: [result: 'ok' | 'aborted' | 'invalid-config', durationMs: number];
  stopping: [];
  restart: [reason: RestartReason];
  workers: [ready: number];
}

const workerExec = fileURLToPath(
  new URL(`../worker/main${import.meta.url.endsWith('.ts') ? '.ts' : '.js'}`, import.meta.url),
);

/** Grace between SIGTERM and SIGKILL for a worker the pool kills (hung, not ready in time). */
const KILL_GRACE_MS = 2000;

export class Pool extends EventEmitter<PoolEvents> {
  private readonly slots = new Map<number, Slot>();
  private readonly log: Logger;
  private settings: Settings;
  private env: Record<string, string>;
  private desired: number;
  private phase: 'booting' | 'running' | 'stopping' = 'booting';
  private exitCode = 0;
  /** When the stop began (performance.now()). */
  private stopAt = 0;
  private readonly queue: Command[] = [];
  private running = false;
  private reloadQueued = false;
  private crashes: CrashTracker;
  private readonly restartTimers = new Set<NodeJS.Timeout>();
  private hungTimer?: NodeJS.Timeout;
  private stopTimer?: NodeJS.Timeout;
  private readonly random: () => number;
  private generation = 0;
  /** Spares that died or failed to boot since the last reload; past 3, no more spares. */
  private spareFailures = 0;
  private spareTimer?: NodeJS.Timeout;

  constructor(private readonly opts: PoolOptions) {
    super();
    this.log = opts.logger;
    this.settings = opts.config.settings;
    this.env = opts.config.mergedEnv;
    this.desired = this.settings.SERVICE_WORKERS;
    this.random = opts.random ?? Math.random;
    this.crashes = new CrashTracker(this.policy(), this.random);
  }

  private policy(): RestartPolicy {
    const s = this.settings;
    return {
      backoffBaseMs: s.SERVICE_RESTART_BACKOFF_BASE,
      backoffMaxMs: s.SERVICE_RESTART_BACKOFF_MAX,
      stableMs: s.SERVICE_RESTART_STABLE,
      budget: s.SERVICE_CRASH_BUDGET,
      windowMs: s.SERVICE_CRASH_WINDOW,
    };
  }

  // ---- public -------------------------------------------------------------------------------

  start(): void {
    cluster.schedulingPolicy =
      this.settings.SERVICE_SCHEDULING === 'rr' ? cluster.SCHED_RR : cluster.SCHED_NONE;
    cluster.setupPrimary({ exec: workerExec });
    cluster.on('message', (worker, msg) => this.onMessage(worker, msg));
    cluster.on('exit', (worker, code, signal) => this.onExit(worker, code, signal));
    for (let i = 0; i < this.desired; i++) this.spawn('boot');
    this.hungTimer = setInterval(() => this.checkHeartbeats(), 250);
    this.hungTimer.unref();
  }

  /** Signals and watchers call this; stop is applied at once, the rest in order. */
  enqueue(cmd: Command): void {
    if (cmd.kind === 'stop') {
      this.stop(cmd.force === true, cmd.signal);
      return;
    }
    if (this.phase === 'stopping') return;
    if (
      cmd.kind === 'reload' &&
      (this.reloadQueued || this.queue.some((c) => c.kind === 'reload'))
    ) {
      this.log.info('reload already queued; this request joins it', { reason: cmd.reason });
      return;
    }
    if (cmd.kind === 'reload' && this.reloading) {
      this.reloadQueued = true;
      this.log.info('reload in progress; one more queued', { reason: cmd.reason });
      return;
    }
    this.queue.push(cmd);
    void this.drainQueue();
  }

  /** A method, not a field read: TypeScript must not narrow it across awaits. */
  private stopping(): boolean {
    return this.phase === 'stopping';
  }

  readyCount(): number {
    let n = 0;
    for (const s of this.slots.values()) if (s.state === 'ready') n++;
    return n;
  }

  /** Live workers (not draining) with their pids, for status and tests. */
  workers(): { id: number; pid: number; state: string }[] {
    return [...this.slots.values()].map((s) => ({ id: s.id, pid: s.pid, state: s.state }));
  }

  // ---- commands -----------------------------------------------------------------------------

  private reloading = false;

  private async drainQueue(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      while (this.queue.length > 0 && this.phase !== 'stopping') {
        // Start-up must finish before anything else is applied.
        if (this.phase === 'booting') await this.until(() => this.phase !== 'booting');
        const cmd = this.queue.shift()!;
        if (cmd.kind === 'reload') {
          do {
            this.reloadQueued = false;
            await this.reload(cmd.reason);
          } while (this.reloadQueued && this.phase === 'running');
        } else if (cmd.kind === 'scale') await this.scale(cmd.delta);
        else if (cmd.kind === 'recycle') await this.recycle(cmd.id, cmd.reason);
      }
    } finally {
      this.running = false;
    }
  }

  private until(cond: () => boolean): Promise<void> {
    return new Promise((resolve) => {
      const t = setInterval(() => {
        if (cond()) {
          clearInterval(t);
          resolve();
        }
      }, 20);
    });
  }

  private async reload(reason: string): Promise<void> {
    const started = Date.now();
    this.reloading = true;
    this.emit('reloading');
    try {
      let next: LoadedConfig;
      try {
        next = this.opts.reloadConfig();
      } catch (err) {
        if (!(err instanceof SettingsError)) throw err;
        for (const p of err.problems) this.log.error(p);
        this.log.error('reload aborted: invalid configuration; the running workers are untouched');
        this.emit('reloaded', 'invalid-config', Date.now() - started);
        return;
      }
      for (const n of next.notices) this.log.warn(n);
      this.reportLiveChanges(next.settings);
      this.log.info('rolling reload started', { reason, workers: this.liveCount() });
      // The listen address and the scheduling policy stay those of the running primary.
      const fixed = {
        SERVICE_HOST: this.settings.SERVICE_HOST,
        SERVICE_PORT: this.settings.SERVICE_PORT,
        SERVICE_SCHEDULING: this.settings.SERVICE_SCHEDULING,
      };
      this.env = {
        ...next.mergedEnv,
        ...Object.fromEntries(Object.entries(fixed).map(([k, v]) => [k, String(v)])),
      };
      this.settings = { ...next.settings, ...fixed };
      this.crashes = new CrashTracker(this.policy(), this.random);
      this.generation++;
      this.spareFailures = 0;
      // Spares run the old code and settings: end them; new ones follow the reload.
      for (const s of this.slots.values())
        if (s.purpose === 'spare') this.kill(s, 'killed', 'SIGTERM');

      const old = [...this.slots.values()].filter(
        (s) => s.state !== 'draining' && !s.retired && s.purpose !== 'spare',
      );
      for (const prev of old) {
        if (this.phase === 'stopping') return;
        if (!this.slots.has(prev.id) || prev.retired) continue;
        const fresh = this.spawn('reload');
        const result = await this.waitReady(fresh);
        if (this.stopping()) return;
        if (result !== 'ready') {
          this.log.error(
            'reload aborted: a new worker did not become ready; the old workers keep serving',
            {
              worker: fresh.id,
              error: fresh.bootError,
            },
          );
          this.emit('reloaded', 'aborted', Date.now() - started);
          return;
        }
        this.emit('restart', 'reload');
        this.retire(prev, 'reload');
      }
      // A changed SERVICE_WORKERS applies once every worker runs the new code.
      const target = next.settings.SERVICE_WORKERS;
      while (this.desired < target && this.phase === 'running') await this.scale(1);
      while (this.desired > target && this.desired > 1 && this.phase === 'running')
        await this.scale(-1);
      const ms = Date.now() - started;
      this.log.info('rolling reload done', { workers: this.readyCount(), duration_ms: ms });
      this.emit('reloaded', 'ok', ms);
    } finally {
      this.reloading = false;
      this.ensureSpares();
    }
  }

  private reportLiveChanges(next: Settings): void {
    for (const key of ['SERVICE_HOST', 'SERVICE_PORT', 'SERVICE_SCHEDULING'] as const) {
      if (next[key] !== this.settings[key]) {
        this.log.warn(
          `${key} changed (${String(this.settings[key])} -> ${String(next[key])}); it cannot change on a reload: restart the service to apply it`,
        );
      }
    }
    if (next.SERVICE_WORKERS !== this.desired) {
      this.log.info('SERVICE_WORKERS changed on reload', {
        from: this.desired,
        to: next.SERVICE_WORKERS,
      });
    }
  }

  private async scale(delta: 1 | -1): Promise<void> {
    if (delta > 0) {
      this.desired++;
      this.log.info('scaling up', { workers: this.desired });
      const fresh = this.spawn('scale');
      if ((await this.waitReady(fresh)) !== 'ready') {
        this.desired--;
        this.log.error('scale up failed: the new worker did not become ready', {
          error: fresh.bootError,
        });
      }
      this.emit('workers', this.readyCount());
      return;
    }
    const live = [...this.slots.values()].filter((s) => s.state === 'ready' && !s.retired);
    if (this.desired <= 1 || live.length <= 1) {
      this.log.warn('scale down refused: at least one worker must stay');
      return;
    }
    this.desired--;
    const victim = live.reduce((a, b) => (b.forkedAt > a.forkedAt ? b : a));
    this.log.info('scaling down', { workers: this.desired, worker: victim.id });
    this.retire(victim, 'scale');
    this.emit('workers', this.readyCount());
  }

  private async recycle(id: number, reason: 'memory' | 'requests'): Promise<void> {
    const prev = this.slots.get(id);
    if (!prev || prev.state !== 'ready' || prev.retired) return;
    this.log.info('recycling worker', {
      worker: id,
      worker_pid: prev.pid,
      reason,
      requests: prev.requests,
      rss_mb: Math.round(prev.rss / 1048576),
    });
    const fresh = this.spawn('recycle');
    if ((await this.waitReady(fresh)) !== 'ready') {
      prev.recycling = false;
      this.log.error('recycle aborted: the replacement did not become ready', { worker: id });
      return;
    }
    this.emit('restart', reason);
    this.retire(prev, 'recycle');
  }

  private stop(force: boolean, signal?: string): void {
    if (this.phase === 'stopping') {
      // A wrapper (npm/npx forwarding the Ctrl-C or SIGTERM its process group got, systemd's
      // KillMode=control-group) repeats the signal within milliseconds: that is still one stop.
      if (!force && signal && performance.now() - this.stopAt < REPEATED_SIGNAL_MS) {
        this.log.info(
          `repeated stop signal within ${REPEATED_SIGNAL_MS} ms ignored (a wrapper forwarding it); a later one forces a fast stop`,
          { signal },
        );
        return;
      }
      if (force || signal) {
        this.log.warn('second stop signal: forcing a fast stop', { signal });
        this.exitCode = this.exitCode || 1;
        for (const s of this.slots.values()) s.worker.process.kill('SIGKILL');
        this.finishIfEmpty();
      }
      return;
    }
    this.phase = 'stopping';
    this.stopAt = performance.now();
    this.emit('stopping');
    this.log.info('stopping: draining workers', {
      signal,
      timeout_ms: this.settings.SERVICE_GRACEFUL_TIMEOUT,
    });
    this.clearTimers();
    for (const s of this.slots.values()) {
      if (s.state === 'starting' || s.state === 'standby') this.kill(s, 'killed', 'SIGKILL');
      else this.retire(s, 'stop');
    }
    this.stopTimer = setTimeout(() => {
      this.log.error('graceful timeout reached: killing the workers still running', {
        workers: [...this.slots.keys()],
      });
      this.exitCode = this.exitCode || 1;
      for (const s of this.slots.values()) s.worker.process.kill('SIGKILL');
    }, this.settings.SERVICE_GRACEFUL_TIMEOUT);
    this.stopTimer.unref();
    this.finishIfEmpty();
  }

  /** Ends everything with a given exit code (boot failure: 3, crash budget: 4). */
  private halt(code: number, message: string, graceful: boolean): void {
    if (this.phase === 'stopping') return;
    this.log.error(message);
    this.exitCode = code;
    if (graceful) {
      this.stop(false);
      return;
    }
    this.phase = 'stopping';
    this.stopAt = performance.now();
    this.emit('stopping');
    this.clearTimers();
    for (const s of this.slots.values()) this.kill(s, 'killed', 'SIGKILL');
    this.finishIfEmpty();
  }

  private clearTimers(): void {
    for (const t of this.restartTimers) clearTimeout(t);
    this.restartTimers.clear();
    if (this.hungTimer) clearInterval(this.hungTimer);
    clearTimeout(this.spareTimer);
  }

  private finishIfEmpty(): void {
    if (this.phase !== 'stopping' || this.slots.size > 0) return;
    if (this.stopTimer) clearTimeout(this.stopTimer);
    this.log.info('stopped', { exit_code: this.exitCode });
    this.opts.exit(this.exitCode);
  }

  // ---- workers ------------------------------------------------------------------------------

  private liveCount(): number {
    let n = 0;
    for (const s of this.slots.values()) {
      if (s.state !== 'draining' && !s.retired && s.purpose !== 'spare') n++;
    }
    return n;
  }

  /** Keeps SERVICE_SPARE_WORKERS warm spares (forked, initialised, not listening). */
  private ensureSpares(): void {
    if (this.phase !== 'running' || this.reloading || this.spareFailures > 3) return;
    let have = 0;
    for (const s of this.slots.values()) if (s.purpose === 'spare' && !s.retired) have++;
    for (; have < this.settings.SERVICE_SPARE_WORKERS; have++) this.spawn('spare');
  }

  private takeSpare(): Slot | undefined {
    for (const s of this.slots.values()) {
      if (
        s.purpose === 'spare' &&
        s.state === 'standby' &&
        !s.retired &&
        s.generation === this.generation
      )
        return s;
    }
    return undefined;
  }

  /** A worker for `purpose`: a warm spare when one is on standby, else a fresh fork. */
  private spawn(purpose: Purpose): Slot {
    const spare = SPARE_SERVES.has(purpose) ? this.takeSpare() : undefined;
    if (spare) {
      spare.purpose = purpose;
      spare.state = 'starting';
      spare.forkedAt = Date.now();
      spare.readyTimer = this.readyDeadline(spare);
      this.send(spare, { t: 'activate' });
      this.log.debug('spare worker activated', {
        worker: spare.id,
        worker_pid: spare.pid,
        purpose,
      });
      this.ensureSpares();
      return spare;
    }
    return this.fork(purpose);
  }

  private readyDeadline(slot: Slot): NodeJS.Timeout {
    return setTimeout(() => {
      if (slot.state !== 'starting') return;
      slot.bootError ??= `not ready within SERVICE_READY_TIMEOUT (${this.settings.SERVICE_READY_TIMEOUT} ms)`;
      this.log.error('worker not ready in time, killing it', {
        worker: slot.id,
        worker_pid: slot.pid,
      });
      this.kill(slot, 'killed', 'SIGKILL');
    }, this.settings.SERVICE_READY_TIMEOUT);
  }

  private fork(purpose: Purpose): Slot {
    const maxReq = this.settings.SERVICE_MAX_REQUESTS;
    // Jitter (0-10%) so that workers started together do not recycle together.
    const maxRequests =
      maxReq > 0 ? maxReq + Math.floor(this.random() * Math.max(1, maxReq * 0.1)) : 0;
    const worker = cluster.fork({
      ...this.env,
      AGENT_WORKER_MAX_REQUESTS: String(maxRequests),
      AGENT_WORKER_SPARE: purpose === 'spare' ? '1' : '0',
    });
    const now = Date.now();
    const slot: Slot = {
      worker,
      id: worker.id,
      pid: worker.process.pid ?? -1,
      purpose,
      state: 'starting',
      generation: this.generation,
      forkedAt: now,
      readyAt: 0,
      lastBeat: now,
      requests: 0,
      rss: 0,
      maxRequests,
      waiters: [],
    };
    this.slots.set(slot.id, slot);
    slot.readyTimer = this.readyDeadline(slot);
    this.log.debug('worker forked', { worker: slot.id, worker_pid: slot.pid, purpose });
    return slot;
  }

  private waitReady(slot: Slot): Promise<'ready' | 'failed'> {
    if (slot.state === 'ready') return Promise.resolve('ready');
    if (!this.slots.has(slot.id)) return Promise.resolve('failed');
    return new Promise((resolve) => slot.waiters.push(resolve));
  }

  private settle(slot: Slot, r: 'ready' | 'failed'): void {
    const waiters = slot.waiters.splice(0);
    for (const w of waiters) w(r);
  }

  private send(slot: Slot, msg: PrimaryToWorker): void {
    try {
      if (slot.worker.isConnected()) slot.worker.send(msg);
    } catch {
      // The worker is going away; its exit is handled by onExit.
    }
  }

  /** Ask a worker to drain and exit; its exit is then expected. */
  private retire(slot: Slot, reason: DrainReason): void {
    if (slot.retired) return;
    slot.retired = reason;
    slot.state = 'draining';
    this.send(slot, { t: 'drain', reason, timeoutMs: this.settings.SERVICE_GRACEFUL_TIMEOUT });
    if (reason !== 'stop') {
      // A drain for reload/scale/recycle also has a deadline.
      slot.killTimer = setTimeout(
        () => slot.worker.process.kill('SIGKILL'),
        this.settings.SERVICE_GRACEFUL_TIMEOUT + KILL_GRACE_MS,
      );
      slot.killTimer.unref();
    }
    this.emit('workers', this.readyCount());
  }

  private kill(slot: Slot, why: 'killed' | 'hung', signal: NodeJS.Signals): void {
    slot.retired ??= why;
    slot.worker.process.kill(signal);
    if (signal !== 'SIGKILL') {
      slot.killTimer = setTimeout(() => slot.worker.process.kill('SIGKILL'), KILL_GRACE_MS);
      slot.killTimer.unref();
    }
  }

  private onMessage(worker: Worker, msg: unknown): void {
    const slot = this.slots.get(worker.id);
    if (!slot || !isWorkerMessage(msg)) return;
    switch (msg.t) {
      case 'standby':
        if (slot.state !== 'starting' || slot.purpose !== 'spare') return;
        clearTimeout(slot.readyTimer);
        slot.state = 'standby';
        this.log.debug('spare worker on standby', {
          worker: slot.id,
          worker_pid: slot.pid,
          ms: Date.now() - slot.forkedAt,
        });
        return;
      case 'ready':
        if (slot.state !== 'starting') return;
        clearTimeout(slot.readyTimer);
        slot.state = 'ready';
        slot.readyAt = slot.lastBeat = Date.now();
        this.log.info('worker ready', {
          worker: slot.id,
          worker_pid: slot.pid,
          ms: slot.readyAt - slot.forkedAt,
        });
        this.settle(slot, 'ready');
        this.emit('workers', this.readyCount());
        if (this.phase === 'booting' && this.readyCount() >= this.desired) {
          this.phase = 'running';
          this.log.info(
            `ready: ${this.readyCount()}/${this.desired} workers on ${this.settings.SERVICE_HOST}:${this.settings.SERVICE_PORT}`,
          );
          this.emit('ready', this.readyCount());
          this.ensureSpares();
        }
        return;
      case 'boot-error':
        slot.bootError = msg.code ? `${msg.message} (${msg.code})` : msg.message;
        return;
      case 'heartbeat':
        slot.lastBeat = Date.now();
        slot.requests = msg.requests;
        slot.rss = msg.rss;
        this.checkRecycle(slot);
        return;
    }
  }

  private checkRecycle(slot: Slot): void {
    if (slot.state !== 'ready' || slot.retired || slot.recycling || this.phase !== 'running')
      return;
    const maxMb = this.settings.SERVICE_MAX_MEMORY_MB;
    let reason: 'memory' | 'requests' | undefined;
    if (slot.maxRequests > 0 && slot.requests >= slot.maxRequests) reason = 'requests';
    else if (maxMb > 0 && slot.rss > maxMb * 1048576) reason = 'memory';
    if (!reason) return;
    slot.recycling = true;
    this.enqueue({ kind: 'recycle', id: slot.id, reason });
  }

  private checkHeartbeats(): void {
    if (this.phase === 'stopping') return;
    const now = Date.now();
    const timeout = this.settings.SERVICE_WORKER_TIMEOUT;
    for (const slot of this.slots.values()) {
      if (slot.state !== 'ready' || slot.retired || now - slot.lastBeat <= timeout) continue;
      this.log.error('worker hung: no heartbeat, killing and replacing it', {
        worker: slot.id,
        worker_pid: slot.pid,
        silent_ms: now - slot.lastBeat,
      });
      slot.state = 'draining';
      this.kill(slot, 'hung', 'SIGTERM');
      this.emit('restart', 'hung');
      this.spawn('hung');
    }
  }

  private onExit(worker: Worker, code: number | null, signal: string | null): void {
    const slot = this.slots.get(worker.id);
    if (!slot) return;
    this.slots.delete(slot.id);
    clearTimeout(slot.readyTimer);
    clearTimeout(slot.killTimer);
    const desc = describeExit(code, signal, slot.retired !== undefined);
    const meta = { worker: slot.id, worker_pid: slot.pid, code, signal };
    const wasReady = slot.readyAt > 0;
    this.settle(slot, 'failed');
    this.emit('workers', this.readyCount());

    if (slot.purpose === 'spare' && this.phase !== 'stopping') {
      this.onSpareExit(slot, desc, meta);
      return;
    }
    if (this.phase === 'stopping') {
      const clean = slot.retired === 'stop' && code === 0;
      if (slot.retired === 'stop' && !clean) this.exitCode = this.exitCode || 1;
      this.log.info(`worker ${slot.id} ${desc}${clean ? ' (drained)' : ''}`, meta);
      this.finishIfEmpty();
      return;
    }
    if (slot.retired && slot.retired !== 'killed') {
      const level = slot.retired === 'hung' ? 'warn' : 'info';
      this.log.log(level, `worker ${slot.id} ${desc} (${slot.retired})`, meta);
      return;
    }
    if (!wasReady) {
      const why = slot.bootError ?? desc;
      if (slot.purpose === 'reload' || slot.purpose === 'scale' || slot.purpose === 'recycle') {
        this.log.error(`worker ${slot.id} failed to boot: ${why}`, meta);
        return;
      }
      this.halt(3, `worker ${slot.id} failed to boot: ${why}; stopping (exit 3)`, false);
      return;
    }
    // A ready worker died without being asked to: a crash.
    const d = this.crashes.record(Date.now(), Date.now() - slot.readyAt);
    this.emit('restart', 'crash');
    if (d.budgetExceeded) {
      this.log.error(`worker ${slot.id} ${desc}`, meta);
      this.halt(
        4,
        `crash budget exceeded: ${d.recent} unstable restarts within ${this.settings.SERVICE_CRASH_WINDOW} ms (budget ${this.settings.SERVICE_CRASH_BUDGET}); stopping (exit 4)`,
        true,
      );
      return;
    }
    this.log.error(
      `worker ${slot.id} ${desc}; replacing it${d.delayMs ? ` in ${d.delayMs} ms` : ''}`,
      {
        ...meta,
        streak: d.streak,
      },
    );
    if (d.delayMs === 0) {
      this.spawn('replace');
      return;
    }
    const t = setTimeout(() => {
      this.restartTimers.delete(t);
      if (this.phase !== 'stopping') this.spawn('replace');
    }, d.delayMs);
    this.restartTimers.add(t);
  }

  /** A spare ended before it was needed: expected after a reload, else counted and replaced. */
  private onSpareExit(slot: Slot, desc: string, meta: Record<string, unknown>): void {
    if (slot.retired) {
      this.log.debug(`spare worker ${slot.id} ${desc}`, meta);
      return;
    }
    this.spareFailures++;
    const why = slot.state === 'standby' ? desc : `failed to boot: ${slot.bootError ?? desc}`;
    if (this.spareFailures > 3) {
      this.log.error(`spare worker ${slot.id} ${why}; no more spares until the next reload`, meta);
      return;
    }
    this.log.warn(`spare worker ${slot.id} ${why}; forking another`, meta);
    clearTimeout(this.spareTimer);
    this.spareTimer = setTimeout(() => this.ensureSpares(), 500 * 2 ** this.spareFailures);
    this.spareTimer.unref();
  }
}
