import { hex, PmiError, type MemOp, type OpFailure, type PhysicalMemory } from '@pmi/core';
import { TranslationCache } from './cache.js';
import {
  decodeFlags,
  levelTable,
  vaBits as vaBitsOf,
  type EntryFlags,
  type LevelDef,
  type LevelName,
  type PagingLevels,
} from './levels.js';
import { canonicalize, hex64, isCanonicalHiLo, vaHex, vaJoin, vaSplit } from './va.js';

const ORIGIN = 'paging';
const TWO32 = 4294967296;
const LITTLE_ENDIAN_HOST = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/** translateHiLo result: the address does not translate (details in lastFault*). */
export const FAULT = -1;
/** translateHiLo result: a table page is not cached and the source has no synchronous read. */
export const NEEDS_IO = -2;

/** Why a translation failed (data.reason of E_PAGE_FAULT). */
export type FaultReason = 'not_present' | 'non_canonical' | 'reserved_bit' | 'unreadable_table' | 'needs_io';
const REASONS: readonly FaultReason[] = [
  'not_present',
  'non_canonical',
  'reserved_bit',
  'unreadable_table',
  'needs_io',
];
const R_NOT_PRESENT = 0;
const R_NON_CANONICAL = 1;
const R_RESERVED = 2;
const R_UNREADABLE = 3;
const R_NEEDS_IO = 4;

export interface PagingOptions {
  /** Software TLB on/off (default on), or a TranslationCache shared between address spaces. */
  tlb?: boolean | TranslationCache;
  /** Cache 4 KiB page-table pages (default on). */
  tableCache?: boolean;
  /**
   * For live sources (info.live): both caches are flushed wholesale once they are older than
   * this (default 1000 ms). Dumps (live=false) never expire; call invalidate() after changes.
   */
  liveTtlMs?: number;
  /** Table pages kept before the table cache is cleared (default 8192 = 32 MiB). */
  tableCacheMaxPages?: number;
}

/** One level of an explained walk (LibVMI page_info_t). Addresses are "0x…" strings. */
export interface ExplainedEntry {
  level: LevelName;
  index: number;
  table_address: string;
  entry_address: string;
  entry_value: string;
  flags: EntryFlags;
  /** This entry maps the page (PT entry, or PS=1 on PDPT/PD). */
  leaf: boolean;
  /** Page size mapped when leaf. */
  page_size?: number;
}

export interface Explanation {
  virtual_address: string;
  dtb: string;
  levels: PagingLevels;
  canonical: boolean;
  entries: ExplainedEntry[];
  /** Physical address (number), or null on a fault. */
  physical: number | null;
  physical_address: string | null;
  page_size: number | null;
  /** Effective permissions over all levels (rw/user: all levels allow; nx: any level forbids). */
  effective?: { rw: boolean; user: boolean; nx: boolean };
  fault?: PmiError;
}

/** One mapped virtual range of an address space (mappings()). */
export interface MappedRange {
  /** Canonical (sign-extended) start address. */
  va: bigint;
  pa: number;
  size: number;
  pageSize: number;
  rw: boolean;
  user: boolean;
  nx: boolean;
  global: boolean;
}

export interface MappingsOptions {
  /** Only ranges intersecting [start, end) (unsigned 64-bit order; default: whole space). */
  start?: bigint;
  end?: bigint;
  /** Merge virtually and physically contiguous runs with equal flags and page size (default true). */
  coalesce?: boolean;
  /** Stop after reading this many table pages (default 262144); throws E_PAGE_FAULT reason table_limit. */
  maxTables?: number;
}

export interface VirtualOp {
  va: bigint;
  buf: Uint8Array;
}

/** Counters for tests and benchmarks. */
export interface PagingStats {
  tlbHits: number;
  tlbMisses: number;
  tableHits: number;
  tableMisses: number;
  /** readBatch calls made by this object (walks and data). */
  readBatchCalls: number;
  /** Physical read ops issued through readBatch. */
  physOps: number;
}

interface PageFault {
  reason: number;
  level: number;
  entryAddr: number;
  entryHi: number;
  entryLo: number;
}

/** Largest physical read made by merging several ops' runs into one scratch buffer. */
const MAX_MERGED_READ = 1 << 22;

/**
 * x86-64 address translation for one address space (one DTB), 4- or 5-level, table-driven.
 *
 * The DTB must be the *kernel's* top table when kernel addresses are translated: with page-table
 * isolation (PTI) each process has a second, user copy of the top table (kernel PGD + 4 KiB) that
 * maps almost no kernel memory. CR3 of a process running in user mode points at the user copy.
 * {@link isKernelTopTable} checks a candidate.
 */
export class X86Paging {
  readonly levels: PagingLevels;
  readonly dtb: number;
  readonly stats: PagingStats = {
    tlbHits: 0,
    tlbMisses: 0,
    tableHits: 0,
    tableMisses: 0,
    readBatchCalls: 0,
    physOps: 0,
  };

