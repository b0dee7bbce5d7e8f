// Test-only routes, mounted only when the worker's environment has AGENT_TEST_HOOKS=1 (never
// documented as a setting; the worker logs a warning when they are on). They let tests hold a
// request in flight or block an event loop without patching the code under test.
import { Router } from 'express';

function ms(v: unknown): number {
  const n = Number(v);
  return Number.isFinite(n) && n >= 0 ? Math.min(n, 120_000) : 0;
}

export function testHooksRouter(): Router {
  const r = Router();
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
