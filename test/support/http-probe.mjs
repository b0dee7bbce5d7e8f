// A probe in a process of its own (fork with IPC): `node http-probe.mjs <port> <path> <expect>`
// sends GET <path> to 127.0.0.1:<port>, one request at a time on a new connection, 20 ms apart,
// until the parent sends 'stop'; then it sends back the slowest round trip, the count, the
// answers that were not <expect>, and how long its own event loop stalled at most (5 ms
// timer): a stall of the probe itself would be counted against the server.
import http from 'node:http';
import { performance } from 'node:perf_hooks';

const [port, path, expected] = process.argv.slice(2);
let stopped = false;
let max = 0;
let n = 0;
const bad = [];
let ownMax = 0;
let last = performance.now();
const tick = setInterval(() => {
  const now = performance.now();
  ownMax = Math.max(ownMax, now - last - 5);
  last = now;
}, 5);

const get = () =>
  new Promise((resolve, reject) => {
    const req = http.get(
      { host: '127.0.0.1', port: Number(port), path, agent: false, timeout: 30_000 },
      (res) => {
        res.resume();
        res.on('end', () => resolve(String(res.statusCode)));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
  });

process.on('disconnect', () => process.exit(0)); // the parent is gone
process.on('message', (m) => {
  if (m === 'stop') stopped = true;
});
process.send('started');
while (!stopped) {
  const t = performance.now();
  const status = await get().catch((err) => String(err));
  max = Math.max(max, performance.now() - t);
  n++;
  if (status !== expected && bad.length < 10) bad.push(status);
  await new Promise((r) => setTimeout(r, 20));
}
clearInterval(tick);
process.send({ max, n, bad, ownMax });
