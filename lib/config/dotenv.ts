// config.env parsing by the original launcher's rules (spec 10.1), plus one documented
// extension: a single pair of matching surrounding quotes ('...' or "...") is stripped.
import { readFileSync } from 'node:fs';

export interface DotenvLineProblem {
  line: number;
  text: string;
}

export interface DotenvFile {
  path: string;
  /** false when the file does not exist (a notice, not an error). */
  found: boolean;
  values: Map<string, string>;
  /** Lines without `=`: reported with their 1-based line number and skipped. */
  problems: DotenvLineProblem[];
}

export function unquote(value: string): string {
  if (value.length >= 2) {
    const first = value[0];
    const last = value[value.length - 1];
    if ((first === '"' || first === "'") && first === last) return value.slice(1, -1);
  }
  return value;
}

export function parseDotenv(text: string): Pick<DotenvFile, 'values' | 'problems'> {
  const values = new Map<string, string>();
  const problems: DotenvLineProblem[] = [];
  const lines = text.split(/\r?\n/);
  lines.forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const eq = line.indexOf('=');
    if (eq < 0) {
      problems.push({ line: i + 1, text: line });
      return;
    }
    const key = line.slice(0, eq).trim();
    if (key === '') {
      problems.push({ line: i + 1, text: line });
      return;
    }
    values.set(key, unquote(line.slice(eq + 1).trim()));
  });
  return { values, problems };
}

export function readDotenv(path: string): DotenvFile {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      return { path, found: false, values: new Map(), problems: [] };
    }
    throw err;
  }
  return { path, found: true, ...parseDotenv(text) };
}
