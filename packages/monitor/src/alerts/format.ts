/**
 * The wire shapes of alerts and events, shared by the NDJSON sink (stdout), the webhook sink and
 * whoever renders them elsewhere (docs/monitor-store.md, "NDJSON lines").
 *
 * - An alert line is exactly the Alert fields, in a fixed order; absent optional values are null.
 * - In the mixed stream (`pmi watch --json`, `events: true`) every line carries a `type`
 *   discriminator: `"type":"alert"` + the Alert fields, or `"type":"event"` + `event` (the
 *   MonitorEvent's own `type`), `time`, `target`, `detail` and, when present, `data`.
 */
import type { Alert, MonitorEvent, TargetState } from '../model.js';

/** Alert fields in the order they are written. */
export const ALERT_FIELDS = [
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
] as const satisfies readonly (keyof Alert)[];

/** An alert line of the mixed stream. */
export type AlertLine = { type: 'alert' } & Alert;

/** An event line of the mixed stream (`event` is MonitorEvent.type: the discriminator takes `type`). */
export interface EventLine {
  type: 'event';
  event: MonitorEvent['type'];
  time: string;
  target: string;
  detail: string;
  data?: Record<string, unknown>;
}

/** Exactly the Alert fields, in ALERT_FIELDS order (extra properties dropped, undefined → null). */
export function alertRecord(a: Alert): Alert {
  return {
    id: a.id,
    time: a.time,
    check: a.check,
    severity: a.severity,
    address: a.address ?? null,
    symbol: a.symbol ?? null,
    old: a.old ?? null,
    new: a.new ?? null,
    evidence: a.evidence,
    key: a.key,
    target: a.target,
    detected_after_ms: a.detected_after_ms ?? null,
  };
}

export function alertLine(a: Alert): AlertLine {
  return { type: 'alert', ...alertRecord(a) };
}

export function eventLine(e: MonitorEvent): EventLine {
  const line: EventLine = { type: 'event', event: e.type, time: e.time, target: e.target, detail: e.detail };
  if (e.data !== undefined) line.data = e.data;
  return line;
}

/** JSON.stringify that writes bigints as "0x…" hex (kernel addresses) instead of throwing. */
export function toJson(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) =>
    typeof v === 'bigint' ? (v < 0n ? '-0x' + (-v).toString(16) : '0x' + v.toString(16)) : v,
  );
}

const TARGET_STATES: readonly TargetState[] = ['up', 'unreachable', 'panicked', 'rebooted'];

export function isTargetState(v: unknown): v is TargetState {
  return typeof v === 'string' && (TARGET_STATES as readonly string[]).includes(v);
}

/**
 * The target state an event reports, if any (how the store's state log and the
 * `pmi_target_state` metric follow the watcher): a `state` event carries it in `data.state`;
 * `panicked` and `rebooted` events imply their state.
 */
export function targetStateOf(e: MonitorEvent): TargetState | undefined {
  if (e.type === 'state') return isTargetState(e.data?.state) ? e.data.state : undefined;
  if (e.type === 'panicked' || e.type === 'rebooted') return e.type;
  return undefined;
}
