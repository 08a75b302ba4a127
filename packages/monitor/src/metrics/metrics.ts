/**
 * Prometheus metrics of the live monitor (prom-client, a Registry of its own: never the global
 * one, so several monitors and tests in one process do not mix). Names and meanings:
 * docs/monitor-store.md, "Metrics".
 *
 * Every pmi_ series carries a `target` label (the source URI): one `pmi watch` per target is the
 * usual deployment, but with the label alert notifications name the machine without a join, and
 * one process (or a federating Prometheus) can hold several targets without clashing series.
 *
 * Counters that alerting rules take increase() of are created at 0 up front (all severities for the
 * checks named in `checks`, every event type): a series that first appears at 1 has no earlier sample,
 * and increase() would miss that first alert.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Alert, AlertSink, MonitorEvent, Severity, TargetState } from '../model.js';
import { targetStateOf } from '../alerts/format.js';

export const SEVERITIES: readonly Severity[] = ['critical', 'high', 'medium', 'low', 'info'];
export const TARGET_STATE_VALUES: readonly TargetState[] = ['up', 'unreachable', 'panicked', 'rebooted'];
export const EVENT_TYPES: readonly MonitorEvent['type'][] = [
  'baseline',
  'state',
  'module_loaded',
  'module_unloaded',
  'rebooted',
  'panicked',
  'restored',
  'repaired',
  'started',
  'stopped',
];

/** Read latency buckets (seconds): 20 µs (a local file or a fast NetTLP read) … 1 s (a stalled link). */
export const READ_LATENCY_BUCKETS: readonly number[] = [
  20e-6, 50e-6, 100e-6, 200e-6, 500e-6, 1e-3, 2e-3, 5e-3, 10e-3, 20e-3, 50e-3, 100e-3, 200e-3, 500e-3, 1,
];

export interface MonitorMetricsOptions {
  /** Source URI of the target: the `target` label when a call names none. */
  target: string;
  /** Kernel release (uname -r) for pmi_target_info; settable later with setTargetInfo. */
  release?: string;
  /** Check ids whose counters start at 0 (pmi_checks_run_total, pmi_alerts_total for every severity). */
  checks?: readonly string[];
  /** The poll interval the watcher aims for (pmi_poll_interval_target_seconds). */
  pollIntervalTargetSeconds?: number;
  /** Also export prom-client's default process_* and nodejs_* metrics. Default true. */
  processMetrics?: boolean;
}

/** The metrics, and an AlertSink that counts alerts and events and follows the target state. */
export class MonitorMetrics implements AlertSink {
  readonly registry = new Registry();
  /** Default `target` label value. */
  readonly target: string;

  private readonly checksRun: Counter<'target' | 'check'>;
  private readonly alerts: Counter<'target' | 'check' | 'severity'>;
  private readonly events: Counter<'target' | 'type'>;
  private readonly pollInterval: Gauge<'target'>;
  private readonly pollIntervalTarget: Gauge<'target'>;
  private readonly readLatency: Histogram<'target'>;
  private readonly bytesRead: Counter<'target'>;
  private readonly targetState: Gauge<'target' | 'state'>;
  private readonly targetInfo: Gauge<'target' | 'release'>;
  private readonly lastFullTextCycle: Gauge<'target'>;
  private readonly releases = new Map<string, string>();
  private readonly knownChecks = new Set<string>();

