/**
 * Decode the kallsyms tables around a validated token table. Every layout decision is made from
 * the data: where a markers run (0, strictly increasing) ends, whether a 3·N gap of
 * seqs_of_names sits between it and the token table, where num_syms and the address table are,
 * and whether the addresses decode to a sorted table. See README-kallsyms.md.
 */
import { SymbolTableBuilder, type SymbolTable } from './symbols.js';
import { parseTokenTable, type TokenTable } from './token-table.js';
import { NeedMore, Reject, Win, alignUp } from './window.js';

/** Upper bounds that keep every loop finite on garbage. */
export const LIMITS = {
  /** Markers (one per 256 symbols): 16 Mi symbols. */
  maxMarkers: 1 << 16,
  /** Bytes of names per 256 symbols (an entry is ≤ 2 + 0x3fff bytes, real ones ~10–40). */
  maxMarkerStep: 256 * 1024,
  /** Bytes of the last block of ≤ 256 names (KSYM_NAME_LEN is 512; real blocks are ~3–10 KiB). */
  maxLastBlock: 256 * 512,
};

export type AddressKind =
  /** s32 offsets + relative_base, KALLSYMS_ABSOLUTE_PERCPU (offset ≥ 0 absolute, else base − 1 − offset). */
  | 'relative-percpu'
  /** s32 offsets + relative_base: base + (u32)offset. */
  | 'relative'
  /** s32 offsets relative to their own slot, no relative_base. */
  | 'self-relative'
  /** u64 kallsyms_addresses. */
  | 'absolute';

export type TableOrder =
  /** addresses, num_syms, names, markers, [seqs], token_table, token_index */
  | 'addresses-first'
  /** num_syms, names, markers, token_table, token_index, addresses, [relative_base], seqs */
  | 'tokens-first';

/** What was detected and where each table sits (physical addresses). */
export interface KallsymsLayout {
  /** Human name: e.g. "tokens-first/relative-percpu" with a note of the matching kernel range. */
  variant: string;
  order: TableOrder;
  addressKind: AddressKind;
  /** seqs_of_names present (6.2+, backported to some 6.1). */
  hasSeqsOfNames: boolean;
  markerWidth: 4 | 8;
  numSyms: number;
  tables: {
    tokenTable: number;
    tokenIndex: number;
    markers: number;
    names: number;
    namesEnd: number;
    numSyms: number;
    /** kallsyms_offsets or kallsyms_addresses. */
    addresses: number;
    relativeBase?: number;
    seqsOfNames?: number;
  };
  /** relative_base (runtime, KASLR-relocated), when the layout has one. */
  relativeBase?: bigint;
  /** Self-relative layout only: VA − PA of the kernel image and how it was found. */
  virtDelta?: bigint;
  virtDeltaSource?: string;
}

export interface DecodedKallsyms {
  table: SymbolTable;
  layout: KallsymsLayout;
  /** Sanity facts measured while validating. */
  checks: { inversions: number; markersChecked: number; seqsChecked: boolean; anchors: string[] };
}

export interface DecodeOptions {
  /** VA − PA of the kernel image, for the self-relative (7.0+) layout; found from the data otherwise. */
  virtDelta?: bigint;
}

interface Markers {
  start: number;
  end: number;
  width: 4 | 8;
  values: number[];
  /** Position of seqs_of_names when a 3·N gap separates markers and the token table. */
  seqs?: number;
}

interface Names {
  start: number;
  end: number;
  numSymsPos: number;
  n: number;
  /** Start position of each entry (Int32Array, n + 1 entries). */
  entryPos: Int32Array;
}

/** True when [pos, pos+len) is in the window; NeedMore when only the range has it; false when nothing can. */
function avail(w: Win, pos: number, len: number): boolean {
  if (w.has(pos, len)) return true;
  const pa = w.pa(pos);
  if (pa < w.rangeStart || pa + len > w.rangeEnd) return false;
  w.need(pos, len, 'kallsyms');
  return false;
}

