import { PmiError } from './errors.js';
import type { OpenOptions, PhysicalMemory } from './memory.js';

/**
 * Source URI registry. Each package that provides a source kind registers its scheme
 * (`raw`, `qemu`, `lime`, `elf` in @pmi/sources, `nettlp` in @pmi/nettlp); callers only
 * ever see `openSource(uri)`. A bare path (no scheme) goes to the registered sniffer.
 */
export type SourceOpener = (uri: string, rest: string, opts: OpenOptions) => Promise<PhysicalMemory>;

const openers = new Map<string, SourceOpener>();
let pathSniffer: ((path: string, opts: OpenOptions) => Promise<PhysicalMemory>) | undefined;

export function registerSourceScheme(scheme: string, opener: SourceOpener): void {
  openers.set(scheme.toLowerCase(), opener);
}

export function registerPathSniffer(sniffer: (path: string, opts: OpenOptions) => Promise<PhysicalMemory>): void {
  pathSniffer = sniffer;
}

export function registeredSchemes(): string[] {
  return [...openers.keys()].sort();
}

/**
 * Open a source by URI: `SCHEME:REST` where REST is what the scheme's opener parses
 * (a path, optionally `?key=value&…`), or a bare path whose format is sniffed.
 */
export async function openSource(uri: string, opts: OpenOptions = {}): Promise<PhysicalMemory> {
  const m = /^([a-z][a-z0-9+.-]*):(.*)$/i.exec(uri);
  // A one-letter "scheme" would be a Windows drive; we only treat known schemes as schemes.
  if (m && openers.has(m[1].toLowerCase())) {
    return openers.get(m[1].toLowerCase())!(uri, m[2], opts);
  }
  if (m && m[1].length > 1 && !uri.startsWith('/') && !uri.startsWith('.')) {
    throw new PmiError(
      'E_SOURCE_URI',
      'source',
      `unknown source scheme '${m[1]}:' in '${uri}' (known: ${registeredSchemes().join(', ')}, or a plain file path)`,
      { uri },
    );
  }
  if (!pathSniffer)
    throw new PmiError('E_SOURCE_URI', 'source', `no file sources registered to open '${uri}'`, { uri });
  return pathSniffer(uri, opts);
}

/** Split `path?k=v&k2=v2` into the path and its parameters (values URL-decoded). */
export function splitQuery(rest: string): { path: string; params: URLSearchParams } {
  const q = rest.indexOf('?');
  if (q < 0) return { path: rest, params: new URLSearchParams() };
  return { path: rest.slice(0, q), params: new URLSearchParams(rest.slice(q + 1)) };
}
