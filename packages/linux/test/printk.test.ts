/**
 * The kernel log readers on synthetic memory: a lockless printk ring (ids wrapping past 2^62, a data
 * block wrapped to the ring start, a committed-not-finalized head, dataless records) and the legacy
 * __log_buf format (struct printk_log records with a wrap marker), both laid out here from the
 * format description; corrupt rings give partial rows + warnings.
 */
import { describe, expect, it } from 'vitest';
import { KernelObjects, SymbolTableBuilder, X86Paging, parseBtf, KernelScratchMemory } from '@pmi/kernel';
import { BtfBuilder } from '../../kernel/test/fixtures/btf/builder.js';
import { dmesgLines, followKernelLog, formatTimestamp, readKernelLog, type LogRecord } from '../src/index.js';

class Mem extends KernelScratchMemory {}

function kernel(m: Mem, btf: ReturnType<typeof parseBtf>, syms: [string, bigint][]): KernelObjects {
  const sb = new SymbolTableBuilder();
  syms.sort((a, b) => (a[1] < b[1] ? -1 : 1));
  for (const [name, va] of syms) sb.add(name, 'D', va);
  return new KernelObjects({ paging: new X86Paging(m.pt.memory(), m.pt.dtb, 4), btf, symbols: sb.build() });
}

// ------------------------------------------------------------------ the lockless ring

function prbBtf() {
  const b = new BtfBuilder();
  const u8 = b.int('u8', 1);
  const u16 = b.int('u16', 2);
  const u32 = b.int('u32', 4);
  const u64 = b.int('u64', 8);
  const uint = b.int('unsigned int', 4);
  const ulong = b.int('long unsigned int', 8);
  const long = b.int('long int', 8, { signed: true });
  const char = b.int('char', 1, { char: true });
  const charp = b.ptr(char);
  const atomicLong = b.struct('atomic_long_t', 8, [{ name: 'counter', type: long, bits: 0 }]);
  const lpos = b.struct('prb_data_blk_lpos', 16, [
    { name: 'begin', type: ulong, bits: 0 },
    { name: 'next', type: ulong, bits: 64 },
  ]);
  const desc = b.struct('prb_desc', 24, [
    { name: 'state_var', type: atomicLong, bits: 0 },
    { name: 'text_blk_lpos', type: lpos, bits: 64 },
  ]);
  const devInfo = b.struct('dev_printk_info', 64, [{ name: 'subsystem', type: b.array(char, uint, 16), bits: 0 }]);
  const info = b.struct('printk_info', 88, [
    { name: 'seq', type: u64, bits: 0 },
    { name: 'ts_nsec', type: u64, bits: 64 },
    { name: 'text_len', type: u16, bits: 128 },
    { name: 'facility', type: u8, bits: 144 },
    { name: 'flags', type: u8, bits: 152, bitSize: 5 },
    { name: 'level', type: u8, bits: 157, bitSize: 3 },
    { name: 'caller_id', type: u32, bits: 160 },
    { name: 'dev_info', type: devInfo, bits: 192 },
  ]);
  const descRing = b.struct('prb_desc_ring', 48, [
    { name: 'count_bits', type: uint, bits: 0 },
    { name: 'descs', type: b.ptr(desc), bits: 64 },
    { name: 'infos', type: b.ptr(info), bits: 128 },
    { name: 'head_id', type: atomicLong, bits: 192 },
    { name: 'tail_id', type: atomicLong, bits: 256 },
    { name: 'last_finalized_seq', type: atomicLong, bits: 320 },
  ]);
  const dataRing = b.struct('prb_data_ring', 32, [
    { name: 'size_bits', type: uint, bits: 0 },
    { name: 'data', type: charp, bits: 64 },
    { name: 'head_lpos', type: atomicLong, bits: 128 },
    { name: 'tail_lpos', type: atomicLong, bits: 192 },
  ]);
  b.struct('printk_ringbuffer', 88, [
    { name: 'desc_ring', type: descRing, bits: 0 },
    { name: 'text_data_ring', type: dataRing, bits: 384 },
    { name: 'fail', type: atomicLong, bits: 640 },
  ]);
  return parseBtf(b.build());
}

