import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { PmiError } from '@pmi/core';
import { WebhookSink, backoffDelay, parseRetryAfter, type Alert, type RetryInfo } from '@pmi/monitor';

type Behaviour = 'ok' | 'hang' | number;

interface Hit {
  n: number;
  t: number;
  id: string;
  headers: IncomingMessage['headers'];
  body: Record<string, unknown>;
}

/** A receiver on 127.0.0.1 answering request n with script[n] (then `rest`); records every request. */
async function receiver(script: Behaviour[], rest: Behaviour = 'ok', extraHeaders: Record<string, string> = {}) {
  const hits: Hit[] = [];
  const delivered: string[] = [];
  const hung: ServerResponse[] = [];
  const server: Server = createServer((req, res) => {
    let body = '';
    req.on('data', (d: Buffer) => (body += d.toString()));
    req.on('end', () => {
      const n = hits.length;
      const parsed = JSON.parse(body) as Record<string, unknown>;
      hits.push({ n, t: performance.now(), id: String(parsed.id), headers: req.headers, body: parsed });
      const b = n < script.length ? script[n] : rest;
      if (b === 'hang') {
        hung.push(res);
        return;
      }
      if (b === 'ok') {
        delivered.push(String(parsed.id));
        res.writeHead(200).end('ok');
        return;
      }
      res.writeHead(b, extraHeaders).end('nope');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`;
  servers.push(server);
  return { url, hits, delivered, hung, server };
}

const servers: Server[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) {
    s.closeAllConnections();
    await new Promise((r) => s.close(r));
  }
});

let seq = 0;
function alert(): Alert {
  seq++;
  return {
    id: `${Date.now()}-${String(seq).padStart(4, '0')}-c0ffee`,
    time: new Date().toISOString(),
    target: 'nettlp://192.168.10.1',
    check: 'syscall_table',
    severity: 'critical',
    address: '0xffffffff82000208',
    symbol: 'sys_call_table+0x208',
    old: '0xffffffff81234560',
    new: '0xffffffffc0a01000',
    evidence: 'sys_call_table[65] changed',
    key: `sys_call_table+0x${(seq * 8).toString(16)}`,
    detected_after_ms: 1.5,
  };
}

const quiet = () => {};

describe('WebhookSink', () => {
  it('retries 500, a hang past the timeout and 503 with growing back-off; every alert arrives once, in order', async () => {
    const rx = await receiver([500, 500, 'hang', 503]);
    const retries: RetryInfo[] = [];
    const sink = new WebhookSink({
      url: rx.url,
      attempts: 5,
      initialDelayMs: 40,
      maxDelayMs: 320,
      timeoutMs: 2000, // generous: a loaded CI machine must not time out the 500s
      headers: { Authorization: 'Bearer t0ken' },
      onRetry: (i) => retries.push(i),
      log: quiet,
    });
    const alerts = Array.from({ length: 6 }, alert);
    for (const a of alerts) sink.alert(a);
    await sink.close();

    expect(rx.delivered).toEqual(alerts.map((a) => a.id));
    expect(sink.stats()).toMatchObject({ sent: 6, requests: 10, retries: 4, failed: 0, dropped: 0, queued: 0 });
    // The first alert took 5 attempts; its waits doubled (each drawn from [d/2, d]) …
    expect(retries.map((r) => [r.id, r.attempt])).toEqual([1, 2, 3, 4].map((n) => [alerts[0].id, n]));
    expect(retries.map((r) => r.reason)).toEqual(['HTTP 500', 'HTTP 500', 'timeout after 2000 ms', 'HTTP 503']);
    retries.forEach((r, i) => {
      const d = 40 * 2 ** i;
      expect(r.delayMs).toBeGreaterThanOrEqual(d / 2);
      expect(r.delayMs).toBeLessThanOrEqual(d);
    });
    for (let i = 1; i < retries.length; i++) expect(retries[i].delayMs).toBeGreaterThanOrEqual(retries[i - 1].delayMs);
    // … and the receiver saw the attempts no sooner than that.
    const first = rx.hits.filter((h) => h.id === alerts[0].id);
    expect(first).toHaveLength(5);
    for (let i = 1; i < first.length; i++) {
      const gap = first[i].t - first[i - 1].t;
      // (Server-side times: the hung attempt's timeout started when the client sent it, an unknown
      // while before the server had read it, so only the back-off is a firm lower bound.)
      expect(gap).toBeGreaterThanOrEqual(retries[i - 1].delayMs - 5);
    }
    // Nothing of the others was sent before the first one got through.
    expect(rx.hits.slice(0, 5).every((h) => h.id === alerts[0].id)).toBe(true);
    // Body: exactly the alert; headers: JSON, the id as idempotency key, the caller's.
    expect(rx.hits[5].body).toEqual(alerts[1]);
    expect(rx.hits[5].headers['content-type']).toBe('application/json');
    expect(rx.hits[5].headers['idempotency-key']).toBe(alerts[1].id);
    expect(rx.hits[5].headers.authorization).toBe('Bearer t0ken');
  });

  it('gives up after the last attempt and on a permanent status, then goes on', async () => {
    const rx = await receiver([500, 500, 500, 400]);
    const logged: string[] = [];
    const sink = new WebhookSink({ url: rx.url, attempts: 3, initialDelayMs: 5, log: (m) => logged.push(m) });
    const [a, b, c] = [alert(), alert(), alert()];
    sink.alert(a);
    sink.alert(b);
    sink.alert(c);
    await sink.close();
    expect(rx.hits.map((h) => h.id)).toEqual([a.id, a.id, a.id, b.id, c.id]);
    expect(rx.delivered).toEqual([c.id]);
    expect(sink.stats()).toMatchObject({ sent: 1, failed: 2, retries: 2, lastError: 'HTTP 400' });
    expect(logged).toEqual([`${a.id}: giving up after 3 attempt(s): HTTP 500`, `${b.id}: not retried: HTTP 400`]);
  });

  it('retries a refused connection', async () => {
    const rx = await receiver([]);
    const url = rx.url;
    rx.server.closeAllConnections();
    await new Promise((r) => rx.server.close(r));
    servers.length = 0;
    const reasons: string[] = [];
    const sink = new WebhookSink({
      url,
      attempts: 2,
      initialDelayMs: 5,
      onRetry: (i) => reasons.push(i.reason),
      log: quiet,
    });
    sink.alert(alert());
    await sink.close();
    expect(reasons).toEqual(['ECONNREFUSED']);
    expect(sink.stats()).toMatchObject({ failed: 1, requests: 2 });
  });

  it('waits at least Retry-After on 429, up to the cap', async () => {
    const rx = await receiver([429], 'ok', { 'retry-after': '30' });
    const retries: RetryInfo[] = [];
    const sink = new WebhookSink({
      url: rx.url,
      initialDelayMs: 10,
      maxDelayMs: 120,
      onRetry: (i) => retries.push(i),
      log: quiet,
    });
    sink.alert(alert());
    await sink.close();
    expect(retries.map((r) => r.delayMs)).toEqual([120]);
    expect(rx.delivered).toHaveLength(1);
  });

  it('bounds its queue: when full the oldest waiting alert is dropped and counted', async () => {
    const rx = await receiver(['hang']);
    const logged: string[] = [];
    const sink = new WebhookSink({
      url: rx.url,
      maxQueue: 3,
      timeoutMs: 1000,
      initialDelayMs: 5,
      log: (m) => logged.push(m),
    });
    const alerts = Array.from({ length: 10 }, alert);
    for (const a of alerts) sink.alert(a);
    expect(sink.stats()).toMatchObject({ queued: 3, inFlight: true, dropped: 6 });
    await sink.close();
    // The first one (in flight, then retried after its timeout) and the three newest arrive.
    expect(rx.delivered).toEqual([alerts[0], ...alerts.slice(7)].map((a) => a.id));
    expect(sink.stats()).toMatchObject({ sent: 4, dropped: 6, failed: 0 });
    expect(logged[0]).toMatch(/queue full \(3\): dropped .*-0{0,3}\d+-c0ffee \(1 dropped so far\)/);
  });

  it('close() flushes until its deadline, then abandons the rest', async () => {
    const rx = await receiver([], 'hang');
    const logged: string[] = [];
    const sink = new WebhookSink({ url: rx.url, timeoutMs: 10_000, closeTimeoutMs: 200, log: (m) => logged.push(m) });
    for (let i = 0; i < 3; i++) sink.alert(alert());
    const t0 = performance.now();
    await sink.close();
    const took = performance.now() - t0;
    expect(took).toBeGreaterThanOrEqual(195);
    expect(took).toBeLessThan(3000);
    expect(sink.stats()).toMatchObject({ sent: 0, dropped: 3, inFlight: false, queued: 0 });
    expect(logged).toEqual(['closing: 3 alert(s) not delivered within 200 ms, abandoned']);
    sink.alert(alert()); // after close: dropped, no request
    expect(sink.stats().dropped).toBe(4);
    expect(rx.hits.length).toBeLessThanOrEqual(1); // the first one, if it got there before the deadline
  });

  it('posts events too only when asked, with the type discriminator', async () => {
    const rx = await receiver([]);
    const sink = new WebhookSink({ url: rx.url, events: true, log: quiet });
    const a = alert();
    sink.event({ time: a.time, target: a.target, type: 'started', detail: 'watching' });
    sink.alert(a);
    await sink.close();
    expect(rx.hits.map((h) => h.body.type)).toEqual(['event', 'alert']);
    expect(rx.hits[0].body).toMatchObject({ event: 'started', detail: 'watching' });
    expect(rx.hits[0].headers['idempotency-key']).toBeUndefined();

    const rx2 = await receiver([]);
    const plain = new WebhookSink({ url: rx2.url, log: quiet });
    plain.event({ time: a.time, target: a.target, type: 'started', detail: 'watching' });
    plain.alert(a);
    await plain.close();
    expect(rx2.hits.map((h) => h.body)).toEqual([a]);
  });

  it('rejects bad options as usage errors', () => {
    expect(() => new WebhookSink({ url: 'not a url' })).toThrow(PmiError);
    expect(() => new WebhookSink({ url: 'ftp://x/y' })).toThrow(/http:\/\/ or https:\/\//);
    expect(() => new WebhookSink({ url: 'http://x/', attempts: 0 })).toThrow(/attempts/);
  });
});

describe('back-off helpers', () => {
  it('doubles up to the cap, jitter within [d/2, d]', () => {
    expect([1, 2, 3, 4, 5, 6].map((r) => backoffDelay(r, 250, 4000, () => 0.999999))).toEqual([
      250, 500, 1000, 2000, 4000, 4000,
    ]);
    expect([1, 2, 3, 4, 5].map((r) => backoffDelay(r, 250, 4000, () => 0))).toEqual([125, 250, 500, 1000, 2000]);
  });

  it('parses Retry-After seconds and dates', () => {
    expect(parseRetryAfter('3')).toBe(3000);
    expect(parseRetryAfter(null)).toBeUndefined();
    expect(parseRetryAfter('soon')).toBeUndefined();
    expect(parseRetryAfter('Wed, 01 Jan 2025 00:00:10 GMT', Date.parse('2025-01-01T00:00:00Z'))).toBe(10_000);
  });
});
