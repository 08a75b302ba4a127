/**
 * Synthetic kallsyms tables, laid out as the kernel's scripts/kallsyms.c emits them (assembly with
 * an 8-byte `ALGN` before every label), for tests and synthetic targets. Written from the format
 * description alone — it shares no code with the decoder, so a decoder bug cannot hide in it.
 *
 * Token compression is simplified (every character in use keeps its own slot, then the most
 * frequent adjacent pairs fill free slots greedily), but the format is the real one.
 */

export interface SynthSymbol {
  name: string;
  /** nm type letter. 'A' symbols are stored as absolute values under absolutePercpu. */
  type: string;
  address: bigint;
}

export type SynthLayout =
  /** u64 kallsyms_addresses, u64 num_syms and markers (pre-4.6 style, or !KALLSYMS_BASE_RELATIVE). */
  | 'legacy-absolute'
  /** offsets + relative_base, num_syms, names, markers, token_table, token_index (4.6–6.1). */
  | 'offsets-first'
  /** as above plus seqs_of_names between markers and token_table (6.2–6.3, Debian 6.1 backport). */
  | 'offsets-first-seqs'
  /** num_syms, names, markers, token_table, token_index, offsets, relative_base, seqs (6.4–6.x). */
  | 'tokens-first'
  /** tokens-first without relative_base: offsets relative to their own slot (7.0). */
  | 'self-relative';

export interface SynthOptions {
  layout: SynthLayout;
  /** KALLSYMS_ABSOLUTE_PERCPU rule for offsets (x86-64 SMP 4.6–6.14). Default true for offset layouts. */
  absolutePercpu?: boolean;
  /** Virtual address of the blob's first byte (needed for 'self-relative'). */
  blobVirt?: bigint;
  /** Pairs tokens to create (default: fill every free slot). */
  maxPairs?: number;
  /**
   * Alignment before each label: 8 (`ALGN`, every kernel up to 6.x) or 4. Default 4 for
   * 'self-relative': the real Debian 7.2.13 image has names right after the u32 num_syms (8 would
   * put them 4 bytes later) and seqs_of_names right after the offsets; every table start there is
   * 4-aligned — else 8.
   */
  labelAlign?: 4 | 8;
}

export interface SynthTables {
  bytes: Uint8Array;
  /** Byte offset of each label inside `bytes`. */
  labels: Record<string, number>;
  /** Symbols in table order (sorted by address, stable), as the decoder should return them. */
  symbols: SynthSymbol[];
  relativeBase?: bigint;
}

/** Deterministic PRNG (mulberry32). */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

class Asm {
  private buf = new Uint8Array(1 << 16);
  len = 0;
  labels: Record<string, number> = {};
  private ensure(n: number): void {
    if (this.len + n <= this.buf.length) return;
    const b = new Uint8Array(Math.max(this.buf.length * 2, this.len + n));
    b.set(this.buf.subarray(0, this.len));
    this.buf = b;
  }
  constructor(private readonly align: number = 8) {}
  /** output_label(): ALGN (.balign 8, when the layout has it) then the label. */
  label(name: string): void {
    while (this.len % this.align !== 0) this.byte(0);
    this.labels[name] = this.len;
  }
  byte(v: number): void {
    this.ensure(1);
    this.buf[this.len++] = v & 0xff;
  }
  short(v: number): void {
    this.byte(v);
    this.byte(v >> 8);
  }
  long(v: number): void {
    this.ensure(4);
    new DataView(this.buf.buffer).setUint32(this.len, v >>> 0, true);
    this.len += 4;
  }
  quad(v: bigint): void {
    const u = BigInt.asUintN(64, v);
    this.long(Number(u & 0xffffffffn));
    this.long(Number(u >> 32n));
  }
  bytes(): Uint8Array {
    return this.buf.slice(0, this.len);
  }
}

function latin1Bytes(s: string): number[] {
  const out: number[] = [];
  for (let i = 0; i < s.length; i++) out.push(s.charCodeAt(i) & 0xff);
  return out;
}

