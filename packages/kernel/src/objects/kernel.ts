/**
 * Typed kernel-object access: layouts resolved once from BTF, batched struct reads through the
 * kernel's page tables, globals (kallsyms address + a type table), per-CPU variables and bounded
 * list/hlist/rb-tree walks. See packages/kernel/README-objects.md.
 */
import { PmiError } from '@pmi/core';
import type { Btf, TypeRef } from '../btf/btf.js';
import type { SymbolTable } from '../kallsyms/symbols.js';
import type { X86Paging, VirtualOp } from '../paging/x86.js';
import { vaHex } from '../paging/va.js';
import { ORIGIN, nullPointer, usage } from './errors.js';
import { GLOBAL_TYPES, type GlobalSpec } from './globals.js';
import { FieldKind, Layout, scalarOf, type LayoutOptions, type Scalar } from './layout.js';
import { ArrayView, StructView, decodeInt, wholeLayout, type Arena } from './view.js';
import {
  collectList,
  walkHlist,
  walkList,
  walkRbTree,
  type ListResult,
  type WalkOptions,
  type HlistOptions,
} from './walk.js';

export interface KernelObjectsInit {
  paging: X86Paging;
  btf: Btf;
  symbols: SymbolTable;
}

/** A global resolved through the table: where it is and what it holds. */
export interface GlobalInfo {
  readonly name: string;
  /** The symbol actually found (an alias when the name itself is missing). */
  readonly symbol: string;
  readonly va: bigint;
  readonly shape: 'object' | 'pointer' | 'array';
  /** BTF type id of the variable / pointee / element (0 for untyped pointers). */
  readonly typeId: number;
  readonly typeName: string;
  /** Decoding of the variable (object), the pointer (pointer) or one element (array). */
  readonly scalar: Scalar;
  /** Bytes of the variable (object), 8 (pointer) or of one element (array). */
  readonly size: number;
  readonly count?: number;
}

/** Where a per-CPU variable is (offset in the per-CPU section) and how it is typed. */
export interface PercpuVarInfo {
  readonly name: string;
  /** Offset from `__per_cpu_start`. */
  readonly offset: bigint;
  /** BTF type id of the variable; 0 when unknown (BTF without per-CPU VARs, name not in PERCPU_TYPES). */
  readonly typeId: number;
  /** Bytes (0 when unknown). */
  readonly size: number;
  /** 'btf': a VAR of the `.data..percpu` DATASEC; 'kallsyms': the symbol (BTF has no such VAR). */
  readonly source: 'btf' | 'kallsyms';
  /** Known to be a pointer (PERCPU_TYPES '*') when found through kallsyms. */
  readonly pointer?: boolean;
}

/** Largest NR_CPUS on x86-64 (MAXSMP). */
export const MAX_NR_CPUS = 8192;

/**
 * Types of well-known per-CPU variables, used when BTF has no `.data..percpu` VARs (pahole before
 * 1.18, e.g. Debian's 5.10): the address then comes from kallsyms. '*' = a pointer.
 */
export const PERCPU_TYPES: Readonly<Record<string, string>> = {
  runqueues: 'rq',
  current_task: '*',
  pcpu_hot: 'pcpu_hot',
  cpu_number: 'int',
  this_cpu_off: 'long unsigned int',
  hardirq_stack_ptr: '*',
  cpu_current_top_of_stack: 'long unsigned int',
};

/** The CPU ids set in a cpumask bitmap (little-endian unsigned longs), below `nbits`. */
export function cpumaskBits(bytes: Uint8Array, nbits: number): number[] {
  const out: number[] = [];
  const n = Math.min(nbits, bytes.length * 8);
  for (let i = 0; i < n; i++) if ((bytes[i >> 3] >> (i & 7)) & 1) out.push(i);
  return out;
}

/** Most bytes of object records one readVirtualBatch carries (larger batches are split). */
const MAX_ARENA = 16 << 20;

const PTR_SCALAR: Scalar = {
  kind: FieldKind.PTR,
  size: 8,
  signed: false,
  bool: false,
  bitShift: 0,
  bitSize: 0,
  type: 0,
  resolved: 0,
};

