// The house rules of lib/ and bin/ (README "Development"), checked by `npm run lint`: a file's
// folder says which process runs it and what it may import. Type-only imports count too: a
// folder that must not know a module must not know its types either.
/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'supervisor-no-http',
      comment:
        'The primary process runs no HTTP server: lib/supervisor/ never imports express, ws or lib/http/.',
      severity: 'error',
      from: { path: '^lib/supervisor/' },
      to: { path: ['^lib/http/', '^node_modules/(express|ws)/'] },
    },
    {
      name: 'http-agent-no-cluster',
      comment:
        'lib/http/ and lib/agent/ run in a worker and know nothing of the cluster: no node:cluster, no lib/supervisor/.',
      severity: 'error',
      from: { path: '^lib/(http|agent)/' },
      to: { path: ['^(node:)?cluster$', '^lib/supervisor/'] },
    },
    {
      name: 'domain-and-store-no-http',
      comment:
        'The domain (lib/agent/) and the storage (lib/store/) never depend on the HTTP layer; they use lib/schema/.',
      severity: 'error',
      from: { path: '^lib/(store|agent)/' },
      to: { path: '^lib/http/' },
    },
    {
      name: 'schema-is-the-ground-floor',
      comment:
        'lib/schema/ is imported by http/, agent/ and store/: it imports nothing of lib/ outside itself and no package.',
      severity: 'error',
      from: { path: '^lib/schema/' },
      to: { pathNot: '^lib/schema/', dependencyTypesNot: ['core'] },
    },
    {
      name: 'no-test-code',
      comment: 'Nothing shipped imports the tests or their support code.',
      severity: 'error',
      from: { path: '^(lib|bin)/' },
      to: { path: '^test/' },
    },
    {
      name: 'no-circular',
      comment: 'No import cycles.',
      severity: 'error',
      from: {},
      to: { circular: true },
    },
    {
      name: 'not-to-unresolvable',
      comment:
        'Every import resolves (a rule above cannot see through an import it cannot resolve).',
      severity: 'error',
      from: {},
      to: { couldNotResolve: true },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    // Resolve packages as Node does for an ESM import (their "exports", "import" condition).
    enhancedResolveOptions: {
      exportsFields: ['exports'],
      conditionNames: ['import', 'require', 'node', 'default', 'types'],
      mainFields: ['module', 'main', 'types', 'typings'],
    },
  },
};
