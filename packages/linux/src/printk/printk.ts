/**
 * The kernel log (what `dmesg` prints), read from memory.
 *
 * Two formats, detected by symbols (never versions):
 * - the lockless ring buffer (5.10+): `prb` → struct printk_ringbuffer {desc_ring {count_bits, descs,
 *   infos, head_id, tail_id}, text_data_ring {size_bits, data, head_lpos, tail_lpos}}. A record is a
 *   descriptor (state_var: id + 2 state bits; text_blk_lpos {begin, next}), its printk_info (seq,
 *   ts_nsec, text_len, facility, flags:5, level:3, caller_id) and a data block {unsigned long id;
 *   char text[]} in the data ring, possibly wrapped to the ring start.
 * - the legacy buffer (before 5.10): `log_buf` (char *), `log_buf_len`, `log_first_idx`,
 *   `log_next_idx`, `log_first_seq`, `log_next_seq`; records are struct printk_log headers followed
 *   by text and dict; a zero `len` means "wrap to the buffer start".
 *
 * Continuation lines (pr_cont): the lockless ring merges them into the previous record in place
 * (prb_reserve_in_last), so its records are whole lines, as dmesg shows them. Legacy records are
 * returned as stored, with `cont` set on LOG_CONT fragments (not merged).
 *
 * Bounded: at most 2^count_bits descriptors are visited per read; ids going backwards, blocks
 * outside the data ring or descriptors that do not carry their id produce partial rows + warnings.
 */
import { PmiError, hex } from '@pmi/core';
import type { KernelObjects } from '@pmi/kernel';

export const LOG_LEVEL_NAMES = ['emerg', 'alert', 'crit', 'err', 'warn', 'notice', 'info', 'debug'] as const;

/** printk_info / printk_log flags. */
export const LOG_NEWLINE = 2;
export const LOG_CONT = 8;

export interface LogRecord {
  seq: number;
  /** Timestamp in nanoseconds since boot (local clock). */
  tsNsec: bigint;
  level: number;
  facility: number;
  flags: number;
  /** "T<pid>" or "C<cpu>" ('' when the kernel does not record callers). */
  caller: string;
  text: string;
  /** LOG_CONT fragment (legacy buffer only; the lockless ring merges them). */
  cont: boolean;
}

export interface KernelLogResult {
  format: 'prb' | 'legacy';
  records: LogRecord[];
  warnings: string[];
  /** The seq the next record will have (for polling). */
  nextSeq: number;
}

/** dmesg's "[%5lu.%06lu]" timestamp. */
export function formatTimestamp(tsNsec: bigint): string {
  const sec = tsNsec / 1_000_000_000n;
  const usec = (tsNsec % 1_000_000_000n) / 1000n;
  return `[${sec.toString().padStart(5, ' ')}.${usec.toString().padStart(6, '0')}]`;
}

/** The lines dmesg prints for a record: one per text line, each with the record's timestamp. */
export function dmesgLines(r: LogRecord): string[] {
  const ts = formatTimestamp(r.tsNsec);
  return r.text.split('\n').map((l) => `${ts} ${l}`);
}

function callerText(id: number): string {
  return id & 0x80000000 ? `C${id & 0x7fffffff}` : `T${id}`;
}

// ------------------------------------------------------------------------ field decoding

interface Fld {
  off: number;
  size: number;
  bitOffset: number;
  bitSize: number;
}

function fld(k: KernelObjects, type: string, path: string): Fld {
  const f = k.btf.field(type, path);
  return { off: f.offset, size: f.size, bitOffset: f.bitOffset, bitSize: f.bitSize };
}
function tryFld(k: KernelObjects, type: string, path: string): Fld | undefined {
  return k.hasField(type, path) ? fld(k, type, path) : undefined;
}

function readU(dv: DataView, base: number, f: Fld): number {
  if (f.bitSize) {
    // bitfield: read the storage unit that holds it
    const byte = base + (f.bitOffset >> 3);
    const shift = f.bitOffset & 7;
    const span = Math.ceil((shift + f.bitSize) / 8);
    let v = 0;
    for (let i = 0; i < span; i++) v |= dv.getUint8(byte + i) << (8 * i);
    return (v >>> shift) & ((1 << f.bitSize) - 1);
  }
  switch (f.size) {
    case 1:
      return dv.getUint8(base + f.off);
    case 2:
      return dv.getUint16(base + f.off, true);
    case 4:
      return dv.getUint32(base + f.off, true);
    default:
      return Number(dv.getBigUint64(base + f.off, true));
  }
}
function readU64(dv: DataView, base: number, f: Fld): bigint {
  return f.size === 8 ? dv.getBigUint64(base + f.off, true) : BigInt(readU(dv, base, f));
}

