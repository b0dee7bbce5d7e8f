// `tsx test/bench/cpuprofile-top.ts FILE.cpuprofile [N]`: the top N (default 10) functions of a
// V8 CPU profile (`node --cpu-prof`) by self time, with their share of the profile's samples
// (idle and GC shown as their own rows). For the before/after notes of issue 14.
import { readFileSync } from 'node:fs';
import { relative } from 'node:path';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

/** Milliseconds of the profile spent outside (idle). */
export function busyMs(p: Profile): number {
  const idle = new Set(
    p.nodes.filter((x) => x.callFrame.functionName === '(idle)').map((x) => x.id),
  );
  let us = 0;
  p.samples.forEach((id, i) => {
    if (!idle.has(id)) us += p.timeDeltas[i] ?? 0;
  });
  return us / 1000;
}

export function topSelf(p: Profile, n = 10): { name: string; us: number; share: number }[] {
  const byId = new Map(p.nodes.map((x) => [x.id, x]));
  const self = new Map<string, number>();
  let total = 0;
  p.samples.forEach((id, i) => {
    const dt = p.timeDeltas[i] ?? 0;
    const f = byId.get(id)!.callFrame;
    if (f.functionName === '(idle)') return;
    total += dt;
    const where = f.url
      ? `${relative(process.cwd(), f.url.replace(/^file:\/\//, ''))}:${f.lineNumber + 1}`
      : '';
    const key = `${f.functionName || '(anonymous)'} ${where}`.trim();
    self.set(key, (self.get(key) ?? 0) + dt);
  });
  return [...self.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, n)
    .map(([name, us]) => ({ name, us, share: us / total }));
}

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].split('/').pop()!)) {
  const file = process.argv[2];
  if (!file) {
    console.error('usage: cpuprofile-top FILE.cpuprofile [N]');
    process.exit(2);
  }
  const p = JSON.parse(readFileSync(file, 'utf8')) as Profile;
  for (const r of topSelf(p, Number(process.argv[3] ?? 10)))
    console.log(
      `${(r.share * 100).toFixed(1).padStart(5)} %  ${(r.us / 1000).toFixed(0).padStart(6)} ms  ${r.name}`,
    );
}