export class KernelObjects {
  readonly paging: X86Paging;
  readonly btf: Btf;
  readonly symbols: SymbolTable;
  private readonly layouts = new Map<string, Layout>();
  private readonly globalSpecs = new Map<string, GlobalSpec>(Object.entries(GLOBAL_TYPES));
  private readonly globalCache = new Map<string, GlobalInfo>();
  private perCpuOffsets?: bigint[];
  private possibleCache?: number[];
  private readonly percpuVars = new Map<string, PercpuVarInfo>();

  constructor(init: KernelObjectsInit) {
    this.paging = init.paging;
    this.btf = init.btf;
    this.symbols = init.symbols;
  }

  /** From discoverKernel()'s result (needs its BTF). */
  static from(k: { paging: X86Paging; btf?: Btf; symbols: SymbolTable }): KernelObjects {
    if (!k.btf) throw new PmiError('E_NOT_FOUND', ORIGIN, 'typed objects need BTF (discovery ran without types)', {});
    return new KernelObjects({ paging: k.paging, btf: k.btf, symbols: k.symbols });
  }

  // ------------------------------------------------------------------ types and layouts

  /**
   * Resolve a struct's fields once. Without `fields` the whole struct is read and any field can be
   * used; with `fields` only the span covering them is read, and paths through pointers
   * (`mm.pgd`, `cred.uid`) are followed by readStructs in one extra batch per pointer level.
   * A trailing `?` marks an optional field (absent in this kernel → skipped; `has()` tells).
   * Cached per (type, fields).
   */
  layout(type: TypeRef, fields?: readonly string[], opts: LayoutOptions = {}): Layout {
    const key = `${String(type)}|${fields ? fields.join(',') : '*'}|${opts.whole ? 1 : 0}`;
    let l = this.layouts.get(key);
    if (!l) {
      l = fields === undefined ? wholeLayout(this.btf, this.typeId(type)) : new Layout(this.btf, type, fields, opts);
      this.layouts.set(key, l);
    }
    return l;
  }

  private typeId(type: TypeRef): number {
    if (typeof type === 'number') return type;
    const id = this.btf.findType(type, 'struct') ?? this.btf.findType(type, 'union') ?? this.btf.findType(type);
    if (id === undefined) throw new PmiError('E_NOT_FOUND', ORIGIN, `BTF has no type '${type}'`, { type });
    return id;
  }

  hasType(name: string): boolean {
    return this.btf.findType(name) !== undefined;
  }

  hasField(type: TypeRef, path: string): boolean {
    return this.btf.findType(String(type)) !== undefined && this.btf.hasField(type, path);
  }

  /** container_of(memberVa, type, member). */
  containerOf(memberVa: bigint, T: Layout, member: string): bigint {
    return T.containerOf(memberVa, member);
  }

  // ------------------------------------------------------------------ reads

  /** Read one object; throws the read error (E_PAGE_FAULT / source error) naming the struct and VA. */
  async read(va: bigint, T: Layout): Promise<StructView> {
    const [r] = await this.readStructs([va], T);
    if (r instanceof PmiError) throw r;
    return r;
  }

  /**
   * Read many objects: one readVirtualBatch for all root spans, then one per pointer level of the
   * layout (`cred.uid` → +1). Each result is a view or the PmiError for that object; a NULL or
   * unreadable pointer only affects the fields behind it (`view.reached(field)`).
   */
  async readStructs(vas: readonly bigint[], T: Layout): Promise<(StructView | PmiError)[]> {
    const per = Math.max(1, Math.floor(MAX_ARENA / T.stride));
    if (vas.length <= per) return this.readChunk(vas, T);
    const out: (StructView | PmiError)[] = [];
    for (let i = 0; i < vas.length; i += per) out.push(...(await this.readChunk(vas.slice(i, i + per), T)));
    return out;
  }