/** Build the 256-token table and each symbol's token sequence ("type letter + name" compressed). */
function compress(strings: number[][], maxPairs: number): { table: number[][]; encoded: number[][] } {
  const table: number[][] = Array.from({ length: 256 }, () => []);
  const used = new Uint8Array(256);
  for (const s of strings) for (const c of s) used[c] = 1;
  for (let c = 0; c < 256; c++) if (used[c]) table[c] = [c];
  // sequences of token indices (initially the characters themselves)
  const seqs = strings.map((s) => s.slice());
  let pairs = 0;
  for (let slot = 255; slot >= 0 && pairs < maxPairs; slot--) {
    if (used[slot]) continue;
    const counts = new Map<number, number>();
    for (const s of seqs)
      for (let i = 0; i + 1 < s.length; i++) {
        const k = s[i] * 256 + s[i + 1];
        counts.set(k, (counts.get(k) ?? 0) + 1);
      }
    let bestK = -1;
    let bestN = 1;
    for (const [k, n] of counts) if (n > bestN) [bestK, bestN] = [k, n];
    if (bestK < 0) break;
    const a = bestK >> 8;
    const b = bestK & 0xff;
    table[slot] = [...table[a], ...table[b]];
    used[slot] = 1;
    pairs++;
    for (let j = 0; j < seqs.length; j++) {
      const s = seqs[j];
      const out: number[] = [];
      for (let i = 0; i < s.length; i++) {
        if (i + 1 < s.length && s[i] === a && s[i + 1] === b) {
          out.push(slot);
          i++;
        } else out.push(s[i]);
      }
      seqs[j] = out;
    }
  }
  return { table, encoded: seqs };
}

/** Lay out kallsyms tables for `symbols` exactly as scripts/kallsyms.c would. */
export function buildKallsymsTables(input: readonly SynthSymbol[], opts: SynthOptions): SynthTables {
  const layout = opts.layout;
  const offsetsLayout = layout !== 'legacy-absolute';
  const percpu = offsetsLayout && layout !== 'self-relative' ? (opts.absolutePercpu ?? true) : false;
  // sort_symbols(): by address, stable
  const symbols = input
    .map((s, i) => ({ s, i }))
    .sort((x, y) => (x.s.address < y.s.address ? -1 : x.s.address > y.s.address ? 1 : x.i - y.i))
    .map((x) => x.s);
  const n = symbols.length;
  const isAbs = (s: SynthSymbol): boolean => percpu && s.type === 'A';
  let relativeBase: bigint | undefined;
  if (offsetsLayout && layout !== 'self-relative') {
    const firstRel = symbols.find((s) => !isAbs(s));
    relativeBase = firstRel ? firstRel.address : 0n;
  }
  const { table, encoded } = compress(
    symbols.map((s) => latin1Bytes(s.type + s.name)),
    opts.maxPairs ?? 256,
  );
  // names + markers
  const names: number[] = [];
  const markers: number[] = [];
  for (let i = 0; i < n; i++) {
    if (i % 256 === 0) markers.push(names.length);
    const e = encoded[i];
    if (e.length > 0x3fff) throw new RangeError(`symbol ${symbols[i].name} is too long`);
    if (e.length > 0x7f) {
      names.push((e.length & 0x7f) | 0x80, e.length >> 7);
    } else names.push(e.length);
    names.push(...e);
  }
  const asm = new Asm(opts.labelAlign ?? (layout === 'self-relative' ? 4 : 8));
  const legacy = layout === 'legacy-absolute';
  const emitAddresses = (): void => {
    if (legacy) {
      asm.label('kallsyms_addresses');
      for (const s of symbols) asm.quad(s.address);
      return;
    }
    asm.label('kallsyms_offsets');
    for (let i = 0; i < n; i++) {
      const s = symbols[i];
      let off: bigint;
      if (layout === 'self-relative') {
        if (opts.blobVirt === undefined) throw new RangeError('self-relative layout needs blobVirt');
        const slot = opts.blobVirt + BigInt(asm.len);
        off = s.address - slot;
        if (off < -(2n ** 31n) || off >= 2n ** 31n) throw new RangeError(`${s.name} is too far from its slot`);
      } else if (percpu) {
        if (isAbs(s)) off = s.address;
        else off = relativeBase! - s.address - 1n;
        if (off < -(2n ** 31n) || off >= 2n ** 31n) throw new RangeError(`${s.name}: offset out of s32 range`);
      } else {
        off = s.address - relativeBase!;
        if (off < 0n || off >= 2n ** 32n) throw new RangeError(`${s.name}: offset out of u32 range`);
      }
      asm.long(Number(BigInt.asUintN(32, off)));
    }
    if (layout !== 'self-relative') {
      asm.label('kallsyms_relative_base');
      asm.quad(relativeBase!);
    }
  };
  const emitSeqs = (): void => {
    asm.label('kallsyms_seqs_of_names');
    const order = symbols
      .map((_, i) => i)
      .sort((a, b) => {
        const x = symbols[a].name;
        const y = symbols[b].name;
        return x < y ? -1 : x > y ? 1 : a - b;
      });
    for (const seq of order) {
      asm.byte(seq >> 16);
      asm.byte(seq >> 8);
      asm.byte(seq);
    }
  };
  const emitNamesAndMarkers = (): void => {
    asm.label('kallsyms_num_syms');
    if (legacy) asm.quad(BigInt(n));
    else asm.long(n);
    asm.label('kallsyms_names');
    for (const b of names) asm.byte(b);
    asm.label('kallsyms_markers');
    for (const m of markers) {
      if (legacy) asm.quad(BigInt(m));
      else asm.long(m);
    }
  };
  const emitTokens = (): void => {
    asm.label('kallsyms_token_table');
    const index: number[] = [];
    let off = 0;
    for (const t of table) {
      index.push(off);
      for (const c of t) asm.byte(c);
      asm.byte(0);
      off += t.length + 1;
    }
    asm.label('kallsyms_token_index');
    for (const o of index) asm.short(o);
  };
  if (layout === 'tokens-first' || layout === 'self-relative') {
    emitNamesAndMarkers();
    emitTokens();
    emitAddresses();
    emitSeqs();
  } else {
    emitAddresses();
    emitNamesAndMarkers();
    if (layout === 'offsets-first-seqs') emitSeqs();
    emitTokens();
  }
  return { bytes: asm.bytes(), labels: asm.labels, symbols, relativeBase };
}

