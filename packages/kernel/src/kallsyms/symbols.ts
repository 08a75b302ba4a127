/**
 * A compact kernel symbol table: names in one latin-1 byte blob, type letters in a Uint8Array,
 * virtual addresses as two Uint32Arrays (hi, lo). 150k symbols cost ~6 MB, not 150k strings and
 * 150k BigInts; BigInts and strings are made only at the API edge (one per call).
 *
 * Used for symbols decoded from memory (kallsyms) and for symbols read from files (System.map,
 * ISF), so both can be compared with the same code.
 */

/** One symbol as returned at the API edge. */
export interface KernelSymbol {
  /** Position in the table (kallsyms order: sorted by address). */
  index: number;
  /** The name exactly as stored (a `.llvm.<n>` suffix, if any, is kept; see `strippedName`). */
  name: string;
  /** nm-style type letter: T t D d R r B b A W V … */
  type: string;
  /** Runtime virtual address (KASLR-shifted when decoded from memory). */
  address: bigint;
}

/** byAddress() result: the symbol at or below the address, and the distance. */
export interface SymbolHit extends KernelSymbol {
  offset: bigint;
}

/** Strip a Clang ThinLTO promotion suffix: `foo.llvm.123456` → `foo`. */
export function stripLlvmSuffix(name: string): string {
  const i = name.indexOf('.llvm.');
  if (i <= 0) return name;
  return /^\.llvm\.\d+$/.test(name.slice(i)) ? name.slice(0, i) : name;
}

const MASK32 = 0xffffffffn;

export function splitAddress(va: bigint): [hi: number, lo: number] {
  const v = BigInt.asUintN(64, va);
  return [Number(v >> 32n), Number(v & MASK32)];
}

export function joinAddress(hi: number, lo: number): bigint {
  return (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0);
}

/** Builder for a SymbolTable; grows its typed arrays geometrically. */
export class SymbolTableBuilder {
  private names: Uint8Array;
  private nameEnd: Uint32Array;
  private types: Uint8Array;
  private hi: Uint32Array;
  private lo: Uint32Array;
  private n = 0;
  private bytes = 0;

  constructor(capacity = 1024, nameBytes = capacity * 24) {
    this.names = new Uint8Array(Math.max(16, nameBytes));
    this.nameEnd = new Uint32Array(Math.max(1, capacity));
    this.types = new Uint8Array(Math.max(1, capacity));
    this.hi = new Uint32Array(Math.max(1, capacity));
    this.lo = new Uint32Array(Math.max(1, capacity));
  }

  get count(): number {
    return this.n;
  }

  /** Append a symbol whose name bytes are `src[start, end)` (latin-1). */
  addBytes(src: Uint8Array, start: number, end: number, type: number, hi: number, lo: number): void {
    const len = end - start;
    this.reserveBytes(len);
    this.names.set(src.subarray(start, end), this.bytes);
    this.bytes += len;
    this.finish(type, hi, lo);
  }

  /** Append a symbol from a JS string (latin-1; other code points are replaced by '?'). */
  add(name: string, type: string, address: bigint): void {
    this.reserveBytes(name.length);
    for (let i = 0; i < name.length; i++) {
      const c = name.charCodeAt(i);
      this.names[this.bytes++] = c < 256 ? c : 0x3f;
    }
    const [hi, lo] = splitAddress(address);
    this.finish(type.charCodeAt(0) || 0x3f, hi, lo);
  }

  /** Reserve room for `len` more name bytes and return the write position (then call commitBytes). */
  reserveBytes(len: number): number {
    if (this.bytes + len > this.names.length) {
      const grown = new Uint8Array(Math.max(this.names.length * 2, this.bytes + len + 1024));
      grown.set(this.names.subarray(0, this.bytes));
      this.names = grown;
    }
    return this.bytes;
  }

  get nameBuffer(): Uint8Array {
    return this.names;
  }

  /** After writing `len` bytes at reserveBytes()'s position: record the symbol. */
  commit(len: number, type: number, hi: number, lo: number): void {
    this.bytes += len;
    this.finish(type, hi, lo);
  }

  private finish(type: number, hi: number, lo: number): void {
    if (this.n === this.nameEnd.length) {
      const cap = this.n * 2;
      this.nameEnd = grow32(this.nameEnd, cap);
      this.hi = grow32(this.hi, cap);
      this.lo = grow32(this.lo, cap);
      const t = new Uint8Array(cap);
      t.set(this.types);
      this.types = t;
    }
    this.nameEnd[this.n] = this.bytes;
    this.types[this.n] = type;
    this.hi[this.n] = hi >>> 0;
    this.lo[this.n] = lo >>> 0;
    this.n++;
  }

  build(): SymbolTable {
    const n = this.n;
    return new SymbolTable(
      this.names.slice(0, this.bytes),
      this.nameEnd.slice(0, n),
      this.types.slice(0, n),
      this.hi.slice(0, n),
      this.lo.slice(0, n),
    );
  }
}

