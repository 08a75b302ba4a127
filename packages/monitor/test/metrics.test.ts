import { afterEach, describe, expect, it } from 'vitest';
import { PmiError } from '@pmi/core';
import {
  DEFAULT_METRICS_PORT,
  MonitorMetrics,
  READ_LATENCY_BUCKETS,
  parseListenAddress,
  startMetricsServer,
  type Alert,
  type MetricsServer,
} from '@pmi/monitor';

const T = 'nettlp://192.168.10.1';

function alert(check: string, severity: Alert['severity']): Alert {
  return {
    id: `${Date.now()}-0001-aa`,
    time: new Date().toISOString(),
    target: T,
    check,
    severity,
    address: null,
    symbol: null,
    old: null,
    new: null,
    evidence: 'x',
    key: 'k',
    detected_after_ms: null,
  };
}

/** name{labels} → value, from the exposition text. */
function samples(text: string): Map<string, number> {
  const m = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    m.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return m;
}

describe('MonitorMetrics', () => {
  it('exposes the pmi_ series with a target label, counters pre-created at 0', async () => {
    const m = new MonitorMetrics({
      target: T,
      checks: ['syscall_table'],
      pollIntervalTargetSeconds: 0.005,
      processMetrics: false,
    });
    let s = samples(await m.metrics());
    expect(s.get(`pmi_alerts_total{target="${T}",check="syscall_table",severity="critical"}`)).toBe(0);
    expect(s.get(`pmi_alerts_total{target="${T}",check="syscall_table",severity="info"}`)).toBe(0);
    expect(s.get(`pmi_checks_run_total{target="${T}",check="syscall_table"}`)).toBe(0);
    expect(s.get(`pmi_events_total{target="${T}",type="module_loaded"}`)).toBe(0);
    expect(s.get(`pmi_poll_interval_target_seconds{target="${T}"}`)).toBe(0.005);
    expect(s.get(`pmi_bytes_read_total{target="${T}"}`)).toBe(0);
    expect([...s.keys()].filter((k) => k.startsWith('pmi_target_state'))).toHaveLength(4);
    expect([...s.keys()].some((k) => k.startsWith('process_'))).toBe(false);

    m.checkRun('syscall_table');
    m.checkRun('syscall_table');
    m.checkRun('idt');
    m.alert(alert('syscall_table', 'critical'));
    m.alert(alert('idt', 'high'));
    m.event({ time: '', target: T, type: 'module_loaded', detail: '' });
    m.event({ time: '', target: T, type: 'state', detail: '', data: { state: 'unreachable' } });
    m.setPollInterval(0.0061);
    m.observeRead(30e-6, 4096);
    m.observeRead(0.003, 8192);
    m.setLastFullTextCycle(12.5);
    m.setTargetInfo('6.12.9-amd64');
    m.setTargetInfo('6.12.10-amd64');
    s = samples(await m.metrics());
    expect(s.get(`pmi_checks_run_total{target="${T}",check="syscall_table"}`)).toBe(2);
    expect(s.get(`pmi_checks_run_total{target="${T}",check="idt"}`)).toBe(1);
    expect(s.get(`pmi_alerts_total{target="${T}",check="syscall_table",severity="critical"}`)).toBe(1);
    expect(s.get(`pmi_alerts_total{target="${T}",check="idt",severity="high"}`)).toBe(1);
    expect(s.get(`pmi_alerts_total{target="${T}",check="idt",severity="low"}`)).toBe(0);
    expect(s.get(`pmi_events_total{target="${T}",type="module_loaded"}`)).toBe(1);
    expect(s.get(`pmi_events_total{target="${T}",type="state"}`)).toBe(1);
    expect(s.get(`pmi_target_state{target="${T}",state="unreachable"}`)).toBe(1);
    expect(s.get(`pmi_target_state{target="${T}",state="up"}`)).toBe(0);
    expect(s.get(`pmi_poll_interval_seconds{target="${T}"}`)).toBe(0.0061);
    expect(s.get(`pmi_bytes_read_total{target="${T}"}`)).toBe(12288);
    expect(s.get(`pmi_read_latency_seconds_count{target="${T}"}`)).toBe(2);
    expect(s.get(`pmi_read_latency_seconds_bucket{le="0.00002",target="${T}"}`)).toBe(0);
    expect(s.get(`pmi_read_latency_seconds_bucket{le="0.00005",target="${T}"}`)).toBe(1);
    expect(s.get(`pmi_read_latency_seconds_bucket{le="0.005",target="${T}"}`)).toBe(2);
    expect(s.get(`pmi_last_full_text_cycle_seconds{target="${T}"}`)).toBe(12.5);
    // A new release replaces the info series.
    expect([...s.keys()].filter((k) => k.startsWith('pmi_target_info'))).toEqual([
      `pmi_target_info{target="${T}",release="6.12.10-amd64"}`,
    ]);
    m.event({ time: '', target: T, type: 'panicked', detail: '' });
    s = samples(await m.metrics());
    expect(s.get(`pmi_target_state{target="${T}",state="panicked"}`)).toBe(1);
    expect(s.get(`pmi_target_state{target="${T}",state="unreachable"}`)).toBe(0);
  });

  it('read latency buckets span 20 µs … 1 s; registries are separate; process metrics by default', async () => {
    expect(READ_LATENCY_BUCKETS[0]).toBe(20e-6);
    expect(READ_LATENCY_BUCKETS.at(-1)).toBe(1);
    const a = new MonitorMetrics({ target: 'a' });
    const b = new MonitorMetrics({ target: 'b', processMetrics: false });
    a.alert({ ...alert('idt', 'critical'), target: 'a' });
    expect(await a.metrics()).toMatch(/^process_cpu_user_seconds_total /m);
    expect(await b.metrics()).not.toContain('target="a"');
  });
});

