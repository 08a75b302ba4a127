/**
 * The /metrics endpoint (node:http; one route needs no framework). The metrics reveal kernel
 * addresses and what the watcher found, so, as `pmi adapter` does: loopback clients only unless an
 * allow-list of IPv4 CIDRs is given (other clients get 403), and binding a non-loopback address
 * without an allow-list is a usage error. The CIDR parsing and matching are @pmi/nettlp's.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { PmiError } from '@pmi/core';
import { isAllowed, isLoopback, parseCidrList, type Cidr } from '@pmi/nettlp';

const ORIGIN = 'monitor-metrics';

/** Default port of `pmi watch --metrics` (not an assigned Prometheus exporter port; pick another freely). */
export const DEFAULT_METRICS_PORT = 9477;

/** Anything that renders the exposition format: a MonitorMetrics or a prom-client Registry. */
export interface MetricsSource {
  metrics(): Promise<string>;
  readonly contentType: string;
}

export interface MetricsServerOptions {
  metrics: MetricsSource;
  /** IP address to bind. Default 127.0.0.1; "localhost" means 127.0.0.1. */
  host?: string;
  /** Default DEFAULT_METRICS_PORT; 0 = any free port. */
  port?: number;
  /** Client networks allowed ("10.0.0.0/8,192.168.1.5" or a list). Default: loopback clients only. */
  allow?: string | readonly string[];
  /** Default "/metrics". */
  path?: string;
}

export interface MetricsServer {
  readonly host: string;
  readonly port: number;
  /** http://host:port/metrics */
  readonly url: string;
  /** The allow-list in effect (CIDR text), empty when loopback-only. */
  readonly allow: readonly string[];
  /** Requests answered 403. */
  readonly rejected: number;
  close(): Promise<void>;
}

/** Parse `--metrics` text: "PORT", ":PORT", "HOST:PORT" or "[IPv6]:PORT". */
export function parseListenAddress(text: string, defaultHost = '127.0.0.1'): { host: string; port: number } {
  const t = text.trim();
  const m = /^(\d+)$/.exec(t) ?? /^:(\d+)$/.exec(t);
  const hp = m ? undefined : (/^\[([0-9a-fA-F:.]+)\]:(\d+)$/.exec(t) ?? /^([^:[\]]+):(\d+)$/.exec(t));
  const port = Number(m ? m[1] : hp ? hp[2] : NaN);
  if ((!m && !hp) || !Number.isInteger(port) || port > 65535) {
    throw new PmiError(
      'E_USAGE',
      ORIGIN,
      `metrics: '${text}' is not HOST:PORT (e.g. 127.0.0.1:${DEFAULT_METRICS_PORT})`,
      {
        value: text,
      },
    );
  }
  return { host: hp ? hp[1] : defaultHost, port };
}

function isLoopbackAddress(ip: string): boolean {
  return isLoopback(ip) || ip === '::1';
}

export async function startMetricsServer(options: MetricsServerOptions): Promise<MetricsServer> {
  const host = !options.host || options.host === 'localhost' ? '127.0.0.1' : options.host;
  const port = options.port ?? DEFAULT_METRICS_PORT;
  const path = options.path ?? '/metrics';
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new PmiError('E_USAGE', ORIGIN, `metrics: invalid port ${port}`, { port });
  }
  let allow: Cidr[] | undefined;
  if (options.allow === undefined) {
    if (!isLoopbackAddress(host)) {
      throw new PmiError(
        'E_USAGE',
        ORIGIN,
        `metrics: refusing to serve on non-loopback address ${host} without an allow-list: the metrics reveal ` +
          `kernel addresses (pass an allow-list of client networks, e.g. 10.0.0.5/32, or bind 127.0.0.1)`,
        { host },
      );
    }
  } else {
    try {
      allow = parseCidrList(options.allow);
    } catch (e) {
      throw new PmiError('E_USAGE', ORIGIN, `metrics: ${(e as Error).message}`, { allow: options.allow }, e);
    }
    if (allow.length === 0) {
      throw new PmiError('E_USAGE', ORIGIN, 'metrics: empty allow-list (omit it for loopback only)', {});
    }
  }
  let rejected = 0;

  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    const peer = req.socket.remoteAddress ?? '';
    const ok = allow ? isAllowed(peer, allow) : isLoopbackAddress(peer);
    if (!ok) {
      rejected++;
      reply(res, 403, 'forbidden\n');
      return;
    }
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname !== path) {
      reply(res, 404, `not found: try ${path}\n`);
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('allow', 'GET, HEAD');
      reply(res, 405, 'method not allowed\n');
      return;
    }
    options.metrics.metrics().then(
      (body) => {
        res.writeHead(200, { 'content-type': options.metrics.contentType, 'cache-control': 'no-store' });
        res.end(req.method === 'HEAD' ? undefined : body);
      },
      (e: unknown) => reply(res, 500, `metrics failed: ${(e as Error).message}\n`),
    );
  };

  const server = createServer(handle);
  server.keepAliveTimeout = 65_000; // longer than Prometheus's scrape interval: one connection per scraper
  await new Promise<void>((resolve, reject) => {
    const onError = (e: NodeJS.ErrnoException) => {
      reject(
        new PmiError(
          'E_USAGE',
          ORIGIN,
          `metrics: cannot listen on ${host}:${port}: ${e.code === 'EADDRINUSE' ? 'address in use' : e.message}`,
          { host, port, errno: e.code },
          e,
        ),
      );
    };
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      resolve();
    });
  });
  const bound = (server.address() as AddressInfo).port;
  const urlHost = host.includes(':') ? `[${host}]` : host;
  return {
    host,
    port: bound,
    url: `http://${urlHost}:${bound}${path}`,
    allow: allow ? allow.map((c) => c.text) : [],
    get rejected() {
      return rejected;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

function reply(res: ServerResponse, status: number, text: string): void {
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8' });
  res.end(text);
}
