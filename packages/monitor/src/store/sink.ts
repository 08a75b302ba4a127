/**
 * StoreSink: the AlertSink that writes alerts and events into a MonitorStore. Events that report a
 * target state (targetStateOf: `state` with data.state, `panicked`, `rebooted`) also go to the
 * state log. Sinks never throw: a failed write is reported through `log` and counted.
 */
import type { Alert, AlertSink, MonitorEvent } from '../model.js';
import { targetStateOf } from '../alerts/format.js';
import type { MonitorStore } from './store.js';

export interface StoreSinkOptions {
  /** close() closes the store too. Default true. */
  closeStore?: boolean;
  /** Default: stderr, prefixed `pmi: store: `. */
  log?: (message: string) => void;
}

export class StoreSink implements AlertSink {
  /** Writes that failed (disk full, store closed, …). */
  errors = 0;
  private readonly closeStore: boolean;
  private readonly log: (message: string) => void;

  constructor(
    readonly store: MonitorStore,
    options: StoreSinkOptions = {},
  ) {
    this.closeStore = options.closeStore ?? true;
    this.log = options.log ?? ((m) => process.stderr.write(`pmi: store: ${m}\n`));
  }

  alert(a: Alert): void {
    this.guard(`alert ${a.id}`, () => this.store.insertAlert(a));
  }

  event(e: MonitorEvent): void {
    this.guard(`event ${e.type}`, () => {
      this.store.insertEvent(e);
      const state = targetStateOf(e);
      if (state) this.store.setState(e.target, state, e.detail, e.time);
    });
  }

  async close(): Promise<void> {
    if (this.closeStore) this.guard('close', () => this.store.close());
  }

  private guard(what: string, f: () => void): void {
    try {
      f();
    } catch (e) {
      this.errors++;
      this.log(`${what} not stored: ${(e as Error).message}`);
    }
  }
}