  /** Details of the last FAULT returned by translateHiLo (no allocation on the hot path). */
  lastFaultReason = 0;
  lastFaultLevel = 0;
  lastFaultEntryAddr = -1;
  lastFaultEntryHi = 0;
  lastFaultEntryLo = 0;

  private readonly table: readonly LevelDef[];
  private readonly vaBits: number;
  private readonly readSync: ((addr: number, buf: Uint8Array) => void) | undefined;
  private readonly live: boolean;
  private readonly ttlMs: number;
  private readonly tlbCache: TranslationCache | undefined;
  private readonly tlb: Map<number, number> | undefined;
  private readonly tables: Map<number, Uint32Array> | undefined;
  private readonly tableMax: number;
  private cacheBorn = 0;
  private readonly scratch8 = new Uint8Array(8);
  private readonly scratch32 = new Uint32Array(this.scratch8.buffer);

  constructor(
    readonly mem: PhysicalMemory,
    dtb: number,
    levels: PagingLevels = 4,
    opts: PagingOptions = {},
  ) {
    if (!Number.isSafeInteger(dtb) || dtb < 0 || dtb % 4096 !== 0 || dtb >= 2 ** 52) {
      throw new PmiError('E_USAGE', ORIGIN, `DTB must be a 4 KiB-aligned physical address below 2^52, got ${dtb}`, {
        dtb: String(dtb),
      });
    }
    this.dtb = dtb;
    this.levels = levels;
    this.table = levelTable(levels);
    this.vaBits = vaBitsOf(levels);
    this.readSync = mem.readSync;
    this.live = mem.info.live;
    this.ttlMs = opts.liveTtlMs ?? 1000;
    if (opts.tlb !== false) {
      this.tlbCache = opts.tlb instanceof TranslationCache ? opts.tlb : new TranslationCache();
      this.tlb = this.tlbCache.space(dtb);
    }
    if (opts.tableCache !== false) this.tables = new Map();
    this.tableMax = opts.tableCacheMaxPages ?? 8192;
  }

  // ---------------------------------------------------------------- caches

  /** Flush this address space's TLB entries and the table-page cache. */
  invalidate(): void {
    this.tlbCache?.invalidate(this.dtb);
    this.tables?.clear();
    this.cacheBorn = 0;
  }

  /**
   * Flush one page's translation and the cached table pages on its walk (like INVLPG, which also
   * drops paging-structure caches for that address). Other pages keep their TLB entries.
   */
  invalidatePage(va: bigint): void {
    const { hi, lo } = splitOrNonCanonical(va);
    if (hi < 0) return;
    this.tlb?.delete(hi * 1048576 + (lo >>> 12));
    // like INVLPG, also drop the cached table pages on this address's walk
    const tables = this.tables;
    if (!tables) return;
    let table = this.dtb;
    for (const d of this.table) {
      const page = tables.get(table);
      if (!page) return;
      tables.delete(table);
      const w = indexAt(hi, lo, d.shift) * 2;
      const elo = page[w];
      if ((elo & 1) === 0 || d.alwaysLeaf || (elo & 0x80) !== 0) return;
      table = (page[w + 1] & 0xfffff) * TWO32 + ((elo & 0xfffff000) >>> 0);
    }
  }

  private expire(): void {
    const now = Date.now();
    if (this.cacheBorn === 0) this.cacheBorn = now;
    else if (now - this.cacheBorn > this.ttlMs) {
      this.tlb?.clear();
      this.tables?.clear();
      this.cacheBorn = now;
    }
  }

  private putTable(addr: number, page: Uint32Array): void {
    const t = this.tables!;
    if (t.size >= this.tableMax) t.clear();
    t.set(addr, page);
  }

  private putTlb(key: number, pagePa: number): void {
    const t = this.tlb!;
    if (t.size >= this.tlbCache!.maxEntriesPerDtb) t.clear();
    t.set(key, pagePa);
  }

  // ---------------------------------------------------------------- hot path

