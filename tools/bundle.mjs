// `npm run build`, after the type check: bundles the two entry points (the CLI and primary, the
// worker) with esbuild so that a process reads and compiles a few files instead of a few hundred
// (issue 14 point 3: resolving and reading modules was about a fifth of a worker's start-up).
//
// dist/bin/agent.js and dist/lib/worker/main.js are the entries; everything else lands in
// dist/lib/chunks/. ESM splitting keeps each dynamic import() a chunk of its own, loaded when it
// runs, so a process still loads only what its configuration uses. The chunks sit two levels
// below dist/, as lib/supervisor/*.js did, so that the paths lib/ computes from import.meta.url
// (the worker's entry, the watched code root) stay the same.
import { build } from 'esbuild';
import { readdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

// Left to Node's loader, from node_modules:
const external = [
  // native (a .node file found at run time)
  'better-sqlite3',
  // loaded only when configured and off the start path (or, for ws, on the first upgrade), with
  // optional parts of their own. mysql2 and ioredis are bundled, into the chunks of their stores:
  // a worker with MySQL and Redis loads them at boot, some 630 modules when left to Node's loader
  '@modelcontextprotocol/sdk',
  '@opentelemetry/*',
  'ws',
  'chokidar',
  // data more than code: 550 kB of encoding tables that iconv-lite requires only on use, and
  // mime-db's 230 kB of JSON, which JSON.parse reads faster than V8 compiles the same literal
  'iconv-lite',
  'mime-db',
];

// Packages required when a module loads but used, if ever, only later get a stand-in that
// requires the real one on first use:
// - prom-client requires @opentelemetry/api to read the active span for exemplars, which we never
//   turn on: 44 more modules in every process that keeps a metrics registry (the primary too; 1-2
//   MB of idle RSS here). The real API, when it is loaded, is the one instance from node_modules
//   that the tracing code imports.
// - Express (and accepts, type-is, send) require mime-types, which parses mime-db's 230 kB of
//   JSON: about 3 MB of a worker's idle RSS, for lookups no route of ours makes (the routes set
//   Content-Type themselves; express.raw is given a type function). Used, it loads then (~10 ms).
// - prom-client's index requires its Pushgateway (which we never use), and with it node:http,
//   node:https and node:zlib: TLS and zlib in every process with a registry, the primary too.
const LAZY = [
  { pkg: '@opentelemetry/api', from: /[/\\]node_modules[/\\]prom-client[/\\]/ },
  { pkg: 'mime-types', from: /[/\\]node_modules[/\\]/ },
  {
    pkg: './lib/pushgateway',
    from: /[/\\]node_modules[/\\]prom-client[/\\]index\.js$/,
    real: 'prom-client/lib/pushgateway',
    isClass: true,
  },
];
const lazyOnFirstUse = {
  name: 'lazy-on-first-use',
  setup(b) {
    for (const { pkg, from, real = pkg } of LAZY) {
      const filter = new RegExp(`^${pkg.replace(/[/.-]/g, (c) => `\\${c}`)}$`);
      b.onResolve({ filter }, ({ importer, namespace }) =>
        namespace !== 'lazy' && from.test(importer) ? { path: real, namespace: 'lazy' } : undefined,
      );
    }
    b.onLoad({ filter: /.*/, namespace: 'lazy' }, ({ path }) => {
      // A class (Pushgateway) is constructed through the stand-in, so its target is a function.
      const isClass = LAZY.some((l) => l.isClass && l.real === path);
      return {
        loader: 'js',
        resolveDir: root,
        contents: `let real;
const load = () => (real ??= require(${JSON.stringify(path)}));
module.exports = new Proxy(${isClass ? 'function () {}' : '{}'}, {
  get: (_, k) => load()[k],
  has: (_, k) => k in load(),${isClass ? '\n  construct: (_, args) => new (load())(...args),' : ''}
});`,
      };
    });
  },
};

const result = await build({
  absWorkingDir: root,
  entryPoints: ['bin/agent.ts', 'lib/worker/main.ts'],
  outbase: '.',
  outdir: 'dist',
  entryNames: '[dir]/[name]',
  chunkNames: 'lib/chunks/[name]-[hash]',
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  external,
  plugins: [lazyOnFirstUse],
  // Bundled CommonJS packages (express and its dependencies) require() Node's built-ins.
  banner: {
    js: "import { createRequire as __astronCreateRequire } from 'node:module';\nconst require = __astronCreateRequire(import.meta.url);",
  },
  // Not minified: a stack trace names the function and a readable line; the maps (without the
  // sources) give the TypeScript position under --enable-source-maps.
  sourcemap: 'linked',
  sourcesContent: false,
  logLevel: 'warning',
  metafile: true,
});

// What an earlier build left (chunks under other hashes, tsc's one file per module) goes; dist/
// itself stays, being the root SERVICE_RELOAD watches. A running worker that has yet to import a
// removed lazy chunk fails that import: the rolling reload a change triggers replaces it first.
const written = new Set(Object.keys(result.metafile.outputs));
const entries = readdirSync(join(root, 'dist'), { recursive: true, withFileTypes: true });
for (const f of entries) {
  const rel = relative(root, join(f.parentPath, f.name));
  if (f.isFile() && !written.has(rel)) rmSync(join(root, rel));
}
for (const d of entries.filter((f) => f.isDirectory()).reverse()) {
  const dir = join(d.parentPath, d.name);
  if (readdirSync(dir).length === 0) rmSync(dir, { recursive: true });
}

// A package.json beside the entries and the chunks: Node's ESM loader looks for the package scope
// of every module it loads, walking up from the module's folder and converting a URL to a path at
// each level. With the nearest one three folders up, that conversion ran often enough in a fresh
// primary for V8 to compile it with TurboFan, which maps ~3.6 MB of the compiler's own code into
// an otherwise idle process. The content is the root's module type.
for (const dir of ['dist/bin', 'dist/lib/chunks', 'dist/lib/worker'])
  writeFileSync(join(root, dir, 'package.json'), '{ "type": "module" }\n');
