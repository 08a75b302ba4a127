/**
 * The monitor's vocabulary, shared by every check, the watcher, the store and the renderers.
 *
 * A check produces findings. A finding's `kind` says what it means for the exit code and the alert
 * stream: `tampering` (exit 4, an alert), `warning` (listed; the check could not be sure), or
 * `event` (a legitimate state change — a module loaded — recorded, never an alert).
 */
export type Severity = 'critical' | 'high' | 'medium' | 'low' | 'info';
export type FindingKind = 'tampering' | 'warning' | 'event';

export interface Finding {
  /** Check id, e.g. `syscall_table`, `idt`, `text`, `hidden_modules`. */
  check: string;
  kind: FindingKind;
  severity: Severity;
  /** Kernel virtual address the finding is about (hex string "0xffff…"), null when none applies. */
  address: string | null;
  /** Symbol at or near the address (`sys_call_table+0x1f8`, `__x64_sys_getppid`), null when none. */
  symbol: string | null;
  /** One line a person can act on: what was expected, what was found, and where. */
  evidence: string;
  /** Stable key of what changed (region + offset, pid, module address): alerts de-duplicate on it. */
  key: string;
  /** Baseline value and current value, when the check compares values (hex or text). */
  old?: string;
  new?: string;
  /** Region this finding belongs to, when it is a byte region the watcher polls (see Region). */
  region?: string;
}

/** What one check pass returns. `partial` = some of what the check should look at could not be read. */
export interface CheckResult {
  check: string;
  findings: Finding[];
  warnings: string[];
  partial: boolean;
  /** Wall-clock time the check took (ms). */
  ms: number;
}

/** Exit codes of `pmi check` (docs/cli.md): 0 clean, 3 partial, 4 tampering found; 4 wins over 3. */
export const EXIT_CLEAN = 0;
export const EXIT_PARTIAL = 3;
export const EXIT_TAMPERED = 4;

export function exitCodeOf(results: readonly CheckResult[]): number {
  if (results.some((r) => r.findings.some((f) => f.kind === 'tampering'))) return EXIT_TAMPERED;
  if (results.some((r) => r.partial)) return EXIT_PARTIAL;
  return EXIT_CLEAN;
}

/** Hex of a kernel VA, 16 digits (how addresses appear in findings, baselines and alerts). */
export function vaHex(va: bigint): string {
  return '0x' + BigInt.asUintN(64, va).toString(16).padStart(16, '0');
}

/** Target state as the watcher sees it (the `pmi_target_state` metric, the store's state log). */
export type TargetState = 'up' | 'unreachable' | 'panicked' | 'rebooted';

/**
 * One alert: a tampering finding the watcher saw appear. NDJSON on stdout carries exactly these
 * fields; the store and the webhook carry the same object.
 */
export interface Alert {
  /** Unique, sortable by time: `<ms since epoch, 13 digits>-<seq, 4 digits>-<random hex>`. */
  id: string;
  /** ISO 8601 time the alert was raised. */
  time: string;
  /** Source URI of the target. */
  target: string;
  check: string;
  severity: Severity;
  address: string | null;
  symbol: string | null;
  old: string | null;
  new: string | null;
  evidence: string;
  /** De-duplication key (Finding.key). */
  key: string;
  /** From the last clean read of the region to the read that saw the change (ms); null for checks
   * that are not polled regions (cross-views), where it is the time since the previous pass. */
  detected_after_ms: number | null;
}

/** A state change that is not tampering: baseline taken, module loaded, target unreachable, … */
export interface MonitorEvent {
  time: string;
  target: string;
  type:
    | 'baseline'
    | 'state'
    | 'module_loaded'
    | 'module_unloaded'
    | 'rebooted'
    | 'panicked'
    | 'restored'
    | 'repaired'
    | 'started'
    | 'stopped';
  detail: string;
  data?: Record<string, unknown>;
}

/** Where alerts and events go (stdout NDJSON, webhook, SQLite store). Sinks never throw. */
export interface AlertSink {
  alert(a: Alert): void | Promise<void>;
  event(e: MonitorEvent): void | Promise<void>;
  close(): Promise<void>;
}