// ------------------------------------------------------------------------ the lockless ring

const ID_BITS = 62n;
const ID_MASK = (1n << ID_BITS) - 1n;
const DESC_FINALIZED = 2n;
const DESC_COMMITTED = 1n;
const MAX_COUNT_BITS = 24;
const MAX_SIZE_BITS = 30;

interface PrbRead {
  records: LogRecord[];
  nextSeq: number;
  /** A record in the ring is reserved or committed but not finalized yet. */
  pending: boolean;
}

/** The parts of a printk_ringbuffer, as read once. */
interface PrbHeader {
  va: bigint;
  countBits: number;
  descs: bigint;
  infos: bigint;
  headId: bigint;
  tailId: bigint;
  sizeBits: number;
  data: bigint;
}

class PrbReader {
  readonly D: { size: number; sv: Fld; begin: Fld; next: Fld };
  readonly I: { size: number; seq: Fld; ts: Fld; textLen: Fld; facility: Fld; flags: Fld; level: Fld; caller?: Fld };
  private data?: Uint8Array;

  constructor(readonly k: KernelObjects) {
    this.D = {
      size: k.btf.sizeOf('prb_desc'),
      sv: fld(k, 'prb_desc', 'state_var'),
      begin: fld(k, 'prb_desc', 'text_blk_lpos.begin'),
      next: fld(k, 'prb_desc', 'text_blk_lpos.next'),
    };
    this.I = {
      size: k.btf.sizeOf('printk_info'),
      seq: fld(k, 'printk_info', 'seq'),
      ts: fld(k, 'printk_info', 'ts_nsec'),
      textLen: fld(k, 'printk_info', 'text_len'),
      facility: fld(k, 'printk_info', 'facility'),
      flags: fld(k, 'printk_info', 'flags'),
      level: fld(k, 'printk_info', 'level'),
      caller: tryFld(k, 'printk_info', 'caller_id'),
    };
  }

  async header(): Promise<PrbHeader> {
    const va = (await this.k.globalValue('prb')) as bigint;
    const size = this.k.btf.sizeOf('printk_ringbuffer');
    const buf = await this.k.readBytes(va, size);
    const dv = new DataView(buf.buffer, buf.byteOffset, buf.length);
    const f = (p: string) => fld(this.k, 'printk_ringbuffer', p);
    return {
      va,
      countBits: readU(dv, 0, f('desc_ring.count_bits')),
      descs: readU64(dv, 0, f('desc_ring.descs')),
      infos: readU64(dv, 0, f('desc_ring.infos')),
      headId: readU64(dv, 0, f('desc_ring.head_id')),
      tailId: readU64(dv, 0, f('desc_ring.tail_id')),
      sizeBits: readU(dv, 0, f('text_data_ring.size_bits')),
      data: readU64(dv, 0, f('text_data_ring.data')),
    };
  }

