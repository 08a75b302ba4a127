/**
 * pmi's metrics as a real Prometheus sees them: Debian's own server binary (apt `prometheus`, put
 * there by `./run setup`) scrapes a MonitorMetrics endpoint every second and evaluates the sample
 * rules of docs/prometheus-rules.yml; the series are read back through its HTTP API. promtool
 * validates and unit-tests the rules. A missing binary fails the test (it is a declared dependency).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MonitorMetrics, startMetricsServer, type Alert, type MetricsServer } from '@pmi/monitor';

const PROMETHEUS = process.env.PMI_PROMETHEUS ?? '/usr/bin/prometheus';
const PROMTOOL = process.env.PMI_PROMTOOL ?? '/usr/bin/promtool';
const RULES = fileURLToPath(new URL('../../../docs/prometheus-rules.yml', import.meta.url));
const TARGET = 'nettlp://192.168.10.1';

function requireBinary(path: string): void {
  if (!existsSync(path)) {
    throw new Error(
      `${path} not found: the Prometheus test needs Debian's prometheus package (server and promtool). ` +
        `Run ./run setup (it installs the APT_PACKAGES of ./run), or apt-get install prometheus.`,
    );
  }
}

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return port;
}

let dir: string;
let prom: ChildProcess | undefined;
let promLog = '';
let promUrl: string;
let metrics: MonitorMetrics;
let server: MetricsServer;

async function waitFor<T>(what: string, f: () => Promise<T | undefined>, ms = 20_000): Promise<T> {
  const end = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const v = await f();
      if (v !== undefined) return v;
    } catch (e) {
      last = e;
    }
    if (prom?.exitCode !== null)
      throw new Error(`prometheus exited (${prom?.exitCode}) while waiting for ${what}:\n${promLog}`);
    if (Date.now() > end) {
      throw new Error(
        `timed out waiting for ${what}${last ? `: ${String(last)}` : ''}\n--- prometheus log ---\n${promLog.slice(-3000)}`,
      );
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

interface Sample {
  metric: Record<string, string>;
  value: [number, string];
}

async function query(q: string): Promise<Sample[]> {
  const r = await fetch(`${promUrl}/api/v1/query?query=${encodeURIComponent(q)}`);
  const body = (await r.json()) as { status: string; error?: string; data: { result: Sample[] } };
  if (body.status !== 'success') throw new Error(`query ${q}: ${body.error}`);
  return body.data.result;
}

/** Wait until the instant query returns exactly one sample with this value. */
async function expectValue(q: string, value: number): Promise<Sample> {
  let seen = '';
  return waitFor(`${q} == ${value}`, async () => {
    const res = await query(q);
    seen = JSON.stringify(res);
    return res.length === 1 && Number(res[0].value[1]) === value ? res[0] : undefined;
  }).catch((e: Error) => {
    throw new Error(`${e.message}\nlast result: ${seen}`);
  });
}

function alert(check: string, severity: Alert['severity'], n: number): Alert {
  return {
    id: `${Date.now()}-${String(n).padStart(4, '0')}-beef`,
    time: new Date().toISOString(),
    target: TARGET,
    check,
    severity,
    address: '0xffffffff82000208',
    symbol: 'sys_call_table+0x208',
    old: null,
    new: null,
    evidence: 'changed',
    key: `k${n}`,
    detected_after_ms: 2,
  };
}