/** Walk back from `end` over `width`-byte words: strictly decreasing to a first value 0. */
function markersEndingAt(w: Win, end: number, width: 4 | 8): Markers | undefined {
  const vals: number[] = [];
  let p = end - width;
  let prev = Infinity;
  for (let k = 0; k < LIMITS.maxMarkers; k++, p -= width) {
    if (!avail(w, p, width)) return undefined;
    const v = w.u32(p);
    if (width === 8 && w.u32(p + 4) !== 0) return undefined;
    if (v >= prev) return undefined;
    if (prev !== Infinity && prev - v > LIMITS.maxMarkerStep) return undefined;
    vals.push(v);
    if (v === 0) {
      vals.reverse();
      return { start: p, end, width, values: vals };
    }
    prev = v;
  }
  return undefined;
}

/** (a) Markers that end right before token_table (allowing alignment padding). */
function directMarkers(w: Win, tt: TokenTable): Markers[] {
  const out: Markers[] = [];
  for (const width of [4, 8] as const) {
    for (let pad = 0; pad < 8; pad += 4) {
      const m = markersEndingAt(w, tt.start - pad, width);
      if (m) out.push(m);
    }
  }
  // Longest first: a 1-marker "run" is often just padding; then labels on their 8-byte ALGN.
  return out.sort(
    (a, b) => b.values.length - a.values.length || (w.pa(a.start) % 8) - (w.pa(b.start) % 8) || b.width - a.width,
  );
}

/**
 * (b) Markers, then seqs_of_names (3 bytes per symbol), then token_table: scan back for a run
 * start (u32 0 then a small positive step), walk it forward, and keep it when the gap to the token
 * table is 3·N (+ alignment) for an N the marker count allows: N in (256(K-1), 256K].
 */
function gapMarkers(w: Win, tt: TokenTable): Markers[] {
  const out: Markers[] = [];
  const T = tt.start;
  const maxBack = 3 * 256 * LIMITS.maxMarkers + 4 * LIMITS.maxMarkers;
  let q = T - 8;
  q -= w.pa(q) % 4;
  const stop = Math.max(T - maxBack, 0);
  for (; q >= stop && out.length < 16; q -= 4) {
    if (w.u32(q) !== 0) continue;
    // walk forward: strictly increasing, bounded steps
    let K = 1;
    let prev = 0;
    let p = q + 4;
    while (p + 4 <= T && K < LIMITS.maxMarkers) {
      const v = w.u32(p);
      if (v <= prev || v - prev > LIMITS.maxMarkerStep) break;
      prev = v;
      K++;
      p += 4;
    }
    const mEnd = q + 4 * K;
    const gapLo = 3 * (256 * (K - 1) + 1);
    const gapHi = 3 * 256 * K + 15;
    const gap = T - mEnd;
    if (gap < gapLo || gap > gapHi) continue;
    // seqs_of_names starts at the next aligned slot after the markers (4 or 8)
    for (const a of [8, 4]) {
      const seqs = mEnd + ((a - (w.pa(mEnd) % a)) % a);
      if (out.some((o) => o.start === q && o.seqs === seqs)) continue;
      const values: number[] = [];
      for (let k = 0; k < K; k++) values.push(w.u32(q + 4 * k));
      out.push({ start: q, end: mEnd, width: 4, values, seqs });
    }
  }
  return out.sort((a, b) => b.values.length - a.values.length || (w.pa(a.start) % 8) - (w.pa(b.start) % 8));
}

/** Marker candidates: directly before the token table first, then with a seqs_of_names gap. */
function* directOrGap(w: Win, tt: TokenTable): Generator<Markers> {
  yield* directMarkers(w, tt);
  yield* gapMarkers(w, tt);
}

