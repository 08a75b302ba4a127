/**
 * Find and decode the kernel's kallsyms tables in physical memory: scan for the token table's
 * digit run, validate each hit (token_index must match the table's own offsets), decode the
 * tables around it (layout detected from the data), and return a compact KernelSymbols.
 */
import { PmiError, hex, type PhysicalMemory, type PhysRange } from '@pmi/core';
import { decodeAt, type DecodedKallsyms, type KallsymsLayout } from './decode.js';
import { SymbolTable } from './symbols.js';
import { DIGIT_RUN, parseTokenTable } from './token-table.js';
import { NeedMore, Reject, Win } from './window.js';

export interface LocateKallsymsOptions {
  /** Physical ranges to scan (default: all of the source's ranges). */
  ranges?: readonly PhysRange[];
  /** Bytes per scan read (default 8 MiB). */
  chunkSize?: number;
  /** Stop after this many digit-run hits (default 4096); each is validated. */
  maxHits?: number;
  /** Self-relative (7.0+) layout: VA − PA of the kernel image when known (else found from sys_call_table). */
  virtDelta?: bigint;
  /** Bytes read before / after the token table for decoding (default 8 MiB / 4 MiB; grown on demand). */
  windowBefore?: number;
  windowAfter?: number;
}

/** One digit-run hit and what became of it. */
export interface KallsymsCandidate {
  /** Physical address of the '0' token. */
  address: string;
  ok: boolean;
  why?: string;
  /** Physical address of the token table when it validated. */
  tokenTable?: string;
}

export interface KallsymsTiming {
  scanMs: number;
  decodeMs: number;
  totalMs: number;
  scannedBytes: number;
}

/** The kernel's symbol table decoded from memory. */
export class KernelSymbols extends SymbolTable {
  constructor(
    table: SymbolTable,
    readonly layout: KallsymsLayout,
    readonly timing: KallsymsTiming,
    readonly candidates: readonly KallsymsCandidate[],
    readonly checks: DecodedKallsyms['checks'],
    /** Other valid copies (e.g. a stale pre-relocation copy), by token-table address. */
    readonly alternatives: readonly { tokenTable: string; text?: string }[] = [],
  ) {
    super(table.nameBytes, table.nameEnd, table.types, table.addrHi, table.addrLo);
  }

  /** A JSON-safe summary (addresses as "0x…" strings). */
  summary(): Record<string, unknown> {
    const t = this.layout.tables;
    const tables: Record<string, string> = {};
    for (const [k, v] of Object.entries(t)) tables[k] = hex(v as number);
    const text = this.lookupIndices('_text');
    return {
      count: this.count,
      variant: this.layout.variant,
      order: this.layout.order,
      address_kind: this.layout.addressKind,
      seqs_of_names: this.layout.hasSeqsOfNames,
      marker_width: this.layout.markerWidth,
      tables,
      relative_base: this.layout.relativeBase === undefined ? undefined : hex(this.layout.relativeBase),
      virt_delta: this.layout.virtDelta === undefined ? undefined : hex(BigInt.asUintN(64, this.layout.virtDelta)),
      _text: text.length > 0 ? this.addressHex(text[0]) : undefined,
      timing: this.timing,
      candidates: this.candidates.length,
    };
  }
}

const ORIGIN = 'kallsyms';
const PAGE = 4096;
const MAX_WINDOW = 64 << 20;

async function readRegion(mem: PhysicalMemory, addr: number, len: number, reuse?: Uint8Array): Promise<Uint8Array> {
  const buf = reuse && reuse.length >= len ? reuse.subarray(0, len) : new Uint8Array(len);
  if (mem.readSync) {
    mem.readSync(addr, buf);
    return buf;
  }
  const failures = await mem.readBatch([{ addr, buf }]);
  if (failures.length > 0) throw failures[0].error;
  return buf;
}

function rangeOf(ranges: readonly PhysRange[], pa: number): PhysRange | undefined {
  return ranges.find((r) => pa >= r.start && pa < r.end);
}

async function windowAround(mem: PhysicalMemory, range: PhysRange, start: number, end: number): Promise<Win> {
  const s = Math.max(range.start, Math.floor(start / PAGE) * PAGE);
  const e = Math.min(range.end, Math.ceil(end / PAGE) * PAGE);
  return new Win(await readRegion(mem, s, e - s), s, range.start, range.end);
}

/** Scan `ranges` for the digit run; returns physical addresses of hits (bounded by maxHits). */
async function scanDigitRuns(
  mem: PhysicalMemory,
  ranges: readonly PhysRange[],
  chunk: number,
  maxHits: number,
): Promise<{ hits: number[]; scanned: number }> {
  const hits: number[] = [];
  let scanned = 0;
  const overlap = DIGIT_RUN.length - 1;
  const scratch = new Uint8Array(chunk + overlap);
  for (const r of ranges) {
    for (let a = r.start; a < r.end && hits.length < maxHits; a += chunk) {
      const len = Math.min(chunk + overlap, r.end - a);
      const view = await readRegion(mem, a, len, scratch);
      const bytes = Buffer.from(view.buffer, view.byteOffset, view.length);
      scanned += Math.min(chunk, len);
      let i = bytes.indexOf(DIGIT_RUN);
      while (i >= 0 && hits.length < maxHits) {
        if (i < chunk) hits.push(a + i);
        i = bytes.indexOf(DIGIT_RUN, i + 1);
      }
    }
  }
  return { hits, scanned };
}

