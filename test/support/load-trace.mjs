// Preload (NODE_OPTIONS=--import=<this file>): every module URL the process loads through the
// ESM loader (its own files, packages' entry points, node: builtins) is appended, one a line,
// to $LOAD_TRACE_DIR/<pid>.txt. The CommonJS files a package require()s internally do not pass
// the hooks in Node 20: those in require.cache are appended when the process exits, and so are
// the public built-ins the process loaded by any route (`node:<name>`, from moduleLoadList).
import { appendFileSync } from 'node:fs';
import { createRequire, register } from 'node:module';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const dir = process.env.LOAD_TRACE_DIR;
if (dir) {
  register('./load-trace-hooks.mjs', import.meta.url, { data: dir });
  const cache = createRequire(import.meta.url).cache;
  process.on('exit', () => {
    const urls = Object.keys(cache).map((f) => `${pathToFileURL(f).href}\n`);
    for (const m of process.moduleLoadList) {
      const name = /^NativeModule ([^/]+)$/.exec(m)?.[1];
      if (name && !name.startsWith('_')) urls.push(`node:${name}\n`);
    }
    appendFileSync(join(dir, `${process.pid}.txt`), urls.join(''));
  });
}
