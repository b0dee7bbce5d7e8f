// The package version, read from package.json (works from sources and from dist/).
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

let found: { dir: string; pkg?: PackageJson } | undefined;

interface PackageJson {
  name?: string;
  version?: string;
}

function readPackage(dir: string): PackageJson | undefined {
  const file = join(dir, 'package.json');
  if (!existsSync(file)) return undefined;
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as PackageJson;
  } catch {
    return undefined;
  }
}

/**
 * The nearest folder up whose package.json names a package, with that package.json: dist/'s
 * folders hold package.json files of their own with only the module type (see
 * tools/bundle.mjs), and those are skipped.
 */
function findPackage(): { dir: string; pkg?: PackageJson } {
  if (found) return found;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    const pkg = readPackage(dir);
    if (pkg?.name) return (found = { dir, pkg });
    dir = dirname(dir);
  }
  return (found = { dir: process.cwd() });
}

export function packageRoot(): string {
  return findPackage().dir;
}

export function version(): string {
  return findPackage().pkg?.version ?? '0.0.0';
}
