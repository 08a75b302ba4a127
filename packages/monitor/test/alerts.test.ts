import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { PassThrough, Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import {
  ALERT_FIELDS,
  NdjsonSink,
  alertRecord,
  eventLine,
  targetStateOf,
  toJson,
  type Alert,
  type MonitorEvent,
} from '@pmi/monitor';

const A: Alert = {
  id: '1733000000123-0001-9f3a',
  time: '2025-01-01T00:00:00.123Z',
  target: 'nettlp://192.168.10.1',
  check: 'idt',
  severity: 'critical',
  address: '0xfffffe0000000000',
  symbol: 'idt_table+0x10',
  old: '0xffffffff81a00010',
  new: '0xffffffffc0b00000',
  evidence: 'IDT vector 1 handler points outside the kernel text',
  key: 'idt_table+0x10',
  detected_after_ms: 2.25,
};

const E: MonitorEvent = {
  time: '2025-01-01T00:00:01.000Z',
  target: 'nettlp://192.168.10.1',
  type: 'module_loaded',
  detail: 'module nf_tables loaded',
  data: { name: 'nf_tables', base: 0xffffffffc0a00000n },
};

function collect(): { stream: PassThrough; lines: () => unknown[] } {
  const stream = new PassThrough();
  let text = '';
  stream.on('data', (d: Buffer) => (text += d.toString()));
  return {
    stream,
    lines: () =>
      text
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as unknown),
  };
}

describe('line format', () => {
  it('an alert record is exactly the Alert fields, in order, missing values null', () => {
    const extra = { ...A, region: 'idt_table', old: undefined } as unknown as Alert;
    const r = alertRecord(extra);
    expect(Object.keys(r)).toEqual([...ALERT_FIELDS]);
    expect(r.old).toBeNull();
    expect(Object.keys(r)).toEqual([
      'id',
      'time',
      'check',
      'severity',
      'address',
      'symbol',
      'old',
      'new',
      'evidence',
      'key',
      'target',
      'detected_after_ms',
    ]);
  });

  it('event lines carry type "event" and the event type as "event"; bigints become hex', () => {
    expect(JSON.parse(toJson(eventLine(E)))).toEqual({
      type: 'event',
      event: 'module_loaded',
      time: E.time,
      target: E.target,
      detail: E.detail,
      data: { name: 'nf_tables', base: '0xffffffffc0a00000' },
    });
    expect(Object.keys(eventLine({ ...E, data: undefined }))).not.toContain('data');
  });

  it('targetStateOf reads state events, panicked and rebooted', () => {
    const ev = (type: MonitorEvent['type'], data?: Record<string, unknown>): MonitorEvent => ({
      ...E,
      type,
      data,
    });
    expect(targetStateOf(ev('state', { state: 'unreachable' }))).toBe('unreachable');
    expect(targetStateOf(ev('state', { state: 'bogus' }))).toBeUndefined();
    expect(targetStateOf(ev('panicked'))).toBe('panicked');
    expect(targetStateOf(ev('rebooted'))).toBe('rebooted');
    expect(targetStateOf(ev('module_loaded'))).toBeUndefined();
  });
});

describe('NdjsonSink', () => {
  it('default: alerts only, exactly the Alert fields', async () => {
    const c = collect();
    const sink = new NdjsonSink({ stream: c.stream });
    sink.alert(A);
    sink.event(E);
    sink.alert({ ...A, id: A.id.replace('0001', '0002') });
    await sink.close();
    const lines = c.lines();
    expect(lines).toHaveLength(2);
    expect(lines[0]).toEqual(A);
    expect(Object.keys(lines[0] as object)).toEqual([...ALERT_FIELDS]);
    expect(sink.stats()).toMatchObject({ lines: 2, dropped: 0, broken: false });
  });

  it('events: true writes both, with a type discriminator', async () => {
    const c = collect();
    const sink = new NdjsonSink({ stream: c.stream, events: true, end: true });
    sink.event(E);
    sink.alert(A);
    await sink.close();
    const [ev, al] = c.lines() as Record<string, unknown>[];
    expect(ev).toMatchObject({ type: 'event', event: 'module_loaded' });
    expect(al).toEqual({ type: 'alert', ...A });
    expect(Object.keys(al)).toEqual(['type', ...ALERT_FIELDS]);
    expect(c.stream.writableEnded).toBe(true);
    sink.alert(A);
    expect(sink.stats().dropped).toBe(1);
  });

  it('a stream error stops writing and never throws', async () => {
    const failing = new Writable({
      write(_chunk, _enc, cb) {
        cb(Object.assign(new Error('write EPIPE'), { code: 'EPIPE' }));
      },
    });
    const sink = new NdjsonSink({ stream: failing });
    sink.alert(A);
    await new Promise((r) => setImmediate(r));
    expect(() => sink.alert(A)).not.toThrow();
    await sink.close();
    expect(sink.stats()).toMatchObject({ broken: true, error: 'EPIPE', lines: 1, dropped: 1 });
  });

  it('survives a real closed pipe (EPIPE)', async () => {
    // The reader closes its end of the pipe and stays alive: writes fail with EPIPE.
    const child = spawn('sh', ['-c', 'exec 0<&-; sleep 5'], { stdio: ['pipe', 'ignore', 'ignore'] });
    try {
      await new Promise((r) => setTimeout(r, 200));
      const sink = new NdjsonSink({ stream: child.stdin! });
      for (let i = 0; i < 100; i++) sink.alert(A);
      await sink.close();
      for (let i = 0; i < 10; i++) sink.alert(A);
      const st = sink.stats();
      expect(st.broken).toBe(true);
      expect(st.error).toBe('EPIPE');
      expect(st.dropped).toBeGreaterThanOrEqual(10);
    } finally {
      child.kill();
    }
  });

  it('process.stdout into a closed pipe: the process exits 0, not with an EPIPE crash', async () => {
    // A child with the sink on its stdout, whose reader closes the pipe after the first line. The
    // child runs the built module (tsc -b; the npm scripts and ./run build before testing).
    const built = fileURLToPath(new URL('../dist/alerts/ndjson.js', import.meta.url));
    expect(existsSync(built), `${built} missing: build first (npx tsc -b)`).toBe(true);
    const code = `
      const { NdjsonSink } = await import(${JSON.stringify(pathToFileURL(built).href)});
      const sink = new NdjsonSink();
      const a = ${JSON.stringify(A)};
      for (let i = 0; i < 2000; i++) { sink.alert(a); await new Promise((r) => setImmediate(r)); }
      await sink.close();
      process.stderr.write(JSON.stringify(sink.stats()));
    `;
    const child = spawn(process.execPath, ['--input-type=module', '-e', code], { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.stdout.once('data', () => child.stdout.destroy());
    const exit = await new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
    expect(err).toMatch(/"broken":true,"error":"EPIPE"/);
    expect(exit).toBe(0);
  });
});
