/**
 * Staged kernel discovery from physical memory alone (Volatility's "stacker", LibVMI's staged
 * init): symbols (kallsyms) → physical base → paging (DTB, 4/5-level) → memory-layout bases →
 * types (BTF). Each stage records how it succeeded and how long it took; a failure names the
 * stage and what was tried. Files (System.map, ISF, BTF) are fallbacks: memory wins unless the
 * caller prefers the file, and disagreements are reported.
 */
import { PmiError, hex, readPhys, type PhysicalMemory, type PhysRange } from '@pmi/core';
import { locateKallsyms, type KernelSymbols } from '../kallsyms/index.js';
import { SymbolTable, SymbolTableBuilder } from '../kallsyms/symbols.js';
import { compareSymbols } from '../symfiles/index.js';
import { locateBtf, loadBtfFile, type Btf } from '../btf/index.js';
import { X86Paging } from '../paging/index.js';
import { findVmcoreInfo, parseVmcoreInfo, type VmcoreInfo } from './vmcoreinfo.js';
import { KernelObjects } from '../objects/kernel.js';
import { readMemoryMap } from './memmap.js';

/** x86-64 `__START_KERNEL_map`: the kernel image's virtual base before KASLR. */
export const START_KERNEL_MAP = 0xffffffff80000000n;
/**
 * Link-time address of `_text` with the default CONFIG_PHYSICAL_START (16 MiB) and alignment. Only
 * a last resort: discovery takes the KASLR offset from the kernel's own VMCOREINFO (KERNELOFFSET).
 */
export const LINK_TEXT = 0xffffffff81000000n;

export interface DiscoveryStep {
  stage: 'symbols' | 'phys_base' | 'paging' | 'kaslr' | 'layout' | 'banner' | 'types' | 'vmcoreinfo' | 'memmap';
  method: string;
  ms: number;
  detail?: Record<string, unknown>;
}

export interface DiscoverOptions {
  /** System.map text or a parsed table (link-time or runtime addresses). */
  symbolFile?: SymbolTable;
  symbolFileName?: string;
  /** Path of a vmlinux BTF blob (`/sys/kernel/btf/vmlinux` copy) or an ELF vmlinux. */
  btfFile?: string;
  /** Prefer files over memory for symbols/types (default: memory wins). */
  prefer?: 'memory' | 'file';
  /** Skip BTF (faster when only symbols are needed). */
  noTypes?: boolean;
  /**
   * Where an earlier discovery of the same kernel found its tables (`facts.hints`). Tried first
   * and validated like any candidate — a wrong or stale hint only costs the full scan it saves.
   */
  hints?: DiscoveryHints;
}

/** Physical locations worth remembering between runs (a remote source pays for every scanned byte). */
export interface DiscoveryHints {
  kallsymsTokenTable?: number;
  btfPhys?: number;
  btfSize?: number;
}

export interface KernelFacts {
  release: string;
  banner: string;
  bannerPhys: number;
  levels: 4 | 5;
  dtb: number;
  /** Virtual KASLR slide: runtime `_text` − link-time `_text`. */
  kaslrSlide: bigint;
  /** Link-time `_text` (runtime `_text` − slide): from VMCOREINFO's KERNELOFFSET, else assumed LINK_TEXT. */
  linkText: bigint;
  /** How the slide was found: the kernel's VMCOREINFO, the symbol file's link-time addresses, or assumed LINK_TEXT. */
  kaslrSource: 'vmcoreinfo' | 'file' | 'assumed';
  /** Kernel's `phys_base` (image VA → PA: pa = va − __START_KERNEL_map + phys_base). */
  physBase: number;
  /** Physical address of `_text`. */
  textPhys: number;
  textVirt: bigint;
  pageOffsetBase?: bigint;
  vmallocBase?: bigint;
  vmemmapBase?: bigint;
  symbolCount: number;
  symbolSource: 'memory' | 'file';
  btfTypes?: number;
  btfPhys?: number;
  btfSource?: 'memory' | 'file';
  vmcoreinfo?: { physAddress: number; osrelease?: string };
  /** "System RAM" of the kernel's own memory map (top level of `iomem_resource`), when BTF was found. */
  ram?: PhysRange[];
  /** The source narrowed its ranges to `ram` (a NetTLP target whose ranges were only probed). */
  ramAdopted?: boolean;
  /** Feed back as `hints` to skip the scans next time. */
  hints: DiscoveryHints;
  steps: DiscoveryStep[];
  warnings: string[];
  totalMs: number;
}