const ID_MASK = (1n << 62n) - 1n;

interface RecSpec {
  text: string;
  level?: number;
  state?: 0 | 1 | 2 | 3;
  caller?: number;
  dataless?: boolean;
}

/**
 * A ring written the way the kernel's writer lays it out: ids starting just below 2^62 (so they
 * wrap), data blocks {id, text} at lpos positions, a block that does not fit at the end of the data
 * ring is placed at index 0 with begin in the previous wrap.
 */
function buildRing(
  recs: RecSpec[],
  o: {
    countBits?: number;
    sizeBits?: number;
    firstId?: bigint;
    /** lpos of the first block (the kernel starts at −size: BLK0_LPOS). */
    firstLpos?: bigint;
    /** A block ending exactly at the ring's end stays there (kernels with is_blk_wrapped()) instead of
     * being wrapped to the start (older kernels). */
    fitAtEnd?: boolean;
  } = {},
) {
  const btf = prbBtf();
  const m = new Mem();
  const countBits = o.countBits ?? 4;
  const sizeBits = o.sizeBits ?? 9;
  const count = 1 << countBits;
  const size = 1 << sizeBits;
  const prb = m.alloc(88);
  const descs = m.alloc(count * 24, 4096);
  const infos = m.alloc(count * 88, 4096);
  const data = m.alloc(size, 4096);
  const prbPtr = m.alloc(8);
  m.u64(prbPtr, prb);
  let id = o.firstId ?? ID_MASK - 5n;
  let lpos = o.firstLpos ?? BigInt(size) * 3n + 128n; // some wraps in
  const u64 = (v: bigint) => BigInt.asUintN(64, v); // lpos are unsigned longs
  const ids: bigint[] = [];
  recs.forEach((r, seq) => {
    const idx = Number(id & BigInt(count - 1));
    const text = Buffer.from(r.text, 'utf8');
    let begin: bigint;
    let next: bigint;
    if (r.dataless) {
      begin = 3n;
      next = 3n;
    } else {
      const blk = 8 + ((text.length + 7) & ~7);
      begin = lpos;
      const wrapOf = (l: bigint) => l >> BigInt(sizeBits);
      const end = u64(begin + BigInt(blk));
      // get_next_lpos(): a block that does not fit before the ring's end is stored at its start
      if (wrapOf(begin) === wrapOf(o.fitAtEnd ? u64(end - 1n) : end)) next = end;
      else next = u64((end & ~BigInt(size - 1)) + BigInt(blk));
      const at = wrapOf(begin) === wrapOf(u64(next - 1n)) ? Number(begin & BigInt(size - 1)) : 0;
      m.u64(data + BigInt(at), id);
      m.bytes(data + BigInt(at + 8), text);
      lpos = next;
    }
    const d = descs + BigInt(idx * 24);
    m.u64(d, (BigInt(r.state ?? 2) << 62n) | id);
    m.u64(d + 8n, begin);
    m.u64(d + 16n, next);
    const inf = infos + BigInt(idx * 88);
    m.u64(inf, BigInt(seq));
    m.u64(inf + 8n, BigInt(seq) * 1_234_567n + 1_000_000_000n);
    m.u16(inf + 16n, text.length);
    m.u8(inf + 18n, 0);
    m.u8(inf + 19n, (2 & 0x1f) | ((r.level ?? 6) << 5));
    m.u32(inf + 20n, r.caller ?? seq + 100);
    ids.push(id);
    id = (id + 1n) & ID_MASK;
  });
  const headId = ids[ids.length - 1];
  const tailId = ids[Math.max(0, ids.length - count)];
  m.u32(prb, countBits);
  m.u64(prb + 8n, descs);
  m.u64(prb + 16n, infos);
  m.u64(prb + 24n, headId);
  m.u64(prb + 32n, tailId);
  m.u32(prb + 48n, sizeBits);
  m.u64(prb + 56n, data);
  m.u64(prb + 64n, lpos);
  const k = kernel(m, btf, [
    ['prb', prbPtr],
    ['printk_rb_static', prb],
  ]);
  return { k, m, prb, descs, infos, data, headId, tailId };
}