  private async readChunk(vas: readonly bigint[], T: Layout): Promise<(StructView | PmiError)[]> {
    const n = vas.length;
    const stride = T.stride;
    const bytes = Buffer.alloc(n * stride);
    const arena: Arena = { bytes, dv: new DataView(bytes.buffer, bytes.byteOffset, bytes.length) };
    const rootLen = T.end - T.start;
    const rootErr: (PmiError | undefined)[] = new Array(n);
    if (rootLen > 0) {
      const ops: VirtualOp[] = new Array(n);
      for (let i = 0; i < n; i++)
        ops[i] = { va: vas[i] + T.startN, buf: bytes.subarray(i * stride, i * stride + rootLen) };
      for (const f of await this.paging.readVirtualBatch(ops)) rootErr[f.index] = objectError(T, vas[f.index], f.error);
    }
    // pointer hops, level by level
    const hops = T.hops;
    let hopErr: (PmiError | undefined)[][] | undefined;
    if (hops.length > 0) {
      hopErr = new Array(n);
      const dv = arena.dv;
      for (let level = 1; level <= T.depth; level++) {
        const ops: VirtualOp[] = [];
        const who: number[] = [];
        // Objects often point at the same thing (threads share mm, signal and cred; siblings share a
        // parent): each distinct target of a hop is read once and copied to the others.
        const dupOf: number[] = [];
        const dupWho: number[] = [];
        const dupBuf: Buffer[] = [];
        for (let h = 0; h < hops.length; h++) {
          const hop = hops[h];
          if (hop.level !== level) continue;
          const seen = new Map<bigint, number>();
          const parentBase = hop.parent < 0 ? -T.start : hops[hop.parent].pos - hops[hop.parent].start;
          const len = hop.end - hop.start;
          for (let i = 0; i < n; i++) {
            if (rootErr[i]) continue;
            const errs = (hopErr[i] ??= []);
            if (hop.parent >= 0 && errs[hop.parent]) {
              errs[h] = errs[hop.parent];
              continue;
            }
            const p = i * stride + parentBase + hop.ptrOffset;
            const lo = dv.getUint32(p, true);
            const hi = dv.getUint32(p + 4, true);
            if (lo === 0 && hi === 0) {
              errs[h] = nullPointer(T.name, hop.path, vas[i]);
              continue;
            }
            if (len === 0) continue;
            const target = ((BigInt(hi) << 32n) | BigInt(lo)) + BigInt(hop.start);
            const buf = bytes.subarray(i * stride + hop.pos, i * stride + hop.pos + len);
            const first = seen.get(target);
            if (first !== undefined) {
              dupOf.push(first);
              dupWho.push(i * hops.length + h);
              dupBuf.push(buf);
              continue;
            }
            seen.set(target, ops.length);
            ops.push({ va: target, buf });
            who.push(i * hops.length + h);
          }
        }
        if (ops.length === 0) continue;
        const failed: (PmiError | undefined)[] = [];
        for (const f of await this.paging.readVirtualBatch(ops)) failed[f.index] = f.error;
        const report = (k: number, e: PmiError): void => {
          const i = Math.floor(k / hops.length);
          const h = k % hops.length;
          hopErr![i][h] = new PmiError(
            e.code,
            e.origin,
            `${T.name} at ${vaHex(vas[i])}: '${hops[h].path}': ${e.message}`,
            {
              ...e.data,
              struct: T.name,
              field: hops[h].path,
              object: vaHex(vas[i]),
            },
          );
        };
        failed.forEach((e, op) => {
          if (e) report(who[op], e);
        });
        for (let d = 0; d < dupOf.length; d++) {
          const e = failed[dupOf[d]];
          if (e) report(dupWho[d], e);
          else dupBuf[d].set(ops[dupOf[d]].buf);
        }
      }
    }
    const out: (StructView | PmiError)[] = new Array(n);
    for (let i = 0; i < n; i++) {
      const e = rootErr[i];
      if (e) out[i] = e;
      else {
        const errs = hopErr?.[i];
        out[i] = new StructView(T, vas[i], arena, i * stride, errs && errs.length ? errs : undefined);
      }
    }
    return out;
  }

  /** Raw bytes at a virtual address. */
  async readBytes(va: bigint, len: number): Promise<Uint8Array> {
    return this.paging.readVirtual(va, len);
  }

  /** u64 values (pointers) at va. */
  async readPointers(va: bigint, count: number): Promise<bigint[]> {
    const b = await this.paging.readVirtual(va, count * 8);
    const dv = new DataView(b.buffer, b.byteOffset, b.length);
    const out: bigint[] = new Array(count);
    for (let i = 0; i < count; i++) out[i] = dv.getBigUint64(i * 8, true);
    return out;
  }

  async readPointer(va: bigint): Promise<bigint> {
    return (await this.readPointers(va, 1))[0];
  }