export interface DiscoveredKernel {
  mem: PhysicalMemory;
  symbols: SymbolTable;
  kallsyms?: KernelSymbols;
  btf?: Btf;
  paging: X86Paging;
  facts: KernelFacts;
}

const ORIGIN = 'discovery';

function notFound(stage: string, message: string, tried: unknown): PmiError {
  return new PmiError('E_NOT_FOUND', ORIGIN, `${stage}: ${message}`, { stage, tried });
}

/** Image VA → PA with a given phys_base (valid for the kernel image mapping only). */
export function imageVaToPhys(va: bigint, physBase: number): number {
  return Number(va - START_KERNEL_MAP) + physBase;
}

async function readU64(mem: PhysicalMemory, pa: number): Promise<bigint> {
  const b = await readPhys(mem, pa, 8);
  return Buffer.from(b.buffer, b.byteOffset, 8).readBigUInt64LE(0);
}

async function readCString(mem: PhysicalMemory, pa: number, max = 512): Promise<string> {
  const r = mem.info.ranges.find((x) => pa >= x.start && pa < x.end);
  const len = Math.min(max, r ? r.end - pa : max);
  const b = Buffer.from(await readPhys(mem, pa, len));
  const nul = b.indexOf(0);
  return b.toString('latin1', 0, nul < 0 ? b.length : nul);
}

/**
 * phys_base is 2 MiB aligned (CONFIG_PHYSICAL_ALIGN, virtual and physical KASLR steps are too). It is
 * "negative" (wraps mod 2^64) when the virtual slide exceeds the physical load offset, so only its
 * magnitude is bounded, by the end of RAM.
 */
function plausiblePhysBase(pb: number, ranges: readonly PhysRange[]): boolean {
  const end = ranges.at(-1)?.end ?? 0;
  return Number.isSafeInteger(pb) && pb % 0x200000 === 0 && Math.abs(pb) < end + 2 ** 31;
}

/** A candidate phys_base is right when init_top_pgt, read through it, maps _text back to it. */
async function physBaseWalks(mem: PhysicalMemory, symbols: SymbolTable, pb: number, slide = 0n): Promise<boolean> {
  const top = symbols.get('init_top_pgt');
  const text = symbols.get('_text');
  if (!top || !text) return false;
  const dtb = imageVaToPhys(top.address + slide, pb);
  if (dtb < 0 || dtb % 4096 !== 0) return false;
  for (const levels of [5, 4] as const) {
    try {
      const p = new X86Paging(mem, dtb, levels, { tlb: false, tableCache: false });
      if ((await p.translate(text.address + slide)) === imageVaToPhys(text.address + slide, pb)) return true;
    } catch {
      /* not this candidate/level */
    }
  }
  return false;
}

/**
 * Find phys_base. A: kallsyms tables were found at known physical addresses and are symbols
 * themselves (`kallsyms_token_table` …) — their VA − PA gives it with no extra reads.
 * B: `linux_banner`'s VA against each physical copy of the banner, checked by translation.
 */