function grow32(a: Uint32Array, cap: number): Uint32Array {
  const b = new Uint32Array(cap);
  b.set(a);
  return b;
}

function fnv1a(bytes: Uint8Array, start: number, end: number): number {
  let h = 0x811c9dc5;
  for (let i = start; i < end; i++) {
    h ^= bytes[i];
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

const latin1 = new TextDecoder('latin1');

export class SymbolTable implements Iterable<KernelSymbol> {
  /** Number of symbols. */
  readonly count: number;
  /** Symbol indices sorted by (address, index); null when the table order is already sorted. */
  private sorted: Uint32Array | null | undefined;
  /** Open-addressing hash: slot → symbol index + 1 (0 = empty); chains in `next`. Built lazily. */
  private hashSlots: Int32Array | undefined;
  private hashNext: Int32Array | undefined;
  private hasLlvm = false;

  constructor(
    /** All names, concatenated (latin-1). */
    readonly nameBytes: Uint8Array,
    /** nameEnd[i] = end of name i in nameBytes; name i starts at nameEnd[i-1] (0 for i = 0). */
    readonly nameEnd: Uint32Array,
    /** Type letter (ASCII code) per symbol. */
    readonly types: Uint8Array,
    /** Address high 32 bits per symbol. */
    readonly addrHi: Uint32Array,
    /** Address low 32 bits per symbol. */
    readonly addrLo: Uint32Array,
  ) {
    this.count = types.length;
  }

  private nameStart(i: number): number {
    return i === 0 ? 0 : this.nameEnd[i - 1];
  }

  name(i: number): string {
    return latin1.decode(this.nameBytes.subarray(this.nameStart(i), this.nameEnd[i]));
  }

  type(i: number): string {
    return String.fromCharCode(this.types[i]);
  }

  address(i: number): bigint {
    return joinAddress(this.addrHi[i], this.addrLo[i]);
  }

  /** Address as a hex string without allocating a BigInt ("0xffffffff81000000"). */
  addressHex(i: number): string {
    const hi = this.addrHi[i];
    const lo = this.addrLo[i].toString(16);
    return hi === 0 ? '0x' + lo : '0x' + hi.toString(16) + lo.padStart(8, '0');
  }

  symbol(i: number): KernelSymbol {
    if (!Number.isInteger(i) || i < 0 || i >= this.count) throw new RangeError(`symbol index ${i} out of range`);
    return { index: i, name: this.name(i), type: this.type(i), address: this.address(i) };
  }

  *[Symbol.iterator](): Iterator<KernelSymbol> {
    for (let i = 0; i < this.count; i++) yield this.symbol(i);
  }

  /** Iterate without BigInt/object allocation: fn(index, hi, lo, typeCode). */
  forEachRaw(fn: (i: number, hi: number, lo: number, type: number) => void): void {
    for (let i = 0; i < this.count; i++) fn(i, this.addrHi[i], this.addrLo[i], this.types[i]);
  }

  // ---- name lookup ---------------------------------------------------------------------------

  /** Length of name i without a `.llvm.<digits>` suffix. */
  private strippedLen(i: number): number {
    const s = this.nameStart(i);
    const e = this.nameEnd[i];
    const b = this.nameBytes;
    // scan back over digits, then require ".llvm."
    let j = e;
    while (j > s && b[j - 1] >= 0x30 && b[j - 1] <= 0x39) j--;
    if (j === e || j - s < 7) return e - s;
    // ".llvm." is 6 bytes ending at j
    const k = j - 6;
    if (
      b[k] === 0x2e &&
      b[k + 1] === 0x6c &&
      b[k + 2] === 0x6c &&
      b[k + 3] === 0x76 &&
      b[k + 4] === 0x6d &&
      b[k + 5] === 0x2e &&
      k > s
    )
      return k - s;
    return e - s;
  }

  private buildHash(): void {
    const n = this.count;
    let size = 1;
    while (size < n * 2) size <<= 1;
    const slots = new Int32Array(size);
    const next = new Int32Array(n);
    const mask = size - 1;
    for (let i = n - 1; i >= 0; i--) {
      const s = this.nameStart(i);
      const len = this.strippedLen(i);
      if (len !== this.nameEnd[i] - s) this.hasLlvm = true;
      const h = fnv1a(this.nameBytes, s, s + len) & mask;
      next[i] = slots[h] - 1;
      slots[h] = i + 1;
    }
    this.hashSlots = slots;
    this.hashNext = next;
  }

  /**
   * All symbols named `name`, in table order. A name can occur more than once (static functions of
   * several files). Matches the stored name, or the name with its `.llvm.<n>` suffix stripped.
   */
  lookup(name: string): KernelSymbol[] {
    return this.lookupIndices(name).map((i) => this.symbol(i));
  }

  /** Indices of all symbols named `name` (see lookup). */
  lookupIndices(name: string): number[] {
    if (!this.hashSlots) this.buildHash();
    const key = new Uint8Array(name.length);
    for (let i = 0; i < name.length; i++) {
      const c = name.charCodeAt(i);
      if (c > 255) return [];
      key[i] = c;
    }
    const keyStripped = stripLlvmSuffix(name);
    const exactOnly = keyStripped !== name; // query carries its own suffix: compare full names
    const probe = exactOnly ? new Uint8Array(Buffer.from(keyStripped, 'latin1')) : key;
    const slots = this.hashSlots!;
    const next = this.hashNext!;
    const h = fnv1a(probe, 0, probe.length) & (slots.length - 1);
    const out: number[] = [];
    for (let i = slots[h] - 1; i >= 0; i = next[i]) {
      const s = this.nameStart(i);
      const e = this.nameEnd[i];
      const len = this.strippedLen(i);
      if (exactOnly) {
        if (e - s === key.length && bytesEqual(this.nameBytes, s, key)) out.push(i);
      } else if (len === key.length && bytesEqual(this.nameBytes, s, key)) out.push(i);
    }
    return out;
  }

  /** First symbol named `name` (or undefined). */
  get(name: string): KernelSymbol | undefined {
    const ix = this.lookupIndices(name);
    return ix.length > 0 ? this.symbol(ix[0]) : undefined;
  }

  /** Address of the first symbol named `name`; throws when absent. */
  addressOf(name: string): bigint {
    const ix = this.lookupIndices(name);
    if (ix.length === 0) throw new RangeError(`no symbol named ${name}`);
    return this.address(ix[0]);
  }

  /** True when some name carries a `.llvm.<n>` suffix (known after the first lookup). */
  get hasLlvmSuffixes(): boolean {
    if (!this.hashSlots) this.buildHash();
    return this.hasLlvm;
  }

  // ---- address lookup ------------------------------------------------------------------------

  private order(): Uint32Array | null {
    if (this.sorted !== undefined) return this.sorted;
    const hi = this.addrHi;
    const lo = this.addrLo;
    let isSorted = true;
    for (let i = 1; i < this.count; i++) {
      if (hi[i] < hi[i - 1] || (hi[i] === hi[i - 1] && lo[i] < lo[i - 1])) {
        isSorted = false;
        break;
      }
    }
    if (isSorted) {
      this.sorted = null;
      return null;
    }
    const idx = new Uint32Array(this.count);
    for (let i = 0; i < idx.length; i++) idx[i] = i;
    idx.sort((a, b) => hi[a] - hi[b] || lo[a] - lo[b] || a - b);
    this.sorted = idx;
    return idx;
  }

  /**
   * The symbol at or below `va` (and the offset from it), for symbolizing addresses. Among symbols
   * sharing one address the first in table order wins (as the kernel's own lookup does). Returns
   * undefined below the lowest symbol or when `maxOffset` is exceeded.
   */
  byAddress(va: bigint, maxOffset?: bigint): SymbolHit | undefined {
    const [qh, ql] = splitAddress(va);
    const ord = this.order();
    const hi = this.addrHi;
    const lo = this.addrLo;
    const at = (k: number): number => (ord ? ord[k] : k);
    // last position k with addr(at(k)) <= va
    let a = 0;
    let b = this.count - 1;
    let best = -1;
    while (a <= b) {
      const m = (a + b) >>> 1;
      const i = at(m);
      if (hi[i] < qh || (hi[i] === qh && lo[i] <= ql)) {
        best = m;
        a = m + 1;
      } else b = m - 1;
    }
    if (best < 0) return undefined;
    const bi = at(best);
    while (best > 0) {
      const p = at(best - 1);
      if (hi[p] !== hi[bi] || lo[p] !== lo[bi]) break;
      best--;
    }
    const i = at(best);
    const sym = this.symbol(i);
    const offset = BigInt.asUintN(64, va) - sym.address;
    if (maxOffset !== undefined && offset > maxOffset) return undefined;
    return { ...sym, offset };
  }

  /** "name+0x1a" for an address (or the hex address when nothing is at or below it). */
  symbolize(va: bigint, maxOffset?: bigint): string {
    const hit = this.byAddress(va, maxOffset);
    if (!hit) return '0x' + BigInt.asUintN(64, va).toString(16);
    return hit.offset === 0n ? hit.name : `${hit.name}+0x${hit.offset.toString(16)}`;
  }

  /** Byte size of the typed arrays (for reports). */
  get storageBytes(): number {
    return (
      this.nameBytes.byteLength +
      this.nameEnd.byteLength +
      this.types.byteLength +
      this.addrHi.byteLength +
      this.addrLo.byteLength
    );
  }
}

function bytesEqual(a: Uint8Array, start: number, key: Uint8Array): boolean {
  for (let i = 0; i < key.length; i++) if (a[start + i] !== key[i]) return false;
  return true;
}
