// Test-only routes, mounted only when the worker's environment has AGENT_TEST_HOOKS=1 (never
// documented as a setting; the worker logs a warning when they are on). They let tests hold a
// request in flight, block an event loop, or record chat requests by the hundred thousand
// through the worker's real metrics, without patching the code under test.
import { Router } from 'express';
import type { AppDeps } from '../deps.js';

function ms(v: unknown): number {
  const n = Number(v);
  return Number.isFinite(n) && n >= 0 ? Math.min(n, 120_000) : 0;
}

function count(v: unknown, max: number): number {
  const n = Number(v);
  return Number.isSafeInteger(n) && n >= 0 ? Math.min(n, max) : 0;
}

export function testHooksRouter(deps: Pick<AppDeps, 'metrics'>): Router {
  const r = Router();
  // apps x funcs finished chat requests, each pair distinct (`<prefix>a<i>` x `<prefix>f<j>`),
  // recorded as the chat endpoints record them (what a flood of cheap 40001 requests does).
  r.get('/__test/chat-records', (req, res) => {
    const apps = count(req.query.apps, 100_000);
    const funcs = count(req.query.funcs, 100_000);
    const prefix = typeof req.query.prefix === 'string' ? req.query.prefix : '';
    const m = deps.metrics;
    if (apps * funcs > 1_000_000) {
      res.status(400).json({ error: 'apps x funcs must be <= 1000000' });
      return;
    }
    if (m) {
      for (let i = 0; i < apps; i++)
        for (let j = 0; j < funcs; j++)
          m.recordChatRequest({
            appId: `${prefix}a${i}`,
            func: `${prefix}f${j}`,
            ret: 40001,
            durationMs: (i + j) % 500,
          });
    }
    res.json({ recorded: m ? apps * funcs : 0, pid: process.pid });
  });
  r.get('/__test/sleep', (req, res) => {
    const wait = ms(req.query.ms);
    setTimeout(() => res.json({ slept: wait, pid: process.pid }), wait);
  });
  r.get('/__test/block', (req, res) => {
    const until = Date.now() + ms(req.query.ms);
    while (Date.now() < until) {
      // busy: the event loop (and the heartbeat) is blocked
    }
    res.json({ blocked: true, pid: process.pid });
  });
  const retained: Buffer[] = [];
  r.get('/__test/alloc', (req, res) => {
    const mb = Math.min(ms(req.query.mb), 2048);
    retained.push(Buffer.alloc(mb * 1024 * 1024, 1));
    res.json({
      retained_mb: retained.reduce((n, b) => n + b.length, 0) / 1048576,
      pid: process.pid,
    });
  });
  return r;
}
