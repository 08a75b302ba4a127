/**
 * Translation cache (a software TLB) keyed by (DTB, virtual page). One instance can be shared by
 * several address spaces (X86Paging objects with different DTBs); each DTB has its own map, so
 * flushing one address space leaves the others alone. Values are the physical address of the
 * 4 KiB page (large pages are cached per 4 KiB sub-page; that keeps lookups one Map.get).
 */
export class TranslationCache {
  private readonly spaces = new Map<number, Map<number, number>>();
  hits = 0;
  misses = 0;

  /** @param maxEntriesPerDtb when a DTB's map reaches this size it is cleared (cheap, no LRU bookkeeping). */
  constructor(readonly maxEntriesPerDtb = 1 << 16) {}

  /** The live map of one DTB (created on first use; cleared in place, never replaced). */
  space(dtb: number): Map<number, number> {
    let m = this.spaces.get(dtb);
    if (!m) {
      m = new Map();
      this.spaces.set(dtb, m);
    }
    return m;
  }

  /** Flush one DTB's translations, or every DTB's when dtb is undefined. */
  invalidate(dtb?: number): void {
    if (dtb === undefined) for (const m of this.spaces.values()) m.clear();
    else this.spaces.get(dtb)?.clear();
  }

  /** Flush one page (page key = hi * 2^20 + (lo >>> 12)) of one DTB. */
  invalidatePage(dtb: number, pageKey: number): void {
    this.spaces.get(dtb)?.delete(pageKey);
  }

  size(dtb?: number): number {
    if (dtb !== undefined) return this.spaces.get(dtb)?.size ?? 0;
    let n = 0;
    for (const m of this.spaces.values()) n += m.size;
    return n;
  }
}
