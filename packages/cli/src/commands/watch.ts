/**
 * `pmi watch`, `pmi alerts`, `pmi repair` (docs/cli.md "Integrity", docs/monitor.md).
 * Thin: the watcher, sinks, store and metrics live in @pmi/monitor.
 */
import { Command, InvalidArgumentError } from 'commander';
import { PmiError } from '@pmi/core';
import {
  ALL_CHECKS,
  applyRepair,
  defaultDbPath,
  MonitorMetrics,
  NdjsonSink,
  openStore,
  parseListenAddress,
  planRepair,
  readBaseline,
  startMetricsServer,
  StoreSink,
  Watcher,
  WebhookSink,
  type Alert,
  type AlertSink,
  type Baseline,
  type MonitorEvent,
  type MonitorStore,
} from '@pmi/monitor';
import { resolveSourceUri, withTarget } from '../context.js';
import { checksFor, type CheckOptions } from './monitor.js';
import { withKernel, type KernelOptions } from '../kernel-context.js';
import { printJson, printRows } from '../output.js';

type Run = (action: () => Promise<number>) => Promise<void>;

/** `pmi check`'s options (--baseline, --checks, --vmlinuz) plus the watcher's own. */
export interface WatchCommandOptions extends CheckOptions {
  interval: number;
  alert: string[];
  db?: string | false;
  metrics?: string;
  allow?: string;
  budget: number;
}

/** Text lines on stdout, like `dmesg --follow`: one per alert and per event. */
class TextLineSink implements AlertSink {
  constructor(private readonly out: NodeJS.WritableStream = process.stdout) {}
  private write(s: string): void {
    try {
      this.out.write(s + '\n');
    } catch {
      /* closed stdout: the watcher keeps going; the store and metrics still get everything */
    }
  }
  alert(a: Alert): void {
    const after = a.detected_after_ms === null ? '' : ` (detected ${a.detected_after_ms} ms after the last clean read)`;
    this.write(
      `${a.time}  ALERT  ${a.severity.padEnd(8)} ${a.check.padEnd(16)} ${a.symbol ?? a.address ?? ''}  ${a.evidence}${after}  [${a.id}]`,
    );
  }
  event(e: MonitorEvent): void {
    this.write(`${e.time}  EVENT  ${e.type.padEnd(8)} ${e.detail}`);
  }
  async close(): Promise<void> {}
}

function openStoreFor(db: string | false | undefined): MonitorStore | undefined {
  if (db === false) return undefined;
  return openStore(db ?? defaultDbPath());
}

