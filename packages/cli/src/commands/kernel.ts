/** `pmi info`, `pmi sym`, `pmi types`: what discovery found, symbol lookup, struct layouts. */
import { hex, PmiError } from '@pmi/core';
import type { DiscoveredKernel } from '@pmi/kernel';
import { withKernel, type KernelOptions } from '../kernel-context.js';
import { EXIT_PARTIAL } from '../exit-codes.js';
import { printDocument, printRows } from '../output.js';
import { loadModuleSymbols, type ModuleSymbols } from '@pmi/linux';
import { kernelObjects } from './kernel-views.js';

const hex64 = (v: bigint | undefined): string | null =>
  v === undefined ? null : '0x' + BigInt.asUintN(64, v).toString(16);

/** The `pmi info` document (docs/cli.md). */
export function infoDocument(k: DiscoveredKernel): Record<string, unknown> {
  const f = k.facts;
  return {
    release: f.release,
    banner: f.banner,
    paging_levels: f.levels,
    dtb: hex(f.dtb),
    kaslr_slide: hex64(f.kaslrSlide),
    kaslr_source: f.kaslrSource,
    link_text: hex64(f.linkText),
    phys_base: hex64(BigInt(f.physBase)),
    text_virt: hex64(f.textVirt),
    text_phys: hex(f.textPhys),
    page_offset_base: hex64(f.pageOffsetBase),
    vmalloc_base: hex64(f.vmallocBase),
    vmemmap_base: hex64(f.vmemmapBase),
    symbol_count: f.symbolCount,
    symbol_source: f.symbolSource,
    btf_type_count: f.btfTypes ?? null,
    btf_phys: f.btfPhys === undefined ? null : hex(f.btfPhys),
    btf_source: f.btfSource ?? null,
    // The kernel's own "System RAM" map; source_ranges is what the source serves after discovery
    // (a probed NetTLP target narrows its ranges to the RAM: ram_adopted).
    system_ram: f.ram ? f.ram.map((r) => `${hex(r.start)}-${hex(r.end)}`).join(',') : null,
    ram_adopted: f.ramAdopted ?? false,
    source_ranges: k.mem.info.ranges.map((r) => `${hex(r.start)}-${hex(r.end)}`).join(','),
    steps: f.steps.map((s) => ({ stage: s.stage, method: s.method, ms: s.ms, ...(s.detail ?? {}) })),
    total_ms: f.totalMs,
    warnings: f.warnings,
  };
}

export async function infoCommand(opts: KernelOptions): Promise<number> {
  return withKernel(opts, async (k) => {
    const doc = infoDocument(k);
    if (opts.json) {
      printDocument(doc, { json: true });
      return 0;
    }
    const { steps, warnings, ...rest } = doc;
    printDocument(rest, { json: false });
    process.stdout.write('\nhow each was found:\n');
    printRows(
      steps as Record<string, unknown>[],
      [{ key: 'stage' }, { key: 'ms', align: 'right' }, { key: 'method' }],
      warnings as string[],
      { json: false },
    );
    return 0;
  });
}

export interface SymRow {
  name: string;
  address: string;
  type: string;
  module: string | null;
}

export async function symCommand(names: string[], opts: KernelOptions): Promise<number> {
  return withKernel(
    opts,
    async (k) => {
      const rows: SymRow[] = [];
      const warnings: string[] = [...k.facts.warnings];
      let modSyms: ModuleSymbols | undefined;
      const moduleSymbols = async () => {
        if (!modSyms) {
          modSyms = await loadModuleSymbols(await kernelObjects(k));
          warnings.push(...modSyms.warnings);
        }
        return modSyms;
      };
      for (const name of names) {
        const colon = name.indexOf(':');
        const hits = colon > 0 ? [] : k.symbols.lookup(name);
        for (const s of hits) rows.push({ name: s.name, address: hex64(s.address)!, type: s.type, module: null });
        // `module:name`, or a plain name the kernel does not have: the modules' own symbol tables
        const mhits = hits.length === 0 ? (await moduleSymbols()).resolve(name) : [];
        for (const s of mhits) rows.push({ name: s.name, address: hex64(s.address)!, type: s.type, module: s.module });
        if (hits.length === 0 && mhits.length === 0) warnings.push(`unknown symbol: ${name}`);
      }
      printRows(rows, [{ key: 'address' }, { key: 'type' }, { key: 'name' }, { key: 'module' }], warnings, {
        json: !!opts.json,
      });
      return warnings.length > k.facts.warnings.length ? EXIT_PARTIAL : 0;
    },
    { noTypes: true },
  );
}

export async function typesCommand(name: string, opts: KernelOptions): Promise<number> {
  return withKernel(opts, async (k) => {
    if (!k.btf)
      throw new PmiError(
        'E_NOT_FOUND',
        'cli',
        'no type information: BTF was not found in memory and no --btf file was given',
      );
    const layout = k.btf.structLayout(name);
    if (opts.json) {
      process.stdout.write(
        JSON.stringify(
          { name: layout.name, kind: layout.kind, size: layout.size, rows: layout.rows, warnings: [] },
          null,
          2,
        ) + '\n',
      );
      return 0;
    }
    process.stdout.write(`${layout.kind} ${layout.name} {  /* size ${layout.size} */\n`);
    for (const r of layout.rows) {
      const indent = '  '.repeat(r.depth + 1);
      const bits = r.bit_size !== undefined ? `:${r.bit_size}` : '';
      const where = r.bit_offset !== undefined ? `${r.offset}  bit ${r.bit_offset}` : `${r.offset}`;
      const label = r.anon ? `${r.type}` : `${r.type} ${r.name}${bits}`;
      process.stdout.write(`${indent}${label.padEnd(48 - indent.length)} /* ${where}  size ${r.size} */\n`);
    }
    process.stdout.write('};\n');
    return 0;
  });
}
