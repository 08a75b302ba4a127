/**
 * Webhook sink: POST each alert as a JSON body to a URL (Node's built-in fetch).
 *
 * Delivery is serial, in the order alerts were raised: one request in flight, the rest in a bounded
 * queue (full → the oldest queued one is dropped and counted; memory never grows without bound).
 * A request that fails with a network error, a timeout, 408, 429 or 5xx is retried with
 * exponential back-off and jitter (defaults: 5 attempts; waits 250, 500, 1000, 2000 ms, capped at
 * 4 s, each drawn from [½·d, d]; a Retry-After on 429/503 lengthens the wait, up to the cap). Any
 * other status is permanent: counted as failed, not retried. A request that timed out may still
 * have reached the receiver, so delivery is at least once: every request carries the alert id in
 * `Idempotency-Key`, receivers de-duplicate on it. `close()` stops accepting alerts and flushes
 * what is queued until a deadline; what is left then is abandoned and counted as dropped.
 */
import { PmiError } from '@pmi/core';
import type { Alert, AlertSink, MonitorEvent } from '../model.js';
import { alertLine, alertRecord, eventLine, toJson } from './format.js';

export interface WebhookSinkOptions {
  /** http:// or https:// URL receiving the POSTs. */
  url: string | URL;
  /** Attempts per alert, first one included. Default 5. */
  attempts?: number;
  /** Wait before the first retry; doubled for each further one. Default 250 ms. */
  initialDelayMs?: number;
  /** Cap on one wait. Default 4000 ms. */
  maxDelayMs?: number;
  /** Per request: from sending to the whole response read. Default 5000 ms. */
  timeoutMs?: number;
  /** Alerts waiting (the one in flight not counted). Default 1000. */
  maxQueue?: number;
  /** How long close() keeps delivering. Default 10000 ms. */
  closeTimeoutMs?: number;
  /** POST events too (then every body carries `type`: "alert" | "event", as the NDJSON mixed stream). */
  events?: boolean;
  /** Extra request headers (e.g. Authorization). */
  headers?: Record<string, string>;
  /** Where failures are reported (one line each). Default: stderr, prefixed `pmi: webhook: `. */
  log?: (message: string) => void;
  /** Called before each back-off wait (diagnostics, tests). */
  onRetry?: (info: RetryInfo) => void;
  /** Random source for the jitter, [0, 1). Default Math.random. */
  random?: () => number;
}

export interface RetryInfo {
  /** Alert id (or event type) being delivered. */
  id: string;
  /** The attempt that failed (1 = first). */
  attempt: number;
  /** Wait before the next attempt. */
  delayMs: number;
  reason: string;
}

export interface WebhookStats {
  /** Waiting in the queue (not counting the one in flight). */
  queued: number;
  inFlight: boolean;
  /** Delivered (2xx). */
  sent: number;
  /** HTTP requests made, retries included. */
  requests: number;
  retries: number;
  /** Given up: permanent status, or every attempt failed. */
  failed: number;
  /** Dropped without an attempt to the end: queue full, sink closed, close deadline. */
  dropped: number;
  lastError?: string;
}

interface Item {
  id: string;
  body: string;
  idempotencyKey?: string;
}

type Outcome = { ok: true } | { ok: false; retry: boolean; reason: string; retryAfterMs?: number };

export const WEBHOOK_DEFAULTS = {
  attempts: 5,
  initialDelayMs: 250,
  maxDelayMs: 4000,
  timeoutMs: 5000,
  maxQueue: 1000,
  closeTimeoutMs: 10_000,
} as const;

/** Back-off before retry number `retry` (1 = first retry): d = min(max, initial·2^(retry−1)), drawn from [d/2, d]. */
export function backoffDelay(retry: number, initialMs: number, maxMs: number, random: () => number): number {
  const d = Math.min(maxMs, initialMs * 2 ** (retry - 1));
  return Math.round(d / 2 + random() * (d / 2));
}

