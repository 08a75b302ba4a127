/**
 * x86-64 paging as data (memflow's ArchMmuDef idea): one table describes the levels, the
 * walker never special-cases a level by name. 4- and 5-level paging share the lower four rows.
 */

export type LevelName = 'PML5' | 'PML4' | 'PDPT' | 'PD' | 'PT';
export type PagingLevels = 4 | 5;

export interface LevelDef {
  readonly name: LevelName;
  /** Lowest VA bit indexed by this level (9 bits: [shift, shift+9)). */
  readonly shift: number;
  /** Whether an entry with PS=1 maps a page here (PDPT: 1 GiB, PD: 2 MiB); PT entries always map. */
  readonly largeLeaf: boolean;
  /** Always a leaf (PT). */
  readonly alwaysLeaf: boolean;
  /** Page size mapped by a leaf at this level (2^shift). */
  readonly pageSize: number;
  /**
   * Mask of the frame address bits 0–31 of a leaf entry at this level, applied to the low half
   * (bit 12 of a large-page entry is PAT, not address): 0xFFFFF000 / 0xFFE00000 / 0xC0000000.
   * The high half always contributes bits 32–51 (hi & 0xFFFFF).
   */
  readonly leafLoMask: number;
  /** In-page offset mask on the VA's low half for a leaf at this level (pageSize - 1). */
  readonly offsetMask: number;
}

const row = (name: LevelName, shift: number, largeLeaf: boolean, alwaysLeaf: boolean): LevelDef => ({
  name,
  shift,
  largeLeaf,
  alwaysLeaf,
  pageSize: 2 ** shift,
  leafLoMask: shift >= 32 ? 0 : (0xffffffff << shift) >>> 0,
  offsetMask: shift >= 32 ? 0xffffffff : (2 ** shift - 1) >>> 0,
});

const PML5 = row('PML5', 48, false, false);
const PML4 = row('PML4', 39, false, false);
const PDPT = row('PDPT', 30, true, false);
const PD = row('PD', 21, true, false);
const PT = row('PT', 12, false, true);

export const LEVELS_4: readonly LevelDef[] = Object.freeze([PML4, PDPT, PD, PT]);
export const LEVELS_5: readonly LevelDef[] = Object.freeze([PML5, PML4, PDPT, PD, PT]);

export function levelTable(levels: PagingLevels): readonly LevelDef[] {
  if (levels === 4) return LEVELS_4;
  if (levels === 5) return LEVELS_5;
  throw new RangeError(`paging levels must be 4 or 5, got ${String(levels)}`);
}

/** Canonical VA width: 48 bits for 4-level, 57 for 5-level (LA57). */
export function vaBits(levels: PagingLevels): number {
  return levels === 5 ? 57 : 48;
}

/** 9-bit table index of (hi, lo) for a level shift. Bitwise ops only on single 32-bit halves. */
export function tableIndex(hi: number, lo: number, shift: number): number {
  return shift >= 32 ? (hi >>> (shift - 32)) & 0x1ff : ((lo >>> shift) | (hi << (32 - shift))) & 0x1ff;
}

/** Entry flag bits (low half unless noted). */
export const PTE = Object.freeze({
  PRESENT: 0x1,
  RW: 0x2,
  USER: 0x4,
  PWT: 0x8,
  PCD: 0x10,
  ACCESSED: 0x20,
  DIRTY: 0x40,
  PS: 0x80,
  GLOBAL: 0x100,
  /** PAT bit of a 2 MiB / 1 GiB leaf (bit 12); in a 4 KiB PTE PAT is bit 7. */
  PAT_LARGE: 0x1000,
  /** NX is bit 63: `hi >>> 31`. */
  NX_HI: 0x80000000,
});

/** Decoded flags of one entry (LibVMI page_info_t style). */
export interface EntryFlags {
  present: boolean;
  rw: boolean;
  user: boolean;
  pwt: boolean;
  pcd: boolean;
  accessed: boolean;
  dirty: boolean;
  ps: boolean;
  global: boolean;
  nx: boolean;
}

export function decodeFlags(hi: number, lo: number): EntryFlags {
  return {
    present: (lo & PTE.PRESENT) !== 0,
    rw: (lo & PTE.RW) !== 0,
    user: (lo & PTE.USER) !== 0,
    pwt: (lo & PTE.PWT) !== 0,
    pcd: (lo & PTE.PCD) !== 0,
    accessed: (lo & PTE.ACCESSED) !== 0,
    dirty: (lo & PTE.DIRTY) !== 0,
    ps: (lo & PTE.PS) !== 0,
    global: (lo & PTE.GLOBAL) !== 0,
    nx: hi >>> 31 === 1,
  };
}

/** Physical address of the next table (or a 4 KiB frame): bits 12–51. */
export function entryFrame(hi: number, lo: number): number {
  return (hi & 0xfffff) * 4294967296 + ((lo & 0xfffff000) >>> 0);
}
