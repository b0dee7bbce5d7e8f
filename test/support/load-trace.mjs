// Preload (NODE_OPTIONS=--import=<this file>): every module URL the process loads through the
// ESM loader (its own files, packages' entry points, node: builtins) is appended, one a line,
// to $LOAD_TRACE_DIR/<pid>.txt. CommonJS files a package require()s internally are not seen
// (Node 20 routes only import through the hooks); each package's entry point is.
import { register } from 'node:module';

if (process.env.LOAD_TRACE_DIR) {
  register('./load-trace-hooks.mjs', import.meta.url, { data: process.env.LOAD_TRACE_DIR });
}
