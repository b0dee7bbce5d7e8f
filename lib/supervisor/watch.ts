// SERVICE_RELOAD=true: watch the code the workers run and config.env; a burst of changes gives
// exactly one rolling reload (queued for the pool, like a SIGHUP; never a hard restart).
import { basename, dirname, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Logger } from '../telemetry/logger.js';
import { guarded } from './guard.js';
import type { CommandSink } from './signals.js';

/** Changes closer together than this form one burst. */
export const DEBOUNCE_MS = 250;

/** The code the workers run: dist/ when built, the sources when run through tsx. */
export function codeRoots(): string[] {
  // lib/supervisor/ under tsx, dist/lib/chunks/ in the bundle (tools/bundle.mjs): two levels down.
  const here = dirname(fileURLToPath(import.meta.url));
  const lib = resolve(here, '..');
  const root = resolve(lib, '..'); // dist/ when built, the package root with tsx
  return import.meta.url.endsWith('.ts') ? [lib, resolve(root, 'bin')] : [root];
}

const IGNORED = /(^|[/\\])(node_modules|\.[^/\\]+)([/\\]|$)|\.log$|\.map$/;

/** node_modules, dotfiles and dot-folders, logs and source maps; `rel` is relative to a watched root. */
export function isIgnored(rel: string): boolean {
  return IGNORED.test(rel);
}

function relativeTo(roots: string[], p: string): string {
  const root = roots.find((r) => p === r || p.startsWith(r + sep));
  return root ? relative(root, p) : basename(p);
}

export async function watchForReload(
  pool: CommandSink,
  logger: Logger,
  configPath: string,
): Promise<() => Promise<void>> {
  const { watch } = await import('chokidar');
  const paths = [...codeRoots(), configPath];
  const watcher = watch(paths, {
    ignoreInitial: true,
    ignored: (p: string) => isIgnored(relativeTo(paths, p)),
    depth: 20,
  });
  let timer: NodeJS.Timeout | undefined;
  const changed = new Set<string>();
  watcher.on(
    'all',
    guarded(logger, 'the file watcher', (event: string, path: string) => {
      changed.add(path);
      clearTimeout(timer);
      timer = setTimeout(
        guarded(logger, 'the reload debounce', () => {
          const files = [...changed];
          changed.clear();
          logger.info('files changed: rolling reload', {
            files: files.slice(0, 10),
            count: files.length,
            event,
          });
          pool.enqueue({ kind: 'reload', reason: 'file change' });
        }),
        DEBOUNCE_MS,
      );
    }),
  );
  watcher.on('error', (err) => logger.warn('file watcher error', { err }));
  await new Promise<void>((r) => watcher.once('ready', () => r()));
  logger.info('watching for changes (SERVICE_RELOAD=true)', { paths });
  return async () => {
    clearTimeout(timer);
    await watcher.close();
  };
}