  /**
   * Translate (hi, lo) — the VA's unsigned 32-bit halves — to a physical address. Returns
   * {@link FAULT} (-1) when it does not translate (see lastFault*), or {@link NEEDS_IO} (-2) when
   * a table page is needed that is not cached and the source has no readSync (use translate() /
   * translateBatch() on such sources). Never allocates on a TLB or table-cache hit; never throws.
   */
  translateHiLo(hi: number, lo: number): number {
    const sh = hi >> (this.vaBits - 33);
    if (sh !== 0 && sh !== -1) return this.fault(R_NON_CANONICAL, 0, -1, 0, 0);
    if (this.live) this.expire();
    const tlb = this.tlb;
    const key = hi * 1048576 + (lo >>> 12);
    if (tlb !== undefined) {
      const p = tlb.get(key);
      if (p !== undefined) {
        this.stats.tlbHits++;
        return p + (lo & 0xfff);
      }
      this.stats.tlbMisses++;
    }
    const levels = this.table;
    const tables = this.tables;
    let table = this.dtb;
    for (let i = 0; i < levels.length; i++) {
      const d = levels[i];
      const s = d.shift;
      const idx = s >= 32 ? (hi >>> (s - 32)) & 0x1ff : ((lo >>> s) | (hi << (32 - s))) & 0x1ff;
      let elo: number;
      let ehi: number;
      if (tables !== undefined) {
        let page = tables.get(table);
        if (page === undefined) {
          this.stats.tableMisses++;
          if (this.readSync === undefined) return this.fault(R_NEEDS_IO, i, table + idx * 8, 0, 0);
          page = this.loadTableSync(table);
          if (page === undefined) return this.fault(R_UNREADABLE, i, table + idx * 8, 0, 0);
        } else this.stats.tableHits++;
        elo = page[idx * 2];
        ehi = page[idx * 2 + 1];
      } else {
        if (this.readSync === undefined) return this.fault(R_NEEDS_IO, i, table + idx * 8, 0, 0);
        try {
          this.readSync(table + idx * 8, this.scratch8);
        } catch {
          return this.fault(R_UNREADABLE, i, table + idx * 8, 0, 0);
        }
        if (LITTLE_ENDIAN_HOST) {
          elo = this.scratch32[0];
          ehi = this.scratch32[1];
        } else {
          const b = this.scratch8;
          elo = (b[0] | (b[1] << 8) | (b[2] << 16) | (b[3] << 24)) >>> 0;
          ehi = (b[4] | (b[5] << 8) | (b[6] << 16) | (b[7] << 24)) >>> 0;
        }
      }
      if ((elo & 1) === 0) return this.fault(R_NOT_PRESENT, i, table + idx * 8, ehi, elo);
      if (d.alwaysLeaf || (d.largeLeaf && (elo & 0x80) !== 0)) {
        const pa = (ehi & 0xfffff) * TWO32 + ((elo & d.leafLoMask) >>> 0) + ((lo & d.offsetMask) >>> 0);
        if (tlb !== undefined) this.putTlb(key, pa - (lo & 0xfff));
        return pa;
      }
      if ((elo & 0x80) !== 0) return this.fault(R_RESERVED, i, table + idx * 8, ehi, elo);
      table = (ehi & 0xfffff) * TWO32 + ((elo & 0xfffff000) >>> 0);
    }
    /* c8 ignore next */
    return this.fault(R_NOT_PRESENT, levels.length - 1, -1, 0, 0);
  }

  private fault(reason: number, level: number, entryAddr: number, ehi: number, elo: number): number {
    this.lastFaultReason = reason;
    this.lastFaultLevel = level;
    this.lastFaultEntryAddr = entryAddr;
    this.lastFaultEntryHi = ehi;
    this.lastFaultEntryLo = elo;
    return reason === R_NEEDS_IO ? NEEDS_IO : FAULT;
  }

  private loadTableSync(addr: number): Uint32Array | undefined {
    const bytes = new Uint8Array(4096);
    try {
      this.readSync!(addr, bytes);
    } catch {
      return undefined;
    }
    const page = toWords(bytes);
    this.putTable(addr, page);
    return page;
  }

  /** The E_PAGE_FAULT for the last FAULT of translateHiLo. */
  lastFaultError(va: bigint): PmiError {
    return this.faultError(va, {
      reason: this.lastFaultReason,
      level: this.lastFaultLevel,
      entryAddr: this.lastFaultEntryAddr,
      entryHi: this.lastFaultEntryHi,
      entryLo: this.lastFaultEntryLo,
    });
  }

  private faultError(va: bigint, f: PageFault): PmiError {
    const reason = REASONS[f.reason];
    const vah = vaHex(va);
    if (f.reason === R_NON_CANONICAL) {
      return new PmiError('E_PAGE_FAULT', ORIGIN, `${vah} is not a canonical ${this.vaBits}-bit virtual address`, {
        virtual_address: vah,
        reason,
        level: null,
        entry_address: null,
        entry_value: null,
        dtb: hex(this.dtb),
        paging_levels: this.levels,
      });
    }
    const level = this.table[f.level].name;
    const what =
      f.reason === R_NOT_PRESENT
        ? `${level} entry not present`
        : f.reason === R_RESERVED
          ? `${level} entry has PS=1 where it is reserved`
          : f.reason === R_UNREADABLE
            ? `${level} table unreadable`
            : `${level} table not cached and the source has no synchronous read`;
    const entryAddr = f.entryAddr >= 0 ? hex(f.entryAddr) : null;
    const entryValue = f.reason === R_NOT_PRESENT || f.reason === R_RESERVED ? hex64(f.entryHi, f.entryLo) : null;
    return new PmiError(
      'E_PAGE_FAULT',
      ORIGIN,
      `page fault at ${vah}: ${what}` +
        (entryAddr ? ` (entry at ${entryAddr}${entryValue ? ` = ${entryValue}` : ''})` : ''),
      {
        virtual_address: vah,
        reason,
        level,
        entry_address: entryAddr,
        entry_value: entryValue,
        dtb: hex(this.dtb),
        paging_levels: this.levels,
      },
    );
  }

