// The keys of a metric's values as JSON (the IPC snapshots): what the departed accumulator sums
// by and what a scrape's slices keep together. Shared by both halves of the cluster metrics.
import type { MetricJson } from '../ipc.js';

type Value = MetricJson['values'][number];

export function seriesKey(metric: MetricJson, v: Value): string {
  const labels = Object.keys(v.labels)
    .sort()
    .map((k) => `${k}=${String(v.labels[k])}`)
    .join(',');
  return `${v.metricName ?? metric.name}{${labels}}`;
}

/** A histogram's label set without its `le`: what its _bucket, _sum and _count values share. */
export function labelSetKey(v: Value): string {
  return Object.keys(v.labels)
    .filter((k) => k !== 'le')
    .sort()
    .map((k) => `${k}=${String(v.labels[k])}`)
    .join(',');
}