describe('lockless printk ring', () => {
  const texts = Array.from({ length: 12 }, (_, i) => `line ${i} ${'x'.repeat(i % 5)}`);

  it('reads records in seq order across the id wrap and a wrapped data block', async () => {
    const { k } = buildRing(texts.map((text, i) => ({ text, level: i % 8, caller: i === 3 ? 0x80000001 : 42 })));
    const r = await readKernelLog(k);
    expect(r.format).toBe('prb');
    expect(r.warnings).toEqual([]);
    expect(r.records.map((x) => x.text)).toEqual(texts);
    expect(r.records.map((x) => x.seq)).toEqual(texts.map((_, i) => i));
    expect(r.records[3].caller).toBe('C1');
    expect(r.records[4].caller).toBe('T42');
    expect(r.records[5].level).toBe(5);
    expect(r.records[2].tsNsec).toBe(1_002_469_134n);
    expect(r.nextSeq).toBe(12);
    expect(dmesgLines(r.records[2])).toEqual(['[    1.002469] line 2 xx']);
  });

  it('reads blocks across the lpos overflow at 2^64 (lpos start at −size) and blocks ending exactly at the ring end, either placement', async () => {
    // 16-byte blocks: one ends exactly at the ring's end (and at 2^64); 24-byte blocks: one straddles it
    for (const [text, fitAtEnd] of [
      ['r', false],
      ['r', true],
      ['long-rec', false],
      ['long-rec', true],
    ] as const) {
      const recs = Array.from({ length: 40 }, (_, i) => ({ text: `${text}${i}`.slice(-(text.length + 1)) }));
      // a 1 KiB data ring, lpos starting half a ring before 2^64 (a wrap boundary): 40 records fit
      const { k } = buildRing(recs, { countBits: 6, sizeBits: 10, firstLpos: BigInt.asUintN(64, -512n), fitAtEnd });
      const r = await readKernelLog(k);
      expect(r.warnings, `${text} fitAtEnd ${fitAtEnd}`).toEqual([]);
      expect(r.records.map((x) => x.text)).toEqual(recs.map((x) => x.text));
    }
  });

  it('formats timestamps as dmesg does', () => {
    expect(formatTimestamp(2_469_501_999n)).toBe('[    2.469501]');
    expect(formatTimestamp(123456_000_001_000n)).toBe('[123456.000001]');
    const rec: LogRecord = {
      seq: 0,
      tsNsec: 0n,
      level: 6,
      facility: 0,
      flags: 2,
      caller: '',
      text: 'a\nb',
      cont: false,
    };
    expect(dmesgLines(rec)).toEqual(['[    0.000000] a', '[    0.000000] b']);
  });

  it('keeps only the last 2^count_bits records once the ring has wrapped; skips unfinalized and reusable ones', async () => {
    const many: RecSpec[] = Array.from({ length: 40 }, (_, i) => ({ text: `r${i}` }));
    many[39].state = 1; // committed, not finalized (still being written)
    many[30].state = 3; // reusable
    const { k } = buildRing(many);
    const r = await readKernelLog(k);
    expect(r.warnings).toEqual([]);
    expect(r.records.map((x) => x.text)).toEqual(
      Array.from({ length: 15 }, (_, i) => `r${24 + i}`).filter((t) => t !== 'r30'),
    );
  });

  it('data-less records have empty text', async () => {
    const { k } = buildRing([{ text: 'a' }, { text: 'gone', dataless: true }, { text: 'b' }]);
    const r = await readKernelLog(k);
    expect(r.records.map((x) => x.text)).toEqual(['a', '', 'b']);
  });

  it('a zeroed descriptor ring: no rows and a warning', async () => {
    const { k, m, descs } = buildRing(texts.map((text) => ({ text })));
    m.bytes(descs, new Uint8Array(16 * 24));
    const r = await readKernelLog(k);
    expect(r.records).toEqual([]);
    expect(r.warnings.join(' ')).toMatch(/1[12] of 12 descriptors do not carry their id/);
  });

  it('ids going backwards, blocks outside the ring, implausible sizes: partial rows + warnings, bounded', async () => {
    const b1 = buildRing(texts.map((text) => ({ text })));
    b1.m.u64(b1.prb + 32n, b1.headId + 1000n); // tail after head: "ids going backwards"
    const r1 = await readKernelLog(b1.k);
    expect(r1.warnings.join(' ')).toMatch(/apart \(ring holds 16\)/);
    expect(r1.records.map((x) => x.text)).toEqual(texts); // the last 16 ids are still read

    const b2 = buildRing(texts.map((text) => ({ text })));
    const idx = Number(b2.headId & 15n);
    b2.m.u64(b2.descs + BigInt(idx * 24) + 8n, 0x10000n); // begin far from next
    const r2 = await readKernelLog(b2.k);
    expect(r2.records.map((x) => x.text)).toEqual(texts.slice(0, -1));
    expect(r2.warnings.join(' ')).toMatch(/1 records point outside the data ring/);

    const b3 = buildRing(texts.map((text) => ({ text })));
    b3.m.u32(b3.prb, 40);
    const r3 = await readKernelLog(b3.k);
    expect(r3.records).toEqual([]);
    expect(r3.warnings.join(' ')).toMatch(/implausible sizes/);
  });

  it('follow: yields records appended after it started, once each, then stops on abort', async () => {
    const ring = buildRing(
      texts.map((text) => ({ text })),
      { firstId: 100n },
    );
    const ac = new AbortController();
    const got: string[] = [];
    const gen = followKernelLog(ring.k, { intervalMs: 5, signal: ac.signal });
    const done = (async () => {
      for await (const r of gen) {
        got.push(r.text);
        if (got.length === 2) ac.abort();
      }
    })();
    await new Promise((res) => setTimeout(res, 30));
    // append two records (ids 112, 113 → seq 12, 13) the way the writer does
    const { m, descs, infos, data, prb } = ring;
    let lpos = ring.m.dv.getBigUint64(m.pa(prb + 64n), true);
    for (const [i, text] of ['new one', 'new two'].entries()) {
      const id = 112n + BigInt(i);
      const idx = Number(id & 15n);
      const t = Buffer.from(text);
      const at = Number(lpos & 511n);
      m.u64(data + BigInt(at), id);
      m.bytes(data + BigInt(at + 8), t);
      m.u64(descs + BigInt(idx * 24), (2n << 62n) | id);
      m.u64(descs + BigInt(idx * 24) + 8n, lpos);
      lpos += 16n;
      m.u64(descs + BigInt(idx * 24) + 16n, lpos);
      m.u64(infos + BigInt(idx * 88), BigInt(12 + i));
      m.u16(infos + BigInt(idx * 88) + 16n, t.length);
      m.u64(prb + 24n, id);
      await new Promise((res) => setTimeout(res, 20));
    }
    await done;
    expect(got).toEqual(['new one', 'new two']);
  });
});

