// SERVICE_SCHEDULING=leastconn over node:cluster's IPC (see handoff.ts): the primary accepts a
// paused net.Socket (it never reads a byte) and sends it with a `conn` message; the worker's
// `conn-ack` comes back as a cluster message. Used where native/handoff.c is not built, or with
// SERVICE_HANDOFF=ipc.
import type { Worker } from 'node:cluster';
import net, { type Socket } from 'node:net';
import { isHandoffMessage, type ConnMessage } from '../ipc.js';
import type { HandoffEvents, SendFailure, Transport, TransportOptions } from './handoff.js';

export class IpcTransport implements Transport<Socket> {
  readonly kind = 'ipc';
  private server?: net.Server;
  private events?: HandoffEvents<Socket>;

  constructor(private readonly opts: TransportOptions) {}

  listen(events: HandoffEvents<Socket>): Promise<void> {
    this.events = events;
    const server = net.createServer(
      { pauseOnConnect: true },
      this.opts.guard('a new connection', (socket: Socket) => {
        // A paused socket reads nothing, but a reset can still surface as an error: never unheard.
        socket.on('error', () => undefined);
        events.connection(socket);
      }),
    );
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: this.opts.host, port: this.opts.port, backlog: 511 }, () => {
        server.off('error', reject);
        server.on(
          'error',
          this.opts.guard('the listening socket', (err: Error) =>
            this.opts.log.error('listening socket error', { err }),
          ),
        );
        resolve();
      });
    });
  }

  prepareFork() {
    return { env: {}, forked: () => undefined };
  }

  onMessage(worker: Worker, msg: unknown): boolean {
    if (!isHandoffMessage(msg)) return false;
    if (msg.t === 'conns') this.events?.count(worker.id, msg.open);
    else {
      const answer = msg.ok ? 'ok' : msg.retry ? 'retry' : 'refused';
      this.events?.ack(worker.id, msg.id, answer, msg.open);
    }
    return true;
  }

  send(worker: Worker, id: number, socket: Socket, failed: (why: SendFailure) => void): void {
    const msg: ConnMessage = { t: 'conn', id };
    // The channel is closing (the worker is dying): the connection goes elsewhere.
    const onSent = this.opts.guard('a handoff', (err: Error | null) => {
      if (err) failed('gone');
    });
    try {
      worker.send(msg, socket, { keepOpen: true }, onSent);
    } catch {
      setImmediate(this.opts.guard('a handoff', () => failed('gone')));
    }
  }

  release(socket: Socket): void {
    // Closes the primary's copy of the descriptor only: the worker holds its own.
    socket.destroy();
  }

  isClosed(socket: Socket): boolean {
    return socket.destroyed;
  }

  gone(): void {}

  close(): void {
    this.server?.close();
  }
}
