/**
 * NDJSON sink: one JSON object per line on a writable stream (stdout by default).
 *
 * Default (`events: false`): alerts only, each line exactly the Alert fields (alertRecord). With
 * `events: true` (what `pmi watch --json` uses) events are written too and every line carries a
 * `type` discriminator, "alert" or "event" (see format.ts). A stream that breaks (EPIPE when the
 * reader of a pipe went away: `pmi watch --json | head -1`) never crashes the process: the sink
 * stops writing and counts what it dropped.
 */
import type { Writable } from 'node:stream';
import type { Alert, AlertSink, MonitorEvent } from '../model.js';
import { alertLine, alertRecord, eventLine, toJson } from './format.js';

export interface NdjsonSinkOptions {
  /** Default process.stdout. */
  stream?: Writable | NodeJS.WritableStream;
  /** Write events too, and tag every line with `type` ("alert" | "event"). Default false. */
  events?: boolean;
  /** End the stream on close(). Default false (stdout is never ended). */
  end?: boolean;
  /** close() waits at most this long for lines still buffered in the stream. Default 2000 ms. */
  closeTimeoutMs?: number;
}

export interface NdjsonStats {
  /** Lines handed to the stream. */
  lines: number;
  /** Lines not written: the stream had broken or the sink was closed. */
  dropped: number;
  /** The stream reported an error (EPIPE, …); nothing more is written. */
  broken: boolean;
  error?: string;
}

export class NdjsonSink implements AlertSink {
  private readonly stream: NodeJS.WritableStream;
  private readonly withEvents: boolean;
  private readonly endStream: boolean;
  private readonly closeTimeoutMs: number;
  private pending = 0;
  private closed = false;
  private idle: (() => void)[] = [];
  private readonly st: NdjsonStats = { lines: 0, dropped: 0, broken: false };

  constructor(options: NdjsonSinkOptions = {}) {
    this.stream = (options.stream ?? process.stdout) as NodeJS.WritableStream;
    this.withEvents = options.events ?? false;
    this.endStream = options.end ?? false;
    this.closeTimeoutMs = options.closeTimeoutMs ?? 2000;
    // A listener must exist before the first write: an 'error' without one (EPIPE on stdout) throws.
    this.stream.on('error', this.onError);
  }

  alert(a: Alert): void {
    this.write(toJson(this.withEvents ? alertLine(a) : alertRecord(a)) + '\n');
  }

  event(e: MonitorEvent): void {
    if (this.withEvents) this.write(toJson(eventLine(e)) + '\n');
  }

  stats(): NdjsonStats {
    return { ...this.st };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, this.closeTimeoutMs);
      timer.unref();
    });
    const drained = new Promise<void>((resolve) => {
      if (this.pending === 0 || this.st.broken) resolve();
      else this.idle.push(resolve);
    });
    await Promise.race([drained, deadline]);
    if (this.endStream && !this.st.broken) {
      const finished = new Promise<void>((resolve) => {
        try {
          this.stream.end(() => resolve());
        } catch {
          resolve();
        }
      });
      await Promise.race([finished, deadline]);
    }
    clearTimeout(timer);
  }

  private write(line: string): void {
    if (this.closed || this.st.broken) {
      this.st.dropped++;
      return;
    }
    this.pending++;
    this.st.lines++;
    try {
      this.stream.write(line, (err?: Error | null) => {
        if (err) this.onError(err);
        this.pending--;
        if (this.pending === 0) this.wake();
      });
    } catch (e) {
      // Destroyed streams may throw synchronously (ERR_STREAM_DESTROYED, write after end).
      this.pending--;
      this.st.lines--;
      this.st.dropped++;
      this.onError(e as Error);
    }
  }

  private readonly onError = (err: Error): void => {
    if (!this.st.broken) {
      this.st.broken = true;
      this.st.error = (err as NodeJS.ErrnoException).code ?? err.message;
    }
    this.wake();
  };

  private wake(): void {
    const waiters = this.idle;
    this.idle = [];
    for (const w of waiters) w();
  }
}