async function findPhysBase(
  mem: PhysicalMemory,
  symbols: SymbolTable,
  kallsyms: KernelSymbols | undefined,
  tried: string[],
): Promise<{ physBase: number; method: string }> {
  if (kallsyms) {
    const t = kallsyms.layout.tables;
    for (const [name, pa] of [
      ['kallsyms_token_table', t.tokenTable],
      ['kallsyms_names', t.names],
      ['kallsyms_markers', t.markers],
    ] as const) {
      const s = symbols.get(name);
      if (!s) {
        tried.push(`${name}: not in the symbol table`);
        continue;
      }
      const pb = pa - Number(s.address - START_KERNEL_MAP);
      if (plausiblePhysBase(pb, mem.info.ranges)) return { physBase: pb, method: `${name} VA vs its physical address` };
      tried.push(`${name}: implied phys_base ${pb} is not 2 MiB aligned`);
    }
  }
  const banner = symbols.get('linux_banner');
  if (!banner) throw notFound('phys_base', 'no kallsyms table addresses and no linux_banner symbol', tried);
  for (const pa of await findBannerCopies(mem)) {
    const pb = pa - Number(banner.address - START_KERNEL_MAP);
    if (!plausiblePhysBase(pb, mem.info.ranges))
      tried.push(`banner copy at ${hex(pa)}: implied phys_base not 2 MiB aligned`);
    else if (!(await physBaseWalks(mem, symbols, pb)))
      tried.push(`banner copy at ${hex(pa)}: init_top_pgt does not map _text`);
    else return { physBase: pb, method: 'linux_banner VA vs a physical banner copy' };
  }
  throw notFound('phys_base', 'could not relate the kernel image VA to a physical address', tried);
}

/**
 * The running kernel's VMCOREINFO text through its `vmcoreinfo_data` pointer (a page in the direct
 * map), or undefined when the kernel has none or it does not read.
 */
async function ownVmcoreInfo(
  paging: X86Paging,
  ptrVa: bigint | undefined,
  physBase: number,
): Promise<VmcoreInfo | undefined> {
  if (ptrVa === undefined) return undefined;
  try {
    const p = await readU64(paging.mem, imageVaToPhys(ptrVa, physBase));
    if (p === 0n) return undefined;
    const page = Buffer.from(await paging.readVirtual(p, 4096));
    const nul = page.indexOf(0);
    const text = page.toString('latin1', 0, nul < 0 ? page.length : nul);
    return text.startsWith('OSRELEASE=') ? parseVmcoreInfo(text, await paging.translate(p)) : undefined;
  } catch {
    return undefined;
  }
}

/** Physical addresses of "Linux version " strings (the banner and its copies), at most `max`. */
async function findBannerCopies(mem: PhysicalMemory, max = 64): Promise<number[]> {
  const needle = Buffer.from('Linux version ');
  const win = 8 << 20;
  const buf = Buffer.alloc(win + needle.length);
  const copies: number[] = [];
  for (const r of mem.info.ranges) {
    for (let s = r.start; s < r.end && copies.length < max; s += win) {
      const len = Math.min(win + needle.length, r.end - s);
      const view = buf.subarray(0, len);
      if ((await mem.readBatch([{ addr: s, buf: view }])).length) continue;
      for (
        let at = view.indexOf(needle);
        at >= 0 && at < Math.min(win, len) && copies.length < max;
        at = view.indexOf(needle, at + 1)
      ) {
        copies.push(s + at);
      }
    }
  }
  return copies;
}

