import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { PmiError } from '@pmi/core';
import {
  PMI_APPLICATION_ID,
  SCHEMA_VERSION,
  StoreSink,
  defaultDbPath,
  openStore,
  type Alert,
  type MonitorEvent,
} from '@pmi/monitor';

const TARGET = 'nettlp://192.168.10.1';
let seq = 0;

function alert(over: Partial<Alert> = {}): Alert {
  seq++;
  return {
    id: `${String(1_733_000_000_000 + seq).padStart(13, '0')}-${String(seq).padStart(4, '0')}-ab${seq}`,
    time: new Date(Date.UTC(2025, 0, 1, 0, 0, seq)).toISOString(),
    target: TARGET,
    check: 'syscall_table',
    severity: 'critical',
    address: '0xffffffff82000208',
    symbol: 'sys_call_table+0x208',
    old: '0xffffffff81234560',
    new: '0xffffffffc0a01000',
    evidence: 'sys_call_table[65] points into module rootkit, expected __x64_sys_getppid',
    key: 'sys_call_table+0x208',
    detected_after_ms: 3.5,
    ...over,
  };
}

function expectPmiError(f: () => unknown, code: string, text: RegExp): PmiError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(PmiError);
    expect((e as PmiError).code).toBe(code);
    expect((e as PmiError).message).toMatch(text);
    return e as PmiError;
  }
  throw new Error(`expected a PmiError ${code}`);
}

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'pmi-store-'));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('defaultDbPath', () => {
  it('uses $XDG_DATA_HOME when absolute, else ~/.local/share', () => {
    expect(defaultDbPath({ XDG_DATA_HOME: '/data' }, '/home/u')).toBe('/data/pmi/pmi.db');
    expect(defaultDbPath({}, '/home/u')).toBe('/home/u/.local/share/pmi/pmi.db');
    expect(defaultDbPath({ XDG_DATA_HOME: 'rel' }, '/home/u')).toBe('/home/u/.local/share/pmi/pmi.db');
  });
});

describe('openStore', () => {
  it('creates parent directories, a WAL database at the current schema version, owner-only', () => {
    const path = join(dir, 'a', 'b', 'pmi.db');
    const s = openStore(path);
    expect(s.path).toBe(path);
    s.close();
    expect(statSync(join(dir, 'a')).mode & 0o777).toBe(0o700);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    const db = new Database(path, { readonly: true });
    expect(db.pragma('user_version', { simple: true })).toBe(SCHEMA_VERSION);
    expect(db.pragma('application_id', { simple: true })).toBe(PMI_APPLICATION_ID);
    expect(db.pragma('journal_mode', { simple: true })).toBe('wal');
    const tables = (
      db.prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name").all() as {
        name: string;
      }[]
    ).map((r) => r.name);
    expect(tables).toEqual(expect.arrayContaining(['alerts', 'baselines', 'events', 'target_states']));
    const cols = (db.prepare('PRAGMA table_info(alerts)').all() as { name: string }[]).map((c) => c.name);
    expect(cols).toEqual([
      'id',
      'time',
      'target',
      'check',
      'severity',
      'address',
      'symbol',
      'old',
      'new',
      'evidence',
      'key',
      'detected_after_ms',
      'acknowledged',
      'acknowledged_at',
      'acknowledged_by',
    ]);
    db.close();
  });

  it('reopens an existing store with its data', () => {
    const path = join(dir, 'pmi.db');
    const s = openStore(path);
    const a = alert();
    expect(s.insertAlert(a)).toBe(true);
    s.close();
    const t = openStore(path);
    expect(t.getAlert(a.id)?.evidence).toBe(a.evidence);
    t.close();
    const r = openStore(path, { readonly: true });
    expect(r.listAlerts()).toHaveLength(1);
    expectPmiError(() => r.insertAlert(alert()), 'E_SOURCE_IO', /readonly/);
    r.close();
  });

  it('refuses a file that is not SQLite, naming the path', () => {
    const path = join(dir, 'notes.txt');
    writeFileSync(path, 'these are my notes, not a database\n'.repeat(40));
    const e = expectPmiError(() => openStore(path), 'E_SOURCE_FORMAT', /not a SQLite database/);
    expect(e.message).toContain(path);
    expect(e.data.path).toBe(path);
  });

  it('refuses a damaged SQLite file', () => {
    const path = join(dir, 'pmi.db');
    openStore(path).close();
    const bytes = Buffer.alloc(4096, 0xa5);
    bytes.write('SQLite format 3\0', 0, 'latin1'); // a header, then garbage
    writeFileSync(path, bytes);
    expectPmiError(() => openStore(path), 'E_SOURCE_FORMAT', new RegExp(path.replace(/[.]/g, '\\.')));
  });

  it('refuses to write into somebody else’s SQLite database', () => {
    const path = join(dir, 'other.db');
    const db = new Database(path);
    db.exec('CREATE TABLE notes (t TEXT)');
    db.close();
    expectPmiError(() => openStore(path), 'E_SOURCE_FORMAT', /not a pmi store/);
  });

  it('refuses a store written by a newer schema', () => {
    const path = join(dir, 'pmi.db');
    openStore(path).close();
    const db = new Database(path);
    db.pragma(`user_version = ${SCHEMA_VERSION + 1}`);
    db.close();
    expectPmiError(() => openStore(path), 'E_SOURCE_FORMAT', /newer pmi/);
  });

  it('reports a path it cannot create as E_SOURCE_IO', () => {
    const file = join(dir, 'file');
    writeFileSync(file, '');
    expectPmiError(() => openStore(join(file, 'sub', 'pmi.db')), 'E_SOURCE_IO', /cannot create/);
  });

  it('is E_CLOSED after close()', () => {
    const s = openStore(':memory:');
    s.close();
    s.close(); // idempotent
    expect(s.closed).toBe(true);
    expectPmiError(() => s.listAlerts(), 'E_CLOSED', /closed/);
  });
});

