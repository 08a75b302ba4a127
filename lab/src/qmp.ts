import { createConnection, type Socket } from 'node:net';
import { labError } from './util.js';

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
  command: string;
}

/** A minimal QMP client (line-delimited JSON over a unix socket), every call with a timeout. */
export class QmpClient {
  private sock: Socket | undefined;
  private buf = '';
  private nextId = 1;
  private pending = new Map<string, Pending>();
  private closed = false;
  private greeting: ((ok: boolean) => void) | undefined;

  private constructor(private readonly path: string) {}

  /** Connect, read the greeting and negotiate capabilities. */
  static async connect(path: string, timeoutMs = 10_000): Promise<QmpClient> {
    const c = new QmpClient(path);
    await c.open(timeoutMs);
    return c;
  }

  private open(timeoutMs: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.close();
        reject(labError(`QMP ${this.path}: no greeting within ${timeoutMs} ms`, { qmp_socket: this.path }));
      }, timeoutMs);
      this.greeting = (ok) => {
        clearTimeout(timer);
        if (ok) resolve();
      };
      const sock = createConnection(this.path);
      this.sock = sock;
      sock.setEncoding('utf8');
      sock.on('data', (d: string) => this.onData(d));
      sock.on('error', (e) => {
        clearTimeout(timer);
        this.failAll(labError(`QMP ${this.path}: ${e.message}`, { qmp_socket: this.path }, e));
        reject(labError(`QMP ${this.path}: ${e.message}`, { qmp_socket: this.path }, e));
      });
      sock.on('close', () => {
        clearTimeout(timer);
        this.closed = true;
        this.failAll(labError(`QMP ${this.path}: connection closed`, { qmp_socket: this.path }));
        reject(labError(`QMP ${this.path}: connection closed`, { qmp_socket: this.path }));
      });
    }).then(() => this.execute('qmp_capabilities', undefined, timeoutMs).then(() => undefined));
  }

  private onData(d: string): void {
    this.buf += d;
    let nl: number;
    while ((nl = this.buf.indexOf('\n')) >= 0) {
      const line = this.buf.slice(0, nl).trim();
      this.buf = this.buf.slice(nl + 1);
      if (!line) continue;
      let msg: Record<string, unknown>;
      try {
        msg = JSON.parse(line) as Record<string, unknown>;
      } catch {
        continue;
      }
      if ('QMP' in msg) {
        this.greeting?.(true);
        this.greeting = undefined;
        continue;
      }
      const id = typeof msg.id === 'string' ? msg.id : undefined;
      if (!id) continue; // events
      const p = this.pending.get(id);
      if (!p) continue;
      this.pending.delete(id);
      clearTimeout(p.timer);
      if ('error' in msg) {
        const err = msg.error as { class?: string; desc?: string };
        p.reject(
          labError(`QMP ${p.command} failed: ${err.desc ?? JSON.stringify(err)}`, {
            qmp_command: p.command,
            qmp_class: err.class,
          }),
        );
      } else p.resolve(msg.return);
    }
  }

  private failAll(err: Error): void {
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(err);
      this.pending.delete(id);
    }
  }

  execute<T = unknown>(command: string, args?: Record<string, unknown>, timeoutMs = 10_000): Promise<T> {
    if (this.closed || !this.sock) {
      return Promise.reject(labError(`QMP ${this.path}: not connected`, { qmp_socket: this.path }));
    }
    const id = `pmi-${this.nextId++}`;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(labError(`QMP ${command} timed out after ${timeoutMs} ms`, { qmp_command: command }));
      }, timeoutMs);
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, timer, command });
      const msg: Record<string, unknown> = { execute: command, id };
      if (args) msg.arguments = args;
      this.sock!.write(JSON.stringify(msg) + '\n');
    });
  }

  close(): void {
    this.closed = true;
    this.sock?.destroy();
    this.failAll(labError(`QMP ${this.path}: closed`, { qmp_socket: this.path }));
  }
}

/** Connect, run one command, disconnect. */
export async function qmpOnce<T = unknown>(
  path: string,
  command: string,
  args?: Record<string, unknown>,
  timeoutMs = 10_000,
): Promise<T> {
  const c = await QmpClient.connect(path, timeoutMs);
  try {
    return await c.execute<T>(command, args, timeoutMs);
  } finally {
    c.close();
  }
}
