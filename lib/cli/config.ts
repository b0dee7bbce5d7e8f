// `astron-agent config`: every effective setting with its source; secrets masked.
import { loadOrReport, type LoadOptions } from '../config/load.js';
import { isSecretName, SETTING_NAMES, SETTING_SPECS } from '../config/settings.js';
import { MASK, redactString } from '../telemetry/redact.js';

export function showConfig(opts: LoadOptions): number {
  const config = loadOrReport(opts);
  if (!config) return 2;
  const out: string[] = [
    `# config file: ${config.file.path}${config.file.found ? '' : ' (not found)'}`,
  ];
  for (const n of config.notices) out.push(`# ${n}`);
  const width = Math.max(...SETTING_NAMES.map((n) => n.length));
  for (const name of SETTING_NAMES) {
    const raw = config.settings[name];
    const value = String(raw);
    const shown = isSecretName(name) && value !== '' ? MASK : redactString(value);
    const desc = (SETTING_SPECS[name] as { desc?: string }).desc ?? '';
    out.push(`${name.padEnd(width)} = ${shown.padEnd(16)} [${config.sources[name]}]  # ${desc}`);
  }
  process.stdout.write(`${out.join('\n')}\n`);
  return 0;
}