  /**
   * A NUL-terminated string behind a `char *` (UTF-8), at most `max` bytes. Reads page by page so
   * a string ending just before an unmapped page is still read.
   */
  async readString(va: bigint, max = 4096): Promise<string> {
    const parts: Buffer[] = [];
    let got = 0;
    let cur = va;
    while (got < max) {
      const inPage = 4096 - Number(BigInt.asUintN(64, cur) & 0xfffn);
      const len = Math.min(inPage, max - got);
      const b = Buffer.from(await this.paging.readVirtual(cur, len));
      const nul = b.indexOf(0);
      if (nul >= 0) {
        parts.push(b.subarray(0, nul));
        break;
      }
      parts.push(b);
      got += len;
      cur += BigInt(len);
    }
    return Buffer.concat(parts).toString('utf8');
  }

  // ------------------------------------------------------------------ symbols and globals

  /** Address of a kallsyms symbol; E_NOT_FOUND when missing. */
  symbol(name: string): bigint {
    const s = this.symbols.get(name);
    if (!s) throw new PmiError('E_NOT_FOUND', ORIGIN, `no symbol '${name}' in the kernel's symbol table`, { name });
    return s.address;
  }

  /** Add or replace a global's type (views with their own globals). */
  defineGlobal(name: string, spec: GlobalSpec): void {
    this.globalSpecs.set(name, spec);
    this.globalCache.delete(name);
  }

  /** The type table entry of a global, if any. */
  globalSpec(name: string): GlobalSpec | undefined {
    return this.globalSpecs.get(name);
  }

  /** Is the global known to the table, present in kallsyms and its type in BTF (feature detection)? */
  hasGlobal(name: string): boolean {
    try {
      this.globalInfoSync(name);
      return true;
    } catch (e) {
      if (e instanceof PmiError && e.code === 'E_NOT_FOUND') return false;
      throw e;
    }
  }

  private globalInfoSync(name: string, count?: number): GlobalInfo {
    const hit = this.globalCache.get(name);
    if (hit) return hit;
    const spec = this.globalSpecs.get(name);
    if (!spec)
      throw new PmiError(
        'E_NOT_FOUND',
        ORIGIN,
        `global '${name}' is not in the globals type table (BTF has no types for ordinary globals): add it with defineGlobal()`,
        { name },
      );
    let symbol = name;
    let s = this.symbols.get(name);
    for (const a of spec.aliases ?? []) {
      if (s) break;
      s = this.symbols.get(a);
      symbol = a;
    }
    if (!s)
      throw new PmiError('E_NOT_FOUND', ORIGIN, `no symbol '${name}' in the kernel's symbol table`, {
        name,
        tried: [name, ...(spec.aliases ?? [])],
      });
    const shape = spec.shape ?? 'object';
    let typeId = 0;
    let elem: Scalar = PTR_SCALAR;
    let elemSize = 8;
    if (spec.type !== '*') {
      const id =
        this.btf.findType(spec.type, 'struct') ?? this.btf.findType(spec.type, 'union') ?? this.btf.findType(spec.type);
      if (id === undefined)
        throw new PmiError('E_NOT_FOUND', ORIGIN, `global '${name}': BTF has no type '${spec.type}'`, {
          name,
          type: spec.type,
        });
      typeId = id;
      elem = scalarOf(this.btf, id);
      elemSize = this.btf.sizeOf(id);
    }
    let info: GlobalInfo;
    if (shape === 'array') {
      let n = count;
      if (n === undefined) {
        if (typeof spec.count === 'number') n = spec.count;
        else if (spec.count === 'symbol') n = this.symbolSpan(s.address, elemSize, spec.maxCount ?? 65536);
        else if (spec.count !== undefined)
          throw usage(`global '${name}' is sized by '${spec.count}': use globalArray()`, { name });
        else throw usage(`global '${name}' is an array without a count`, { name });
      }
      info = {
        name,
        symbol,
        va: s.address,
        shape,
        typeId,
        typeName: spec.type,
        scalar: elem,
        size: elemSize,
        count: n,
      };
    } else if (shape === 'pointer') {
      info = { name, symbol, va: s.address, shape, typeId, typeName: spec.type, scalar: PTR_SCALAR, size: 8 };
    } else {
      info = { name, symbol, va: s.address, shape, typeId, typeName: spec.type, scalar: elem, size: elemSize };
    }
    if (count === undefined) this.globalCache.set(name, info);
    return info;
  }

