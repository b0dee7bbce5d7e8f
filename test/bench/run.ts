// `npm run bench [name ...]`: runs the benchmarks in sequence (all of them by default) and prints
// their figures. Each module exports `name` and `run()`; figures are measured side by side in
// one run and printed as ratios, not asserted (machines here are shared and noisy).
import type { Bench } from './lib.js';

const modules: Record<string, () => Promise<{ default: Bench }>> = {
  foundation: () => import('./foundation.js'),
  metrics: () => import('./metrics.js'),
  reload: () => import('./reload.js'),
  chat: () => import('./chat.js'),
  'chat-baseline': () => import('./chat-baseline.js'),
  'bot-config': () => import('./bot-config.js'),
  react: () => import('./react.js'),
  tracing: () => import('./tracing.js'),
  scheduling: () => import('./scheduling.js'),
  footprint: () => import('./footprint.js'),
};

const wanted = process.argv.slice(2);
const names = wanted.length > 0 ? wanted : Object.keys(modules);
for (const name of names) {
  const load = modules[name];
  if (!load) {
    console.error(`unknown benchmark '${name}'; known: ${Object.keys(modules).join(', ')}`);
    process.exit(2);
  }
  const bench = (await load()).default;
  console.log(`\n=== ${name}: ${bench.title} ===`);
  const started = Date.now();
  await bench.run();
  console.log(`(${name} took ${((Date.now() - started) / 1000).toFixed(1)} s)`);
}
process.exit(0);