export interface SynthImageOptions extends Omit<SynthOptions, 'blobVirt'> {
  seed: number;
  /** Buffer size (default: big enough, ≥ 4 MiB). */
  size?: number;
  /** Digit-run decoys to scatter in the noise (default 8). */
  decoys?: number;
  /** Physical address of the buffer's first byte (default 0). */
  base?: number;
  /**
   * VA − PA of the image (default: chosen so that the blob's VA follows the symbols). Symbols whose
   * address − delta falls in the buffer are "inside the image": sys_call_table gets pointers.
   */
  virtDelta?: bigint;
}

export interface SynthImage {
  bytes: Uint8Array;
  base: number;
  /** Physical address of the blob (its first label). */
  blobPhys: number;
  tables: SynthTables;
  /** Physical address of each label. */
  labels: Record<string, number>;
  virtDelta: bigint;
}

/**
 * A noise-filled buffer holding the tables at a random 8-aligned offset, plus decoys: bare digit
 * runs and fake token tables (digits in their slots, but no matching token_index).
 */
export function buildKallsymsImage(symbols: readonly SynthSymbol[], opts: SynthImageOptions): SynthImage {
  const rnd = prng(opts.seed);
  const base = opts.base ?? 0;
  // a first build (self-relative offsets depend on the blob's VA: rebuild once it is known)
  let tables = buildKallsymsTables(symbols, { ...opts, blobVirt: 0xffffffff82000000n });
  const size = Math.max(opts.size ?? 0, 4 << 20, tables.bytes.length * 3 + (1 << 20));
  const bytes = new Uint8Array(size);
  for (let i = 0; i < size; i += 4) {
    const v = (rnd() * 2 ** 32) >>> 0;
    bytes[i] = v;
    bytes[i + 1] = v >>> 8;
    bytes[i + 2] = v >>> 16;
    bytes[i + 3] = v >>> 24;
  }
  // the blob goes in the upper half; the lower half is "image text/data" for pointer tables
  const lo = Math.floor(size / 2);
  const span = size - lo - tables.bytes.length - 64;
  const blobOff = lo + Math.floor((rnd() * span) / 8) * 8;
  const blobPhys = base + blobOff;
  const textSym = tables.symbols.find((s) => s.type !== 'A');
  const textVirt = textSym ? textSym.address : 0xffffffff81000000n;
  // VA − PA of a kernel image is __START_KERNEL_map − phys_base: always a multiple of 2 MiB.
  const virtDelta = opts.virtDelta ?? (textVirt - BigInt(base + 0x10000)) & ~0x1fffffn;
  if (opts.layout === 'self-relative') {
    tables = buildKallsymsTables(symbols, { ...opts, blobVirt: BigInt(blobPhys) + virtDelta });
  }
  bytes.set(tables.bytes, blobOff);
  const labels: Record<string, number> = {};
  for (const [k, v] of Object.entries(tables.labels)) labels[k] = blobPhys + v;
  // sys_call_table: pointers (virtual) to the first function symbols, if inside the buffer
  const sct = tables.symbols.find((s) => s.name === 'sys_call_table');
  if (sct) {
    const funcs = tables.symbols.filter((s) => s.type === 'T' || s.type === 't');
    const pa = Number(sct.address - virtDelta) - base;
    if (pa >= 0 && pa + 8 * 32 <= blobOff && funcs.length > 0) {
      const dv = new DataView(bytes.buffer);
      for (let k = 0; k < 32; k++) {
        const f = funcs[Math.floor(rnd() * funcs.length)].address;
        dv.setBigUint64(pa + 8 * k, BigInt.asUintN(64, f), true);
      }
    }
  }
  // decoys, away from the blob
  const nDecoys = opts.decoys ?? 8;
  const digits = [0x30, 0, 0x31, 0, 0x32, 0, 0x33, 0, 0x34, 0, 0x35, 0, 0x36, 0, 0x37, 0, 0x38, 0, 0x39, 0];
  for (let d = 0; d < nDecoys; d++) {
    let at: number;
    let guard = 0;
    do {
      at = 0x1000 + Math.floor(rnd() * (size - 0x3000));
    } while (at + 0x1000 > blobOff && at < blobOff + tables.bytes.length + 0x1000 && guard++ < 100);
    if (guard >= 100) continue;
    if (d % 2 === 0) {
      bytes.set(digits, at);
    } else {
      // a fake token table: printable tokens around the digits, no token_index after it
      const fake: number[] = [];
      for (let i = 0; i < 0x30; i++) fake.push(0x61 + (i % 26), 0x62, 0);
      fake.push(...digits);
      for (let i = 0x3a; i < 256; i++) fake.push(0x5f, 0x61 + (i % 26), 0);
      if (at + fake.length < size && (at + fake.length < blobOff || at > blobOff + tables.bytes.length))
        bytes.set(fake, at);
    }
  }
  return { bytes, base, blobPhys, tables, labels, virtDelta };
}