  /** Synchronous translation (source with readSync, or tables cached). Throws E_PAGE_FAULT. */
  translateSync(va: bigint): number {
    const { hi, lo } = splitOrNonCanonical(va);
    const pa = hi < 0 ? this.fault(R_NON_CANONICAL, 0, -1, 0, 0) : this.translateHiLo(hi, lo);
    if (pa < 0) throw this.lastFaultError(va);
    return pa;
  }

  /** Translate one address (any source). Rejects with E_PAGE_FAULT. */
  async translate(va: bigint): Promise<number> {
    const [r] = await this.translateBatch([va]);
    if (typeof r !== 'number') throw r;
    return r;
  }

  /**
   * Translate many addresses; per address a physical address or the E_PAGE_FAULT. Addresses not
   * answered by the caches / synchronous path are walked breadth-first: one readBatch per level.
   */
  async translateBatch(vas: readonly bigint[]): Promise<(number | PmiError)[]> {
    const out: (number | PmiError)[] = new Array(vas.length);
    const pendHi: number[] = [];
    const pendLo: number[] = [];
    const pendIdx: number[] = [];
    for (let i = 0; i < vas.length; i++) {
      const { hi, lo } = splitOrNonCanonical(vas[i]);
      const pa = hi < 0 ? this.fault(R_NON_CANONICAL, 0, -1, 0, 0) : this.translateHiLo(hi, lo);
      if (pa >= 0) out[i] = pa;
      else if (pa === NEEDS_IO) {
        pendHi.push(hi);
        pendLo.push(lo);
        pendIdx.push(i);
      } else out[i] = this.lastFaultError(vas[i]);
    }
    if (pendIdx.length > 0) {
      const r = await this.walkBatch(pendHi, pendLo);
      for (let j = 0; j < pendIdx.length; j++) {
        const pa = r.pa[j];
        out[pendIdx[j]] = pa >= 0 ? pa : this.faultError(vas[pendIdx[j]], r.faults.get(j)!);
      }
    }
    return out;
  }

  // ---------------------------------------------------------------- breadth-first walk

  private async physBatch(ops: MemOp[]): Promise<OpFailure[]> {
    if (ops.length === 0) return [];
    this.stats.readBatchCalls++;
    this.stats.physOps += ops.length;
    return this.mem.readBatch(ops);
  }

  /**
   * Walk many (canonical) addresses breadth-first: all entries needed at one level are read in
   * one physical readBatch (whole 4 KiB table pages when the table cache is on, else 8-byte
   * entries), deduplicated, so N addresses cost one round trip per level.
   */
  private async walkBatch(his: number[], los: number[]): Promise<{ pa: Float64Array; faults: Map<number, PageFault> }> {
    if (this.live) this.expire();
    const n = his.length;
    const pa = new Float64Array(n).fill(-1);
    const faults = new Map<number, PageFault>();
    const tableOf = new Float64Array(n).fill(this.dtb);
    let active: number[] = [];
    for (let i = 0; i < n; i++) active.push(i);
    const levels = this.table;
    for (let li = 0; li < levels.length && active.length > 0; li++) {
      const d = levels[li];
      // 1. entries needed at this level, deduplicated; read the ones not cached
      const entryAddr = new Float64Array(n);
      const local = new Map<number, Uint32Array | null>(); // table page or entry address → words
      const ops: MemOp[] = [];
      const opKeys: number[] = [];
      for (const i of active) {
        const idx = indexAt(his[i], los[i], d.shift);
        const t = tableOf[i];
        entryAddr[i] = t + idx * 8;
        if (this.tables) {
          if (this.tables.has(t) || local.has(t)) continue;
          const buf = new Uint8Array(4096);
          local.set(t, null);
          ops.push({ addr: t, buf });
          opKeys.push(t);
        } else {
          const e = t + idx * 8;
          if (local.has(e)) continue;
          local.set(e, null);
          ops.push({ addr: e, buf: new Uint8Array(8) });
          opKeys.push(e);
        }
      }
      if (ops.length > 0) {
        if (this.tables) this.stats.tableMisses += ops.length;
        const failures = await this.physBatch(ops);
        const failed = new Set(failures.map((f) => f.index));
        for (let k = 0; k < ops.length; k++) {
          if (failed.has(k)) continue;
          const words = toWords(ops[k].buf);
          local.set(opKeys[k], words);
          if (this.tables) this.putTable(opKeys[k], words);
        }
      }
      // 2. decode
      const next: number[] = [];
      for (const i of active) {
        const e = entryAddr[i];
        let elo: number;
        let ehi: number;
        if (this.tables) {
          const t = tableOf[i];
          const page = this.tables.get(t) ?? local.get(t);
          if (!page) {
            faults.set(i, { reason: R_UNREADABLE, level: li, entryAddr: e, entryHi: 0, entryLo: 0 });
            continue;
          }
          const w = (e - t) / 4;
          elo = page[w];
          ehi = page[w + 1];
        } else {
          const words = local.get(e);
          if (!words) {
            faults.set(i, { reason: R_UNREADABLE, level: li, entryAddr: e, entryHi: 0, entryLo: 0 });
            continue;
          }
          elo = words[0];
          ehi = words[1];
        }
        if ((elo & 1) === 0) {
          faults.set(i, { reason: R_NOT_PRESENT, level: li, entryAddr: e, entryHi: ehi, entryLo: elo });
          continue;
        }
        if (d.alwaysLeaf || (d.largeLeaf && (elo & 0x80) !== 0)) {
          const lo = los[i];
          const p = (ehi & 0xfffff) * TWO32 + ((elo & d.leafLoMask) >>> 0) + ((lo & d.offsetMask) >>> 0);
          pa[i] = p;
          if (this.tlb) this.putTlb(his[i] * 1048576 + (lo >>> 12), p - (lo & 0xfff));
          continue;
        }
        if ((elo & 0x80) !== 0) {
          faults.set(i, { reason: R_RESERVED, level: li, entryAddr: e, entryHi: ehi, entryLo: elo });
          continue;
        }
        tableOf[i] = (ehi & 0xfffff) * TWO32 + ((elo & 0xfffff000) >>> 0);
        next.push(i);
      }
      active = next;
    }
    return { pa, faults };
  }

