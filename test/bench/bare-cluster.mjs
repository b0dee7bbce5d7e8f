// The baseline: bare node:cluster + node:http with the same worker count, answering /health.
import cluster from 'node:cluster';
import http from 'node:http';

const workers = Number(process.env.WORKERS ?? 2);
const port = Number(process.env.PORT ?? 18999);
if (cluster.isPrimary) {
  let ready = 0;
  for (let i = 0; i < workers; i++) cluster.fork();
  cluster.on('listening', () => {
    if (++ready === workers)
      console.log(JSON.stringify({ message: `ready: ${workers}/${workers}` }));
  });
  process.on('SIGTERM', () => {
    for (const w of Object.values(cluster.workers ?? {})) w?.kill();
    process.exit(0);
  });
} else {
  http
    .createServer((req, res) => {
      const body = JSON.stringify({ status: 'ok', pid: process.pid });
      res.writeHead(200, {
        'Content-Type': 'application/json',
        'Content-Length': Buffer.byteLength(body),
      });
      res.end(body);
    })
    .listen(port, '127.0.0.1');
}