const SYLLABLES = [
  'init',
  'task',
  'sys',
  'call',
  'do',
  'page',
  'map',
  'lock',
  'irq',
  'net',
  'dev',
  'kfree',
  'vm',
  'area',
  'rcu',
  'sched',
  'entry',
  'fs',
  'mm',
  'cpu',
];

/**
 * A plausible symbol list: _text/startup_64 first, function and data symbols with increasing
 * addresses, duplicates (static functions), `.llvm.<n>` suffixes, long names (two-byte length),
 * every digit in use; optional per-CPU 'A' symbols at small addresses, and sys_call_table;
 * `padding`: a `__pfx_<name>` symbol 16 bytes before each function (CONFIG_FUNCTION_PADDING, 6.2+).
 */
export function syntheticSymbols(
  seed: number,
  n: number,
  opts: { percpu?: boolean; text?: bigint; longNames?: boolean; padding?: boolean } = {},
): SynthSymbol[] {
  const rnd = prng(seed ^ 0x5eed);
  const out: SynthSymbol[] = [];
  if (opts.percpu) {
    let a = 0n;
    for (const name of ['fixed_percpu_data', '__per_cpu_start', 'cpu_debug_store', 'irq_stack_backing_store']) {
      out.push({ name, type: 'A', address: a });
      a += 0x1000n;
    }
  }
  let addr = opts.text ?? 0xffffffff81000000n;
  out.push({ name: '_text', type: 'T', address: addr });
  out.push({ name: 'startup_64', type: 'T', address: addr });
  addr += 0x40n;
  // every digit in use, so the token table has its digit run even for tiny lists
  out.push({ name: 'secondary_startup_64_0123456789', type: 'T', address: addr });
  addr += 0x40n;
  const types = ['T', 't', 't', 'T', 'D', 'd', 'R', 'r', 'B', 'b', 'W'];
  let k = 0;
  let sctAdded = false;
  while (out.length < n) {
    let name = '';
    const parts = 1 + Math.floor(rnd() * 4);
    for (let p = 0; p < parts; p++) name += (p ? '_' : '') + SYLLABLES[Math.floor(rnd() * SYLLABLES.length)];
    name += String(k++ % 1000);
    if (rnd() < 0.05) name = '__' + name;
    if (rnd() < 0.02) name += `.llvm.${Math.floor(rnd() * 1e9)}`;
    if (rnd() < 0.02) name += '.isra.0';
    if (opts.longNames !== false && rnd() < 0.01) name = name + '_' + 'x'.repeat(130 + Math.floor(rnd() * 200));
    const prev = out[out.length - 2]?.name;
    const dup = rnd() < 0.03 && out.length > 4 && prev !== 'sys_call_table' ? prev : name;
    if (!sctAdded && out.length >= Math.floor(n / 2)) {
      sctAdded = true;
      out.push({ name: 'sys_call_table', type: 'D', address: addr });
      addr += 0x1000n;
      continue;
    }
    const type = types[Math.floor(rnd() * types.length)];
    if (opts.padding && (type === 'T' || type === 't') && out.length < n - 1) {
      // CONFIG_FUNCTION_PADDING (6.2+): a `__pfx_` symbol on the 16 bytes before each function.
      addr += 0x10n;
      out.push({ name: `__pfx_${dup}`, type, address: addr - 0x10n });
    }
    out.push({ name: dup, type, address: addr });
    addr += BigInt(rnd() < 0.1 ? 0 : 1 + Math.floor(rnd() * 0x200));
  }
  return out;
}
