#!/usr/bin/env node
// CLI only: argv -> command. The commands live in lib/.
import { parseArgs } from 'node:util';
import { showConfig } from '../lib/cli/config.js';
import { checkHealth } from '../lib/cli/health.js';
import { signalRunning } from '../lib/cli/signal.js';
import type { LoadOptions } from '../lib/config/load.js';
import { runPrimary } from '../lib/supervisor/primary.js';
import { version } from '../lib/version.js';

const HELP = `Usage: astron-agent [command] [options]

Commands:
  start      run the service: a primary supervising SERVICE_WORKERS workers (default)
  config     print every effective setting with its source (cli, env, file, default);
             secrets masked
  health     exit 0 only if GET /health on SERVICE_HOST:SERVICE_PORT answers 200
             (the container HEALTHCHECK)
  reload     rolling reload of the running service (SIGHUP to the pid in SERVICE_PID_FILE)
  stop       graceful stop of the running service (SIGTERM to the pid in SERVICE_PID_FILE)
  version    print the version

Options:
  -c, --config PATH   configuration file (default: $AGENT_CONFIG_FILE or ./config.env)
  -w, --workers N     worker processes, N >= 1 or auto (overrides SERVICE_WORKERS)
  -p, --port N        listen port (overrides SERVICE_PORT)
  -t, --timeout MS    health: how long to wait for the answer (default 3000)
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
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean', short: 'v' },
      },
    });
  } catch (err) {
    usage((err as Error).message);
  }
  const { values, positionals } = parsed;
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (values.version) {
    process.stdout.write(`${version()}\n`);
    return 0;
  }
  if (positionals.length > 1) usage(`unexpected argument '${positionals[1]}'`);
  const command = positionals[0] ?? 'start';

  const opts: LoadOptions = { env: process.env, overrides: {} };
  if (values.config !== undefined) opts.configPath = values.config;
  if (values.workers !== undefined) opts.overrides!.SERVICE_WORKERS = values.workers;
  if (values.port !== undefined) opts.overrides!.SERVICE_PORT = values.port;

  switch (command) {
    case 'start':
      runPrimary(opts);
      return undefined;
    case 'config':
      return showConfig(opts);
    case 'health': {
      const timeout = values.timeout === undefined ? 3000 : Number(values.timeout);
      if (!Number.isInteger(timeout) || timeout <= 0)
        usage('--timeout takes milliseconds, an integer > 0');
      return checkHealth(opts, timeout);
    }
    case 'reload':
      return signalRunning(opts, 'SIGHUP');
    case 'stop':
      return signalRunning(opts, 'SIGTERM');
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
