/**
 * `nettlp://HOST[:PORTBASE]?key=value&…` — parsing and validation (see README-client.md).
 * Every mistake is a PmiError E_SOURCE_URI naming the parameter.
 */
import { PmiError, hex, normaliseRanges, parseSize, type PhysRange } from '@pmi/core';
import { isIPv4 } from 'node:net';
import { parseRequesterId, formatRequesterId } from '../codec/tlp.js';

export const DEFAULT_PORT_BASE = 0x3000;
export const DEFAULT_TAGS = 16;
export const DEFAULT_MRRS = 512;
export const DEFAULT_MPS = 256;
export const DEFAULT_RETRIES = 5;
/** Initial / floor timeout (ms): loopback (software adapter) and anything else. */
export const DEFAULT_TIMEOUT_LOOPBACK_MS = 5;
export const DEFAULT_TIMEOUT_REMOTE_MS = 20;
/** Upper bound of the adaptive timeout (ms), unless timeout= is larger. */
export const TIMEOUT_CAP_MS = 500;
/** Busy-wait for completions after sending (µs, native I/O only): see transport.ts. */
export const DEFAULT_SPIN_US = 50;

export interface NetTlpClientOptions {
  /** Target (adapter) IPv4 address or name. */
  host: string;
  portBase: number;
  /** Local IPv4 address the per-tag sockets bind to. */
  local: string;
  tags: number;
  mrrs: number;
  mps: number;
  /** Initial and floor timeout in ms (the adaptive value never goes below it). */
  timeoutMs: number;
  /** Adaptive timeout cap in ms. */
  maxTimeoutMs: number;
  retries: number;
  /** Floor of the drain window (ms) after a request finished: how late a duplicate/reordered copy may arrive. */
  drainMs?: number;
  requester: number;
  /** Known physical ranges; undefined = probe (loopback or probe=1) */
  ranges?: PhysRange[];
  probe: boolean;
  pcap?: string;
  writable: boolean;
  /** Socket I/O: the native addon (batched receive, see native/README.md), node:dgram, or native when built. */
  io: 'auto' | 'native' | 'dgram';
  /** Busy-wait up to this many µs for completions after sending (native I/O only; 0 = sleep in the event loop). */
  spinUs: number;
}

const KNOWN = [
  'local',
  'tags',
  'mrrs',
  'mps',
  'timeout',
  'retries',
  'drain',
  'requester',
  'ranges',
  'probe',
  'pcap',
  'writable',
  'io',
  'spin',
];

export function isLoopbackHost(host: string): boolean {
  return host === 'localhost' || (isIPv4(host) && host.startsWith('127.'));
}

function bad(uri: string, parameter: string, msg: string): PmiError {
  return new PmiError('E_SOURCE_URI', 'nettlp', `${msg} in '${uri}'`, { uri, parameter });
}

function intParam(uri: string, key: string, v: string, min: number, max: number): number {
  const t = v.trim().toLowerCase();
  const n = /^0x[0-9a-f]+$/.test(t) ? parseInt(t.slice(2), 16) : /^[0-9]+$/.test(t) ? Number(t) : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw bad(uri, key, `bad ${key}='${v}': expected an integer ${min}…${max}`);
  }
  return n;
}

function pow2Param(uri: string, key: string, v: string): number {
  let n: number;
  try {
    n = parseSize(v, key);
  } catch {
    throw bad(uri, key, `bad ${key}='${v}': expected a power of two 128…4096`);
  }
  if (n < 128 || n > 4096 || (n & (n - 1)) !== 0)
    throw bad(uri, key, `bad ${key}='${v}': expected a power of two 128…4096`);
  return n;
}

function boolParam(uri: string, key: string, v: string): boolean {
  if (v === '' || v === '1' || v === 'true' || v === 'yes') return true;
  if (v === '0' || v === 'false' || v === 'no') return false;
  throw bad(uri, key, `bad ${key}='${v}': expected 0 or 1`);
}

/** `START-END` (END exclusive) or `START+SIZE`, comma separated; numbers 0x…/decimal/64M. */
export function parseRangeList(uri: string, text: string, key = 'ranges'): PhysRange[] {
  const out: PhysRange[] = [];
  for (const part of text.split(',')) {
    // URLSearchParams decodes '+' as a space: accept `START SIZE` as START+SIZE.
    const p = part.trim().replace(/\s+/g, '+');
    if (p === '') continue;
    const m = /^([^+-]+)([+-])(.+)$/.exec(p);
    if (!m) throw bad(uri, key, `bad ${key} entry '${p}': expected START-END or START+SIZE`);
    let a: number;
    let b: number;
    try {
      a = parseSize(m[1], 'range start');
      b = parseSize(m[3], m[2] === '+' ? 'range size' : 'range end');
    } catch (e) {
      throw bad(uri, key, `bad ${key} entry '${p}': ${(e as Error).message}`);
    }
    const end = m[2] === '+' ? a + b : b;
    if (!Number.isSafeInteger(end) || end <= a) throw bad(uri, key, `bad ${key} entry '${p}': empty or inverted range`);
    if (end > 2 ** 52) throw bad(uri, key, `bad ${key} entry '${p}': beyond 52-bit physical addresses`);
    out.push({ start: a, end });
  }
  if (out.length === 0) throw bad(uri, key, `empty ${key}=`);
  return normaliseRanges(out);
}