  /** Elements between a symbol and the nearest symbol at a higher address (any table order). */
  private symbolSpan(address: bigint, elemSize: number, max: number): number {
    const u = BigInt.asUintN(64, address);
    const ahi = Number(u >> 32n);
    const alo = Number(u & 0xffffffffn);
    let bhi = Infinity;
    let blo = Infinity;
    this.symbols.forEachRaw((_i, hi, lo) => {
      if (hi < ahi || (hi === ahi && lo <= alo)) return;
      if (hi < bhi || (hi === bhi && lo < blo)) {
        bhi = hi;
        blo = lo;
      }
    });
    if (bhi === Infinity) return max;
    const dist = (bhi - ahi) * 4294967296 + (blo - alo);
    return Math.max(1, Math.min(max, Math.floor(dist / elemSize)));
  }

  /** Where a global is and how it is typed (array counts held in other globals are read). */
  async globalInfo(name: string): Promise<GlobalInfo> {
    const spec = this.globalSpecs.get(name);
    if (spec?.shape === 'array' && typeof spec.count === 'string' && spec.count !== 'symbol') {
      const n = Number(await this.globalValue(spec.count));
      return this.globalInfoSync(name, n);
    }
    return this.globalInfoSync(name);
  }

  /**
   * A struct global as a view: `global('init_task')`, `global('modules')` (a list_head). Pointer
   * globals to structs are followed (`global('prb')` → the printk_ringbuffer it points to).
   * With a layout, only its fields are read.
   */
  async global(name: string, T?: Layout): Promise<StructView> {
    const g = await this.globalInfo(name);
    const target = g.typeId ? scalarOf(this.btf, g.typeId) : undefined;
    if (g.shape === 'array' || !target || target.kind !== FieldKind.STRUCT)
      throw usage(
        `global '${name}' is ${g.shape === 'array' ? 'an array: use globalArray()' : 'not a struct: use globalValue()'}`,
        { name },
      );
    const layout = T ?? this.layout(g.typeId);
    let va = g.va;
    if (g.shape === 'pointer') {
      va = await this.readPointer(g.va);
      if (va === 0n) throw nullPointer('(global)', name, g.va);
    }
    return this.read(va, layout);
  }

  /** An integer/pointer global: `globalValue('page_offset_base')`, `globalValue('prb')` (the pointer). */
  async globalValue(name: string): Promise<number | bigint> {
    const g = this.globalInfoSync(name);
    if (g.shape === 'array') throw usage(`global '${name}' is an array: use globalArray()`, { name });
    const s = g.scalar;
    if (s.kind === FieldKind.STRUCT) {
      // atomic_long_t and friends: a struct wrapping one integer
      const ms = this.btf.members(s.resolved);
      if (ms.length === 1) {
        const inner = scalarOf(this.btf, ms[0].type);
        if (inner.kind === FieldKind.INT || inner.kind === FieldKind.ENUM) {
          const b = await this.paging.readVirtual(g.va + BigInt(ms[0].bitOffset / 8), inner.size);
          return decodeInt(new DataView(b.buffer, b.byteOffset, b.length), 0, inner);
        }
      }
      throw usage(`global '${name}' is a struct: use global()`, { name });
    }
    if (s.kind !== FieldKind.INT && s.kind !== FieldKind.ENUM && s.kind !== FieldKind.PTR)
      throw usage(`global '${name}' is not an integer or pointer`, { name });
    const b = await this.paging.readVirtual(g.va, s.size);
    return decodeInt(new DataView(b.buffer, b.byteOffset, b.length), 0, s);
  }

  /** An array global: `globalArray('idt_table').struct(0x80)`, `globalArray('sys_call_table').ptr(0)`. */
  async globalArray(name: string): Promise<ArrayView> {
    const g = await this.globalInfo(name);
    if (g.shape !== 'array') throw usage(`global '${name}' is not an array`, { name });
    const n = g.count ?? 0;
    const bytes = Buffer.from(await this.paging.readVirtual(g.va, n * g.size));
    return new ArrayView(
      g.va,
      n,
      g.scalar,
      g.size,
      { bytes, dv: new DataView(bytes.buffer, bytes.byteOffset, bytes.length) },
      this.btf,
    );
  }

  // ------------------------------------------------------------------ per-CPU

