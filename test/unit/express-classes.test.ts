// lib/http/app.ts expressHttpClasses: requests and responses are born with the Express app's
// prototypes, so Express's per-request Object.setPrototypeOf changes nothing (issue 14: that call
// alone cost ~80 µs of CPU per request), and Express's helpers still work on them.
import { expect } from 'chai';
import express from 'express';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { expressHttpClasses } from '../../lib/http/app.js';

describe('Express request and response classes', () => {
  it("requests and responses have the app's prototypes before Express sees them; Express's helpers work", async () => {
    const app = express();
    app.set('etag', false);
    const seen: { req: boolean; res: boolean }[] = [];
    app.get('/x/:id', (req, res) => {
      res.status(201).json({ id: req.params.id, q: req.query.a, host: req.get('host') !== '' });
    });
    const server = http.createServer(expressHttpClasses(app), (req, res) => {
      seen.push({
        req: Object.getPrototypeOf(req) === app.request,
        res: Object.getPrototypeOf(res) === app.response,
      });
      app(req, res);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const { port } = server.address() as AddressInfo;
      const answer = await fetch(`http://127.0.0.1:${port}/x/7?a=b`);
      expect(answer.status).to.equal(201);
      expect(answer.headers.get('content-type')).to.match(/^application\/json/);
      expect(await answer.json()).to.deep.equal({ id: '7', q: 'b', host: true });
      expect(seen).to.deep.equal([{ req: true, res: true }]);
      expect((app.request as unknown as { app: unknown }).app).to.equal(app);
      expect(Object.keys(app.request)).to.deep.equal(['app']);
    } finally {
      await new Promise((r) => server.close(r));
    }
  });
});
