// One load of the configuration: config.env (original rules) under the process environment
// (which wins), under CLI overrides (which win over both); then validation.
import { resolve } from 'node:path';
import { readDotenv, type DotenvFile } from './dotenv.js';
import {
  SETTING_NAMES,
  SettingsError,
  validateSettings,
  type SettingName,
  type Settings,
} from './settings.js';

export type SettingSource = 'cli' | 'env' | 'file' | 'default';

export interface LoadOptions {
  /** Path of config.env; default: AGENT_CONFIG_FILE or ./config.env */
  configPath?: string;
  /** The process environment (the value that wins over the file). */
  env: NodeJS.ProcessEnv;
  /** Command-line overrides, already mapped to setting names. */
  overrides?: Partial<Record<SettingName, string>>;
}

export interface LoadedConfig {
  settings: Settings;
  /** Where each setting's effective value came from. */
  sources: Record<SettingName, SettingSource>;
  /** The merged environment handed to workers (file values under env, overrides on top). */
  mergedEnv: Record<string, string>;
  file: DotenvFile;
  /** Human-readable notices about the file (missing file, malformed lines). */
  notices: string[];
}

export function defaultConfigPath(env: NodeJS.ProcessEnv): string {
  return resolve(env.AGENT_CONFIG_FILE || 'config.env');
}

/** Reads and validates. Throws SettingsError (one line per bad variable) when invalid. */
export function loadConfig(opts: LoadOptions): LoadedConfig {
  const path = resolve(opts.configPath ?? defaultConfigPath(opts.env));
  const file = readDotenv(path);
  const notices: string[] = [];
  if (!file.found)
    notices.push(`config file ${path} not found; using the environment and defaults`);
  for (const p of file.problems) {
    // The line itself is not shown: it may be a secret pasted without its key.
    notices.push(
      `${path}: line ${p.line} format error (no "=" in ${p.text.length} characters), skipped`,
    );
  }

  const mergedEnv: Record<string, string> = {};
  for (const [k, v] of file.values) mergedEnv[k] = v;
  for (const [k, v] of Object.entries(opts.env)) if (v !== undefined) mergedEnv[k] = v;
  const overrides = opts.overrides ?? {};
  for (const [k, v] of Object.entries(overrides)) if (v !== undefined) mergedEnv[k] = v;

  const sources = {} as Record<SettingName, SettingSource>;
  for (const name of SETTING_NAMES) {
    sources[name] =
      overrides[name] !== undefined
        ? 'cli'
        : opts.env[name] !== undefined
          ? 'env'
          : file.values.has(name)
            ? 'file'
            : 'default';
  }
  const settings = validateSettings(mergedEnv);
  return { settings, sources, mergedEnv, file, notices };
}

/** Prints one line per invalid setting (never a secret's value) and returns null. */
export function loadOrReport(opts: LoadOptions): LoadedConfig | null {
  try {
    return loadConfig(opts);
  } catch (err) {
    if (!(err instanceof SettingsError)) throw err;
    for (const line of err.problems) process.stderr.write(`${line}\n`);
    process.stderr.write(
      `astron-agent: invalid configuration (${err.problems.length} problem(s)); not starting\n`,
    );
    return null;
  }
}