export async function watchCommand(opts: WatchCommandOptions): Promise<number> {
  const checks = checksFor(opts);
  const baseline: Baseline | undefined = opts.baseline ? readBaseline(opts.baseline) : undefined;
  const { uri } = await resolveSourceUri(opts);
  const sinks: AlertSink[] = [];
  const ndjsonAlerts = opts.alert.includes('ndjson');
  if (opts.json) sinks.push(new NdjsonSink({ events: true }));
  else if (ndjsonAlerts) sinks.push(new NdjsonSink({ events: false }), new TextLineSink(process.stderr));
  else sinks.push(new TextLineSink());
  for (const a of opts.alert) {
    if (a === 'ndjson') continue;
    if (a.startsWith('webhook=')) sinks.push(new WebhookSink({ url: a.slice('webhook='.length) }));
    else throw new PmiError('E_USAGE', 'cli', `--alert ${a}: expected ndjson or webhook=URL`, { alert: a });
  }
  const store = openStoreFor(opts.db);
  if (store) sinks.push(new StoreSink(store, { closeStore: false }));
  const metrics = new MonitorMetrics({
    target: uri,
    checks: checks.map((c) => c.id),
    pollIntervalTargetSeconds: opts.interval / 1000,
  });
  sinks.push(metrics);
  let server: Awaited<ReturnType<typeof startMetricsServer>> | undefined;
  if (opts.metrics) {
    const { host, port } = parseListenAddress(opts.metrics);
    server = await startMetricsServer({ metrics: metrics.registry, host, port, allow: opts.allow });
    process.stderr.write(`pmi watch: metrics on ${server.url}\n`);
  }
  const ac = new AbortController();
  const stop = () => ac.abort();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  try {
    return await withTarget(opts, async (mem) => {
      const w = new Watcher({
        mem,
        target: uri,
        checks,
        intervalMs: opts.interval,
        budgetBytesPerSec: opts.budget * 1024 * 1024,
        baseline,
        sinks,
        signal: ac.signal,
        log: (m) => process.stderr.write(`pmi watch: ${m}\n`),
        metrics: {
          poll: (achieved, latency, bytes) => {
            metrics.setPollInterval(achieved / 1000);
            metrics.observeRead(latency / 1000, bytes);
          },
          check: (id) => metrics.checkRun(id),
          state: (s, release) => {
            metrics.setTargetState(s);
            if (release) metrics.setTargetInfo(release);
            store?.setState(uri, s);
          },
          textCycle: (s) => metrics.setLastFullTextCycle(s),
        },
        onBaseline: (b) => {
          store?.saveBaseline({
            target: uri,
            created: b.created,
            kernel_release: b.kernel.release,
            kaslr_slide: b.kernel.kaslr_slide,
            data: b,
          });
        },
      });
      if (baseline && store)
        store.saveBaseline({
          target: uri,
          created: baseline.created,
          kernel_release: baseline.kernel.release,
          kaslr_slide: baseline.kernel.kaslr_slide,
          data: baseline,
        });
      const summary = await w.run();
      process.stderr.write(
        `pmi watch: ${summary.polls} polls, achieved interval ${summary.achievedIntervalMs} ms, ${summary.alerts} alerts, ` +
          `${summary.events} events, text cycle ${summary.textCycleSeconds === null ? 'not completed' : summary.textCycleSeconds.toFixed(1) + ' s'}\n`,
      );
      return 0;
    });
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
    for (const s of sinks) await s.close().catch(() => undefined);
    await server?.close();
    store?.close();
  }
}

export async function alertsCommand(opts: {
  db?: string;
  json?: boolean;
  target?: string;
  unacknowledged?: boolean;
  ack?: string;
  limit?: number;
}): Promise<number> {
  const store = openStore(opts.db ?? defaultDbPath());
  try {
    if (opts.ack) {
      const a = store.acknowledge(opts.ack, process.env.USER ?? 'pmi');
      if (!a) throw new PmiError('E_NOT_FOUND', 'cli', `no alert ${opts.ack} in ${opts.db ?? defaultDbPath()}`, {});
      if (opts.json) printJson(a);
      else process.stdout.write(`acknowledged ${a.id} (${a.check} ${a.symbol ?? a.address ?? ''})\n`);
      return 0;
    }
    const rows = store.listAlerts({ target: opts.target, unacknowledged: opts.unacknowledged, limit: opts.limit });
    printRows(
      rows,
      [
        { key: 'id' },
        { key: 'time' },
        { key: 'severity' },
        { key: 'check' },
        { key: 'symbol' },
        { key: 'acknowledged', header: 'ACK', format: (v) => (v ? 'y' : 'n') },
        { key: 'evidence' },
      ],
      [],
      { json: !!opts.json },
    );
    return 0;
  } finally {
    store.close();
  }
}

