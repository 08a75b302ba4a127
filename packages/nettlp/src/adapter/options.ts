/**
 * Option parsing for the software adapter: IPv4 CIDR allow-lists and the fault-injection
 * spec. Pure functions; errors are PmiError E_USAGE with the offending text.
 */
import { PmiError } from '@pmi/core';

/** An IPv4 network: address & mask === net. */
export interface Cidr {
  readonly net: number;
  readonly mask: number;
  readonly text: string;
}

/** Dotted-quad IPv4 → unsigned 32-bit integer, or -1 when the text is not an IPv4 address. */
export function ipv4ToInt(ip: string): number {
  // IPv4-mapped IPv6 ("::ffff:1.2.3.4"), as dual-stack sockets report peers.
  if (ip.startsWith('::ffff:')) ip = ip.slice(7);
  let v = 0;
  let part = 0;
  let digits = 0;
  let parts = 0;
  for (let i = 0; i <= ip.length; i++) {
    const c = i < ip.length ? ip.charCodeAt(i) : 46; // virtual trailing '.'
    if (c === 46) {
      if (digits === 0 || part > 255) return -1;
      v = v * 256 + part;
      parts++;
      part = 0;
      digits = 0;
    } else if (c >= 48 && c <= 57) {
      if (digits > 0 && part === 0) return -1; // leading zeros ("010") are ambiguous: refuse
      part = part * 10 + (c - 48);
      if (++digits > 3) return -1;
    } else {
      return -1;
    }
  }
  return parts === 4 ? v : -1;
}

export function isIpv4(ip: string): boolean {
  return ipv4ToInt(ip) >= 0;
}

export function isLoopback(ip: string): boolean {
  const v = ipv4ToInt(ip);
  return v >= 0 && v >>> 24 === 127;
}

/** Parse "127.0.0.0/8,10.0.0.0/24,192.168.10.3" (a bare address is /32). Host bits must be zero. */
export function parseCidrList(text: string | readonly string[]): Cidr[] {
  const items = (typeof text === 'string' ? text.split(',') : text.flatMap((t) => t.split(',')))
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
  const out: Cidr[] = [];
  for (const item of items) {
    const m = /^([0-9.]+)(?:\/([0-9]{1,2}))?$/.exec(item);
    const ip = m ? ipv4ToInt(m[1]) : -1;
    const bits = m && m[2] !== undefined ? Number(m[2]) : 32;
    if (!m || ip < 0 || bits > 32) {
      throw new PmiError(
        'E_USAGE',
        'nettlp-adapter',
        `invalid allow entry '${item}': expected IPv4[/0-32], e.g. 127.0.0.0/8`,
        {
          value: item,
        },
      );
    }
    const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
    if ((ip & mask) >>> 0 !== ip) {
      throw new PmiError(
        'E_USAGE',
        'nettlp-adapter',
        `invalid allow entry '${item}': host bits set below /${bits} (did you mean ${intToIpv4((ip & mask) >>> 0)}/${bits}?)`,
        { value: item },
      );
    }
    out.push({ net: ip, mask, text: `${intToIpv4(ip)}/${bits}` });
  }
  return out;
}

export function intToIpv4(v: number): string {
  return `${v >>> 24}.${(v >>> 16) & 0xff}.${(v >>> 8) & 0xff}.${v & 0xff}`;
}

/** True when ip (dotted quad) lies in one of the networks. Non-IPv4 text is never allowed. */
export function isAllowed(ip: string, cidrs: readonly Cidr[] | string | readonly string[]): boolean {
  const list =
    typeof cidrs === 'string' || (cidrs.length > 0 && typeof cidrs[0] === 'string')
      ? parseCidrList(cidrs as string | readonly string[])
      : (cidrs as readonly Cidr[]);
  const v = ipv4ToInt(ip);
  if (v < 0) return false;
  for (const c of list) if ((v & c.mask) >>> 0 === c.net) return true;
  return false;
}

