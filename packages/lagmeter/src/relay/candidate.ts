import type { Endpoint, RelayPath } from './types.js';

export interface ParsedCandidate {
  foundation: string;
  component: number;
  transport: string;
  priority: number;
  address: string;
  port: number;
  type: string;
}

const RE = /^(a=)?candidate:(\S+) (\d+) (\S+) (\d+) (\S+) (\d+) typ (\S+)(.*?)(\r?\n)?$/i;

/** Parse an ICE candidate (`candidate:…` or SDP `a=candidate:…`); undefined if it is not one. */
export function parseCandidate(candidate: string): ParsedCandidate | undefined {
  const m = RE.exec(candidate.trim());
  if (!m) return undefined;
  return {
    foundation: m[2],
    component: Number(m[3]),
    transport: m[4].toLowerCase(),
    priority: Number(m[5]),
    address: m[6],
    port: Number(m[7]),
    type: m[8].toLowerCase(),
  };
}

export function isLoopback(address: string): boolean {
  return /^127\./.test(address) || address === '::1' || address.toLowerCase() === 'localhost';
}

function sameEndpoint(address: string, port: number, ep: Endpoint): boolean {
  const norm = (a: string) => (a.toLowerCase() === 'localhost' ? '127.0.0.1' : a);
  return port === ep.port && norm(address) === norm(ep.address);
}

/**
 * Rewrite a candidate from `side` so that the other side sends to the relay: a host candidate
 * becomes path.clientFacing (what the client sees), a client candidate path.hostFacing.
 * Returns null for candidates to drop: TCP or other non-UDP transports, non-host types,
 * non-loopback addresses, and any UDP candidate other than that side's endpoint of the path
 * (a second candidate would let ICE find a direct route around the relay).
 * The empty string (end-of-candidates) passes through unchanged.
 */
export function rewriteCandidate(candidate: string, path: RelayPath, side: 'host' | 'client'): string | null {
  if (candidate.trim() === '') return candidate;
  const m = RE.exec(candidate.replace(/\r?\n$/, ''));
  if (!m) return null;
  const [, prefix = '', foundation, component, transport, priority, address, port, type, rest] = m;
  if (transport.toLowerCase() !== 'udp' || type.toLowerCase() !== 'host') return null;
  if (!isLoopback(address)) return null;
  const own = side === 'host' ? path.host : path.client;
  if (!sameEndpoint(address, Number(port), own)) return null;
  const seen = side === 'host' ? path.clientFacing : path.hostFacing;
  const eol = /\r?\n$/.exec(candidate)?.[0] ?? '';
  return `${prefix}candidate:${foundation} ${component} ${transport} ${priority} ${seen.address} ${seen.port} typ ${type}${rest}${eol}`;
}

/** Rewrite every `a=candidate:` line of an SDP blob from `side`, dropping the ones rewriteCandidate drops. */
export function rewriteSdp(sdp: string, path: RelayPath, side: 'host' | 'client'): string {
  const nl = sdp.includes('\r\n') ? '\r\n' : '\n';
  const out: string[] = [];
  for (const line of sdp.split(/\r?\n/)) {
    if (/^a=candidate:/i.test(line)) {
      const r = rewriteCandidate(line, path, side);
      if (r !== null) out.push(r);
    } else out.push(line);
  }
  return out.join(nl);
}

/** The first UDP loopback host candidate in an SDP blob or a list of candidate strings. */
export function firstLoopbackUdp(src: string | string[]): Endpoint | undefined {
  const lines = Array.isArray(src) ? src : src.split(/\r?\n/);
  for (const l of lines) {
    const c = parseCandidate(l);
    if (c && c.transport === 'udp' && c.type === 'host' && isLoopback(c.address))
      return { address: c.address, port: c.port };
  }
  return undefined;
}