/** Parse the part after `nettlp:` (what core's registry hands the opener) or a whole `nettlp://…` URI. */
export function parseNetTlpUri(uri: string, extra: { writable?: boolean } = {}): NetTlpClientOptions {
  const rest = uri.replace(/^nettlp:/i, '');
  const m = /^\/\/([^/:?#]+)(?::([^/?#]*))?\/?(?:\?(.*))?$/.exec(rest);
  if (!m) throw bad(uri, 'host', `expected nettlp://HOST[:PORTBASE]?key=value&…`);
  const host = m[1];
  if (!isIPv4(host) && !/^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$/i.test(host)) throw bad(uri, 'host', `bad host '${host}'`);
  const portBase = m[2] === undefined || m[2] === '' ? DEFAULT_PORT_BASE : intParam(uri, 'port', m[2], 1, 65535);
  const params = new URLSearchParams(m[3] ?? '');
  for (const key of params.keys()) {
    if (!KNOWN.includes(key)) throw bad(uri, key, `unknown parameter '${key}' (nettlp: accepts ${KNOWN.join(', ')})`);
    if (params.getAll(key).length > 1) throw bad(uri, key, `parameter '${key}' given twice`);
  }
  const loop = isLoopbackHost(host);
  const get = (k: string): string | undefined => params.get(k) ?? undefined;

  let local = get('local');
  if (local === undefined) {
    if (!loop) {
      throw bad(
        uri,
        'local',
        `local=IP is required for the non-loopback host '${host}' (the address of this host's interface facing the adapter, e.g. local=192.168.10.3)`,
      );
    }
    local = '127.0.0.1';
  } else if (!isIPv4(local)) throw bad(uri, 'local', `bad local='${local}': expected an IPv4 address`);

  const tags = get('tags') === undefined ? DEFAULT_TAGS : intParam(uri, 'tags', get('tags')!, 1, 256);
  if (portBase + tags - 1 > 65535) throw bad(uri, 'tags', `port base ${portBase} + ${tags} tags exceeds port 65535`);
  const mrrs = get('mrrs') === undefined ? DEFAULT_MRRS : pow2Param(uri, 'mrrs', get('mrrs')!);
  const mps = get('mps') === undefined ? DEFAULT_MPS : pow2Param(uri, 'mps', get('mps')!);
  const timeoutMs =
    get('timeout') === undefined
      ? loop
        ? DEFAULT_TIMEOUT_LOOPBACK_MS
        : DEFAULT_TIMEOUT_REMOTE_MS
      : intParam(uri, 'timeout', get('timeout')!, 1, 60_000);
  const retries = get('retries') === undefined ? DEFAULT_RETRIES : intParam(uri, 'retries', get('retries')!, 0, 100);
  const drainMs = get('drain') === undefined ? undefined : intParam(uri, 'drain', get('drain')!, 1, 60_000);
  let requester = 0;
  if (get('requester') !== undefined) {
    const r = parseRequesterId(get('requester')!);
    if (r === undefined)
      throw bad(uri, 'requester', `bad requester='${get('requester')}': expected BB:DF or BB:DD.F (hex)`);
    requester = r;
  }
  const ranges = get('ranges') === undefined ? undefined : parseRangeList(uri, get('ranges')!);
  const probe = get('probe') === undefined ? loop : boolParam(uri, 'probe', get('probe')!);
  if (ranges === undefined && !probe) {
    throw bad(
      uri,
      'ranges',
      loop
        ? `probe=0 needs ranges=START-END,… (the protocol cannot tell which physical ranges exist)`
        : `ranges=START-END,… or probe=1 is required for the non-loopback host '${host}': the protocol cannot tell ` +
            `which physical ranges exist, and probing a real machine reads through MMIO holes`,
    );
  }
  const pcap = get('pcap');
  if (pcap === '') throw bad(uri, 'pcap', `empty pcap=`);
  const writable =
    (get('writable') !== undefined && boolParam(uri, 'writable', get('writable')!)) || extra.writable === true;
  const ioText = get('io') ?? 'auto';
  if (ioText !== 'auto' && ioText !== 'native' && ioText !== 'dgram')
    throw bad(uri, 'io', `bad io='${ioText}': expected auto, native or dgram`);
  const spinUs = get('spin') === undefined ? DEFAULT_SPIN_US : intParam(uri, 'spin', get('spin')!, 0, 10_000);
  return {
    host,
    portBase,
    local,
    tags,
    mrrs,
    mps,
    timeoutMs,
    maxTimeoutMs: Math.max(TIMEOUT_CAP_MS, timeoutMs),
    retries,
    drainMs,
    requester,
    ranges,
    probe,
    pcap,
    writable,
    io: ioText,
    spinUs,
  };
}

/** Canonical URI for info.uri (explicit values, ranges as given or discovered). */
export function formatNetTlpUri(o: NetTlpClientOptions, ranges: readonly PhysRange[] | undefined): string {
  const q: string[] = [
    `local=${o.local}`,
    `tags=${o.tags}`,
    `mrrs=${o.mrrs}`,
    `mps=${o.mps}`,
    `timeout=${o.timeoutMs}`,
    `retries=${o.retries}`,
    `requester=${formatRequesterId(o.requester)}`,
  ];
  if (ranges && ranges.length > 0) q.push(`ranges=${ranges.map((r) => `${hex(r.start)}-${hex(r.end)}`).join(',')}`);
  if (o.pcap !== undefined) q.push(`pcap=${encodeURIComponent(o.pcap)}`);
  if (o.writable) q.push('writable=1');
  if (o.io !== 'auto') q.push(`io=${o.io}`);
  if (o.spinUs !== DEFAULT_SPIN_US) q.push(`spin=${o.spinUs}`);
  return `nettlp://${o.host}:${o.portBase}?${q.join('&')}`;
}
