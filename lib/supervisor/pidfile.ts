// The primary's pid file, so that `astron-agent reload` / `stop` can find it.
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

export function readPid(path: string): number | null {
  try {
    const pid = Number(readFileSync(resolve(path), 'utf8').trim());
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Writes our pid; returns the pid of a live process that had the file before, if any. */
export function writePidFile(path: string): number | null {
  const file = resolve(path);
  const previous = readPid(file);
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, `${process.pid}\n`);
  return previous !== null && previous !== process.pid && isAlive(previous) ? previous : null;
}

/** Removes the file if it still names this process. */
export function removePidFile(path: string): void {
  const file = resolve(path);
  if (readPid(file) === process.pid) rmSync(file, { force: true });
}