  // ---------------------------------------------------------------- explain

  /** Walk one address level by level and report every entry (for `pmi translate`). */
  async explain(va: bigint): Promise<Explanation> {
    const vah = vaHex(va);
    const base = {
      virtual_address: vah,
      dtb: hex(this.dtb),
      levels: this.levels,
    };
    const { hi, lo } = splitOrNonCanonical(va);
    if (hi < 0 || !isCanonicalHiLo(hi, this.vaBits)) {
      return {
        ...base,
        canonical: false,
        entries: [],
        physical: null,
        physical_address: null,
        page_size: null,
        fault: this.faultError(va, { reason: R_NON_CANONICAL, level: 0, entryAddr: -1, entryHi: 0, entryLo: 0 }),
      };
    }
    const entries: ExplainedEntry[] = [];
    let table = this.dtb;
    let rw = true;
    let user = true;
    let nx = false;
    for (let li = 0; li < this.table.length; li++) {
      const d = this.table[li];
      const idx = indexAt(hi, lo, d.shift);
      const e = table + idx * 8;
      const buf = new Uint8Array(8);
      const failures = await this.physBatch([{ addr: e, buf }]);
      const done = (f: PageFault): Explanation => ({
        ...base,
        canonical: true,
        entries,
        physical: null,
        physical_address: null,
        page_size: null,
        fault: this.faultError(va, f),
      });
      if (failures.length > 0) return done({ reason: R_UNREADABLE, level: li, entryAddr: e, entryHi: 0, entryLo: 0 });
      const [elo, ehi] = toWords(buf);
      const flags = decodeFlags(ehi, elo);
      const leaf = flags.present && (d.alwaysLeaf || (d.largeLeaf && flags.ps));
      entries.push({
        level: d.name,
        index: idx,
        table_address: hex(table),
        entry_address: hex(e),
        entry_value: hex64(ehi, elo),
        flags,
        leaf,
        ...(leaf ? { page_size: d.pageSize } : {}),
      });
      if (!flags.present) return done({ reason: R_NOT_PRESENT, level: li, entryAddr: e, entryHi: ehi, entryLo: elo });
      rw &&= flags.rw;
      user &&= flags.user;
      nx ||= flags.nx;
      if (leaf) {
        const p = (ehi & 0xfffff) * TWO32 + ((elo & d.leafLoMask) >>> 0) + ((lo & d.offsetMask) >>> 0);
        return {
          ...base,
          canonical: true,
          entries,
          physical: p,
          physical_address: hex(p),
          page_size: d.pageSize,
          effective: { rw, user, nx },
        };
      }
      if (flags.ps) return done({ reason: R_RESERVED, level: li, entryAddr: e, entryHi: ehi, entryLo: elo });
      table = (ehi & 0xfffff) * TWO32 + ((elo & 0xfffff000) >>> 0);
    }
    /* c8 ignore next */
    throw new PmiError('E_INTERNAL', ORIGIN, 'walk ended without a leaf');
  }

  // ---------------------------------------------------------------- virtual reads

