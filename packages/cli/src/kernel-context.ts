/**
 * Kernel-level commands share one discovery step: open the target, find kallsyms/BTF/page
 * tables from its own memory, with `--symbols`/`--btf`/`--isf` files as fallbacks.
 */
import { readFileSync } from 'node:fs';
import { PmiError } from '@pmi/core';
import { discoverKernel, parseSystemMap, readIsfFile, type DiscoveredKernel, type SymbolTable } from '@pmi/kernel';
import { withTarget, type GlobalOptions } from './context.js';

export interface KernelOptions extends GlobalOptions {
  symbols?: string;
  btf?: string;
  isf?: string;
  preferFile?: boolean;
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
  discover: { noTypes?: boolean } = {},
): Promise<T> {
  const file = await symbolFile(opts);
  return withTarget(opts, async (mem) => {
    const k = await discoverKernel(mem, {
      symbolFile: file.table,
      symbolFileName: file.name,
      btfFile: opts.btf,
      prefer: opts.preferFile ? 'file' : 'memory',
      noTypes: discover.noTypes,
    });
    return fn(k);
  });
}