/** Parse n name entries from `start`; returns entry positions or undefined. */
function parseNames(w: Win, start: number, n: number, limit: number): Int32Array | undefined {
  const pos = new Int32Array(n + 1);
  let p = start;
  for (let i = 0; i < n; i++) {
    pos[i] = p;
    if (p >= limit) return undefined;
    let len = w.u8(p++);
    if (len & 0x80) {
      len = (len & 0x7f) | (w.u8(p++) << 7);
    }
    if (len === 0) return undefined;
    p += len;
  }
  pos[n] = p;
  return p <= limit ? pos : undefined;
}

/** Find names + num_syms before the markers: num_syms (u32 or u64) at an aligned slot, then names. */
function findNames(w: Win, m: Markers): Names | undefined {
  const K = m.values.length;
  const last = m.values[K - 1];
  const nMin = 256 * (K - 1) + 1;
  const nMax = 256 * K;
  // names start P: P + last < markers start; the last block (≤ 256 entries) ends at the markers.
  const hiP = m.start - last - 1;
  const loP = hiP - LIMITS.maxLastBlock;
  if (!avail(w, hiP - 8, 8)) return undefined;
  for (let P = hiP - (w.pa(hiP) % 4); P >= loP; P -= 4) {
    if (!avail(w, P - 8, 8)) return undefined;
    for (const back of [4, 8]) {
      const X = P - back;
      const n = w.u32(X);
      if (n < nMin || n > nMax) continue;
      const pos = parseNames(w, P, n, m.start);
      if (!pos) continue;
      if (m.start - pos[n] > 7) continue;
      let ok = true;
      for (let k = 0; k < K; k++) {
        if (pos[256 * k] !== P + m.values[k]) {
          ok = false;
          break;
        }
      }
      if (!ok) continue;
      return { start: P, end: pos[n], numSymsPos: X, n, entryPos: pos };
    }
  }
  return undefined;
}

/** seqs_of_names: N big-endian 3-byte values, a permutation of 0..N-1. */
function checkSeqs(w: Win, pos: number, n: number): boolean {
  if (!w.has(pos, 3 * n)) return false;
  const seen = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const p = pos + 3 * i;
    const v = (w.u8(p) << 16) | (w.u8(p + 1) << 8) | w.u8(p + 2);
    if (v >= n || seen[v]) return false;
    seen[v] = 1;
  }
  return true;
}

interface AddrCandidate {
  order: TableOrder;
  kind: AddressKind;
  addresses: number;
  relativeBase?: number;
  seqs?: number;
  hi: Uint32Array;
  lo: Uint32Array;
  /** self-relative: physical address of each symbol (image-relative), before the VA shift. */
  inversions: number;
  base?: bigint;
}

function countInversions(hi: Uint32Array, lo: Uint32Array): number {
  let inv = 0;
  for (let i = 1; i < hi.length; i++) {
    if (hi[i] < hi[i - 1] || (hi[i] === hi[i - 1] && lo[i] < lo[i - 1])) inv++;
  }
  return inv;
}

function readBase(w: Win, pos: number): bigint | undefined {
  if (!w.has(pos, 8)) return undefined;
  const hi = w.u32(pos + 4);
  const lo = w.u32(pos);
  // x86-64 kernel half (canonical, sign-extended): the top bit is set.
  if (hi < 0x80000000) return undefined;
  return (BigInt(hi) << 32n) | BigInt(lo);
}