// ------------------------------------------------------------------ the legacy buffer

function legacyBtf() {
  const b = new BtfBuilder();
  const u8 = b.int('u8', 1);
  const u16 = b.int('u16', 2);
  const u64 = b.int('u64', 8);
  b.struct('printk_log', 16, [
    { name: 'ts_nsec', type: u64, bits: 0 },
    { name: 'len', type: u16, bits: 64 },
    { name: 'text_len', type: u16, bits: 80 },
    { name: 'dict_len', type: u16, bits: 96 },
    { name: 'facility', type: u8, bits: 112 },
    { name: 'flags', type: u8, bits: 120, bitSize: 5 },
    { name: 'level', type: u8, bits: 125, bitSize: 3 },
  ]);
  return parseBtf(b.build());
}

/** printk_log records (16-byte header, text, dict, padded to 8) in a 256-byte buffer, wrapping once. */
function buildLegacy(
  recs: { text: string; dict?: string; flags?: number }[],
  o: { len?: number; start?: number } = {},
) {
  const m = new Mem();
  const len = o.len ?? 256;
  const buf = m.alloc(len, 4096);
  let idx = o.start ?? 160;
  const firstIdx = idx;
  recs.forEach((r, i) => {
    const text = Buffer.from(r.text);
    const dict = Buffer.from(r.dict ?? '');
    const rlen = (16 + text.length + dict.length + 7) & ~7;
    if (idx + rlen + 16 > len) {
      m.u16(buf + BigInt(idx) + 8n, 0); // wrap marker: len 0
      idx = 0;
    }
    const at = buf + BigInt(idx);
    m.u64(at, BigInt(i + 1) * 1_000_000n);
    m.u16(at + 8n, rlen);
    m.u16(at + 10n, text.length);
    m.u16(at + 12n, dict.length);
    m.u8(at + 14n, 0);
    m.u8(at + 15n, (r.flags ?? 2) | (((i % 8) & 7) << 5));
    m.bytes(at + 16n, text);
    m.bytes(at + 16n + BigInt(text.length), dict);
    idx += rlen;
  });
  const vars = { log_buf: m.alloc(8), log_buf_len: m.alloc(4), log_first_idx: m.alloc(4), log_next_idx: m.alloc(4) };
  const seqs = { log_first_seq: m.alloc(8), log_next_seq: m.alloc(8) };
  m.u64(vars.log_buf, buf);
  m.u32(vars.log_buf_len, len);
  m.u32(vars.log_first_idx, firstIdx);
  m.u32(vars.log_next_idx, idx);
  m.u64(seqs.log_first_seq, 5n);
  m.u64(seqs.log_next_seq, 5n + BigInt(recs.length));
  const k = kernel(m, legacyBtf(), [...Object.entries(vars), ...Object.entries(seqs)]);
  return { k, m, vars };
}