describe('metrics server', () => {
  let servers: MetricsServer[] = [];
  afterEach(async () => {
    await Promise.all(servers.map((s) => s.close()));
    servers = [];
  });
  const start = async (o: Parameters<typeof startMetricsServer>[0]) => {
    const s = await startMetricsServer(o);
    servers.push(s);
    return s;
  };
  const metrics = new MonitorMetrics({ target: T, checks: ['idt'], processMetrics: false });

  it('serves /metrics on loopback (GET, HEAD); 404 elsewhere; 405 for other methods', async () => {
    const s = await start({ metrics, port: 0 });
    expect(s.host).toBe('127.0.0.1');
    expect(s.url).toBe(`http://127.0.0.1:${s.port}/metrics`);
    const r = await fetch(s.url);
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(await r.text()).toContain('pmi_alerts_total{');
    const h = await fetch(s.url, { method: 'HEAD' });
    expect(h.status).toBe(200);
    expect((await fetch(`http://127.0.0.1:${s.port}/`)).status).toBe(404);
    expect((await fetch(s.url, { method: 'POST', body: 'x' })).status).toBe(405);
  });

  it('rejects clients outside the allow-list with 403', async () => {
    const s = await start({ metrics, port: 0, allow: '10.0.0.0/8' });
    expect(s.allow).toEqual(['10.0.0.0/8']);
    const r = await fetch(s.url);
    expect(r.status).toBe(403);
    expect(await r.text()).toBe('forbidden\n');
    expect(s.rejected).toBe(1);
  });

  it('binds a non-loopback address only with an allow-list', async () => {
    await expect(startMetricsServer({ metrics, host: '0.0.0.0', port: 0 })).rejects.toMatchObject({
      code: 'E_USAGE',
      message: expect.stringMatching(/refusing to serve on non-loopback address 0\.0\.0\.0 without an allow-list/),
    });
    const s = await start({ metrics, host: '0.0.0.0', port: 0, allow: ['127.0.0.0/8', '192.168.10.0/24'] });
    expect((await fetch(`http://127.0.0.1:${s.port}/metrics`)).status).toBe(200);
  });

  it('reports bad allow entries and a busy port as usage errors', async () => {
    await expect(startMetricsServer({ metrics, port: 0, allow: '10.0.0.1/8' })).rejects.toThrow(/host bits set/);
    await expect(startMetricsServer({ metrics, port: 0, allow: '' })).rejects.toThrow(/empty allow-list/);
    const s = await start({ metrics, port: 0 });
    const e = await startMetricsServer({ metrics, port: s.port }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(PmiError);
    expect((e as PmiError).message).toMatch(/cannot listen on 127\.0\.0\.1:\d+: address in use/);
  });

  it('parses HOST:PORT', () => {
    expect(parseListenAddress('9100')).toEqual({ host: '127.0.0.1', port: 9100 });
    expect(parseListenAddress(':9100')).toEqual({ host: '127.0.0.1', port: 9100 });
    expect(parseListenAddress('0.0.0.0:9100')).toEqual({ host: '0.0.0.0', port: 9100 });
    expect(parseListenAddress('[::1]:9100')).toEqual({ host: '::1', port: 9100 });
    expect(() => parseListenAddress('host')).toThrow(/not HOST:PORT/);
    expect(() => parseListenAddress('h:70000')).toThrow(/not HOST:PORT/);
    expect(DEFAULT_METRICS_PORT).toBe(9477);
  });
});