  /**
   * Read the records with id in (after, head] (or the whole ring from tail), only those with
   * seq ≥ minSeq. One batch: descriptors, infos and the data ring (or only what is needed).
   */
  async read(h: PrbHeader, warnings: string[], minSeq = 0): Promise<PrbRead> {
    if (h.countBits > MAX_COUNT_BITS || h.sizeBits > MAX_SIZE_BITS || h.countBits === 0) {
      warnings.push(
        `printk ring at ${hex(h.va)}: implausible sizes (count_bits ${h.countBits}, size_bits ${h.sizeBits}); not read`,
      );
      return { records: [], nextSeq: minSeq, pending: false };
    }
    const count = 1 << h.countBits;
    const dataSize = 2 ** h.sizeBits;
    const head = h.headId & ID_MASK;
    const tail = h.tailId & ID_MASK;
    let span = Number((head - tail) & ID_MASK) + 1; // ids tail..head inclusive
    let first = tail;
    if (span > count) {
      warnings.push(
        `printk ring: head_id ${hex(head)} and tail_id ${hex(tail)} are ${span - 1} apart (ring holds ${count}); reading the last ${count} ids only`,
      );
      span = count;
      first = (head - BigInt(count - 1)) & ID_MASK;
    }
    const descBuf = new Uint8Array(count * this.D.size);
    const infoBuf = new Uint8Array(count * this.I.size);
    const dataBuf = new Uint8Array(dataSize);
    const fails = await this.k.paging.readVirtualBatch([
      { va: h.descs, buf: descBuf },
      { va: h.infos, buf: infoBuf },
      { va: h.data, buf: dataBuf },
    ]);
    if (fails.length > 0) {
      warnings.push(`printk ring: ${fails.map((f) => f.error.message).join('; ')}`);
      return { records: [], nextSeq: minSeq, pending: false };
    }
    this.data = dataBuf;
    const dd = new DataView(descBuf.buffer);
    const di = new DataView(infoBuf.buffer);
    const ddata = new DataView(dataBuf.buffer);
    const records: LogRecord[] = [];
    let mismatched = 0;
    let badBlocks = 0;
    let lastSeq = -1;
    let backwards = 0;
    let nextSeq = minSeq;
    let pending = false;
    for (let n = 0; n < span; n++) {
      const id = (first + BigInt(n)) & ID_MASK;
      const idx = Number(id & BigInt(count - 1));
      const sv = dd.getBigUint64(idx * this.D.size + this.D.sv.off, true);
      const state = sv >> ID_BITS;
      if ((sv & ID_MASK) !== id) {
        mismatched++;
        continue;
      }
      if (state !== DESC_FINALIZED) {
        // reserved/committed: still being written (may be extended without head_id moving)
        if (state <= DESC_COMMITTED) pending = true;
        continue; // reusable: logically gone
      }
      const ib = idx * this.I.size;
      const seq = Number(readU64(di, ib, this.I.seq));
      if (seq + 1 > nextSeq) nextSeq = seq + 1;
      if (seq < minSeq) continue;
      if (seq <= lastSeq) {
        backwards++;
        continue;
      }
      const textLen = readU(di, ib, this.I.textLen);
      const begin = readU64(dd, idx * this.D.size, this.D.begin);
      const next = readU64(dd, idx * this.D.size, this.D.next);
      const text = this.blockText(ddata, h.sizeBits, dataSize, begin, next, id, textLen);
      if (text === undefined) {
        badBlocks++;
        continue;
      }
      lastSeq = seq;
      const flags = readU(di, ib, this.I.flags);
      records.push({
        seq,
        tsNsec: readU64(di, ib, this.I.ts),
        level: readU(di, ib, this.I.level),
        facility: readU(di, ib, this.I.facility),
        flags,
        caller: this.I.caller ? callerText(readU(di, ib, this.I.caller)) : '',
        text,
        cont: false,
      });
    }
    if (mismatched > 0)
      warnings.push(`printk ring: ${mismatched} of ${span} descriptors do not carry their id (overwritten or corrupt)`);
    if (badBlocks > 0)
      warnings.push(`printk ring: ${badBlocks} records point outside the data ring or to a foreign block`);
    if (backwards > 0) warnings.push(`printk ring: ${backwards} records with sequence numbers going backwards skipped`);
    return { records, nextSeq, pending };
  }