export async function repairCommand(
  id: string,
  opts: KernelOptions & { db?: string; write?: boolean },
): Promise<number> {
  const store = openStore(opts.db ?? defaultDbPath());
  let alert: Alert | undefined;
  let baseline: Baseline | undefined;
  try {
    alert = store.getAlert(id);
    if (!alert) throw new PmiError('E_NOT_FOUND', 'cli', `no alert ${id} in ${opts.db ?? defaultDbPath()}`, {});
    baseline = store.latestBaseline(alert.target)?.data as Baseline | undefined;
    if (!baseline) throw new PmiError('E_NOT_FOUND', 'cli', `no baseline stored for ${alert.target}`, {});
  } finally {
    store.close();
  }
  const a = alert;
  const b = baseline;
  const source = opts.source ?? a.target;
  return withKernel(
    { ...opts, source },
    async (d) => {
      const plan = await planRepair(d, a, b);
      if (!opts.write) {
        if (opts.json) printJson({ plan, written: false });
        else
          process.stdout.write(
            `would restore ${plan.what} at ${plan.va}: ${plan.current} → ${plan.restored} ` +
              `(${plan.writes.map((w) => `${w.bytes.length / 2} bytes at PA 0x${w.pa.toString(16)}`).join(', ')}); run with --write to do it\n`,
          );
        return 0;
      }
      const r = await applyRepair(d, plan);
      const s = openStore(opts.db ?? defaultDbPath());
      try {
        s.insertEvent({
          time: new Date().toISOString(),
          target: a.target,
          type: 'repaired',
          detail: `${plan.what}: ${plan.current} → ${plan.restored}, ${r.verified ? 'verified' : 'NOT verified'}`,
          data: { alert: a.id },
        });
      } finally {
        s.close();
      }
      if (opts.json) printJson(r);
      else
        process.stdout.write(
          `restored ${plan.what} at ${plan.va}: ${plan.current} → ${plan.restored}; re-read ${r.verified ? 'equals the baseline' : 'DIFFERS from the baseline (did the adapter drop the write? start it with --writable)'}\n`,
        );
      return r.verified ? 0 : 1;
    },
    { writable: true },
  );
}

function num(name: string, min: number) {
  return (t: string) => {
    const v = Number(t);
    if (!Number.isFinite(v) || v < min) throw new InvalidArgumentError(`${name}: expected a number ≥ ${min}`);
    return v;
  };
}

export function registerWatchCommands(program: Command, run: Run): void {
  const known = ALL_CHECKS.map((c) => c.id).join(', ');
  program
    .command('watch')
    .description(
      "watch the kernel's critical memory: alerts on stdout (table lines, JSON lines with --json), SQLite store, webhook, Prometheus metrics; until SIGINT/SIGTERM",
    )
    .option('--interval <ms>', 'poll interval of the critical set, ms (fractions allowed)', num('--interval', 0.05), 10)
    .option(
      '--alert <sink>',
      'ndjson (alerts as JSON lines on stdout) or webhook=URL; repeatable',
      (v: string, acc: string[]) => [...acc, v],
      [] as string[],
    )
    .option('--db <file>', `SQLite store of alerts, events, baselines, states (default ${defaultDbPath()})`)
    .option('--no-db', 'do not store anything')
    .option('--metrics <host:port>', 'serve Prometheus metrics at /metrics (loopback unless --allow)')
    .option('--allow <cidrs>', 'comma-separated client networks allowed to scrape the metrics')
    .option('--budget <MB/s>', 'read budget for the heavy checks (text hashes, cross-views)', num('--budget', 0.01), 32)
    .option('--baseline <file>', 'baseline from `pmi baseline` (default: the first observation)')
    .option('--checks <ids>', `comma-separated subset (${known})`)
    .option('--vmlinuz <file>', 'also compare text with this on-disk kernel on the heavy schedule')
    .action((_o, cmd: Command) => run(() => watchCommand(cmd.optsWithGlobals())));
  program
    .command('alerts')
    .description('list the alerts in the SQLite store (or acknowledge one with --ack ID)')
    .option('--db <file>', `SQLite store (default ${defaultDbPath()})`)
    .option('--target <uri>', 'only this target')
    .option('--unacknowledged', 'only alerts not yet acknowledged')
    .option('--ack <id>', 'acknowledge this alert')
    .option('--limit <n>', 'at most n alerts (newest first)', num('--limit', 1))
    .action((_o, cmd: Command) => run(() => alertsCommand(cmd.optsWithGlobals())));
  program
    .command('repair')
    .description(
      'restore what an alert found changed (a syscall-table entry, an IDT gate, syscall-dispatcher bytes) from the baseline by DMA; without --write only says what it would do',
    )
    .argument('<alert-id>', 'alert id (from `pmi watch` or `pmi alerts`)')
    .option('--write', 'really write (needs a writable source: a NetTLP adapter started with --writable)')
    .option('--db <file>', `SQLite store (default ${defaultDbPath()})`)
    .action((id: string, _o, cmd: Command) => run(() => repairCommand(id, cmd.optsWithGlobals())));
}