/** Fault injection on outgoing completions. Probabilities are 0…1; delayMs applies to delayRate of them. */
export interface FaultSpec {
  loss: number;
  dup: number;
  reorder: number;
  /** Extra latency in ms for delayed completions (0 = off). */
  delayMs: number;
  /** Fraction of completions that get delayMs (default 1 when delay is set). */
  delayRate: number;
  /** Reordered completions still held after this many ms are sent anyway. */
  reorderFlushMs: number;
  seed: number;
}

export const NO_FAULTS: Readonly<FaultSpec> = Object.freeze({
  loss: 0,
  dup: 0,
  reorder: 0,
  delayMs: 0,
  delayRate: 0,
  reorderFlushMs: 2,
  seed: 1,
});

function usage(msg: string, value: string): PmiError {
  return new PmiError('E_USAGE', 'nettlp-adapter', msg, { value });
}

function parseProbability(key: string, v: string): number {
  const p = /^(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(%)?$/.test(v) ? parseFloat(v) / (v.endsWith('%') ? 100 : 1) : NaN;
  if (!(p >= 0 && p <= 1)) throw usage(`fault '${key}=${v}': expected a probability 0…1 (or 0–100%)`, v);
  return p;
}

function parseDuration(key: string, v: string): number {
  const m = /^([0-9]+(?:\.[0-9]*)?)(ms|us|µs|s)?$/.exec(v);
  if (!m) throw usage(`fault '${key}=${v}': expected a duration like 2ms, 500us, 0.1s`, v);
  const n = parseFloat(m[1]);
  const unit = m[2] ?? 'ms';
  return unit === 's' ? n * 1000 : unit === 'ms' ? n : n / 1000;
}

/**
 * Parse "loss=0.05,reorder=0.05,dup=0.01,delay=2ms,seed=42" (any subset, any order).
 * Extra keys: delayrate=P (fraction of completions delayed, default 1 when delay is set),
 * flush=Xms (how long a reordered completion may be held, default 2ms). Empty/"none" = no faults.
 */
export function parseFaultSpec(text: string): FaultSpec {
  const spec: FaultSpec = { ...NO_FAULTS };
  let delayRateSet = false;
  const t = text.trim();
  if (t === '' || t === 'none') return spec;
  for (const item of t.split(',')) {
    const kv = item.trim();
    if (kv === '') continue;
    const eq = kv.indexOf('=');
    if (eq <= 0)
      throw usage(`fault '${kv}': expected key=value (loss, dup, reorder, delay, delayrate, flush, seed)`, kv);
    const key = kv.slice(0, eq).trim().toLowerCase();
    const v = kv.slice(eq + 1).trim();
    switch (key) {
      case 'loss':
      case 'drop':
        spec.loss = parseProbability(key, v);
        break;
      case 'dup':
      case 'duplicate':
        spec.dup = parseProbability(key, v);
        break;
      case 'reorder':
        spec.reorder = parseProbability(key, v);
        break;
      case 'delay':
        spec.delayMs = parseDuration(key, v);
        break;
      case 'delayrate':
        spec.delayRate = parseProbability(key, v);
        delayRateSet = true;
        break;
      case 'flush':
        spec.reorderFlushMs = parseDuration(key, v);
        break;
      case 'seed': {
        if (!/^(0x[0-9a-f]+|[0-9]+)$/i.test(v)) throw usage(`fault 'seed=${v}': expected an integer`, v);
        spec.seed = Number(BigInt(v) & 0xffffffffn);
        break;
      }
      default:
        throw usage(`unknown fault '${key}' (known: loss, dup, reorder, delay, delayrate, flush, seed)`, kv);
    }
  }
  if (spec.delayMs > 0 && !delayRateSet) spec.delayRate = 1;
  return spec;
}

export function faultsActive(f: FaultSpec | undefined): boolean {
  return !!f && (f.loss > 0 || f.dup > 0 || f.reorder > 0 || (f.delayMs > 0 && f.delayRate > 0));
}

/** mulberry32: a tiny seeded PRNG, deterministic for a seed, returns [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
