/**
 * Kernel-level commands share one discovery step: open the target, find kallsyms/BTF/page
 * tables from its own memory, with `--symbols`/`--btf`/`--isf` files as fallbacks.
 */
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { PmiError } from '@pmi/core';
import {
  discoverKernel,
  parseSystemMap,
  readIsfFile,
  type DiscoveredKernel,
  type DiscoveryHints,
  type SymbolTable,
} from '@pmi/kernel';
import { resolveSourceUri, withTarget, type GlobalOptions } from './context.js';

export interface KernelOptions extends GlobalOptions {
  symbols?: string;
  btf?: string;
  isf?: string;
  preferFile?: boolean;
  /** commander's --no-cache sets cache=false */
  cache?: boolean;
}

/**
 * Discovery hints cache: where kallsyms and BTF sat last time, per source URI. A hint is only a
 * place to look first — discovery validates it — so a stale entry costs nothing but the scan.
 */
function hintsPath(): string {
  return join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'pmi', 'discovery-hints.json');
}

function loadHints(uri: string): DiscoveryHints | undefined {
  try {
    const all = JSON.parse(readFileSync(hintsPath(), 'utf8')) as Record<string, DiscoveryHints>;
    return all[uri];
  } catch {
    return undefined;
  }
}

function saveHints(uri: string, hints: DiscoveryHints): void {
  try {
    const path = hintsPath();
    let all: Record<string, DiscoveryHints> = {};
    try {
      all = JSON.parse(readFileSync(path, 'utf8')) as Record<string, DiscoveryHints>;
    } catch {
      /* first entry */
    }
    all[uri] = hints;
    const keys = Object.keys(all);
    for (const k of keys.slice(0, Math.max(0, keys.length - 64))) delete all[k]; // bounded
    mkdirSync(dirname(path), { recursive: true });
    const tmp = `${path}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify(all));
    renameSync(tmp, path);
  } catch {
    /* a cache that cannot be written is not an error */
  }
}

async function symbolFile(opts: KernelOptions): Promise<{ table?: SymbolTable; name?: string }> {
  if (opts.symbols && opts.isf) throw new PmiError('E_USAGE', 'cli', 'give --symbols or --isf, not both');
  if (opts.symbols) {
    let text: string;
    try {
      text = readFileSync(opts.symbols, 'utf8');
    } catch (e) {
      throw new PmiError('E_USAGE', 'cli', `cannot read --symbols ${opts.symbols}: ${(e as Error).message}`);
    }
    return { table: parseSystemMap(text), name: opts.symbols };
  }
  if (opts.isf) return { table: (await readIsfFile(opts.isf)).symbols, name: opts.isf };
  return {};
}

export async function withKernel<T>(
  opts: KernelOptions,
  fn: (k: DiscoveredKernel) => Promise<T>,
  discover: { noTypes?: boolean; writable?: boolean } = {},
): Promise<T> {
  const file = await symbolFile(opts);
  const { uri } = await resolveSourceUri(opts);
  const useCache = opts.cache !== false;
  return withTarget(
    opts,
    async (mem) => {
      const k = await discoverKernel(mem, {
        symbolFile: file.table,
        symbolFileName: file.name,
        btfFile: opts.btf,
        prefer: opts.preferFile ? 'file' : 'memory',
        noTypes: discover.noTypes,
        hints: useCache ? loadHints(uri) : undefined,
      });
      if (useCache) saveHints(uri, { ...loadHints(uri), ...stripUndefined(k.facts.hints) });
      return fn(k);
    },
    discover.writable,
  );
}

function stripUndefined(h: DiscoveryHints): DiscoveryHints {
  return Object.fromEntries(Object.entries(h).filter(([, v]) => v !== undefined)) as DiscoveryHints;
}