beforeAll(async () => {
  requireBinary(PROMETHEUS);
  requireBinary(PROMTOOL);
  dir = mkdtempSync(join(tmpdir(), 'pmi-prometheus-'));
  metrics = new MonitorMetrics({
    target: TARGET,
    release: '6.12.9-amd64',
    checks: ['syscall_table', 'idt', 'text'],
    pollIntervalTargetSeconds: 0.005,
  });
  metrics.setTargetState('up');
  server = await startMetricsServer({ metrics, host: '127.0.0.1', port: 0 });
  const port = await freePort();
  promUrl = `http://127.0.0.1:${port}`;
  const config = join(dir, 'prometheus.yml');
  writeFileSync(
    config,
    [
      'global:',
      '  scrape_interval: 1s',
      '  evaluation_interval: 1s',
      `rule_files: [${JSON.stringify(RULES)}]`,
      'scrape_configs:',
      '  - job_name: pmi',
      '    static_configs:',
      `      - targets: [${JSON.stringify(`127.0.0.1:${server.port}`)}]`,
      '',
    ].join('\n'),
  );
  prom = spawn(
    PROMETHEUS,
    [
      `--config.file=${config}`,
      `--storage.tsdb.path=${join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--log.level=warn',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  prom.stdout!.on('data', (d: Buffer) => (promLog += d.toString()));
  prom.stderr!.on('data', (d: Buffer) => (promLog += d.toString()));
  await waitFor('prometheus /-/ready', async () => ((await fetch(`${promUrl}/-/ready`)).ok ? true : undefined));
}, 40_000);

afterAll(async () => {
  if (prom && prom.exitCode === null) {
    const exited = new Promise((r) => prom!.once('exit', r));
    prom.kill('SIGTERM');
    const t = setTimeout(() => prom!.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(t);
  }
  await server?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
}, 20_000);

describe('Prometheus scrapes pmi', () => {
  it('sees the pre-created series at 0', async () => {
    await expectValue('up{job="pmi"}', 1);
    const s = await expectValue('pmi_alerts_total{check="syscall_table",severity="critical"}', 0);
    expect(s.metric).toMatchObject({ job: 'pmi', target: TARGET, instance: `127.0.0.1:${server.port}` });
    await expectValue(`pmi_target_info{release="6.12.9-amd64",target="${TARGET}"}`, 1);
    await expectValue('pmi_poll_interval_target_seconds', 0.005);
    await expectValue('pmi_target_state{state="up"}', 1);
  });

  it('reads back the values pmi reported', async () => {
    metrics.alert(alert('syscall_table', 'critical', 1));
    metrics.alert(alert('syscall_table', 'critical', 2));
    metrics.alert(alert('idt', 'high', 3));
    for (let i = 0; i < 7; i++) metrics.checkRun('syscall_table');
    metrics.event({ time: new Date().toISOString(), target: TARGET, type: 'module_loaded', detail: 'm' });
    metrics.event({
      time: new Date().toISOString(),
      target: TARGET,
      type: 'state',
      detail: 'no completions for 1 s',
      data: { state: 'unreachable' },
    });
    metrics.setPollInterval(0.0052);
    metrics.observeRead(40e-6, 4096);
    metrics.observeRead(0.002, 4096);
    metrics.observeRead(0.3, 8192);
    metrics.setLastFullTextCycle(9.5);

    await expectValue('pmi_alerts_total{check="syscall_table",severity="critical"}', 2);
    await expectValue('pmi_alerts_total{check="idt",severity="high"}', 1);
    await expectValue('sum(pmi_alerts_total)', 3);
    await expectValue('pmi_checks_run_total{check="syscall_table"}', 7);
    await expectValue('pmi_events_total{type="module_loaded"}', 1);
    await expectValue('pmi_target_state{state="unreachable"}', 1);
    await expectValue('pmi_target_state{state="up"}', 0);
    await expectValue('pmi_poll_interval_seconds', 0.0052);
    await expectValue('pmi_bytes_read_total', 16384);
    await expectValue('pmi_read_latency_seconds_count', 3);
    await expectValue('pmi_read_latency_seconds_bucket{le="0.005"}', 2);
    await expectValue('pmi_last_full_text_cycle_seconds', 9.5);
    const all = await query('{__name__=~"pmi_.+"}');
    expect(all.length).toBeGreaterThan(40);
    expect(all.every((s) => s.metric.target === TARGET)).toBe(true);
  });

  it('evaluates the sample rules: tampering fires, the unreachable target is pending', async () => {
    const rules = await waitFor('rules loaded', async () => {
      const r = (await (await fetch(`${promUrl}/api/v1/rules`)).json()) as {
        data: { groups: { rules: { name: string; health: string }[] }[] };
      };
      const list = r.data.groups.flatMap((g) => g.rules);
      return list.length > 0 ? list : undefined;
    });
    expect(rules.map((r) => [r.name, r.health])).toEqual([
      ['PmiKernelTampering', 'ok'],
      ['PmiTargetNotUp', 'ok'],
      ['PmiPollingSlow', 'ok'],
      ['PmiMonitorDown', 'ok'],
    ]);
    type A = { labels: Record<string, string>; state: string };
    const alerts = await waitFor('PmiKernelTampering firing for both checks', async () => {
      const r = (await (await fetch(`${promUrl}/api/v1/alerts`)).json()) as { data: { alerts: A[] } };
      const firing = r.data.alerts.filter((a) => a.labels.alertname === 'PmiKernelTampering' && a.state === 'firing');
      return firing.length === 2 ? r.data.alerts : undefined;
    });
    const tampering = alerts
      .filter((a) => a.labels.alertname === 'PmiKernelTampering')
      .map((a) => [a.labels.check, a.labels.severity, a.labels.target])
      .sort();
    expect(tampering).toEqual([
      ['idt', 'high', TARGET],
      ['syscall_table', 'critical', TARGET],
    ]);
    const notUp = alerts.filter((a) => a.labels.alertname === 'PmiTargetNotUp');
    expect(notUp.map((a) => [a.labels.state, a.state])).toEqual([['unreachable', 'pending']]);
  });
});

describe('promtool', () => {
  it('accepts docs/prometheus-rules.yml', () => {
    const r = spawnSync(PROMTOOL, ['check', 'rules', RULES], { encoding: 'utf8' });
    expect(r.stdout + r.stderr).toMatch(/SUCCESS: 4 rules found/);
    expect(r.status).toBe(0);
  });

  it('unit-tests the rules (first alert of a new series, for: 30s, resolution)', () => {
    const desc = "The evidence is in pmi's alert store, its NDJSON output and webhook (docs/monitor-store.md).";
    const labels = "job: pmi, instance: 'h:9477', target: t";
    const file = join(dir, 'rules.test.yml');
    writeFileSync(
      file,
      `rule_files: [${JSON.stringify(RULES)}]
evaluation_interval: 15s
tests:
  - interval: 15s
    input_series:
      - series: 'pmi_alerts_total{job="pmi",instance="h:9477",target="t",check="idt",severity="critical"}'
        values: '0 0 0 1 1 1 1 1 1 1 1 1'
      - series: 'pmi_alerts_total{job="pmi",instance="h:9477",target="t",check="text",severity="high"}'
        values: '_ _ _ _ _ 1 1 1 1 1 1 1'
      - series: 'pmi_target_state{job="pmi",instance="h:9477",target="t",state="unreachable"}'
        values: '0 0 1 1 1 1 1 1 1 1 1 1'
      - series: 'pmi_poll_interval_seconds{job="pmi",instance="h:9477",target="t"}'
        values: '0.005x4 0.05x7'
      - series: 'pmi_poll_interval_target_seconds{job="pmi",instance="h:9477",target="t"}'
        values: '0.005x11'
      - series: 'up{job="pmi",instance="h:9477"}'
        values: '1x6 0x5'
    alert_rule_test:
      - eval_time: 30s
        alertname: PmiKernelTampering
        exp_alerts: []
      - eval_time: 1m30s
        alertname: PmiKernelTampering
        exp_alerts:
          - exp_labels: {severity: critical, check: idt, ${labels}}
            exp_annotations: {summary: 'pmi: kernel tampering on t (idt, critical)', description: ${JSON.stringify(desc)}}
          - exp_labels: {severity: high, check: text, ${labels}}
            exp_annotations: {summary: 'pmi: kernel tampering on t (text, high)', description: ${JSON.stringify(desc)}}
      - eval_time: 2m45s
        alertname: PmiKernelTampering
        exp_alerts: []
      - eval_time: 45s
        alertname: PmiTargetNotUp
        exp_alerts: []
      - eval_time: 1m
        alertname: PmiTargetNotUp
        exp_alerts:
          - exp_labels: {severity: warning, state: unreachable, ${labels}}
            exp_annotations: {summary: 'pmi: target t is unreachable'}
      - eval_time: 2m30s
        alertname: PmiPollingSlow
        exp_alerts:
          - exp_labels: {severity: warning, ${labels}}
            exp_annotations: {summary: 'pmi: polling t every 50ms, far above the target interval'}
      - eval_time: 2m30s
        alertname: PmiMonitorDown
        exp_alerts: []
      - eval_time: 2m50s
        alertname: PmiMonitorDown
        exp_alerts:
          - exp_labels: {severity: critical, job: pmi, instance: 'h:9477'}
            exp_annotations: {summary: 'pmi: the monitor at h:9477 does not answer scrapes'}
`,
    );
    const r = spawnSync(PROMTOOL, ['test', 'rules', file], { encoding: 'utf8' });
    expect(r.stdout + r.stderr, r.stdout + r.stderr).toMatch(/SUCCESS/);
    expect(r.status).toBe(0);
  });
});