/** Discover the kernel in `mem`. */
export async function discoverKernel(mem: PhysicalMemory, opts: DiscoverOptions = {}): Promise<DiscoveredKernel> {
  const t0 = performance.now();
  const steps: DiscoveryStep[] = [];
  const warnings: string[] = [];
  let lap = performance.now();
  const step = (stage: DiscoveryStep['stage'], method: string, detail?: Record<string, unknown>) => {
    const now = performance.now();
    steps.push({ stage, method, ms: Math.round((now - lap) * 10) / 10, detail });
    lap = now;
  };

  // Stage 1: symbols.
  let kallsyms: KernelSymbols | undefined;
  let symbols: SymbolTable | undefined;
  let symbolSource: 'memory' | 'file' = 'memory';
  let kallsymsError: PmiError | undefined;
  if (!(opts.prefer === 'file' && opts.symbolFile)) {
    try {
      const tt = opts.hints?.kallsymsTokenTable;
      if (tt !== undefined) {
        kallsyms = await locateKallsyms(mem, { ranges: [{ start: Math.max(0, tt - 64), end: tt + 4096 }] }).catch(
          () => {
            warnings.push(`kallsyms hint ${hex(tt)} did not validate; scanning all memory`);
            return undefined;
          },
        );
      }
      kallsyms ??= await locateKallsyms(mem);
      symbols = kallsyms;
      step(
        'symbols',
        `kallsyms decoded from memory (${kallsyms.layout.variant})${tt !== undefined && kallsyms.layout.tables.tokenTable === tt ? ' at the hinted address' : ''}`,
        {
          count: kallsyms.count,
          token_table: hex(kallsyms.layout.tables.tokenTable),
        },
      );
    } catch (e) {
      kallsymsError = e instanceof PmiError ? e : new PmiError('E_INTERNAL', ORIGIN, String(e));
      if (!opts.symbolFile) {
        throw new PmiError(
          'E_NOT_FOUND',
          ORIGIN,
          `symbols: ${kallsymsError.message} (no --symbols/--isf fallback given)`,
          {
            stage: 'symbols',
            tried: kallsymsError.data,
          },
        );
      }
      warnings.push(
        `kallsyms not found in memory (${kallsymsError.message}); using ${opts.symbolFileName ?? 'the symbol file'}`,
      );
    }
  }

  let vmci: VmcoreInfo | undefined;
  let slide: bigint;
  if (symbols) {
    slide = symbols.addressOf('_text') - LINK_TEXT;
  } else {
    // File symbols are link-time addresses: the KASLR slide comes from VMCOREINFO, else by search below.
    symbols = opts.symbolFile!;
    symbolSource = 'file';
    const found = await findVmcoreInfo(mem);
    vmci = found[0];
    step('vmcoreinfo', vmci ? `VMCOREINFO note at ${hex(vmci.physAddress)}` : 'no VMCOREINFO note in memory');
    slide = vmci?.kernelOffset ?? -1n;
  }

  // Stage 2: phys_base (and the KASLR slide, for link-time file symbols without VMCOREINFO).
  const tried: string[] = [];
  let physBase: number;
  let pbMethod: string;
  if (symbolSource === 'file') {
    ({ physBase, slide, method: pbMethod } = await physBaseForFileSymbols(mem, symbols, slide, vmci, tried));
  } else {
    ({ physBase, method: pbMethod } = await findPhysBase(mem, symbols, kallsyms, tried));
  }
  const sym = (name: string): bigint | undefined => {
    const s = symbols!.get(name);
    return s === undefined ? undefined : symbolSource === 'file' ? s.address + slide : s.address;
  };
  step('phys_base', pbMethod, { phys_base: '0x' + BigInt.asUintN(64, BigInt(physBase)).toString(16) });

  // Stage 3: paging. DTB = init_top_pgt's physical address; 5-level when __pgtable_l5_enabled says so,
  // confirmed by translating _text back to its physical address.
  const topVa = sym('init_top_pgt') ?? sym('init_level4_pgt');
  const textVa = sym('_text') ?? sym('startup_64');
  if (topVa === undefined || textVa === undefined) {
    throw notFound('paging', 'init_top_pgt or _text missing from the symbols', [
      'init_top_pgt',
      'init_level4_pgt',
      '_text',
    ]);
  }
  const dtb = imageVaToPhys(topVa, physBase);
  const textPhys = imageVaToPhys(textVa, physBase);
  const l5Sym = sym('__pgtable_l5_enabled');
  let levelsHint: 4 | 5 | undefined;
  if (l5Sym !== undefined) {
    const v = await readPhys(mem, imageVaToPhys(l5Sym, physBase), 4);
    levelsHint = v[0] === 1 ? 5 : 4;
  }
  let paging: X86Paging | undefined;
  const pagingTried: string[] = [];
  for (const levels of levelsHint === 5 ? [5, 4] : levelsHint === 4 ? [4, 5] : [5, 4]) {
    const p = new X86Paging(mem, dtb, levels as 4 | 5);
    try {
      const pa = await p.translate(textVa);
      if (pa === textPhys) {
        paging = p;
        break;
      }
      pagingTried.push(`${levels}-level: _text → ${hex(pa)}, expected ${hex(textPhys)}`);
    } catch (e) {
      pagingTried.push(`${levels}-level: ${(e as Error).message}`);
    }
  }
  if (!paging) throw notFound('paging', `init_top_pgt at ${hex(dtb)} does not map _text`, pagingTried);
  if (levelsHint !== undefined && levelsHint !== paging.levels) {
    warnings.push(`__pgtable_l5_enabled says ${levelsHint}-level but the tables walk as ${paging.levels}-level`);
  }
  step('paging', `init_top_pgt (${l5Sym !== undefined ? '__pgtable_l5_enabled' : 'trial walk'})`, {
    dtb: hex(dtb),
    levels: paging.levels,
  });

  // Stage 3b: the KASLR slide. The link-time base depends on CONFIG_PHYSICAL_START/ALIGN, so it is not
  // assumed: the kernel's own VMCOREINFO (vmcoreinfo_data, CONFIG_CRASH_CORE) says KERNELOFFSET.
  let kaslrSource: KernelFacts['kaslrSource'] = symbolSource === 'file' ? 'file' : 'assumed';
  if (symbolSource === 'memory') {
    const own = await ownVmcoreInfo(paging, sym('vmcoreinfo_data'), physBase);
    if (own?.kernelOffset !== undefined) {
      slide = own.kernelOffset;
      kaslrSource = 'vmcoreinfo';
      step('kaslr', "KERNELOFFSET in the kernel's own VMCOREINFO (vmcoreinfo_data)", { slide: hex(slide) });
    } else {
      warnings.push(
        `no VMCOREINFO KERNELOFFSET in memory: KASLR slide computed against the default link-time _text ${hex(LINK_TEXT)}`,
      );
      step('kaslr', `assumed link-time _text ${hex(LINK_TEXT)} (no VMCOREINFO)`);
    }
  }

  // Stage 4: memory layout bases (RANDOMIZE_MEMORY) and the banner.
  const base = async (name: string) => {
    const va = sym(name);
    return va === undefined ? undefined : readU64(mem, imageVaToPhys(va, physBase));
  };
  const pageOffsetBase = await base('page_offset_base');
  const vmallocBase = await base('vmalloc_base');
  const vmemmapBase = await base('vmemmap_base');
  step('layout', 'page_offset_base / vmalloc_base / vmemmap_base variables');
  const bannerVa = sym('linux_banner');
  const bannerPhys = bannerVa === undefined ? -1 : imageVaToPhys(bannerVa, physBase);
  const banner = bannerPhys >= 0 ? (await readCString(mem, bannerPhys)).trimEnd() : '';
  const release = /^Linux version (\S+)/.exec(banner)?.[1] ?? '';
  if (!release) warnings.push('linux_banner does not read as "Linux version …"');
  step('banner', 'linux_banner', { release });

  // Stage 5: types. BTF sits inside the loaded image: scan [_text, _end) first.
  let btf: Btf | undefined;
  let btfPhys: number | undefined;
  let btfSource: 'memory' | 'file' | undefined;
  if (!opts.noTypes) {
    const endVa = sym('_end');
    const hint = endVa !== undefined ? { start: textPhys, end: imageVaToPhys(endVa, physBase) } : undefined;
    if (opts.btfFile && opts.prefer === 'file') {
      btf = await loadBtfFile(opts.btfFile);
      btfSource = 'file';
      step('types', `BTF from ${opts.btfFile}`);
    } else {
      try {
        // The kernel's own section bounds (__start_BTF/__stop_BTF, 5.2+) name the blob exactly: no scan.
        const startBtf = sym('__start_BTF');
        const stopBtf = sym('__stop_BTF');
        const own =
          startBtf !== undefined && stopBtf !== undefined && stopBtf > startBtf
            ? { start: imageVaToPhys(startBtf, physBase), end: imageVaToPhys(stopBtf, physBase) }
            : undefined;
        // A named place is tried alone (hintOnly); when it does not validate, say so and fall back.
        const tryAt = (start: number, end: number, what: string, maxSize?: number) =>
          locateBtf(mem, { hint: { start, end }, hintOnly: true, maxSize }).catch((e: unknown) => {
            warnings.push(`BTF ${what} ${hex(start)} did not validate (${(e as Error).message}); scanning`);
            return undefined;
          });
        const bh = opts.hints?.btfPhys;
        const inSection = own
          ? await tryAt(own.start, Math.min(own.end, own.start + 4096), 'at __start_BTF', own.end - own.start)
          : undefined;
        // the section's blob starts exactly at __start_BTF; anything else found there is not it
        const atSection = inSection?.physAddress === own?.start ? inSection : undefined;
        const located =
          atSection ??
          (bh !== undefined ? await tryAt(bh, bh + (opts.hints?.btfSize ?? 64 << 20), 'hint') : undefined) ??
          (await locateBtf(mem, { hint }));
        btf = located.btf;
        btfPhys = located.physAddress;
        btfSource = 'memory';
        step(
          'types',
          atSection
            ? "BTF at __start_BTF (the kernel's own section bounds)"
            : `BTF found in memory${hint ? ' inside the kernel image' : ''}`,
          {
            phys: hex(located.physAddress),
            size: located.size,
          },
        );
        if (opts.btfFile) {
          const fileBtf = await loadBtfFile(opts.btfFile);
          compareBtf(btf, fileBtf, warnings);
        }
      } catch (e) {
        if (!opts.btfFile) {
          const err = e instanceof PmiError ? e : new PmiError('E_INTERNAL', ORIGIN, String(e));
          throw new PmiError(err.code, ORIGIN, `types: ${err.message} (no --btf fallback given)`, {
            stage: 'types',
            tried: err.data,
          });
        }
        warnings.push(`BTF not found in memory (${(e as Error).message}); using ${opts.btfFile}`);
        btf = await loadBtfFile(opts.btfFile);
        btfSource = 'file';
        step('types', `BTF from ${opts.btfFile}`);
      }
    }
  }

  // Memory and file symbols both available: report disagreements (memory wins unless told otherwise).
  if (kallsyms && opts.symbolFile) {
    const c = compareSymbols(kallsyms, opts.symbolFile, { prefer: 'memory', skipAbsolute: true });
    const addr = c.disagreements.filter((d) => d.kind === 'address');
    if (addr.length > 0) {
      warnings.push(
        `${addr.length} symbols in ${opts.symbolFileName ?? 'the symbol file'} disagree with memory (e.g. ${addr
          .slice(0, 3)
          .map((d) => d.name)
          .join(', ')}); memory wins`,
      );
    }
    if (c.onlyInFile > 0) warnings.push(`${c.onlyInFile} symbols of the symbol file are not in the kernel's kallsyms`);
  }

  // The target's own memory map: a source that only guessed its ranges (NetTLP probing) narrows
  // them to System RAM, so nothing reads MMIO holes from here on. Never fatal.
  const runtimeSymbols = symbolSource === 'file' ? rebase(symbols, slide) : symbols;
  let ram: PhysRange[] | undefined;
  let ramAdopted: boolean | undefined;
  if (btf) {
    try {
      const map = await readMemoryMap(new KernelObjects({ paging, btf, symbols: runtimeSymbols }));
      warnings.push(...map.warnings);
      if (map.ram.length > 0) {
        ram = map.ram;
        ramAdopted = mem.adoptMemoryMap?.(map.ram) ?? false;
      }
      step('memmap', `iomem_resource: ${map.entries.length} entries, ${map.ram.length} System RAM ranges`, {
        adopted: ramAdopted ?? false,
      });
    } catch (e) {
      warnings.push(`memory map (iomem_resource) not read: ${(e as Error).message}`);
    }
  }

  const facts: KernelFacts = {
    release,
    banner,
    bannerPhys,
    levels: paging.levels as 4 | 5,
    dtb,
    kaslrSlide: slide,
    linkText: BigInt.asUintN(64, textVa - slide),
    kaslrSource,
    physBase,
    textPhys,
    textVirt: textVa,
    pageOffsetBase,
    vmallocBase,
    vmemmapBase,
    symbolCount: symbols.count,
    symbolSource,
    btfTypes: btf ? btf.typeCount : undefined,
    btfPhys,
    btfSource,
    vmcoreinfo: vmci ? { physAddress: vmci.physAddress, osrelease: vmci.osrelease } : undefined,
    ram,
    ramAdopted,
    hints: {
      kallsymsTokenTable: kallsyms?.layout.tables.tokenTable,
      btfPhys,
      btfSize: btf && btfPhys !== undefined ? btf.bytes.length : undefined,
    },
    steps,
    warnings,
    totalMs: Math.round((performance.now() - t0) * 10) / 10,
  };
  return { mem, symbols: runtimeSymbols, kallsyms, btf, paging, facts };
}

