/**
 * Range probing for targets whose memory map is unknown (software adapter on loopback, or a real
 * machine with probe=1). The protocol has no "which ranges exist" query: an address is present when
 * a 4-byte read at it completes successfully, absent when the target answers UR. Assumes RAM starts
 * at 0 and is contiguous up to a "low end" below 4 GiB, and again from 4 GiB to a "high end"
 * (the PC layout); holes inside those spans are not found — replace the ranges with setRanges()
 * once the target's own memory map (e.g. /proc/iomem, e820) has been read.
 */
import { PmiError, type PhysRange } from '@pmi/core';
import type { NetTlpClient } from './client.js';

const PAGE = 4096;
const G4 = 2 ** 32;
/** Highest address probed for high RAM (64 TiB). */
const HIGH_LIMIT = 2 ** 46;

export interface ProbeStats {
  reads: number;
}

export async function probeRanges(c: NetTlpClient, stats: ProbeStats = { reads: 0 }): Promise<PhysRange[]> {
  const buf = new Uint8Array(4);
  const present = async (addr: number): Promise<boolean> => {
    stats.reads++;
    const f = await c.readBatchUnchecked([{ addr, buf }]);
    if (f.length === 0) return true;
    if (f[0].error.code === 'E_OUT_OF_RANGE') return false;
    throw new PmiError('E_SOURCE_IO', 'nettlp', `probing ${c.hostIp} failed: ${f[0].error.message}`, {
      ...f[0].error.data,
    });
  };
  /** lo is present, hi absent (or the search limit): the end of the run starting at lo, page granular. */
  const searchEnd = async (lo: number, hi: number): Promise<number> => {
    while (hi - lo > PAGE) {
      const mid = lo + Math.floor((hi - lo) / 2 / PAGE) * PAGE;
      if (await present(mid)) lo = mid;
      else hi = mid;
    }
    return lo + PAGE;
  };
  const out: PhysRange[] = [];
  if (await present(0)) out.push({ start: 0, end: await searchEnd(0, G4) });
  if (await present(G4)) {
    let lo = G4;
    let hi = G4 * 2;
    while (hi < HIGH_LIMIT && (await present(hi - PAGE))) {
      lo = hi - PAGE;
      hi *= 2;
    }
    out.push({ start: G4, end: await searchEnd(lo, hi) });
  }
  return out;
}