export class WebhookSink implements AlertSink {
  readonly url: URL;
  private readonly o: Required<Omit<WebhookSinkOptions, 'url' | 'headers' | 'onRetry'>> &
    Pick<WebhookSinkOptions, 'onRetry'>;
  private readonly headers: Record<string, string>;
  private readonly queue: Item[] = [];
  private running = false;
  private closed = false;
  private readonly abort = new AbortController();
  private idleWaiters: (() => void)[] = [];
  private readonly st: WebhookStats = {
    queued: 0,
    inFlight: false,
    sent: 0,
    requests: 0,
    retries: 0,
    failed: 0,
    dropped: 0,
  };

  constructor(options: WebhookSinkOptions) {
    let url: URL;
    try {
      url = new URL(options.url);
    } catch {
      throw usage(`webhook: invalid URL '${String(options.url)}'`, { url: String(options.url) });
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw usage(`webhook: URL must be http:// or https:// (got '${url.href}')`, { url: url.href });
    }
    this.url = url;
    this.o = {
      attempts: positiveInt(options.attempts ?? WEBHOOK_DEFAULTS.attempts, 'attempts'),
      initialDelayMs: nonNegative(options.initialDelayMs ?? WEBHOOK_DEFAULTS.initialDelayMs, 'initialDelayMs'),
      maxDelayMs: nonNegative(options.maxDelayMs ?? WEBHOOK_DEFAULTS.maxDelayMs, 'maxDelayMs'),
      timeoutMs: positiveInt(options.timeoutMs ?? WEBHOOK_DEFAULTS.timeoutMs, 'timeoutMs'),
      maxQueue: positiveInt(options.maxQueue ?? WEBHOOK_DEFAULTS.maxQueue, 'maxQueue'),
      closeTimeoutMs: nonNegative(options.closeTimeoutMs ?? WEBHOOK_DEFAULTS.closeTimeoutMs, 'closeTimeoutMs'),
      events: options.events ?? false,
      log: options.log ?? ((m) => process.stderr.write(`pmi: webhook: ${m}\n`)),
      random: options.random ?? Math.random,
      onRetry: options.onRetry,
    };
    this.headers = {
      'user-agent': 'pmi-monitor',
      ...lowerKeys(options.headers ?? {}),
      'content-type': 'application/json',
    };
  }

  alert(a: Alert): void {
    const body = toJson(this.o.events ? alertLine(a) : alertRecord(a));
    this.enqueue({ id: a.id, body, idempotencyKey: a.id });
  }

  event(e: MonitorEvent): void {
    if (this.o.events) this.enqueue({ id: `event:${e.type}`, body: toJson(eventLine(e)) });
  }

  stats(): WebhookStats {
    return { ...this.st, queued: this.queue.length };
  }