  /**
   * `nr_cpu_ids`: CPU ids are below it. Checked against MAX_NR_CPUS (x86-64's largest NR_CPUS) and the
   * room `__per_cpu_offset[]` has up to the next symbol, so a corrupt value never sizes a huge read.
   */
  async nrCpuIds(): Promise<number> {
    const n = Number(await this.globalValue('nr_cpu_ids'));
    const arr = this.symbols.get('__per_cpu_offset');
    const room = arr ? this.symbolSpan(arr.address, 8, MAX_NR_CPUS) : MAX_NR_CPUS;
    if (!Number.isInteger(n) || n < 1 || n > MAX_NR_CPUS || n > room)
      throw new PmiError(
        'E_NOT_FOUND',
        ORIGIN,
        `nr_cpu_ids is ${n}: not a CPU count (1..${Math.min(MAX_NR_CPUS, room)}, the room of __per_cpu_offset[])`,
        { name: 'nr_cpu_ids', value: n, max: Math.min(MAX_NR_CPUS, room) },
      );
    return n;
  }

  /** `__per_cpu_offset[0 .. nr_cpu_ids)`, read once (per-CPU areas never move). */
  async cpuOffsets(): Promise<readonly bigint[]> {
    if (!this.perCpuOffsets) {
      const n = await this.nrCpuIds();
      const a = await this.readPointers(this.symbol('__per_cpu_offset'), n);
      this.perCpuOffsets = a;
    }
    return this.perCpuOffsets;
  }

  /** nr_cpu_ids. */
  async cpuCount(): Promise<number> {
    return (await this.cpuOffsets()).length;
  }

  /**
   * A CPU mask as the sorted CPU ids set in it (below nr_cpu_ids): `possible` (`__cpu_possible_mask`, fixed
   * at boot, cached), `online` (`__cpu_online_mask`), `present`, `active`. The bitmap is the
   * `__cpu_<kind>_mask` symbol (4.5+), else `cpu_<kind>_bits` (older bitmap), else the `cpu_<kind>_mask`
   * pointer of kernels before 4.5. E_NOT_FOUND names every symbol tried.
   */
  async cpuMask(kind: 'possible' | 'online' | 'present' | 'active'): Promise<number[]> {
    if (kind === 'possible' && this.possibleCache) return this.possibleCache;
    const n = await this.nrCpuIds();
    const bytes = Math.ceil(n / 64) * 8;
    let va: bigint | undefined;
    const tried = [`__cpu_${kind}_mask`, `cpu_${kind}_bits`, `cpu_${kind}_mask`];
    for (const name of tried.slice(0, 2)) {
      va ??= this.symbols.get(name)?.address;
    }
    if (va === undefined) {
      const p = this.symbols.get(tried[2]);
      if (p) va = await this.readPointer(p.address); // `const struct cpumask *const` before 4.5
    }
    if (va === undefined)
      throw new PmiError('E_NOT_FOUND', ORIGIN, `no ${kind} CPU mask: none of ${tried.join(', ')} in kallsyms`, {
        name: `cpu_${kind}_mask`,
        tried,
      });
    const cpus = cpumaskBits(await this.readBytes(va, bytes), n);
    if (kind === 'possible') this.possibleCache = cpus;
    return cpus;
  }

  /** CPUs that may ever run (`cpu_possible_mask`): each has a per-CPU area. */
  possibleCpus(): Promise<number[]> {
    return this.cpuMask('possible');
  }

  /** CPUs online now (`cpu_online_mask`; read each time — CPUs come and go on a live source). */
  onlineCpus(): Promise<number[]> {
    return this.cpuMask('online');
  }