  constructor(options: MonitorMetricsOptions) {
    this.target = options.target;
    const registers = [this.registry];
    this.checksRun = new Counter({
      name: 'pmi_checks_run_total',
      help: 'Check passes run, per check',
      labelNames: ['target', 'check'],
      registers,
    });
    this.alerts = new Counter({
      name: 'pmi_alerts_total',
      help: 'Alerts raised (tampering seen), per check and severity',
      labelNames: ['target', 'check', 'severity'],
      registers,
    });
    this.events = new Counter({
      name: 'pmi_events_total',
      help: 'Monitor events (baseline, state, module_loaded, ...), per type',
      labelNames: ['target', 'type'],
      registers,
    });
    this.pollInterval = new Gauge({
      name: 'pmi_poll_interval_seconds',
      help: 'Achieved interval between two polls of the critical regions',
      labelNames: ['target'],
      registers,
    });
    this.pollIntervalTarget = new Gauge({
      name: 'pmi_poll_interval_target_seconds',
      help: 'Poll interval the watcher aims for',
      labelNames: ['target'],
      registers,
    });
    this.readLatency = new Histogram({
      name: 'pmi_read_latency_seconds',
      help: 'Latency of one physical-memory read of the target',
      labelNames: ['target'],
      buckets: [...READ_LATENCY_BUCKETS],
      registers,
    });
    this.bytesRead = new Counter({
      name: 'pmi_bytes_read_total',
      help: 'Bytes of target physical memory read',
      labelNames: ['target'],
      registers,
    });
    this.targetState = new Gauge({
      name: 'pmi_target_state',
      help: 'Target state as the watcher sees it: 1 for the current state, 0 for the others',
      labelNames: ['target', 'state'],
      registers,
    });
    this.targetInfo = new Gauge({
      name: 'pmi_target_info',
      help: 'Always 1: the target and its kernel release',
      labelNames: ['target', 'release'],
      registers,
    });
    this.lastFullTextCycle = new Gauge({
      name: 'pmi_last_full_text_cycle_seconds',
      help: 'Duration of the last complete pass over the kernel text',
      labelNames: ['target'],
      registers,
    });
    if (options.processMetrics ?? true) collectDefaultMetrics({ register: this.registry });

    const target = this.target;
    this.bytesRead.inc({ target }, 0);
    for (const check of options.checks ?? []) this.initCheck(check);
    for (const type of EVENT_TYPES) this.events.inc({ target, type }, 0);
    for (const state of TARGET_STATE_VALUES) this.targetState.set({ target, state }, 0);
    if (options.pollIntervalTargetSeconds !== undefined) this.setPollIntervalTarget(options.pollIntervalTargetSeconds);
    if (options.release !== undefined) this.setTargetInfo(options.release);
  }

  /** Create a check's counters at 0 (done for `options.checks` up front, and on a check's first use). */
  initCheck(check: string, target = this.target): void {
    const k = `${target}\0${check}`;
    if (this.knownChecks.has(k)) return;
    this.knownChecks.add(k);
    this.checksRun.inc({ target, check }, 0);
    for (const severity of SEVERITIES) this.alerts.inc({ target, check, severity }, 0);
  }

  /** One pass of a check ran. */
  checkRun(check: string, target = this.target): void {
    this.initCheck(check, target);
    this.checksRun.inc({ target, check });
  }

  alert(a: Alert): void {
    const target = a.target || this.target;
    this.initCheck(a.check, target);
    this.alerts.inc({ target, check: a.check, severity: a.severity });
  }

  event(e: MonitorEvent): void {
    const target = e.target || this.target;
    this.events.inc({ target, type: e.type });
    const state = targetStateOf(e);
    if (state) this.setTargetState(state, target);
  }

  setPollInterval(seconds: number, target = this.target): void {
    this.pollInterval.set({ target }, seconds);
  }

  setPollIntervalTarget(seconds: number, target = this.target): void {
    this.pollIntervalTarget.set({ target }, seconds);
  }

  /** One read of target memory: its latency and size. */
  observeRead(seconds: number, bytes: number, target = this.target): void {
    this.readLatency.observe({ target }, seconds);
    if (bytes > 0) this.bytesRead.inc({ target }, bytes);
  }

  /** One-hot: the given state 1, the others 0. */
  setTargetState(state: TargetState, target = this.target): void {
    for (const s of TARGET_STATE_VALUES) this.targetState.set({ target, state: s }, s === state ? 1 : 0);
  }

  /** pmi_target_info{target,release} = 1; a new release (reboot into another kernel) replaces the old series. */
  setTargetInfo(release: string, target = this.target): void {
    const old = this.releases.get(target);
    if (old !== undefined && old !== release) this.targetInfo.remove({ target, release: old });
    this.releases.set(target, release);
    this.targetInfo.set({ target, release }, 1);
  }

  setLastFullTextCycle(seconds: number, target = this.target): void {
    this.lastFullTextCycle.set({ target }, seconds);
  }

  /** The exposition text (what GET /metrics returns). */
  metrics(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  async close(): Promise<void> {
    // Nothing to flush: the registry is read when scraped. The server (if any) is closed by its owner.
  }
}