  /**
   * get_data(): the text of a data block, or undefined for an illegal block description. Logical
   * positions are unsigned longs (mod 2^64), as in the kernel.
   */
  private blockText(
    dv: DataView,
    sizeBits: number,
    size: number,
    begin: bigint,
    next: bigint,
    id: bigint,
    textLen: number,
  ): string | undefined {
    if (begin & 1n && next & 1n) return begin === 3n && next === 3n ? '' : undefined; // data-less
    const u64 = (v: bigint) => BigInt.asUintN(64, v);
    const wraps = (lpos: bigint) => lpos >> BigInt(sizeBits);
    const index = (lpos: bigint) => Number(lpos & BigInt(size - 1));
    // is_blk_wrapped(): the block's last byte (next − 1) lies in another wrap than its first. Kernels
    // that place a block ending exactly at the ring's end there (next at the next wrap's start) need
    // the − 1; older ones wrap such a block, so for them it is the same as comparing next's wrap.
    const wrapped = (b: bigint, n: bigint) => wraps(b) !== wraps(u64(n - 1n));
    let start: number;
    let len: number;
    if (!wrapped(begin, next) && u64(next - begin) > 0n && u64(next - begin) <= BigInt(size)) {
      start = index(begin);
      len = Number(u64(next - begin));
    } else if (!wrapped(u64(begin + BigInt(size)), next)) {
      // one wrap behind: the data is at the ring's start. The first wrap is also where lpos (which
      // start at −size) overflow 2^64: begin 0xffff…ffe0, next 0x20
      start = 0;
      len = index(next);
    } else return undefined;
    if (begin % 8n !== 0n || next % 8n !== 0n || len < 8 || start + len > size) return undefined;
    if ((dv.getBigUint64(start, true) & ID_MASK) !== id) return undefined;
    const textBytes = Math.min(textLen, len - 8);
    return Buffer.from(this.data!.buffer, start + 8, textBytes).toString('utf8');
  }
}

// ------------------------------------------------------------------------ the legacy buffer

async function readLegacy(k: KernelObjects, warnings: string[], minSeq = 0): Promise<KernelLogResult> {
  const u32 = async (name: string) => {
    const b = await k.readBytes(k.symbol(name), 4);
    return new DataView(b.buffer, b.byteOffset, 4).getUint32(0, true);
  };
  const u64 = async (name: string) => {
    const b = await k.readBytes(k.symbol(name), 8);
    return new DataView(b.buffer, b.byteOffset, 8).getBigUint64(0, true);
  };
  const bufVa = await u64('log_buf');
  const len = await u32('log_buf_len');
  const firstIdx = await u32('log_first_idx');
  const nextIdx = await u32('log_next_idx');
  const firstSeq = Number(await u64('log_first_seq'));
  const nextSeq = Number(await u64('log_next_seq'));
  const records: LogRecord[] = [];
  if (len === 0 || len > 1 << MAX_SIZE_BITS || firstIdx >= len || nextIdx >= len) {
    warnings.push(`log_buf: implausible indexes (len ${len}, first ${firstIdx}, next ${nextIdx})`);
    return { format: 'legacy', records, warnings, nextSeq };
  }
  const buf = await k.readBytes(bufVa, len);
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.length);
  let H: {
    size: number;
    ts: Fld;
    len: Fld;
    textLen: Fld;
    dictLen: Fld;
    facility: Fld;
    flags: Fld;
    level: Fld;
    caller?: Fld;
  };
  if (k.hasType('printk_log')) {
    H = {
      size: k.btf.sizeOf('printk_log'),
      ts: fld(k, 'printk_log', 'ts_nsec'),
      len: fld(k, 'printk_log', 'len'),
      textLen: fld(k, 'printk_log', 'text_len'),
      dictLen: fld(k, 'printk_log', 'dict_len'),
      facility: fld(k, 'printk_log', 'facility'),
      flags: fld(k, 'printk_log', 'flags'),
      level: fld(k, 'printk_log', 'level'),
      caller: tryFld(k, 'printk_log', 'caller_id'),
    };
  } else {
    warnings.push('printk_log is not in BTF: assuming the 16-byte header without caller_id');
    const F = (off: number, size: number, bitOffset = off * 8, bitSize = 0): Fld => ({ off, size, bitOffset, bitSize });
    H = {
      size: 16,
      ts: F(0, 8),
      len: F(8, 2),
      textLen: F(10, 2),
      dictLen: F(12, 2),
      facility: F(14, 1),
      flags: F(15, 1, 120, 5),
      level: F(15, 1, 125, 3),
    };
  }
  let idx = firstIdx;
  let seq = firstSeq;
  let wrapped = false;
  const maxRecords = Math.ceil(len / H.size) + 1;
  for (let n = 0; seq < nextSeq && n < maxRecords; n++) {
    if (idx + H.size > len) {
      if (wrapped) break;
      idx = 0;
      wrapped = true;
      continue;
    }
    const rlen = readU(dv, idx, H.len);
    if (rlen === 0) {
      if (wrapped) {
        warnings.push(`log_buf: second wrap marker at ${idx}; stopped`);
        break;
      }
      idx = 0;
      wrapped = true;
      continue;
    }
    const textLen = readU(dv, idx, H.textLen);
    if (rlen < H.size || idx + rlen > len || H.size + textLen > rlen) {
      warnings.push(`log_buf: bad record at index ${idx} (len ${rlen}); stopped after ${records.length} records`);
      break;
    }
    const flags = readU(dv, idx, H.flags);
    if (seq >= minSeq)
      records.push({
        seq,
        tsNsec: readU64(dv, idx, H.ts),
        level: readU(dv, idx, H.level),
        facility: readU(dv, idx, H.facility),
        flags,
        caller: H.caller ? callerText(readU(dv, idx, H.caller)) : '',
        text: Buffer.from(buf.buffer, buf.byteOffset + idx + H.size, textLen).toString('utf8'),
        cont: (flags & LOG_CONT) !== 0,
      });
    seq++;
    idx += rlen;
    if (idx === nextIdx && seq < nextSeq) {
      warnings.push(`log_buf: reached log_next_idx at seq ${seq} before log_next_seq ${nextSeq}`);
      break;
    }
  }
  return { format: 'legacy', records, warnings, nextSeq };
}