describe('alerts', () => {
  it('round-trips every field; a duplicate id keeps the first', () => {
    const s = openStore(':memory:');
    const a = alert({ address: null, symbol: null, old: null, new: null, detected_after_ms: null });
    expect(s.insertAlert(a)).toBe(true);
    expect(s.insertAlert({ ...a, evidence: 'other' })).toBe(false);
    expect(s.getAlert(a.id)).toEqual({ ...a, acknowledged: false, acknowledged_at: null, acknowledged_by: null });
    expect(s.getAlert('nope')).toBeUndefined();
    s.close();
  });

  it('lists newest first, filtered by target, check, since, unacknowledged, limit', () => {
    const s = openStore(':memory:');
    const a1 = alert();
    const a2 = alert({ check: 'idt', severity: 'high' });
    const a3 = alert({ target: 'file:///dumps/x.raw' });
    const a4 = alert();
    for (const a of [a1, a2, a3, a4]) s.insertAlert(a);
    expect(s.listAlerts().map((a) => a.id)).toEqual([a4.id, a3.id, a2.id, a1.id]);
    expect(s.listAlerts({ target: TARGET }).map((a) => a.id)).toEqual([a4.id, a2.id, a1.id]);
    expect(s.listAlerts({ check: 'idt' }).map((a) => a.id)).toEqual([a2.id]);
    expect(s.listAlerts({ since: a2.time }).map((a) => a.id)).toEqual([a4.id, a3.id, a2.id]);
    expect(s.listAlerts({ since: new Date(a3.time) }).map((a) => a.id)).toEqual([a4.id, a3.id]);
    expect(s.listAlerts({ limit: 2 }).map((a) => a.id)).toEqual([a4.id, a3.id]);
    expect(s.listAlerts({ target: TARGET, check: 'syscall_table', limit: 1 }).map((a) => a.id)).toEqual([a4.id]);
    expectPmiError(() => s.listAlerts({ limit: 0 }), 'E_USAGE', /limit/);
    expectPmiError(() => s.listAlerts({ since: 'yesterday-ish' }), 'E_USAGE', /not a time/);
    s.close();
  });

  it('acknowledges once, keeping the first time and person', () => {
    const s = openStore(':memory:');
    const a1 = alert();
    const a2 = alert();
    s.insertAlert(a1);
    s.insertAlert(a2);
    const acked = s.acknowledge(a1.id, 'alice')!;
    expect(acked.acknowledged).toBe(true);
    expect(acked.acknowledged_by).toBe('alice');
    expect(Date.parse(acked.acknowledged_at!)).not.toBeNaN();
    expect(s.acknowledge(a1.id, 'bob')).toEqual(acked);
    expect(s.acknowledge('missing')).toBeUndefined();
    expect(s.acknowledge(a2.id)?.acknowledged_by).toBeNull();
    expect(s.listAlerts({ unacknowledged: true })).toEqual([]);
    s.close();
  });
});