/**
 * Locate and decode kallsyms in physical memory. Throws PmiError E_NOT_FOUND (data: every hit and
 * why it failed) when no hit decodes to a valid, sorted table with `_text`/`startup_64`.
 */
export async function locateKallsyms(mem: PhysicalMemory, opts: LocateKallsymsOptions = {}): Promise<KernelSymbols> {
  const t0 = performance.now();
  const ranges = opts.ranges ?? mem.info.ranges;
  const chunk = Math.max(1 << 16, opts.chunkSize ?? 8 << 20);
  const { hits, scanned } = await scanDigitRuns(mem, ranges, chunk, opts.maxHits ?? 4096);
  const t1 = performance.now();
  const candidates: KallsymsCandidate[] = [];
  const valid: { decoded: DecodedKallsyms; hit: number }[] = [];
  for (const hit of hits) {
    const c: KallsymsCandidate = { address: hex(hit), ok: false };
    candidates.push(c);
    const range = rangeOf(mem.info.ranges, hit);
    if (!range) {
      c.why = 'not in a memory range';
      continue;
    }
    try {
      // cheap check first: token table + token_index in a small window
      const small = await windowAround(mem, range, hit - 0x4000, hit + 0x4000);
      const tt = parseTokenTable(small, hit - small.base);
      c.tokenTable = hex(small.pa(tt.start));
      let start = hit - (opts.windowBefore ?? 8 << 20);
      let end = hit + (opts.windowAfter ?? 4 << 20);
      for (let attempt = 0; ; attempt++) {
        const w = await windowAround(mem, range, start, end);
        try {
          const decoded = decodeAt(w, hit - w.base, { virtDelta: opts.virtDelta });
          valid.push({ decoded, hit });
          c.ok = true;
          break;
        } catch (e) {
          if (!(e instanceof NeedMore) || attempt >= 3) throw e;
          const ns = Math.min(start, e.startPA - PAGE);
          const ne = Math.max(end, e.endPA + PAGE);
          if (ne - ns > MAX_WINDOW || (ns === start && ne === end))
            throw new Reject(`tables would extend beyond a ${MAX_WINDOW >> 20} MiB window`);
          start = ns;
          end = ne;
        }
      }
    } catch (e) {
      if (e instanceof Reject) c.why = e.reason;
      else if (e instanceof NeedMore) c.why = 'tables extend beyond the readable window';
      else if (e instanceof PmiError) c.why = `${e.code}: ${e.message}`;
      else if (e instanceof RangeError) c.why = `truncated tables (${e.message})`;
      else throw e;
    }
  }
  const t2 = performance.now();
  if (valid.length === 0) {
    const tried = candidates.slice(0, 32).map((c) => `${c.address}: ${c.why}`);
    throw new PmiError(
      'E_NOT_FOUND',
      ORIGIN,
      hits.length === 0
        ? `kallsyms not found: no token-table digit run ('0\\0 1\\0 … 9\\0') in ${scanned} bytes scanned`
        : `kallsyms not found: ${hits.length} digit-run hit(s), none decodes to a valid symbol table (${tried.slice(0, 4).join('; ')}${hits.length > 4 ? '; …' : ''})`,
      {
        scanned_bytes: scanned,
        hits: hits.length,
        tried: candidates,
        checks:
          'token_index == string offsets; markers run (0, increasing) before token_table (or before a 3·N seqs_of_names gap); num_syms + names matching markers; sorted addresses from offsets+relative_base, self-relative offsets or u64 addresses; _text/startup_64 present',
      },
    );
  }
  // Several valid copies (e.g. decompression leftovers): prefer a KASLR-relocated one, then the highest PA.
  const textOf = (d: DecodedKallsyms): bigint | undefined => {
    const ix = d.table.lookupIndices('_text');
    return ix.length ? d.table.address(ix[0]) : undefined;
  };
  const relocated = (v: { decoded: DecodedKallsyms }): number => (textOf(v.decoded) !== 0xffffffff81000000n ? 1 : 0);
  valid.sort((a, b) => relocated(b) - relocated(a) || b.hit - a.hit);
  const best = valid[0];
  const timing: KallsymsTiming = {
    scanMs: round(t1 - t0),
    decodeMs: round(t2 - t1),
    totalMs: round(performance.now() - t0),
    scannedBytes: scanned,
  };
  return new KernelSymbols(
    best.decoded.table,
    best.decoded.layout,
    timing,
    candidates,
    best.decoded.checks,
    valid.slice(1).map((v) => {
      const t = textOf(v.decoded);
      return { tokenTable: hex(v.decoded.layout.tables.tokenTable), text: t === undefined ? undefined : hex(t) };
    }),
  );
}

/** Decode kallsyms from one token-table address (no scan), e.g. when VMCOREINFO gave it. */
export async function decodeKallsymsAt(
  mem: PhysicalMemory,
  digitRunPA: number,
  opts: LocateKallsymsOptions = {},
): Promise<KernelSymbols> {
  return locateKallsyms(mem, { ...opts, ranges: [{ start: digitRunPA, end: digitRunPA + DIGIT_RUN.length }] });
}

function round(ms: number): number {
  return Math.round(ms * 10) / 10;
}
