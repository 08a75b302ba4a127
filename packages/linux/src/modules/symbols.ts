/**
 * Module symbol tables: each module's own ELF symbols (module->kallsyms → struct mod_kallsyms
 * {symtab (Elf64_Sym[num_symtab]), strtab, typetab}), as /proc/kallsyms lists them with "[module]".
 *
 * Type letters follow /proc/kallsyms (kernel/kallsyms.c s_show): typetab's letter, upper case when
 * the symbol is exported by the module (found by name in module->syms with the same value), lower
 * case otherwise. Symbols with empty names are skipped, as /proc/kallsyms does.
 */
import { PmiError, hex } from '@pmi/core';
import type { KernelObjects } from '@pmi/kernel';
import { listModules, type ModuleRow } from './modules.js';

export interface ModuleSymbol {
  module: string;
  name: string;
  /** nm-style letter as /proc/kallsyms prints it. */
  type: string;
  address: bigint;
  /** st_size from the ELF symbol. */
  size: bigint;
}

export interface ModuleSymbolHit extends ModuleSymbol {
  /** Distance from the symbol's address. */
  offset: bigint;
}

/** Upper bounds (a corrupt mod_kallsyms must not make us read gigabytes). */
const MAX_SYMTAB = 1 << 20;
const MAX_STRTAB = 16 << 20;
const KSYM_NAME_LEN = 512;
const PAGE = 4096;

export class ModuleSymbols {
  private readonly byName = new Map<string, ModuleSymbol[]>();
  /** Symbols with a non-zero address sorted by address (for byAddress). */
  private readonly sorted: ModuleSymbol[];

  constructor(
    readonly symbols: readonly ModuleSymbol[],
    readonly modules: readonly ModuleRow[],
    readonly warnings: readonly string[],
  ) {
    for (const s of symbols) {
      const list = this.byName.get(s.name);
      if (list) list.push(s);
      else this.byName.set(s.name, [s]);
    }
    this.sorted = symbols
      .filter((s) => s.address !== 0n && s.type.toLowerCase() !== 'u')
      .sort((a, b) => (a.address < b.address ? -1 : a.address > b.address ? 1 : 0));
  }

  /** Every symbol with that name (optionally only in one module). */
  lookup(name: string, module?: string): ModuleSymbol[] {
    const hits = this.byName.get(name) ?? [];
    return module === undefined ? hits.slice() : hits.filter((s) => s.module === module);
  }

  /** `module:name` or a plain name. */
  resolve(spec: string): ModuleSymbol[] {
    const colon = spec.indexOf(':');
    return colon > 0 ? this.lookup(spec.slice(colon + 1), spec.slice(0, colon)) : this.lookup(spec);
  }

  /** The module whose memory holds va. */
  moduleAt(va: bigint): ModuleRow | undefined {
    for (const m of this.modules) for (const r of m.regions) if (va >= r.base && va < r.base + BigInt(r.size)) return m;
    return undefined;
  }