  /** Resolves when nothing is queued or in flight. */
  idle(): Promise<void> {
    if (!this.running && this.queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  async close(): Promise<void> {
    if (this.closed) return this.idle();
    this.closed = true;
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<'deadline'>((resolve) => {
      timer = setTimeout(() => resolve('deadline'), this.o.closeTimeoutMs);
    });
    const r = await Promise.race([this.idle().then(() => 'idle' as const), deadline]);
    clearTimeout(timer);
    if (r === 'deadline') {
      const left = this.queue.length + (this.st.inFlight ? 1 : 0);
      this.st.dropped += this.queue.length;
      this.queue.length = 0;
      this.abort.abort();
      this.o.log(`closing: ${left} alert(s) not delivered within ${this.o.closeTimeoutMs} ms, abandoned`);
      await this.idle();
    }
  }

  private enqueue(item: Item): void {
    if (this.closed) {
      this.st.dropped++;
      return;
    }
    if (this.queue.length >= this.o.maxQueue) {
      const old = this.queue.shift()!;
      this.st.dropped++;
      if (this.st.dropped === 1 || this.st.dropped % 1000 === 0) {
        this.o.log(`queue full (${this.o.maxQueue}): dropped ${old.id} (${this.st.dropped} dropped so far)`);
      }
    }
    this.queue.push(item);
    if (!this.running) void this.pump();
  }

  private async pump(): Promise<void> {
    this.running = true;
    try {
      while (this.queue.length > 0 && !this.abort.signal.aborted) {
        const item = this.queue.shift()!;
        this.st.inFlight = true;
        try {
          await this.deliver(item);
        } catch (e) {
          this.st.failed++;
          this.st.lastError = (e as Error).message;
        } finally {
          this.st.inFlight = false;
        }
      }
    } finally {
      this.running = false;
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of waiters) w();
    }
  }

  private async deliver(item: Item): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      if (this.abort.signal.aborted) {
        this.st.dropped++;
        return;
      }
      const out = await this.post(item);
      if (out.ok) {
        this.st.sent++;
        return;
      }
      if (this.abort.signal.aborted) {
        this.st.dropped++;
        return;
      }
      this.st.lastError = out.reason;
      if (!out.retry || attempt >= this.o.attempts) {
        this.st.failed++;
        this.o.log(
          out.retry
            ? `${item.id}: giving up after ${attempt} attempt(s): ${out.reason}`
            : `${item.id}: not retried: ${out.reason}`,
        );
        return;
      }
      let delayMs = backoffDelay(attempt, this.o.initialDelayMs, this.o.maxDelayMs, this.o.random);
      if (out.retryAfterMs !== undefined) delayMs = Math.max(delayMs, Math.min(out.retryAfterMs, this.o.maxDelayMs));
      this.st.retries++;
      this.o.onRetry?.({ id: item.id, attempt, delayMs, reason: out.reason });
      await sleep(delayMs, this.abort.signal);
    }
  }

  private async post(item: Item): Promise<Outcome> {
    this.st.requests++;
    const ac = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      ac.abort();
    }, this.o.timeoutMs);
    const onClose = () => ac.abort();
    this.abort.signal.addEventListener('abort', onClose);
    const headers = item.idempotencyKey ? { ...this.headers, 'idempotency-key': item.idempotencyKey } : this.headers;
    try {
      const res = await fetch(this.url, {
        method: 'POST',
        headers,
        body: item.body,
        signal: ac.signal,
        redirect: 'manual',
      });
      await res.arrayBuffer(); // read (and so release) the response; the timeout covers it too
      if (res.status >= 200 && res.status < 300) return { ok: true };
      const retry = res.status === 408 || res.status === 429 || res.status >= 500;
      const retryAfterMs =
        res.status === 429 || res.status === 503 ? parseRetryAfter(res.headers.get('retry-after')) : undefined;
      return { ok: false, retry, reason: `HTTP ${res.status}`, retryAfterMs };
    } catch (e) {
      if (timedOut) return { ok: false, retry: true, reason: `timeout after ${this.o.timeoutMs} ms` };
      const err = e as Error & { cause?: { code?: string; message?: string } };
      const reason = err.cause?.code ?? err.cause?.message ?? err.message;
      return { ok: false, retry: true, reason };
    } finally {
      clearTimeout(timer);
      this.abort.signal.removeEventListener('abort', onClose);
    }
  }
}

/** Retry-After: delta-seconds or an HTTP date → ms from now; undefined when absent or unparsable. */
export function parseRetryAfter(v: string | null, now = Date.now()): number | undefined {
  if (v === null || v.trim() === '') return undefined;
  if (/^\s*\d+\s*$/.test(v)) return Number(v) * 1000;
  const t = Date.parse(v);
  return Number.isNaN(t) ? undefined : Math.max(0, t - now);
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done);
  });
}

function lowerKeys(h: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(h).map(([k, v]) => [k.toLowerCase(), v]));
}

function usage(message: string, data: Record<string, unknown> = {}): PmiError {
  return new PmiError('E_USAGE', 'monitor-webhook', message, data);
}

function positiveInt(v: number, name: string): number {
  if (!Number.isInteger(v) || v < 1)
    throw usage(`webhook: ${name} must be a positive integer (got ${v})`, { [name]: v });
  return v;
}

function nonNegative(v: number, name: string): number {
  if (!Number.isFinite(v) || v < 0) throw usage(`webhook: ${name} must be ≥ 0 (got ${v})`, { [name]: v });
  return v;
}