  /**
   * Read many virtual ranges. Resolves with the failures (empty when all succeeded), like
   * PhysicalMemory.readBatch: an op whose range touches an unmapped page fails with E_PAGE_FAULT
   * naming the first unmapped VA; a mapped page whose physical bytes are missing fails with the
   * source's error. All pages of all ops are translated first (TLB / sync path / breadth-first
   * walk), then physically contiguous runs are coalesced and read in one readBatch.
   */
  async readVirtualBatch(ops: readonly VirtualOp[]): Promise<OpFailure[]> {
    const failures: OpFailure[] = [];
    // 1. unique pages
    const pageIndex = new Map<number, number>();
    const pHi: number[] = [];
    const pLo: number[] = [];
    const opHi = new Float64Array(ops.length);
    const opLo = new Float64Array(ops.length);
    const bad = new Uint8Array(ops.length);
    for (let k = 0; k < ops.length; k++) {
      const { va, buf } = ops[k];
      const s = splitOrNonCanonical(va);
      if (s.hi < 0 || !isCanonicalHiLo(s.hi, this.vaBits)) {
        if (buf.length > 0) {
          bad[k] = 1;
          failures.push({
            index: k,
            error: this.faultError(va, { reason: R_NON_CANONICAL, level: 0, entryAddr: -1, entryHi: 0, entryLo: 0 }),
          });
        }
        continue;
      }
      opHi[k] = s.hi;
      opLo[k] = s.lo;
      forEachPage(s.hi, s.lo, buf.length, (hi, lo) => {
        const key = hi * 1048576 + (lo >>> 12);
        if (!pageIndex.has(key)) {
          pageIndex.set(key, pHi.length);
          pHi.push(hi);
          pLo.push(lo);
        }
      });
    }
    // 2. translate pages: caches / sync path first, the rest breadth-first
    const np = pHi.length;
    const pagePa = new Float64Array(np).fill(-1);
    const pageFault = new Map<number, PageFault>();
    const pendH: number[] = [];
    const pendL: number[] = [];
    const pendI: number[] = [];
    for (let i = 0; i < np; i++) {
      const r = this.translateHiLo(pHi[i], pLo[i]);
      if (r >= 0) pagePa[i] = r;
      else if (r === NEEDS_IO) {
        pendH.push(pHi[i]);
        pendL.push(pLo[i]);
        pendI.push(i);
      } else
        pageFault.set(i, {
          reason: this.lastFaultReason,
          level: this.lastFaultLevel,
          entryAddr: this.lastFaultEntryAddr,
          entryHi: this.lastFaultEntryHi,
          entryLo: this.lastFaultEntryLo,
        });
    }
    if (pendI.length > 0) {
      const r = await this.walkBatch(pendH, pendL);
      for (let j = 0; j < pendI.length; j++) {
        if (r.pa[j] >= 0) pagePa[pendI[j]] = r.pa[j];
        else pageFault.set(pendI[j], r.faults.get(j)!);
      }
    }
    // 3. per op: fault on the first unmapped page, else physical runs (merged within the op)
    const runs: Run[] = [];
    for (let k = 0; k < ops.length; k++) {
      const buf = ops[k].buf;
      if (bad[k] || buf.length === 0) continue;
      let off = 0;
      let faulted = false;
      const first = runs.length;
      forEachPage(opHi[k], opLo[k], buf.length, (hi, lo, len) => {
        if (faulted) return;
        const pi = pageIndex.get(hi * 1048576 + (lo >>> 12))!;
        const p = pagePa[pi];
        if (p < 0) {
          faulted = true;
          failures.push({ index: k, error: this.faultError(vaJoin(hi, lo), pageFault.get(pi)!) });
          return;
        }
        // pagePa holds the address of the byte the page was first seen at; rebase to this byte
        const addr = p - (pLo[pi] & 0xfff) + (lo & 0xfff);
        const last = runs.length > first ? runs[runs.length - 1] : undefined;
        if (last !== undefined && last.addr + last.len === addr) last.len += len;
        else runs.push({ addr, len, op: k, off });
        off += len;
      });
      if (faulted) runs.length = first;
    }
    // 4. coalesce across ops and read
    const physFail = await this.readRuns(runs, ops);
    for (const [k, err] of physFail) failures.push({ index: k, error: err });
    failures.sort((a, b) => a.index - b.index);
    return failures;
  }

  /**
   * Read runs (physical address → slice of an op's buffer) with one readBatch: runs sorted by
   * address; adjacent or overlapping runs (of any ops) are read once into a scratch buffer and
   * copied out; a lone run reads straight into the op's buffer. Merged reads that fail are retried
   * run by run (second readBatch) so one bad byte does not fail its neighbours.
   */
  private async readRuns(runs: Run[], ops: readonly VirtualOp[]): Promise<Map<number, PmiError>> {
    const errs = new Map<number, PmiError>();
    if (runs.length === 0) return errs;
    runs.sort((a, b) => a.addr - b.addr);
    const groups: { start: number; end: number; runs: Run[] }[] = [];
    for (const r of runs) {
      const g = groups[groups.length - 1];
      if (g && r.addr <= g.end && Math.max(g.end, r.addr + r.len) - g.start <= MAX_MERGED_READ) {
        g.runs.push(r);
        if (r.addr + r.len > g.end) g.end = r.addr + r.len;
      } else groups.push({ start: r.addr, end: r.addr + r.len, runs: [r] });
    }
    const physOps: MemOp[] = groups.map((g) =>
      g.runs.length === 1
        ? { addr: g.start, buf: ops[g.runs[0].op].buf.subarray(g.runs[0].off, g.runs[0].off + g.runs[0].len) }
        : { addr: g.start, buf: new Uint8Array(g.end - g.start) },
    );
    const fails = await this.physBatch(physOps);
    const failed = new Map(fails.map((f) => [f.index, f.error]));
    const retry: { run: Run; op: MemOp }[] = [];
    for (let gi = 0; gi < groups.length; gi++) {
      const g = groups[gi];
      const err = failed.get(gi);
      if (err !== undefined) {
        if (g.runs.length === 1) {
          if (!errs.has(g.runs[0].op)) errs.set(g.runs[0].op, err);
        } else
          for (const r of g.runs)
            retry.push({ run: r, op: { addr: r.addr, buf: ops[r.op].buf.subarray(r.off, r.off + r.len) } });
        continue;
      }
      if (g.runs.length === 1) continue;
      const scratch = physOps[gi].buf;
      for (const r of g.runs) ops[r.op].buf.set(scratch.subarray(r.addr - g.start, r.addr - g.start + r.len), r.off);
    }
    if (retry.length > 0) {
      const f2 = await this.physBatch(retry.map((x) => x.op));
      for (const f of f2) {
        const k = retry[f.index].run.op;
        if (!errs.has(k)) errs.set(k, f.error);
      }
    }
    return errs;
  }

