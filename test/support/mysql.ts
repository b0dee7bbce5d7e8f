// MySQL/MariaDB for tests (TEST_MYSQL_URL, e.g. mysql://root@127.0.0.1:3306/test): a database of
// its own per suite (created and dropped here), and a TCP proxy in front of the server that a
// test can cut and restore to make the database unreachable for real.
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import mysql, { type Connection } from 'mysql2/promise';

export interface MysqlTarget {
  host: string;
  port: number;
  user: string;
  password: string;
  database: string;
}

/** TEST_MYSQL_URL, else the machine's MariaDB (root, no password, database `test`). */
export function mysqlTargetOrLocal(): MysqlTarget {
  return (
    mysqlFromEnv() ?? {
      host: '127.0.0.1',
      port: 3306,
      user: 'root',
      password: '',
      database: 'test',
    }
  );
}

export function mysqlFromEnv(): MysqlTarget | null {
  const url = process.env.TEST_MYSQL_URL;
  if (!url) return null;
  const u = new URL(url);
  return {
    host: u.hostname,
    port: Number(u.port || 3306),
    user: decodeURIComponent(u.username),
    password: decodeURIComponent(u.password),
    database: u.pathname.replace(/^\//, '') || 'test',
  };
}

/** The service's settings for a target (optionally through another host/port, e.g. a proxy). */
export function mysqlEnv(t: MysqlTarget, via?: { port: number }): Record<string, string> {
  return {
    MYSQL_HOST: t.host,
    MYSQL_PORT: String(via?.port ?? t.port),
    MYSQL_USER: t.user,
    MYSQL_PASSWORD: t.password,
    MYSQL_DB: t.database,
  };
}

/** A fresh database `astron_t_<random>` on the server of TEST_MYSQL_URL; drop() removes it. */
export async function scratchDatabase(
  t: MysqlTarget,
): Promise<{ target: MysqlTarget; conn: Connection; drop(): Promise<void> }> {
  const name = `astron_t_${randomBytes(5).toString('hex')}`;
  const admin = await mysql.createConnection({
    host: t.host,
    port: t.port,
    user: t.user,
    password: t.password,
  });
  await admin.query(`CREATE DATABASE \`${name}\` CHARACTER SET utf8mb4`);
  await admin.changeUser({ database: name });
  return {
    target: { ...t, database: name },
    conn: admin,
    async drop() {
      try {
        await admin.query(`DROP DATABASE IF EXISTS \`${name}\``);
      } finally {
        await admin.end();
      }
    },
  };
}

/** Forwards loopback connections to a target; cut() refuses and drops them, restore() resumes. */
export class TcpProxy {
  private server?: net.Server;
  private readonly sockets = new Set<net.Socket>();
  port = 0;

  constructor(
    private readonly targetHost: string,
    private readonly targetPort: number,
  ) {}

  async start(): Promise<this> {
    const server = net.createServer((client) => {
      const upstream = net.connect(this.targetPort, this.targetHost);
      for (const s of [client, upstream]) {
        this.sockets.add(s);
        s.on('close', () => this.sockets.delete(s));
        s.on('error', () => {
          client.destroy();
          upstream.destroy();
        });
      }
      client.pipe(upstream);
      upstream.pipe(client);
    });
    await new Promise<void>((res, rej) => {
      server.once('error', rej);
      server.listen(this.port, '127.0.0.1', () => res());
    });
    this.port = (server.address() as net.AddressInfo).port;
    this.server = server;
    return this;
  }

  /** The database becomes unreachable: the port refuses connections, open ones are reset. */
  async cut(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    for (const s of this.sockets) s.destroy();
    if (server) await new Promise<void>((res) => server.close(() => res()));
  }

  async restore(): Promise<void> {
    await this.start();
  }

  async stop(): Promise<void> {
    await this.cut();
  }
}
