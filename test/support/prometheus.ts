// Reads a Prometheus text exposition with a real parser (parse-prometheus-text-format, whose
// output follows prom2json) and answers questions about it.
import parsePrometheusTextFormat, {
  type ParsedFamily,
  type ParsedSample,
} from 'parse-prometheus-text-format';

export type Labels = Record<string, string>;

export class Exposition {
  readonly families: Map<string, ParsedFamily>;

  constructor(readonly text: string) {
    const parsed = parsePrometheusTextFormat(text);
    this.families = new Map(parsed.map((f) => [f.name, f]));
    // parse-prometheus-text-format merges all samples of a histogram into one and drops their
    // labels (its flattenMetrics). Re-read the text with the histograms declared untyped, so
    // every _bucket/_sum/_count sample keeps its labels, and rebuild each labelled histogram.
    const histograms = new Set(parsed.filter((f) => f.type === 'HISTOGRAM').map((f) => f.name));
    if (histograms.size === 0) return;
    const untypedText = text
      .split('\n')
      .map((line) => {
        const name = line.startsWith('# TYPE ') ? line.slice(7).split(' ')[0]! : '';
        return histograms.has(name) ? `# TYPE ${name} untyped` : line;
      })
      .join('\n');
    // Untyped, a histogram's lines are families _bucket, _sum, _count repeated per label set.
    const parts = new Map<string, ParsedSample[]>();
    for (const f of parsePrometheusTextFormat(untypedText))
      parts.set(f.name, [...(parts.get(f.name) ?? []), ...f.metrics]);
    const key = (labels: Record<string, string> = {}) =>
      JSON.stringify(
        Object.entries(labels)
          .filter(([k]) => k !== 'le')
          .sort(),
      );
    for (const name of histograms) {
      const byLabels = new Map<string, ParsedSample>();
      for (const b of parts.get(`${name}_bucket`) ?? []) {
        const { le, ...labels } = b.labels ?? {};
        const k = key(labels);
        const h = byLabels.get(k) ?? { labels, buckets: {} };
        h.buckets![le!] = b.value!;
        byLabels.set(k, h);
      }
      for (const [suffix, field] of [
        ['_count', 'count'],
        ['_sum', 'sum'],
      ] as const) {
        for (const m of parts.get(`${name}${suffix}`) ?? []) {
          const h = byLabels.get(key(m.labels));
          if (h) h[field] = m.value;
        }
      }
      const fam = this.families.get(name)!;
      this.families.set(name, { ...fam, metrics: [...byLabels.values()] });
    }
  }

  family(name: string): ParsedFamily | undefined {
    return this.families.get(name);
  }

  /** Samples of a family whose labels include `match`. */
  samples(name: string, match: Labels = {}): ParsedSample[] {
    const f = this.families.get(name);
    if (!f) return [];
    return f.metrics.filter((m) => Object.entries(match).every(([k, v]) => m.labels?.[k] === v));
  }

  /** Sum of the values (counters, gauges) or counts (histograms) of the matching samples. */
  sum(name: string, match: Labels = {}): number {
    return this.samples(name, match).reduce((acc, m) => acc + Number(m.value ?? m.count ?? 0), 0);
  }

  /** The one value of a series without labels (or with exactly these labels); NaN if absent. */
  value(name: string, match: Labels = {}): number {
    const s = this.samples(name, match);
    return s.length === 1 ? Number(s[0]!.value ?? s[0]!.count) : NaN;
  }

  /**
   * Every monotonic number in the exposition: counter values and histogram buckets, sums and
   * counts, keyed by series (family + labels + part).
   */
  monotonic(): Map<string, number> {
    const out = new Map<string, number>();
    for (const f of this.families.values()) {
      if (f.type !== 'COUNTER' && f.type !== 'HISTOGRAM') continue;
      for (const m of f.metrics) {
        const key = `${f.name}${JSON.stringify(Object.entries(m.labels ?? {}).sort())}`;
        if (f.type === 'COUNTER') out.set(key, Number(m.value));
        else {
          out.set(`${key}:count`, Number(m.count));
          out.set(`${key}:sum`, Number(m.sum));
          for (const [le, v] of Object.entries(m.buckets ?? {}))
            out.set(`${key}:le=${le}`, Number(v));
        }
      }
    }
    return out;
  }
}

/** Series whose value is lower in `after` than in `before` (or gone from it). */
export function decreases(before: Exposition, after: Exposition): string[] {
  const a = after.monotonic();
  const out: string[] = [];
  for (const [k, v] of before.monotonic()) {
    const now = a.get(k);
    if (now === undefined) out.push(`${k}: ${v} -> (gone)`);
    // Float sums may be added in another order: allow rounding, nothing more.
    else if (now < v - Math.abs(v) * 1e-9) out.push(`${k}: ${v} -> ${now}`);
  }
  return out;
}