  /**
   * Where a per-CPU variable is in the per-CPU section (offset from `__per_cpu_start`) and its type:
   * the BTF VAR of `.data..percpu` when BTF has one; else the kallsyms symbol (x86-64's zero-based per-CPU
   * symbols are absolute 'A' offsets with `__per_cpu_start` = 0; kernels linking per-CPU symbols at
   * real addresses give `symbol − __per_cpu_start` — the same formula) and the type from PERCPU_TYPES
   * (0 when unknown: the caller must give one). E_NOT_FOUND names the variable and what was missing.
   */
  percpuVar(name: string): PercpuVarInfo {
    const hit = this.percpuVars.get(name);
    if (hit) return hit;
    let info: PercpuVarInfo;
    const v = this.btf.findVar(name, '.data..percpu');
    if (v) {
      info = { name, offset: BigInt(v.offset), typeId: v.type, size: v.size, source: 'btf' };
    } else {
      const s = this.symbols.get(name);
      const hasDatasec = this.btf.findType('.data..percpu') !== undefined;
      const why = hasDatasec ? "not in BTF's .data..percpu" : 'this BTF has no .data..percpu DATASEC';
      if (!s)
        throw new PmiError('E_NOT_FOUND', ORIGIN, `per-CPU variable '${name}': ${why} and no kallsyms symbol`, {
          name,
          tried: ['btf:.data..percpu', 'kallsyms'],
        });
      const start = this.symbols.get('__per_cpu_start')?.address ?? 0n;
      const end = this.symbols.get('__per_cpu_end')?.address;
      const offset = BigInt.asUintN(64, s.address - start);
      if (end !== undefined && offset >= BigInt.asUintN(64, end - start))
        throw new PmiError(
          'E_NOT_FOUND',
          ORIGIN,
          `per-CPU variable '${name}': ${why}, and kallsyms '${name}' at ${vaHex(s.address)} is outside the per-CPU section [${vaHex(start)}, ${vaHex(end)})`,
          { name, address: vaHex(s.address), per_cpu_start: vaHex(start), per_cpu_end: vaHex(end) },
        );
      const known = PERCPU_TYPES[name];
      let typeId = 0;
      if (known && known !== '*') typeId = this.typeIdOrZero(known);
      info = {
        name,
        offset,
        typeId,
        size: typeId ? this.btf.sizeOf(typeId) : known === '*' ? 8 : 0,
        source: 'kallsyms',
        pointer: known === '*',
      };
    }
    this.percpuVars.set(name, info);
    return info;
  }

  /** Is there a per-CPU variable of this name (BTF VAR or a kallsyms symbol inside the per-CPU section)? */
  hasPercpu(name: string): boolean {
    try {
      this.percpuVar(name);
      return true;
    } catch (e) {
      if (e instanceof PmiError && e.code === 'E_NOT_FOUND') return false;
      throw e;
    }
  }

  private typeIdOrZero(name: string): number {
    return this.btf.findType(name, 'struct') ?? this.btf.findType(name, 'union') ?? this.btf.findType(name) ?? 0;
  }

  /**
   * Address of a per-CPU variable on a CPU: `__per_cpu_start + offset + __per_cpu_offset[cpu]`
   * (see percpuVar for the offset). The CPU must be below nr_cpu_ids and possible (an impossible CPU has
   * no per-CPU area of its own).
   */
  async percpuAddress(name: string, cpu: number): Promise<bigint> {
    const v = this.percpuVar(name);
    const offs = await this.cpuOffsets();
    if (!Number.isInteger(cpu) || cpu < 0 || cpu >= offs.length)
      throw usage(`per-CPU '${name}': cpu ${cpu} out of range (nr_cpu_ids ${offs.length})`, { name, cpu });
    let possible: number[] | undefined;
    try {
      possible = await this.possibleCpus();
    } catch {
      possible = undefined; // no mask: nr_cpu_ids bounds it
    }
    if (possible && !possible.includes(cpu))
      throw usage(`per-CPU '${name}': cpu ${cpu} is not a possible CPU (possible: ${possible.join(',')})`, {
        name,
        cpu,
      });
    const start = this.symbols.get('__per_cpu_start')?.address ?? 0n;
    return BigInt.asUintN(64, start + v.offset + offs[cpu]);
  }

  /**
   * A struct per-CPU variable as a view (`percpu('runqueues', 0)`). `T` (a layout or a type name) is
   * needed when the type is not known: BTF without per-CPU VARs and a variable not in PERCPU_TYPES.
   */
  async percpu(name: string, cpu: number, T?: Layout | TypeRef): Promise<StructView> {
    const v = this.percpuVar(name);
    let layout: Layout;
    if (T instanceof Layout) layout = T;
    else if (T !== undefined) layout = this.layout(T);
    else {
      if (!v.typeId || v.pointer)
        throw new PmiError(
          'E_NOT_FOUND',
          ORIGIN,
          `per-CPU variable '${name}': no type (${v.source === 'kallsyms' ? 'no BTF VAR, found in kallsyms' : 'BTF VAR without a struct type'}): pass a layout, percpu('${name}', cpu, k.layout('TYPE', [...]))`,
          { name, source: v.source },
        );
      layout = this.layout(this.btf.resolve(v.typeId));
    }
    return this.read(await this.percpuAddress(name, cpu), layout);
  }