describe('events, baselines, states', () => {
  it('stores events with JSON data (bigints as hex)', () => {
    const s = openStore(':memory:');
    const e: MonitorEvent = {
      time: '2025-01-01T00:00:00.000Z',
      target: TARGET,
      type: 'module_loaded',
      detail: 'module nf_tables loaded at 0xffffffffc0a00000',
      data: { name: 'nf_tables', base: 0xffffffffc0a00000n, size: 4096 },
    };
    const id = s.insertEvent(e);
    s.insertEvent({ time: '2025-01-01T00:00:01.000Z', target: TARGET, type: 'started', detail: 'watching' });
    expect(id).toBeGreaterThan(0);
    const list = s.listEvents();
    expect(list.map((x) => x.type)).toEqual(['started', 'module_loaded']);
    expect(list[0].data).toBeUndefined();
    expect(list[1]).toEqual({ ...e, id, data: { name: 'nf_tables', base: '0xffffffffc0a00000', size: 4096 } });
    expect(s.listEvents({ type: 'started' })).toHaveLength(1);
    expect(s.listEvents({ target: 'other' })).toHaveLength(0);
    s.close();
  });

  it('returns the newest baseline per target', () => {
    const s = openStore(':memory:');
    expect(s.latestBaseline(TARGET)).toBeUndefined();
    s.saveBaseline({ target: TARGET, kernel_release: '6.12.9', kaslr_slide: 0x1a000000n, data: { v: 1 } });
    const id2 = s.saveBaseline({
      target: TARGET,
      created: '2025-01-02T00:00:00.000Z',
      kernel_release: '6.12.9',
      kaslr_slide: '0x2c000000',
      boot_id: 'b0a1',
      data: { v: 2, checks: { idt: { entries: ['0xffffffff81a00000'] } } },
    });
    s.saveBaseline({ target: 'other', data: { v: 3 } });
    expect(s.latestBaseline(TARGET)).toEqual({
      id: id2,
      target: TARGET,
      created: '2025-01-02T00:00:00.000Z',
      kernel_release: '6.12.9',
      kaslr_slide: '0x2c000000',
      boot_id: 'b0a1',
      data: { v: 2, checks: { idt: { entries: ['0xffffffff81a00000'] } } },
    });
    expect(s.latestBaseline('other')?.data).toEqual({ v: 3 });
    s.close();
  });

  it('logs state changes only', () => {
    const s = openStore(':memory:');
    expect(s.getState(TARGET)).toBeUndefined();
    expect(s.setState(TARGET, 'up')).toBe(true);
    expect(s.setState(TARGET, 'up', 'still up')).toBe(false);
    expect(s.setState(TARGET, 'unreachable', 'no completion for 1 s', '2025-01-01T00:00:00.000Z')).toBe(true);
    expect(s.getState(TARGET)).toMatchObject({
      target: TARGET,
      state: 'unreachable',
      detail: 'no completion for 1 s',
      time: '2025-01-01T00:00:00.000Z',
    });
    expectPmiError(() => s.setState(TARGET, 'sleeping' as never), 'E_USAGE', /unknown target state/);
    s.close();
  });
});

describe('StoreSink', () => {
  it('stores alerts and events, follows state events, never throws', async () => {
    const store = openStore(join(dir, 'pmi.db'));
    const logged: string[] = [];
    const sink = new StoreSink(store, { log: (m) => logged.push(m) });
    const a = alert();
    sink.alert(a);
    sink.event({
      time: '2025-01-01T00:00:00.000Z',
      target: TARGET,
      type: 'state',
      detail: 'up',
      data: { state: 'up' },
    });
    sink.event({ time: '2025-01-01T00:00:01.000Z', target: TARGET, type: 'panicked', detail: 'panic_cpu set' });
    sink.event({ time: '2025-01-01T00:00:02.000Z', target: TARGET, type: 'module_loaded', detail: 'm' });
    expect(store.getAlert(a.id)?.id).toBe(a.id);
    expect(store.listEvents()).toHaveLength(3);
    expect(store.getState(TARGET)?.state).toBe('panicked');
    await sink.close();
    expect(store.closed).toBe(true);
    expect(() => sink.alert(alert())).not.toThrow();
    expect(sink.errors).toBe(1);
    expect(logged[0]).toMatch(/not stored: .*closed/);
  });
});