/** Decode s32 offsets at `pos` against relative_base; percpu rule when any offset is negative. */
function decodeRelative(
  w: Win,
  pos: number,
  n: number,
  base: bigint,
): { hi: Uint32Array; lo: Uint32Array; percpu: boolean } {
  const hi = new Uint32Array(n);
  const lo = new Uint32Array(n);
  let percpu = false;
  for (let i = 0; i < n; i++) {
    if (w.s32(pos + 4 * i) < 0) {
      percpu = true;
      break;
    }
  }
  const bHi = Number(base >> 32n);
  const bLo = Number(base & 0xffffffffn);
  for (let i = 0; i < n; i++) {
    const off = w.s32(pos + 4 * i);
    if (percpu) {
      if (off >= 0) {
        hi[i] = 0;
        lo[i] = off;
      } else {
        // base - 1 - off = base + (-1 - off), with -1 - off in [0, 2^31)
        const add = -1 - off;
        const s = bLo + add;
        lo[i] = s >>> 0;
        hi[i] = (bHi + (s > 0xffffffff ? 1 : 0)) >>> 0;
      }
    } else {
      const s = bLo + (off >>> 0);
      lo[i] = s >>> 0;
      hi[i] = (bHi + (s > 0xffffffff ? 1 : 0)) >>> 0;
    }
  }
  return { hi, lo, percpu };
}

function decodeAbsolute(w: Win, pos: number, n: number): { hi: Uint32Array; lo: Uint32Array } {
  const hi = new Uint32Array(n);
  const lo = new Uint32Array(n);
  for (let i = 0; i < n; i++) {
    lo[i] = w.u32(pos + 8 * i);
    hi[i] = w.u32(pos + 8 * i + 4);
  }
  return { hi, lo };
}

function addressCandidates(w: Win, tt: TokenTable, names: Names, m: Markers): AddrCandidate[] {
  const n = names.n;
  const out: AddrCandidate[] = [];
  const X = names.numSymsPos;
  const alignPos = (pos: number, a: number): number => pos + ((a - (w.pa(pos) % a)) % a);
  // --- addresses-first (before num_syms) ---
  // relative: offsets (4N, 8-aligned start), relative_base (8 bytes, 8-aligned) right before num_syms.
  {
    const R = X - 8;
    const base = readBase(w, R);
    if (base !== undefined) {
      for (const offPos of new Set([R - 4 * n, R - 4 * n - 4])) {
        if (!avail(w, offPos, 4 * n)) continue;
        const d = decodeRelative(w, offPos, n, base);
        out.push({
          order: 'addresses-first',
          kind: d.percpu ? 'relative-percpu' : 'relative',
          addresses: offPos,
          relativeBase: R,
          seqs: m.seqs,
          hi: d.hi,
          lo: d.lo,
          inversions: countInversions(d.hi, d.lo),
          base,
        });
      }
    }
    // absolute u64 kallsyms_addresses right before num_syms.
    const A = X - 8 * n;
    if (avail(w, A, 8 * n)) {
      const d = decodeAbsolute(w, A, n);
      out.push({
        order: 'addresses-first',
        kind: 'absolute',
        addresses: A,
        seqs: m.seqs,
        ...d,
        inversions: countInversions(d.hi, d.lo),
      });
    }
  }
  // --- tokens-first (after token_index) ---
  if (m.seqs === undefined) {
    const afterIdx = tt.index + 512;
    // 8-aligned until 6.x (every label had ALGN); 7.x emits labels unaligned.
    for (const O of new Set([alignPos(afterIdx, 8), alignPos(afterIdx, 4), afterIdx])) {
      if (!avail(w, O, 4 * n + 8)) continue;
      // (the u64 candidate and seqs_of_names are checked only where the window has them)
      // relative: offsets, relative_base, seqs_of_names
      const R = alignPos(O + 4 * n, 8);
      const base = readBase(w, R);
      if (base !== undefined) {
        const d = decodeRelative(w, O, n, base);
        const S = alignPos(R + 8, 8);
        out.push({
          order: 'tokens-first',
          kind: d.percpu ? 'relative-percpu' : 'relative',
          addresses: O,
          relativeBase: R,
          seqs: checkSeqs(w, S, n) ? S : undefined,
          hi: d.hi,
          lo: d.lo,
          inversions: countInversions(d.hi, d.lo),
          base,
        });
      }
      // self-relative: offsets then seqs_of_names, no relative_base. Addresses are image PAs here.
      {
        const hi = new Uint32Array(n);
        const lo = new Uint32Array(n);
        let bad = false;
        for (let i = 0; i < n; i++) {
          const a = w.pa(O + 4 * i) + w.s32(O + 4 * i);
          if (a < 0) {
            bad = true;
            break;
          }
          hi[i] = Math.floor(a / 0x100000000);
          lo[i] = a >>> 0;
        }
        if (!bad) {
          // Real 7.x images put seqs_of_names right after the offsets (no ALGN); 8-aligned is kept for
          // builds that still align labels.
          const S = [O + 4 * n, alignPos(O + 4 * n, 8)].find((p) => checkSeqs(w, p, n));
          out.push({
            order: 'tokens-first',
            kind: 'self-relative',
            addresses: O,
            seqs: S,
            hi,
            lo,
            inversions: countInversions(hi, lo),
          });
        }
      }
      // absolute u64 table after token_index.
      if (avail(w, O, 8 * n)) {
        const d = decodeAbsolute(w, O, n);
        const S = alignPos(O + 8 * n, 8);
        out.push({
          order: 'tokens-first',
          kind: 'absolute',
          addresses: O,
          seqs: checkSeqs(w, S, n) ? S : undefined,
          ...d,
          inversions: countInversions(d.hi, d.lo),
        });
      }
    }
  }
  return out;
}