  /**
   * An integer/pointer per-CPU variable (`percpuValue('current_task', 0)`). `type` ('pointer' or an
   * integer type name/id) is needed when the type is not known (see percpu).
   */
  async percpuValue(name: string, cpu: number, type?: TypeRef | 'pointer'): Promise<number | bigint> {
    const v = this.percpuVar(name);
    let s: Scalar;
    if (type === 'pointer' || (type === undefined && v.pointer)) s = PTR_SCALAR;
    else if (type !== undefined) s = scalarOf(this.btf, this.typeId(type));
    else if (v.typeId) s = scalarOf(this.btf, v.typeId);
    else
      throw new PmiError(
        'E_NOT_FOUND',
        ORIGIN,
        `per-CPU variable '${name}': no type (no BTF VAR, found in kallsyms): pass one, percpuValue('${name}', cpu, 'pointer' | 'unsigned int' | …)`,
        { name, source: v.source },
      );
    if (s.kind !== FieldKind.INT && s.kind !== FieldKind.ENUM && s.kind !== FieldKind.PTR)
      throw usage(`per-CPU '${name}' is not an integer or pointer: use percpu()`, { name });
    const b = await this.paging.readVirtual(await this.percpuAddress(name, cpu), s.size);
    return decodeInt(new DataView(b.buffer, b.byteOffset, b.length), 0, s);
  }

  /**
   * Where the kernel keeps each CPU's current task: the per-CPU `current_task` (up to 6.1, and again
   * from 6.15) or `pcpu_hot.current_task` (6.2–6.14). Decided by what exists (BTF VAR / kallsyms),
   * never by version; E_NOT_FOUND when neither does.
   */
  currentTaskSource(): 'current_task' | 'pcpu_hot.current_task' {
    if (this.hasPercpu('current_task')) return 'current_task';
    if (this.hasPercpu('pcpu_hot') && this.hasField('pcpu_hot', 'current_task')) return 'pcpu_hot.current_task';
    throw new PmiError(
      'E_NOT_FOUND',
      ORIGIN,
      "no per-CPU current task: neither a per-CPU 'current_task' nor 'pcpu_hot' with a current_task field",
      { name: 'current_task', tried: ['current_task', 'pcpu_hot.current_task'] },
    );
  }

  /** The task_struct address a CPU is running (its per-CPU current task pointer). */
  async currentTask(cpu: number): Promise<bigint> {
    if (this.currentTaskSource() === 'current_task')
      return BigInt(await this.percpuValue('current_task', cpu, 'pointer'));
    const H = this.layout('pcpu_hot', ['current_task']);
    return (await this.percpu('pcpu_hot', cpu, H)).ptr('current_task');
  }

  // ------------------------------------------------------------------ walks

  /** See walk.ts: yields the objects of a `list_head` list (head excluded), then throws E_LIST on a broken list. */
  walkList(headVa: bigint, T: Layout, member: string, opts?: WalkOptions): AsyncGenerator<StructView, void> {
    return walkList(this, headVa, T, member, opts);
  }

  /** walkList without throwing: `{items, error}`. */
  collectList(headVa: bigint, T: Layout, member: string, opts?: WalkOptions): Promise<ListResult> {
    return collectList(this, headVa, T, member, opts);
  }

  walkHlist(headVa: bigint, T: Layout, member: string, opts?: HlistOptions): AsyncGenerator<StructView, void> {
    return walkHlist(this, headVa, T, member, opts);
  }

  walkRbTree(rootVa: bigint, T: Layout, member: string, opts?: WalkOptions): AsyncGenerator<StructView, void> {
    return walkRbTree(this, rootVa, T, member, opts);
  }
}

function objectError(T: Layout, va: bigint, e: PmiError): PmiError {
  return new PmiError(e.code, e.origin, `${T.name} at ${vaHex(va)}: ${e.message}`, {
    ...e.data,
    struct: T.name,
    object: vaHex(va),
  });
}