describe('legacy __log_buf', () => {
  const recs = [
    { text: 'first line' },
    { text: 'second', dict: 'SUBSYSTEM=pci' },
    { text: 'cont part', flags: 8 },
    { text: 'after the wrap' },
    { text: 'last' },
  ];

  it('is detected without prb and read across the wrap marker, LOG_CONT flagged', async () => {
    const { k } = buildLegacy(recs);
    const r = await readKernelLog(k);
    expect(r.format).toBe('legacy');
    expect(r.warnings).toEqual([]);
    expect(r.records.map((x) => x.text)).toEqual(recs.map((x) => x.text));
    expect(r.records.map((x) => x.seq)).toEqual([5, 6, 7, 8, 9]);
    expect(r.records.map((x) => x.cont)).toEqual([false, false, true, false, false]);
    expect(r.records[3].level).toBe(3);
    expect(r.records[1].tsNsec).toBe(2_000_000n);
    expect(r.nextSeq).toBe(10);
  });

  it('a corrupt record length stops with partial rows and a warning', async () => {
    const { k, m } = buildLegacy(recs, { start: 0, len: 512 });
    const second = await k.readBytes(k.symbol('log_first_idx'), 4); // first record at 0
    expect(new DataView(second.buffer, second.byteOffset).getUint32(0, true)).toBe(0);
    // record 2 (at 32) gets an impossible length
    const bufVa = (await k.readPointers(k.symbol('log_buf'), 1))[0];
    m.u16(bufVa + 32n + 8n, 0xfff0);
    const r = await readKernelLog(k);
    expect(r.records.map((x) => x.text)).toEqual(['first line']);
    expect(r.warnings.join(' ')).toMatch(/bad record at index 32/);
  });
});
