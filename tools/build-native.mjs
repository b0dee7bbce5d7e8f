// `npm install`/`npm ci` (the package's install script): builds native/handoff.c, the
// SERVICE_SCHEDULING=leastconn connection handoff, with the node-gyp that npm ships. It is
// optional: where it cannot be built (no compiler, not Linux), leastconn hands connections over
// node:cluster's IPC instead, and `astron-agent start` says so. So a failed build warns and the
// install goes on.
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

if (process.platform !== 'linux') {
  console.warn('astron-agent: the native connection handoff is Linux only; leastconn uses IPC');
  process.exit(0);
}

function nodeGyp() {
  if (process.env.npm_config_node_gyp) return process.env.npm_config_node_gyp;
  try {
    return createRequire(import.meta.url).resolve('node-gyp/bin/node-gyp.js');
  } catch {
    return undefined;
  }
}

const gyp = nodeGyp();
const r = gyp
  ? spawnSync(process.execPath, [gyp, 'rebuild'], {
      cwd: root,
      stdio: ['ignore', 'ignore', 'pipe'],
    })
  : undefined;
if (!r || r.status !== 0) {
  const why = !gyp
    ? 'node-gyp not found'
    : r.error
      ? String(r.error)
      : `node-gyp exited ${r.status}`;
  console.warn(
    `astron-agent: the native connection handoff was not built (${why}); ` +
      'SERVICE_SCHEDULING=leastconn will hand connections over IPC, at a higher cost per connection.',
  );
  const tail = r?.stderr?.toString().trim().split('\n').slice(-5).join('\n');
  if (tail) console.warn(tail);
}