/** Expand all names into a SymbolTable builder (addresses filled by the caller). */
function expandNames(w: Win, tt: TokenTable, names: Names, hi: Uint32Array, lo: Uint32Array): SymbolTable {
  const n = names.n;
  const b = new SymbolTableBuilder(n, (names.end - names.start) * 3);
  const tokens = tt.tokens;
  for (let i = 0; i < n; i++) {
    let p = names.entryPos[i];
    let len = w.u8(p++);
    if (len & 0x80) len = (len & 0x7f) | (w.u8(p++) << 7);
    const end = p + len;
    // expanded size ≤ len × longest token
    let size = 0;
    for (let q = p; q < end; q++) size += tokens[w.u8(q)].length;
    const at = b.reserveBytes(size);
    const dst = b.nameBuffer;
    let o = at;
    for (let q = p; q < end; q++) {
      const t = tokens[w.u8(q)];
      dst.set(t, o);
      o += t.length;
    }
    if (size === 0) throw new Reject(`symbol ${i} expands to an empty name`);
    // first character is the type letter
    const type = dst[at];
    dst.copyWithin(at, at + 1, o);
    b.commit(size - 1, type, hi[i], lo[i]);
  }
  return b.build();
}

const TYPE_OK = new Uint8Array(256);
for (const c of 'AaBbCcDdGgiNnPpRrSsTtUuVvWw?-') TYPE_OK[c.charCodeAt(0)] = 1;

function variantName(order: TableOrder, kind: AddressKind, seqs: boolean): string {
  const hint =
    kind === 'absolute'
      ? 'absolute kallsyms_addresses (no KALLSYMS_BASE_RELATIVE)'
      : order === 'addresses-first'
        ? seqs
          ? 'like 6.2–6.3 (or a 6.1 backport)'
          : 'like 4.6–6.1'
        : kind === 'self-relative'
          ? 'like 7.0+'
          : kind === 'relative-percpu'
            ? 'like 6.4–6.14'
            : 'like 6.15+ (or 6.4+ without ABSOLUTE_PERCPU)';
  return `${order}/${kind}${seqs ? '+seqs' : ''} (${hint})`;
}

