#!/usr/bin/env node
// CLI only: argv -> command. The commands live in lib/, each imported only when it runs, so that
// `--help` and `version` load nothing else and `config`/`health` nothing of the other commands.
import module from 'node:module';
import { parseArgs } from 'node:util';
import type { LoadOptions } from '../lib/config/load.js';
import { version } from '../lib/version.js';

// Node >= 22.8: V8's code cache on disk for the modules loaded from here on (the commands, the
// supervisor); it fails quietly (e.g. a read-only file system) and NODE_DISABLE_COMPILE_CACHE=1
// turns it off. Node 20 has no such API: nothing happens there.
try {
  (module as { enableCompileCache?: () => unknown }).enableCompileCache?.();
} catch {
  /* an optimisation only */
}

const HELP = `Usage: astron-agent [command] [options]

Commands:
  start      run the service: a primary supervising SERVICE_WORKERS workers (default)
  config     print every effective setting with its source (cli, env, file, default);
             secrets masked
  health     exit 0 only if GET /health on SERVICE_HOST:SERVICE_PORT answers 200
             (the container HEALTHCHECK)
  status     the running service and one row per worker process (--json for tools);
             exit 0 running, 3 not running, 4 unknown (LSB)
  reload     rolling reload of the running service; waits until every worker is replaced
             (one line each): exit 0 done, 1 aborted or invalid configuration
  scale N    set the number of serving workers (N, +N or -N); removed workers are drained;
             waits until done
  stop       graceful stop of the running service; waits for it: exit 0 when every worker
             drained, 1 otherwise
  version    print the version

reload, scale, stop and status talk to the primary over its control socket
(SERVICE_CONTROL_SOCKET); when none answers they fall back to signals through SERVICE_PID_FILE
(SIGHUP, SIGTTIN/SIGTTOU, SIGTERM) and say that the outcome cannot be reported.

Options:
  -c, --config PATH   configuration file (default: $AGENT_CONFIG_FILE or ./config.env)
  -w, --workers N     worker processes, N >= 1 or auto (overrides SERVICE_WORKERS)
  -p, --port N        listen port (overrides SERVICE_PORT)
  -t, --timeout MS    health, status: how long to wait for the answer (default 3000);
                      reload, scale, stop: how long to wait for the outcome (default: as long
                      as it takes)
      --json          status: JSON instead of a table
  -h, --help          show this help
  -v, --version       print the version

The process environment wins over the configuration file; --workers/--port win over both.
Signals to the primary: SIGTERM/SIGINT drain and stop (a second one forces), SIGHUP rolling
reload, SIGTTIN/SIGTTOU add/remove a worker.
Exit codes: 0 stopped cleanly, 1 error or unclean stop, 2 invalid configuration or usage,
3 workers could not boot, 4 crash budget exceeded.
`;

function usage(message: string): never {
  process.stderr.write(`astron-agent: ${message}\nRun 'astron-agent --help' for usage.\n`);
  process.exit(2);
}

async function main(argv: string[]): Promise<number | undefined> {
  // `scale -1` is a count, not an option.
  let scaleDown: string | undefined;
  const at = argv.indexOf('scale');
  if (at >= 0 && /^-\d+$/.test(argv[at + 1] ?? '')) {
    scaleDown = argv[at + 1];
    argv = [...argv.slice(0, at + 1), ...argv.slice(at + 2)];
  }
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        config: { type: 'string', short: 'c' },
        workers: { type: 'string', short: 'w' },
        port: { type: 'string', short: 'p' },
        timeout: { type: 'string', short: 't' },
        json: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean', short: 'v' },
      },
    });
  } catch (err) {
    usage((err as Error).message);
  }
  const { values } = parsed;
  const positionals = [...parsed.positionals];
  if (scaleDown !== undefined) positionals.splice(1, 0, scaleDown);
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (values.version) {
    process.stdout.write(`${version()}\n`);
    return 0;
  }
  const command = positionals[0] ?? 'start';
  const maxArgs = command === 'scale' ? 2 : 1;
  if (positionals.length > maxArgs) usage(`unexpected argument '${positionals[maxArgs]}'`);

  const opts: LoadOptions = { env: process.env, overrides: {} };
  if (values.config !== undefined) opts.configPath = values.config;
  if (values.workers !== undefined) opts.overrides!.SERVICE_WORKERS = values.workers;
  if (values.port !== undefined) opts.overrides!.SERVICE_PORT = values.port;

  switch (command) {
    case 'start': {
      // The supervisor (and what it imports) is loaded only to run the service.
      const { runPrimary } = await import('../lib/supervisor/primary.js');
      runPrimary(opts);
      return undefined;
    }
    case 'config': {
      const { showConfig } = await import('../lib/cli/config.js');
      return showConfig(opts);
    }
    case 'health': {
      const timeout = values.timeout === undefined ? 3000 : Number(values.timeout);
      if (!Number.isInteger(timeout) || timeout <= 0)
        usage('--timeout takes milliseconds, an integer > 0');
      const { checkHealth } = await import('../lib/cli/health.js');
      return checkHealth(opts, timeout);
    }
    case 'status':
    case 'reload':
    case 'stop':
    case 'scale': {
      let timeoutMs: number | undefined;
      if (values.timeout !== undefined) {
        timeoutMs = Number(values.timeout);
        if (!Number.isInteger(timeoutMs) || timeoutMs <= 0)
          usage('--timeout takes milliseconds, an integer > 0');
      }
      if (command === 'scale' && !/^[+-]?\d{1,4}$/.test(positionals[1] ?? ''))
        usage('scale takes the number of workers: N, +N or -N');
      const { controlCommand } = await import('../lib/cli/control.js');
      return controlCommand(opts, command, {
        json: values.json,
        timeoutMs,
        workers: positionals[1],
      });
    }
    case 'version':
      process.stdout.write(`${version()}\n`);
      return 0;
    case 'help':
      process.stdout.write(HELP);
      return 0;
    default:
      usage(`unknown command '${command}'`);
  }
}

const code = await main(process.argv.slice(2));
if (code !== undefined) process.exitCode = code;