// ------------------------------------------------------------------------ API

export function kernelLogFormat(k: KernelObjects): 'prb' | 'legacy' {
  if (k.symbols.get('prb') && k.hasType('printk_ringbuffer')) return 'prb';
  if (k.symbols.get('log_buf') && k.symbols.get('log_first_idx')) return 'legacy';
  throw new PmiError(
    'E_NOT_FOUND',
    'printk',
    'no kernel log found: neither the printk ring buffer (prb) nor the legacy log_buf symbols exist',
  );
}

/** Read the whole kernel log (records with seq ≥ minSeq). */
export async function readKernelLog(k: KernelObjects, opts: { minSeq?: number } = {}): Promise<KernelLogResult> {
  const warnings: string[] = [];
  if (kernelLogFormat(k) === 'legacy') return readLegacy(k, warnings, opts.minSeq ?? 0);
  const r = new PrbReader(k);
  const h = await r.header();
  const { records, nextSeq } = await r.read(h, warnings, opts.minSeq ?? 0);
  return { format: 'prb', records, warnings, nextSeq };
}

export interface FollowOptions {
  /** Poll interval (default 200 ms). */
  intervalMs?: number;
  signal?: AbortSignal;
  /** Start with records of this seq (default: the next record after the current head). */
  fromSeq?: number;
  /** Called with warnings of each poll. */
  onWarning?: (w: string) => void;
}

/**
 * Yield new records as they appear (live sources), polling the ring: each poll re-reads the ring
 * header and, when head_id moved, the ring (bounded: at most the whole ring per poll). Records are
 * yielded once, in seq order; a gap (the ring overwrote records between two polls) is warned.
 * Ends when the signal aborts.
 */
export async function* followKernelLog(k: KernelObjects, opts: FollowOptions = {}): AsyncGenerator<LogRecord, void> {
  const interval = opts.intervalMs ?? 200;
  const fmt = kernelLogFormat(k);
  const prb = fmt === 'prb' ? new PrbReader(k) : undefined;
  let next = opts.fromSeq;
  let lastHead: bigint | undefined;
  let pending = false;
  while (!opts.signal?.aborted) {
    const warnings: string[] = [];
    let res: { records: LogRecord[]; nextSeq: number } | undefined;
    if (prb) {
      const h = await prb.header();
      if (pending || h.headId !== lastHead || next === undefined) {
        const r = await prb.read(h, warnings, next ?? 0);
        res = r;
        pending = r.pending;
        lastHead = h.headId;
      }
    } else res = await readLegacy(k, warnings, next ?? 0);
    if (res) {
      if (next === undefined) next = res.nextSeq;
      else {
        if (res.records.length > 0 && res.records[0].seq > next)
          opts.onWarning?.(
            `kernel log: records ${next}..${res.records[0].seq - 1} were overwritten before they were read`,
          );
        for (const r of res.records) {
          if (r.seq < next) continue;
          yield r;
          next = r.seq + 1;
        }
      }
    }
    for (const w of warnings) opts.onWarning?.(w);
    await sleep(interval, opts.signal);
  }
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}