/**
 * Self-relative layout: symbols are known as image-relative physical addresses; find VA − PA from
 * sys_call_table, whose entries are virtual addresses of syscall functions: entry 0 must be
 * the start of a function symbol, and so must the following entries once shifted the same way.
 *
 * VA − PA of the image is `__START_KERNEL_map − phys_base`, and phys_base is a multiple of
 * CONFIG_PHYSICAL_ALIGN (≥ 2 MiB on x86-64), so only 2 MiB-aligned deltas are candidates. Without
 * that rule a real 7.2 image matched `__pfx___x64_sys_*` (the 16-byte padding symbol before every
 * function under CONFIG_FUNCTION_PADDING) and every address came out 16 bytes high.
 */
function findVirtDelta(w: Win, table: SymbolTable): { delta: bigint; source: string } | undefined {
  const ix = table.lookupIndices('sys_call_table');
  if (ix.length === 0) return undefined;
  const pa = Number(table.address(ix[0]));
  const pos = pa - w.base;
  if (!w.has(pos, 8 * 16)) return undefined;
  // set of function-start PAs
  const funcs = new Set<number>();
  table.forEachRaw((i, hi, lo, t) => {
    if (t === 0x54 || t === 0x74 || t === 0x57 || t === 0x77) funcs.add(hi * 0x100000000 + lo);
  });
  const e0 = (BigInt(w.u32(pos + 4)) << 32n) | BigInt(w.u32(pos));
  for (const f of funcs) {
    const delta = e0 - BigInt(f);
    if (BigInt.asUintN(21, delta) !== 0n) continue;
    let ok = 0;
    for (let k = 1; k < 16; k++) {
      const e = (BigInt(w.u32(pos + 8 * k + 4)) << 32n) | BigInt(w.u32(pos + 8 * k));
      if (funcs.has(Number(e - delta))) ok++;
    }
    if (ok === 15) return { delta, source: 'sys_call_table entries point at function symbols' };
  }
  return undefined;
}

/**
 * Decode the whole table set around a digit-run hit. Throws Reject (with the failed check) or
 * NeedMore (window too small).
 */
