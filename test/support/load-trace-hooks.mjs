// Loader hooks of load-trace.mjs (they run on the loader thread of the same process).
import { appendFileSync } from 'node:fs';
import { join } from 'node:path';

let file;
export function initialize(dir) {
  file = join(dir, `${process.pid}.txt`);
}
export async function load(url, context, next) {
  appendFileSync(file, `${url}\n`);
  return next(url, context);
}
