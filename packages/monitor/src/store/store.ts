/**
 * The monitor's SQLite store (better-sqlite3: synchronous, in-process, WAL): alerts with their
 * acknowledgement, events, baselines and the target-state log. One file per machine by default
 * (defaultDbPath); several processes may share it (WAL: readers never block the writer; writers
 * wait up to busyTimeoutMs for each other). Schema and versioning: schema.ts, docs/monitor-store.md.
 *
 * Every failure is a PmiError naming the file: E_SOURCE_FORMAT when the file is not a (pmi) SQLite
 * database or was written by a newer schema, E_SOURCE_IO when the OS or SQLite refuses, E_CLOSED
 * after close(), E_USAGE for bad arguments.
 */
import { chmodSync, existsSync, mkdirSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import Database from 'better-sqlite3';
import { PmiError } from '@pmi/core';
import type { Alert, MonitorEvent, Severity, TargetState } from '../model.js';
import { alertRecord, isTargetState, toJson } from '../alerts/format.js';
import { MIGRATIONS, PMI_APPLICATION_ID, SCHEMA_VERSION } from './schema.js';

const ORIGIN = 'monitor-store';

/** `$XDG_DATA_HOME/pmi/pmi.db`, else `~/.local/share/pmi/pmi.db` (relative XDG_DATA_HOME is ignored, per the spec). */
export function defaultDbPath(env: NodeJS.ProcessEnv = process.env, home: string = homedir()): string {
  const xdg = env.XDG_DATA_HOME;
  const base = xdg && xdg.startsWith('/') ? xdg : join(home, '.local', 'share');
  return join(base, 'pmi', 'pmi.db');
}

export interface StoredAlert extends Alert {
  acknowledged: boolean;
  acknowledged_at: string | null;
  acknowledged_by: string | null;
}

export interface AlertQuery {
  target?: string;
  /** Alerts raised at or after this time (Date or anything Date.parse reads). */
  since?: string | Date;
  check?: string;
  /** Only alerts nobody acknowledged yet. */
  unacknowledged?: boolean;
  /** At most this many (the newest). Default: all. */
  limit?: number;
}

export interface StoredEvent extends MonitorEvent {
  id: number;
}

export interface EventQuery {
  target?: string;
  since?: string | Date;
  type?: MonitorEvent['type'];
  limit?: number;
}

export interface BaselineInput {
  target: string;
  /** ISO time; default now. */
  created?: string;
  kernel_release?: string | null;
  /** KASLR slide, hex ("0x…") or bigint. */
  kaslr_slide?: string | bigint | null;
  boot_id?: string | null;
  /** The baseline itself: any JSON value (bigints are stored as "0x…" strings). */
  data: unknown;
}

export interface StoredBaseline {
  id: number;
  target: string;
  created: string;
  kernel_release: string | null;
  kaslr_slide: string | null;
  boot_id: string | null;
  data: unknown;
}

export interface StoredState {
  id: number;
  target: string;
  time: string;
  state: TargetState;
  detail: string | null;
}

export interface StoreOptions {
  /** Open an existing store read-only (no directory or file is created, no migration runs). */
  readonly?: boolean;
  /** How long a write waits for another process's write lock. Default 5000 ms. */
  busyTimeoutMs?: number;
}

interface AlertRow {
  id: string;
  time: string;
  target: string;
  check: string;
  severity: string;
  address: string | null;
  symbol: string | null;
  old: string | null;
  new: string | null;
  evidence: string;
  key: string;
  detected_after_ms: number | null;
  acknowledged: number;
  acknowledged_at: string | null;
  acknowledged_by: string | null;
}

interface EventRow {
  id: number;
  time: string;
  target: string;
  type: string;
  detail: string;
  data: string | null;
}

interface BaselineRow {
  id: number;
  target: string;
  created: string;
  kernel_release: string | null;
  kaslr_slide: string | null;
  boot_id: string | null;
  json: string;
}

/** Open (creating when needed) the store at `path` (default defaultDbPath(); ":memory:" for a private one). */
export function openStore(path: string = defaultDbPath(), options: StoreOptions = {}): MonitorStore {
  return new MonitorStore(path, options);
}

export class MonitorStore {
  /** Absolute path of the database file (or ":memory:"). */
  readonly path: string;
  readonly readonly: boolean;
  private db: Database.Database | undefined;
  private readonly stmts = new Map<string, Database.Statement>();

  constructor(path: string, options: StoreOptions = {}) {
    const memory = path === ':memory:';
    this.path = memory ? path : resolve(path);
    this.readonly = options.readonly ?? false;
    const created = !memory && !existsSync(this.path);
    if (!memory && !this.readonly) {
      try {
        mkdirSync(dirname(this.path), { recursive: true, mode: 0o700 });
      } catch (e) {
        throw this.ioError(`cannot create the directory of ${this.path}`, e);
      }
    }
    let db: Database.Database | undefined;
    try {
      db = new Database(this.path, {
        readonly: this.readonly,
        fileMustExist: this.readonly,
        timeout: options.busyTimeoutMs ?? 5000,
      });
      // The database holds kernel addresses: owner-only, like the directory (-wal/-shm inherit it).
      if (created) {
        try {
          chmodSync(this.path, 0o600);
        } catch {
          // best effort (a file system without modes)
        }
      }
      this.prepareSchema(db);
    } catch (e) {
      try {
        db?.close();
      } catch {
        // already failing
      }
      throw this.openError(e);
    }
    this.db = db;
  }

  /** Store an alert; false when one with this id is already there (the first one is kept). */
  insertAlert(a: Alert): boolean {
    const r = this.run(
      'insertAlert',
      `INSERT OR IGNORE INTO alerts (id, time, target, "check", severity, address, symbol, old, new, evidence, "key", detected_after_ms)
       VALUES (@id, @time, @target, @check, @severity, @address, @symbol, @old, @new, @evidence, @key, @detected_after_ms)`,
      // the same field set as every other output (NDJSON, webhook): undefined → null
      (s) => s.run(alertRecord(a)),
    );
    return r.changes > 0;
  }

  getAlert(id: string): StoredAlert | undefined {
    const row = this.run('getAlert', 'SELECT * FROM alerts WHERE id = ?', (s) => s.get(id)) as AlertRow | undefined;
    return row && alertOf(row);
  }

  /** Newest first. */
  listAlerts(q: AlertQuery = {}): StoredAlert[] {
    const params: Record<string, unknown> = {
      target: q.target,
      check: q.check,
      since: q.since === undefined ? undefined : isoTime(q.since, 'since'),
    };
    const where = [
      q.target !== undefined && 'target = @target',
      q.check !== undefined && '"check" = @check',
      q.since !== undefined && 'time >= @since',
      q.unacknowledged && 'acknowledged = 0',
    ];
    const sql =
      'SELECT * FROM alerts' +
      whereClause(where, params) +
      ' ORDER BY time DESC, id DESC' +
      limitClause(q.limit, params);
    return (this.run(sql, sql, (s) => s.all(params)) as AlertRow[]).map(alertOf);
  }

  /**
   * Mark an alert acknowledged (by whom: free text, e.g. a user name). Acknowledging twice keeps the
   * first time and person. Returns the alert as stored, or undefined when there is no such id.
   */
  acknowledge(id: string, by?: string): StoredAlert | undefined {
    this.run(
      'acknowledge',
      `UPDATE alerts SET acknowledged = 1, acknowledged_at = @at, acknowledged_by = @by
       WHERE id = @id AND acknowledged = 0`,
      (s) => s.run({ id, at: new Date().toISOString(), by: by ?? null }),
    );
    return this.getAlert(id);
  }

  /** Store an event; returns its row id. */
  insertEvent(e: MonitorEvent): number {
    const r = this.run(
      'insertEvent',
      'INSERT INTO events (time, target, type, detail, data) VALUES (?, ?, ?, ?, ?)',
      (s) => s.run(e.time, e.target, e.type, e.detail, e.data === undefined ? null : toJson(e.data)),
    );
    return Number(r.lastInsertRowid);
  }

  /** Newest first. */
  listEvents(q: EventQuery = {}): StoredEvent[] {
    const params: Record<string, unknown> = {
      target: q.target,
      type: q.type,
      since: q.since === undefined ? undefined : isoTime(q.since, 'since'),
    };
    const where = [
      q.target !== undefined && 'target = @target',
      q.type !== undefined && 'type = @type',
      q.since !== undefined && 'time >= @since',
    ];
    const sql =
      'SELECT * FROM events' +
      whereClause(where, params) +
      ' ORDER BY time DESC, id DESC' +
      limitClause(q.limit, params);
    return (this.run(sql, sql, (s) => s.all(params)) as EventRow[]).map((r) => {
      const e: StoredEvent = {
        id: r.id,
        time: r.time,
        target: r.target,
        type: r.type as MonitorEvent['type'],
        detail: r.detail,
      };
      if (r.data !== null) e.data = JSON.parse(r.data) as Record<string, unknown>;
      return e;
    });
  }

  /** Store a baseline; returns its id. The newest one per target is what latestBaseline returns. */
  saveBaseline(b: BaselineInput): number {
    const slide = typeof b.kaslr_slide === 'bigint' ? '0x' + b.kaslr_slide.toString(16) : (b.kaslr_slide ?? null);
    const json = toJson(b.data);
    if (json === undefined) throw new PmiError('E_USAGE', ORIGIN, 'saveBaseline: data is not JSON', {});
    const r = this.run(
      'saveBaseline',
      `INSERT INTO baselines (target, created, kernel_release, kaslr_slide, boot_id, json) VALUES (?, ?, ?, ?, ?, ?)`,
      (s) =>
        s.run(
          b.target,
          b.created ?? new Date().toISOString(),
          b.kernel_release ?? null,
          slide,
          b.boot_id ?? null,
          json,
        ),
    );
    return Number(r.lastInsertRowid);
  }

  latestBaseline(target: string): StoredBaseline | undefined {
    const row = this.run('latestBaseline', 'SELECT * FROM baselines WHERE target = ? ORDER BY id DESC LIMIT 1', (s) =>
      s.get(target),
    ) as BaselineRow | undefined;
    if (!row) return undefined;
    const { json, ...rest } = row;
    return { ...rest, data: JSON.parse(json) as unknown };
  }

  /**
   * Log the target's state. Only changes are logged: the same state as the last one logged for this
   * target adds no row (returns false).
   */
  setState(target: string, state: TargetState, detail?: string, time: string = new Date().toISOString()): boolean {
    if (!isTargetState(state)) {
      throw new PmiError('E_USAGE', ORIGIN, `setState: unknown target state '${String(state)}'`, { state });
    }
    if (this.getState(target)?.state === state) return false;
    this.run('setState', 'INSERT INTO target_states (target, time, state, detail) VALUES (?, ?, ?, ?)', (s) =>
      s.run(target, time, state, detail ?? null),
    );
    return true;
  }

  /** The last state logged for the target. */
  getState(target: string): StoredState | undefined {
    return this.run('getState', 'SELECT * FROM target_states WHERE target = ? ORDER BY id DESC LIMIT 1', (s) =>
      s.get(target),
    ) as StoredState | undefined;
  }

  get closed(): boolean {
    return this.db === undefined;
  }

  close(): void {
    const db = this.db;
    this.db = undefined;
    this.stmts.clear();
    db?.close();
  }

  private prepareSchema(db: Database.Database): void {
    // Reading the header is the first access: a non-SQLite file fails here (SQLITE_NOTADB).
    const version = db.pragma('user_version', { simple: true }) as number;
    const appId = db.pragma('application_id', { simple: true }) as number;
    if (appId !== 0 && appId !== PMI_APPLICATION_ID) throw this.foreign(`application_id 0x${appId.toString(16)}`);
    if (version > SCHEMA_VERSION) {
      throw new PmiError(
        'E_SOURCE_FORMAT',
        ORIGIN,
        `${this.path}: store schema v${version} was written by a newer pmi (this one knows up to v${SCHEMA_VERSION})`,
        { path: this.path, schema: version, supported: SCHEMA_VERSION },
      );
    }
    if (this.readonly) {
      if (version < SCHEMA_VERSION) {
        throw new PmiError(
          'E_SOURCE_FORMAT',
          ORIGIN,
          `${this.path}: store schema v${version} is older than v${SCHEMA_VERSION}; open it writable once to upgrade`,
          { path: this.path, schema: version, supported: SCHEMA_VERSION },
        );
      }
      return;
    }
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = NORMAL');
    if (version === SCHEMA_VERSION) return;
    // IMMEDIATE: two processes opening a new file at once must not both migrate it.
    db.transaction(() => {
      let v = db.pragma('user_version', { simple: true }) as number;
      if (v === 0 && appId === 0) {
        const n = db.prepare("SELECT count(*) AS n FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%'").get() as {
          n: number;
        };
        if (n.n > 0) throw this.foreign(`${n.n} table(s)/index(es) of its own`);
      }
      for (; v < SCHEMA_VERSION; v++) {
        db.exec(MIGRATIONS[v]);
        db.pragma(`user_version = ${v + 1}`);
      }
      db.pragma(`application_id = ${PMI_APPLICATION_ID}`);
    }).immediate();
  }

  private foreign(why: string): PmiError {
    return new PmiError(
      'E_SOURCE_FORMAT',
      ORIGIN,
      `${this.path}: a SQLite database that is not a pmi store (${why}); refusing to write into it`,
      { path: this.path },
    );
  }

  private run<T>(key: string, sql: string, f: (s: Database.Statement) => T): T {
    const db = this.db;
    if (!db) throw new PmiError('E_CLOSED', ORIGIN, `store ${this.path} is closed`, { path: this.path });
    try {
      let s = this.stmts.get(key);
      if (!s) {
        s = db.prepare(sql);
        this.stmts.set(key, s);
      }
      return f(s);
    } catch (e) {
      if (e instanceof PmiError) throw e;
      throw this.ioError(`store ${this.path}`, e);
    }
  }

  private openError(e: unknown): PmiError {
    if (e instanceof PmiError) return e;
    const code = (e as { code?: string }).code ?? '';
    if (code === 'SQLITE_NOTADB' || code.startsWith('SQLITE_CORRUPT')) {
      return new PmiError(
        'E_SOURCE_FORMAT',
        ORIGIN,
        `${this.path}: not a SQLite database, or a damaged one (${(e as Error).message}); move it away or pass another path`,
        { path: this.path, sqlite: code },
        e,
      );
    }
    return this.ioError(`cannot open the store ${this.path}`, e);
  }

  private ioError(what: string, e: unknown): PmiError {
    const code = (e as { code?: string }).code;
    return new PmiError(
      'E_SOURCE_IO',
      ORIGIN,
      `${what}: ${(e as Error).message ?? String(e)}`,
      { path: this.path, ...(code ? { sqlite: code } : {}) },
      e,
    );
  }
}

function alertOf(r: AlertRow): StoredAlert {
  return {
    id: r.id,
    time: r.time,
    check: r.check,
    severity: r.severity as Severity,
    address: r.address,
    symbol: r.symbol,
    old: r.old,
    new: r.new,
    evidence: r.evidence,
    key: r.key,
    target: r.target,
    detected_after_ms: r.detected_after_ms,
    acknowledged: r.acknowledged !== 0,
    acknowledged_at: r.acknowledged_at,
    acknowledged_by: r.acknowledged_by,
  };
}

/** Times are compared as text: ISO 8601 UTC with milliseconds, as Date.toISOString writes them. */
function isoTime(v: string | Date, what: string): string {
  const t = v instanceof Date ? v.getTime() : Date.parse(v);
  if (Number.isNaN(t))
    throw new PmiError('E_USAGE', ORIGIN, `${what}: not a time: '${String(v)}'`, { [what]: String(v) });
  return new Date(t).toISOString();
}

/** " WHERE a AND b" of the conditions that apply; drops the parameters no condition names (SQLite refuses unused named parameters). */
function whereClause(conds: readonly (string | false | undefined)[], params: Record<string, unknown>): string {
  const used = conds.filter((c): c is string => typeof c === 'string' && c.length > 0);
  for (const k of Object.keys(params)) if (params[k] === undefined) delete params[k];
  return used.length ? ' WHERE ' + used.join(' AND ') : '';
}

function limitClause(limit: number | undefined, params: Record<string, unknown>): string {
  if (limit === undefined) return '';
  if (!Number.isInteger(limit) || limit < 1) {
    throw new PmiError('E_USAGE', ORIGIN, `limit must be a positive integer (got ${limit})`, { limit });
  }
  params.limit = limit;
  return ' LIMIT @limit';
}