  /**
   * Symbolize an address inside a module: the nearest symbol at or below it in the same module
   * (`dummy_xmit+0x12 [dummy]`). Undefined when va is in no module's memory.
   */
  byAddress(va: bigint): ModuleSymbolHit | undefined {
    const mod = this.moduleAt(va);
    if (!mod) return undefined;
    let lo = 0;
    let hi = this.sorted.length - 1;
    let best = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if (this.sorted[mid].address <= va) {
        best = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    for (let i = best; i >= 0; i--) {
      const s = this.sorted[i];
      if (s.module === mod.name) return { ...s, offset: va - s.address };
      if (mod.regions.every((r) => s.address < r.base)) break;
    }
    return undefined;
  }

  /** `name+0xoff [module]`, or undefined. */
  format(va: bigint): string | undefined {
    const h = this.byAddress(va);
    return h ? `${h.name}+0x${h.offset.toString(16)} [${h.module}]` : undefined;
  }
}

/**
 * Read every module's symbol table. Reads are batched: one readStructs for all mod_kallsyms, one
 * batch for all symtabs and typetabs, one for all strtabs (page-sized ops, so a strtab ending
 * before an unmapped page still reads).
 */
export async function loadModuleSymbols(
  k: KernelObjects,
  opts: { modules?: readonly ModuleRow[]; signal?: AbortSignal } = {},
): Promise<ModuleSymbols> {
  const warnings: string[] = [];
  let modules = opts.modules;
  if (!modules) {
    const r = await listModules(k, { signal: opts.signal });
    warnings.push(...r.warnings);
    modules = r.rows;
  }
  const withTab = modules.filter((m) => m.kallsyms !== 0n);
  if (withTab.length === 0) return new ModuleSymbols([], modules, warnings);

  const KS = k.layout('mod_kallsyms', ['symtab', 'num_symtab', 'strtab', 'typetab']);
  const symSize = k.hasType('elf64_sym') ? k.btf.sizeOf('elf64_sym') : 24;
  const off = (f: string, dflt: number) => (k.hasType('elf64_sym') ? k.btf.fieldOffset('elf64_sym', f) : dflt);
  const O_NAME = off('st_name', 0);
  const O_VALUE = off('st_value', 8);
  const O_SIZE = off('st_size', 16);
  const views = await k.readStructs(
    withTab.map((m) => m.kallsyms),
    KS,
  );
  interface Tab {
    mod: ModuleRow;
    n: number;
    symtab: Uint8Array;
    typetab: Uint8Array;
    strtabVa: bigint;
    str?: Uint8Array;
    strLen: number;
  }
  const tabs: Tab[] = [];
  const ops: { va: bigint; buf: Uint8Array }[] = [];
  views.forEach((v, i) => {
    const mod = withTab[i];
    if (v instanceof PmiError) {
      warnings.push(`${mod.name}: mod_kallsyms at ${hex(mod.kallsyms)} unreadable: ${v.message}`);
      return;
    }
    let n = v.num('num_symtab');
    if (n > MAX_SYMTAB) {
      warnings.push(`${mod.name}: num_symtab ${n} is implausible; reading the first ${MAX_SYMTAB}`);
      n = MAX_SYMTAB;
    }
    const t: Tab = {
      mod,
      n,
      symtab: new Uint8Array(n * symSize),
      typetab: new Uint8Array(n),
      strtabVa: v.ptr('strtab'),
      strLen: 0,
    };
    ops.push({ va: v.ptr('symtab'), buf: t.symtab }, { va: v.ptr('typetab'), buf: t.typetab });
    tabs.push(t);
  });
  const failed = new Set((await k.paging.readVirtualBatch(ops)).map((f) => f.index));
  const good: Tab[] = [];
  tabs.forEach((t, i) => {
    if (failed.has(2 * i) || failed.has(2 * i + 1)) {
      warnings.push(`${t.mod.name}: symbol table unreadable`);
      return;
    }
    const dv = new DataView(t.symtab.buffer, t.symtab.byteOffset, t.symtab.length);
    let maxName = 0;
    for (let j = 0; j < t.n; j++) maxName = Math.max(maxName, dv.getUint32(j * symSize + O_NAME, true));
    t.strLen = Math.min(maxName + KSYM_NAME_LEN, MAX_STRTAB);
    good.push(t);
  });
  // strtabs: page-sized ops so an unmapped page only loses the names that lie in it
  const sops: { va: bigint; buf: Uint8Array }[] = [];
  const owner: { t: Tab; at: number }[] = [];
  for (const t of good) {
    t.str = new Uint8Array(t.strLen);
    let at = 0;
    while (at < t.strLen) {
      const va = t.strtabVa + BigInt(at);
      const inPage = PAGE - Number(BigInt.asUintN(64, va) & 0xfffn);
      const len = Math.min(inPage, t.strLen - at);
      sops.push({ va, buf: t.str.subarray(at, at + len) });
      owner.push({ t, at });
      at += len;
    }
  }
  const sfail = await k.paging.readVirtualBatch(sops);
  const bad = new Map<Tab, number>();
  for (const f of sfail) {
    const { t, at } = owner[f.index];
    bad.set(t, Math.min(bad.get(t) ?? Infinity, at));
  }
  const symbols: ModuleSymbol[] = [];
  for (const t of good) {
    const str = Buffer.from(t.str!.buffer, t.str!.byteOffset, bad.get(t) ?? t.strLen);
    const dv = new DataView(t.symtab.buffer, t.symtab.byteOffset, t.symtab.length);
    let lost = 0;
    const mine: ModuleSymbol[] = [];
    for (let j = 0; j < t.n; j++) {
      const o = j * symSize;
      const nameOff = dv.getUint32(o + O_NAME, true);
      if (nameOff >= str.length) {
        lost++;
        continue;
      }
      const end = str.indexOf(0, nameOff);
      const name = str.toString('latin1', nameOff, end < 0 ? Math.min(str.length, nameOff + KSYM_NAME_LEN) : end);
      if (name === '') continue;
      const type = String.fromCharCode(t.typetab[j] || 0x3f);
      mine.push({
        module: t.mod.name,
        name,
        type,
        address: dv.getBigUint64(o + O_VALUE, true),
        size: dv.getBigUint64(o + O_SIZE, true),
      });
    }
    if (lost > 0) warnings.push(`${t.mod.name}: ${lost} symbol names unreadable`);
    const exported = await exportedSymbols(k, t.mod, warnings);
    for (const s of mine) {
      const ex = exported.get(s.name);
      s.type = ex !== undefined && ex === s.address ? s.type.toUpperCase() : s.type.toLowerCase();
    }
    symbols.push(...mine);
  }
  return new ModuleSymbols(symbols, modules, warnings);
}

/** name → value of the module's exported symbols (module->syms, kernel_symbol[num_syms]). */
async function exportedSymbols(k: KernelObjects, mod: ModuleRow, warnings: string[]): Promise<Map<string, bigint>> {
  const out = new Map<string, bigint>();
  if (!k.hasField('module', 'syms') || !k.hasField('module', 'num_syms')) return out;
  const M = k.layout('module', ['syms', 'num_syms']);
  const m = await k.read(mod.va, M);
  const n = Math.min(m.num('num_syms'), 65536);
  const syms = m.ptr('syms');
  if (n === 0 || syms === 0n) return out;
  try {
    const size = k.btf.sizeOf('kernel_symbol');
    const buf = await k.readBytes(syms, n * size);
    const dv = new DataView(buf.buffer, buf.byteOffset, buf.length);
    const prel = k.hasField('kernel_symbol', 'value_offset');
    const oV = k.btf.fieldOffset('kernel_symbol', prel ? 'value_offset' : 'value');
    const oN = k.btf.fieldOffset('kernel_symbol', prel ? 'name_offset' : 'name');
    for (let i = 0; i < n; i++) {
      const at = syms + BigInt(i * size);
      const value = prel
        ? BigInt.asUintN(64, at + BigInt(oV) + BigInt(dv.getInt32(i * size + oV, true)))
        : dv.getBigUint64(i * size + oV, true);
      const nameVa = prel
        ? BigInt.asUintN(64, at + BigInt(oN) + BigInt(dv.getInt32(i * size + oN, true)))
        : dv.getBigUint64(i * size + oN, true);
      out.set(await k.readString(nameVa, KSYM_NAME_LEN), value);
    }
  } catch (e) {
    warnings.push(`${mod.name}: exported symbols unreadable: ${(e as Error).message}`);
  }
  return out;
}

/**
 * Resolve `module:name` (module symbols only) or a plain name (the kernel's kallsyms first, then
 * the modules). Returns kernel hits with `module: null`.
 */
export async function resolveModuleSymbol(
  k: KernelObjects,
  spec: string,
  syms?: ModuleSymbols,
): Promise<(ModuleSymbol | (Omit<ModuleSymbol, 'module' | 'size'> & { module: null; size?: bigint }))[]> {
  const colon = spec.indexOf(':');
  if (colon < 0) {
    const core = k.symbols.lookup(spec);
    if (core.length > 0) return core.map((s) => ({ module: null, name: s.name, type: s.type, address: s.address }));
  }
  const table = syms ?? (await loadModuleSymbols(k));
  return table.resolve(spec);
}