  /** Read len bytes at va; throws the E_PAGE_FAULT (first unmapped VA) or the source's error. */
  async readVirtual(va: bigint, len: number): Promise<Uint8Array> {
    const buf = new Uint8Array(len);
    const f = await this.readVirtualBatch([{ va, buf }]);
    if (f.length > 0) throw f[0].error;
    return buf;
  }

  /** Synchronous read (source with readSync). Throws E_PAGE_FAULT / the source's error. */
  readVirtualSync(va: bigint, buf: Uint8Array): void {
    if (!this.readSync) throw new PmiError('E_USAGE', ORIGIN, 'readVirtualSync needs a source with readSync');
    const s = splitOrNonCanonical(va);
    if (s.hi < 0 || !isCanonicalHiLo(s.hi, this.vaBits)) {
      throw this.faultError(va, { reason: R_NON_CANONICAL, level: 0, entryAddr: -1, entryHi: 0, entryLo: 0 });
    }
    let runAddr = -1;
    let runOff = 0;
    let runLen = 0;
    let off = 0;
    forEachPage(s.hi, s.lo, buf.length, (hi, lo, len) => {
      const p = this.translateHiLo(hi, lo);
      if (p < 0) throw this.lastFaultError(vaJoin(hi, lo));
      if (runAddr >= 0 && runAddr + runLen === p) runLen += len;
      else {
        if (runAddr >= 0) this.readSync!(runAddr, buf.subarray(runOff, runOff + runLen));
        runAddr = p;
        runOff = off;
        runLen = len;
      }
      off += len;
    });
    if (runAddr >= 0) this.readSync(runAddr, buf.subarray(runOff, runOff + runLen));
  }

  // ---------------------------------------------------------------- enumeration

  /**
   * Every mapped range of the address space in address order (user half first, then the kernel
   * half), read from the tables: depth-first in VA order, with all child tables of one table
   * fetched in one readBatch. Unreadable child tables are skipped (translation would fault too).
   */
  async *mappings(opts: MappingsOptions = {}): AsyncGenerator<MappedRange> {
    const start = BigInt.asUintN(64, opts.start ?? 0n);
    const end = opts.end === undefined ? 1n << 64n : opts.end;
    const coalesce = opts.coalesce !== false;
    const maxTables = opts.maxTables ?? 262144;
    let pending: MappedRange | undefined;
    const root = await this.fetchTables([this.dtb]);
    const rootPage = root.get(this.dtb);
    if (!rootPage) {
      throw new PmiError('E_PAGE_FAULT', ORIGIN, `top-level table at ${hex(this.dtb)} is unreadable`, {
        reason: 'unreadable_table',
        level: this.table[0].name,
        entry_address: hex(this.dtb),
        dtb: hex(this.dtb),
      });
    }
    const walk: WalkBounds = { start, end, maxTables, tablesRead: 0 };
    for await (const r of this.visitTable(walk, rootPage, 0, 0n, true, true, false)) {
      if (!coalesce) {
        yield r;
        continue;
      }
      if (
        pending &&
        pending.va + BigInt(pending.size) === r.va &&
        pending.pa + pending.size === r.pa &&
        pending.pageSize === r.pageSize &&
        pending.rw === r.rw &&
        pending.user === r.user &&
        pending.nx === r.nx &&
        pending.global === r.global
      ) {
        pending.size += r.size;
        continue;
      }
      if (pending) yield pending;
      pending = { ...r };
    }
    if (pending) yield pending;
  }