export function decodeAt(w: Win, hit: number, opts: DecodeOptions = {}): DecodedKallsyms {
  const tt = parseTokenTable(w, hit);
  let names: Names | undefined;
  let m: Markers | undefined;
  const why: string[] = [];
  let tried = 0;
  for (const c of directOrGap(w, tt)) {
    tried++;
    try {
      names = findNames(w, c);
    } catch (e) {
      if (e instanceof NeedMore) throw e;
      if (e instanceof Reject) {
        why.push(e.reason);
        continue;
      }
      throw e;
    }
    if (names) {
      m = c;
      break;
    }
    why.push(`${c.values.length} markers at 0x${w.pa(c.start).toString(16)}: no num_syms + names matching them`);
  }
  if (tried === 0) throw new Reject('no kallsyms_markers run (0, strictly increasing) before the token table');
  if (!names || !m) throw new Reject(`markers found but no names table fits them (${why.slice(0, 3).join('; ')})`);
  const n = names.n;
  if (m.seqs !== undefined) {
    if (alignUp(w.pa(m.seqs) + 3 * n, 8) < w.pa(tt.start) - 7 || w.pa(m.seqs) + 3 * n > w.pa(tt.start))
      throw new Reject(`gap between markers and token_table is not 3·num_syms (${n})`);
    if (!checkSeqs(w, m.seqs, n)) throw new Reject('seqs_of_names gap is not a permutation of 0..N-1');
  }
  // type letters must be plausible (cheap filter before addresses)
  let badTypes = 0;
  for (let i = 0; i < n; i++) {
    let p = names.entryPos[i];
    if (w.u8(p) & 0x80) p++;
    const t = tt.tokens[w.u8(p + 1)];
    if (t.length === 0 || !TYPE_OK[t[0]]) badTypes++;
  }
  if (badTypes > n / 100) throw new Reject(`${badTypes} of ${n} names start with no nm type letter`);

  const addrs = addressCandidates(w, tt, names, m);
  if (addrs.length === 0) throw new Reject('no address table (offsets + relative_base, or u64 addresses) found');
  // Sorted tables only; among them prefer the fewest inversions, then relative over absolute.
  // A self-relative table read 4 bytes late still decodes sorted (each slot yields its neighbour's
  // address): only seqs_of_names right after the true end tells them apart, so tokens-first
  // candidates whose seqs do not check rank lower.
  const rank = (a: AddrCandidate): number =>
    a.inversions * 8 +
    (a.kind === 'absolute' ? 1 : 0) +
    (a.kind === 'self-relative' ? 2 : 0) +
    (a.order === 'tokens-first' && a.seqs === undefined ? 4 : 0);
  addrs.sort((a, b) => rank(a) - rank(b));
  const best = addrs[0];
  const tolerance = Math.max(0, Math.floor(n / 1000));
  if (best.inversions > tolerance)
    throw new Reject(
      `no address table decodes to sorted addresses (best: ${best.order}/${best.kind} with ${best.inversions} inversions)`,
    );
  let table = expandNames(w, tt, names, best.hi, best.lo);
  const layout: KallsymsLayout = {
    variant: variantName(best.order, best.kind, best.seqs !== undefined),
    order: best.order,
    addressKind: best.kind,
    hasSeqsOfNames: best.seqs !== undefined,
    markerWidth: m.width,
    numSyms: n,
    tables: {
      tokenTable: w.pa(tt.start),
      tokenIndex: w.pa(tt.index),
      markers: w.pa(m.start),
      names: w.pa(names.start),
      namesEnd: w.pa(names.end),
      numSyms: w.pa(names.numSymsPos),
      addresses: w.pa(best.addresses),
      ...(best.relativeBase !== undefined ? { relativeBase: w.pa(best.relativeBase) } : {}),
      ...(best.seqs !== undefined ? { seqsOfNames: w.pa(best.seqs) } : {}),
    },
    ...(best.base !== undefined ? { relativeBase: best.base } : {}),
  };
  if (best.kind === 'self-relative') {
    const found = opts.virtDelta !== undefined ? { delta: opts.virtDelta, source: 'given' } : findVirtDelta(w, table);
    if (!found)
      throw new Reject(
        'self-relative offsets give physical addresses only, and VA − PA could not be found (no usable sys_call_table); pass virtDelta',
      );
    const hi = new Uint32Array(n);
    const lo = new Uint32Array(n);
    const dHi = Number(BigInt.asUintN(64, found.delta) >> 32n);
    const dLo = Number(BigInt.asUintN(64, found.delta) & 0xffffffffn);
    for (let i = 0; i < n; i++) {
      const s = best.lo[i] + dLo;
      lo[i] = s >>> 0;
      hi[i] = (best.hi[i] + dHi + (s > 0xffffffff ? 1 : 0)) >>> 0;
    }
    table = expandNames(w, tt, names, hi, lo);
    layout.virtDelta = found.delta;
    layout.virtDeltaSource = found.source;
  }
  const anchors: string[] = [];
  for (const a of ['_text', 'startup_64', '_stext']) {
    const ix = table.lookupIndices(a);
    if (ix.length === 0) continue;
    if (table.addrHi[ix[0]] < 0x80000000)
      throw new Reject(`${a} resolves to ${table.addressHex(ix[0])}, not a kernel-half address`);
    anchors.push(a);
  }
  if (anchors.length === 0) throw new Reject('decoded table has none of _text, startup_64, _stext');
  // Every symbol but absolute ('A') ones must be a kernel-half address.
  let low = 0;
  for (let i = 0; i < n; i++) if (table.addrHi[i] < 0x80000000 && table.types[i] !== 0x41) low++;
  if (low > n / 1000) throw new Reject(`${low} of ${n} non-absolute symbols decode to addresses below the kernel half`);
  return {
    table,
    layout,
    checks: {
      inversions: best.inversions,
      markersChecked: m.values.length,
      seqsChecked: best.seqs !== undefined,
      anchors,
    },
  };
}