/**
 * File symbols carry link-time addresses. With VMCOREINFO the slide and phys_base are given;
 * without it, search: the slide is a multiple of 2 MiB within the 1 GiB kernel window, and for
 * each physical banner copy the implied (slide, phys_base) must make init_top_pgt map _text.
 */
async function physBaseForFileSymbols(
  mem: PhysicalMemory,
  symbols: SymbolTable,
  slide: bigint,
  vmci: VmcoreInfo | undefined,
  tried: string[],
): Promise<{ physBase: number; slide: bigint; method: string }> {
  if (vmci?.physBase !== undefined && slide >= 0n) {
    return { physBase: Number(vmci.physBase), slide, method: 'VMCOREINFO NUMBER(phys_base) and KERNELOFFSET' };
  }
  const banner = symbols.get('linux_banner');
  const top = symbols.get('init_top_pgt');
  const text = symbols.get('_text');
  if (!banner || !top || !text) throw notFound('phys_base', 'symbol file lacks linux_banner/init_top_pgt/_text', tried);
  const copies = await findBannerCopies(mem);
  for (const pa of copies) {
    // pa = banner_link + slide − map + phys_base  ⇒ phys_base = pa − (banner_link − map) − slide
    for (let k = 0n; k < 512n; k++) {
      const s = k * 0x200000n;
      const pb = pa - Number(banner.address - START_KERNEL_MAP) - Number(s);
      if (!plausiblePhysBase(pb, mem.info.ranges)) continue;
      if (await physBaseWalks(mem, symbols, pb, s)) {
        return { physBase: pb, slide: s, method: 'slide search: banner copy + init_top_pgt walk' };
      }
    }
    tried.push(`banner copy at ${hex(pa)}: no slide makes init_top_pgt map _text`);
  }
  throw notFound('phys_base', 'no KASLR slide fits the symbol file and memory', tried);
}

function rebase(table: SymbolTable, slide: bigint): SymbolTable {
  if (slide === 0n) return table;
  const b = new SymbolTableBuilder(table.count);
  for (const s of table) b.add(s.name, s.type, s.address + slide);
  return b.build();
}

function compareBtf(mem: Btf, file: Btf, warnings: string[]): void {
  if (mem.typeCount !== file.typeCount) {
    warnings.push(`BTF file has ${file.typeCount} types, memory has ${mem.typeCount}; memory wins`);
  }
  const a = mem.findType('task_struct', 'struct');
  const b = file.findType('task_struct', 'struct');
  if (a !== undefined && b !== undefined && mem.sizeOf(a) !== file.sizeOf(b)) {
    warnings.push(`task_struct is ${file.sizeOf(b)} bytes in the BTF file but ${mem.sizeOf(a)} in memory; memory wins`);
  }
}