  private async *visitTable(
    walk: WalkBounds,
    page: Uint32Array,
    li: number,
    base: bigint,
    rw: boolean,
    user: boolean,
    nx: boolean,
  ): AsyncGenerator<MappedRange> {
    const d = this.table[li];
    const size = 1n << BigInt(d.shift);
    const children: { idx: number; addr: number }[] = [];
    const leaves: (MappedRange | { child: number; idx: number; rw: boolean; user: boolean; nx: boolean })[] = [];
    for (let idx = 0; idx < 512; idx++) {
      const elo = page[idx * 2];
      const ehi = page[idx * 2 + 1];
      if ((elo & 1) === 0) continue;
      const va = canonicalize(base + BigInt(idx) * size, this.vaBits);
      const vaEnd = va + size;
      if (vaEnd <= walk.start || va >= walk.end) continue;
      const f = decodeFlags(ehi, elo);
      const erw = rw && f.rw;
      const euser = user && f.user;
      const enx = nx || f.nx;
      if (d.alwaysLeaf || (d.largeLeaf && f.ps)) {
        leaves.push({
          va,
          pa: (ehi & 0xfffff) * TWO32 + ((elo & d.leafLoMask) >>> 0),
          size: d.pageSize,
          pageSize: d.pageSize,
          rw: erw,
          user: euser,
          nx: enx,
          global: f.global,
        });
      } else if (!f.ps) {
        const addr = (ehi & 0xfffff) * TWO32 + ((elo & 0xfffff000) >>> 0);
        children.push({ idx, addr });
        leaves.push({ child: addr, idx, rw: erw, user: euser, nx: enx });
      }
    }
    let pages = new Map<number, Uint32Array>();
    if (children.length > 0) {
      walk.tablesRead += children.length;
      if (walk.tablesRead > walk.maxTables) {
        throw new PmiError('E_PAGE_FAULT', ORIGIN, `mappings(): more than ${walk.maxTables} page tables; giving up`, {
          reason: 'table_limit',
          dtb: hex(this.dtb),
        });
      }
      pages = await this.fetchTables(children.map((c) => c.addr));
    }
    for (const x of leaves) {
      if ('child' in x) {
        const child = pages.get(x.child);
        if (!child) continue;
        yield* this.visitTable(walk, child, li + 1, base + BigInt(x.idx) * size, x.rw, x.user, x.nx);
      } else yield x;
    }
  }

  /** Table pages by physical address (cache first, then one readBatch); unreadable ones absent. */
  private async fetchTables(addrs: number[]): Promise<Map<number, Uint32Array>> {
    if (this.live) this.expire();
    const out = new Map<number, Uint32Array>();
    const ops: MemOp[] = [];
    for (const a of addrs) {
      const c = this.tables?.get(a);
      if (c) {
        out.set(a, c);
        this.stats.tableHits++;
      } else if (!out.has(a) && !ops.some((o) => o.addr === a)) ops.push({ addr: a, buf: new Uint8Array(4096) });
    }
    if (ops.length === 0) return out;
    this.stats.tableMisses += ops.length;
    const failed = new Set((await this.physBatch(ops)).map((f) => f.index));
    for (let k = 0; k < ops.length; k++) {
      if (failed.has(k)) continue;
      const w = toWords(ops[k].buf);
      out.set(ops[k].addr, w);
      if (this.tables) this.putTable(ops[k].addr, w);
    }
    return out;
  }
}

interface WalkBounds {
  start: bigint;
  end: bigint;
  maxTables: number;
  tablesRead: number;
}

interface Run {
  addr: number;
  len: number;
  op: number;
  off: number;
}

/** 9-bit index of (hi, lo) at a level shift (bitwise ops on one 32-bit half at a time). */
function indexAt(hi: number, lo: number, s: number): number {
  return s >= 32 ? (hi >>> (s - 32)) & 0x1ff : ((lo >>> s) | (hi << (32 - s))) & 0x1ff;
}

/** (hi, lo) of a bigint VA, or hi = -1 when it is outside [-2^63, 2^64). */
function splitOrNonCanonical(va: bigint): { hi: number; lo: number } {
  if (va < -(1n << 63n) || va >= 1n << 64n) return { hi: -1, lo: 0 };
  return vaSplit(va);
}

/** Visit the 4 KiB pages of [(hi,lo), +len): callback gets the VA of the first byte in each page and the byte count. */
function forEachPage(hi: number, lo: number, len: number, fn: (hi: number, lo: number, len: number) => void): void {
  let h = hi;
  let l = lo;
  let left = len;
  while (left > 0) {
    const n = Math.min(left, 4096 - (l & 0xfff));
    fn(h, l, n);
    left -= n;
    l += n;
    if (l >= TWO32) {
      l -= TWO32;
      h = (h + 1) >>> 0;
    }
  }
}

/** Little-endian 32-bit words of a buffer (copy-free view on little-endian hosts). */
function toWords(bytes: Uint8Array): Uint32Array {
  if (LITTLE_ENDIAN_HOST && bytes.byteOffset % 4 === 0) {
    return new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.length >>> 2);
  }
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const w = new Uint32Array(bytes.length >>> 2);
  for (let i = 0; i < w.length; i++) w[i] = dv.getUint32(i * 4, true);
  return w;
}
