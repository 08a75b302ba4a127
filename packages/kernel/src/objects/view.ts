/**
 * Typed views over object records read by KernelObjects. A view is (layout, record position) in a
 * shared arena: accessors decode straight from the arena's DataView with the layout's resolved
 * positions — no BTF lookups, no per-field allocation (except a BigInt for 64-bit values).
 */
import type { PmiError } from '@pmi/core';
import { vaHex, vaJoin } from '../paging/va.js';
import type { Btf } from '../btf/btf.js';
import { usage } from './errors.js';
import { FieldKind, Layout, type Field, type Scalar } from './layout.js';

/** A field name/path as declared, or a resolved Field (faster: no Map lookup). */
export type FieldRef = string | Field;

const TWO32 = 4294967296;

/** Per-Btf cache of whole-struct layouts (nested views, array elements). */
const wholeLayouts = new WeakMap<Btf, Map<number, Layout>>();
export function wholeLayout(btf: Btf, typeId: number): Layout {
  let m = wholeLayouts.get(btf);
  if (!m) wholeLayouts.set(btf, (m = new Map()));
  let l = m.get(typeId);
  if (!l) m.set(typeId, (l = new Layout(btf, typeId)));
  return l;
}

const enumMaps = new WeakMap<Scalar, Map<number | bigint, string>>();
function enumNameOf(btf: Btf, s: Scalar, v: number | bigint): string {
  let m = enumMaps.get(s);
  if (!m) {
    m = new Map();
    for (const e of btf.enumValues(s.resolved)) if (!m.has(e.value)) m.set(e.value, e.name);
    enumMaps.set(s, m);
  }
  const hit = m.get(v);
  if (hit !== undefined) return hit;
  if (typeof v === 'bigint') {
    const n = Number(v);
    if (Number.isSafeInteger(n)) return m.get(n) ?? '';
  } else return m.get(BigInt(v)) ?? '';
  return '';
}

/** Decode an integer-like value (INT, ENUM, PTR, bool; bitfields) at byte position p. */
export function decodeInt(dv: DataView, p: number, s: Scalar): number | bigint {
  if (s.bitSize) return decodeBits(dv, p, s);
  switch (s.size) {
    case 1:
      return s.signed ? dv.getInt8(p) : dv.getUint8(p);
    case 2:
      return s.signed ? dv.getInt16(p, true) : dv.getUint16(p, true);
    case 4:
      return s.signed ? dv.getInt32(p, true) : dv.getUint32(p, true);
    case 8:
      return s.signed && s.kind !== FieldKind.PTR ? dv.getBigInt64(p, true) : dv.getBigUint64(p, true);
    default:
      throw usage(`cannot decode a ${s.size}-byte value as an integer`, { size: s.size });
  }
}

/** Like decodeInt but always a number (64-bit values rounded beyond 2^53; no BigInt). */
export function decodeNum(dv: DataView, p: number, s: Scalar): number {
  if (s.bitSize) {
    const v = decodeBits(dv, p, s);
    return typeof v === 'bigint' ? Number(v) : v;
  }
  switch (s.size) {
    case 1:
      return s.signed ? dv.getInt8(p) : dv.getUint8(p);
    case 2:
      return s.signed ? dv.getInt16(p, true) : dv.getUint16(p, true);
    case 4:
      return s.signed ? dv.getInt32(p, true) : dv.getUint32(p, true);
    case 8:
      return (
        (s.signed && s.kind !== FieldKind.PTR ? dv.getInt32(p + 4, true) : dv.getUint32(p + 4, true)) * TWO32 +
        dv.getUint32(p, true)
      );
    default:
      throw usage(`cannot decode a ${s.size}-byte value as a number`, { size: s.size });
  }
}

function decodeBits(dv: DataView, p: number, s: Scalar): number | bigint {
  const shift = s.bitShift;
  const bits = s.bitSize;
  const n = Math.ceil((shift + bits) / 8);
  if (shift + bits <= 48) {
    let v = 0;
    for (let i = n - 1; i >= 0; i--) v = v * 256 + dv.getUint8(p + i);
    v = Math.floor(v / 2 ** shift) % 2 ** bits;
    if (s.signed && v >= 2 ** (bits - 1)) v -= 2 ** bits;
    return v;
  }
  let v = 0n;
  for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(dv.getUint8(p + i));
  v = (v >> BigInt(shift)) & ((1n << BigInt(bits)) - 1n);
  if (s.signed) v = BigInt.asIntN(bits, v);
  return bits <= 53 ? Number(v) : v;
}

/** The shared storage of one batch of reads. */
export interface Arena {
  readonly bytes: Buffer;
  readonly dv: DataView;
}

/**
 * One kernel object read through a Layout. Accessors take a field path as declared in the layout
 * (or a resolved `Field` from `layout.field()`); a field the struct lacks is E_NOT_FOUND naming
 * struct and field; a field behind a pointer that was NULL or unreadable throws that error.
 */
export class StructView {
  constructor(
    readonly layout: Layout,
    /** Address of the object (the struct start, not of the span read). */
    readonly va: bigint,
    private readonly arena: Arena,
    /** Position of the object record in the arena. */
    private readonly base: number,
    private readonly hopErrors?: readonly (PmiError | undefined)[],
  ) {}

  private f(ref: FieldRef): Field {
    const f = typeof ref === 'string' ? this.layout.field(ref) : ref;
    if (f.hop >= 0 && this.hopErrors !== undefined) {
      const e = this.hopErrors[f.hop];
      if (e) throw e;
    }
    return f;
  }

  private sized(ref: FieldRef, size: number, what: string): number {
    const f = this.f(ref);
    if (f.size !== size || f.bitSize)
      throw usage(
        `${this.layout.name}.${f.name} is ${f.bitSize ? `a ${f.bitSize}-bit bitfield` : `${f.size} bytes`}, not ${what}`,
        { struct: this.layout.name, field: f.name, size: f.size },
      );
    return this.base + f.pos;
  }

  /** Does the struct have this field in this kernel (feature detection). */
  has(name: string): boolean {
    return this.layout.has(name);
  }

  /** False when a pointer on the way to this (declared) field was NULL or unreadable. */
  reached(ref: FieldRef): boolean {
    const f = typeof ref === 'string' ? this.layout.field(ref) : ref;
    return f.hop < 0 || this.hopErrors === undefined || this.hopErrors[f.hop] === undefined;
  }

  /** Why `reached()` is false (the NULL-pointer or read error), else undefined. */
  derefError(ref: FieldRef): PmiError | undefined {
    const f = typeof ref === 'string' ? this.layout.field(ref) : ref;
    return f.hop < 0 || this.hopErrors === undefined ? undefined : this.hopErrors[f.hop];
  }

  u8(ref: FieldRef): number {
    return this.arena.dv.getUint8(this.sized(ref, 1, 'u8'));
  }
  u16(ref: FieldRef): number {
    return this.arena.dv.getUint16(this.sized(ref, 2, 'u16'), true);
  }
  u32(ref: FieldRef): number {
    return this.arena.dv.getUint32(this.sized(ref, 4, 'u32'), true);
  }
  u64(ref: FieldRef): bigint {
    return this.arena.dv.getBigUint64(this.sized(ref, 8, 'u64'), true);
  }
  s8(ref: FieldRef): number {
    return this.arena.dv.getInt8(this.sized(ref, 1, 's8'));
  }
  s16(ref: FieldRef): number {
    return this.arena.dv.getInt16(this.sized(ref, 2, 's16'), true);
  }
  s32(ref: FieldRef): number {
    return this.arena.dv.getInt32(this.sized(ref, 4, 's32'), true);
  }
  s64(ref: FieldRef): bigint {
    return this.arena.dv.getBigInt64(this.sized(ref, 8, 's64'), true);
  }

  /** Pointer (or any 8-byte field) as an unsigned bigint. */
  ptr(ref: FieldRef): bigint {
    return this.arena.dv.getBigUint64(this.sized(ref, 8, 'a pointer'), true);
  }

  /** Is the pointer NULL (no BigInt made). */
  isNull(ref: FieldRef): boolean {
    const p = this.sized(ref, 8, 'a pointer');
    return this.arena.dv.getUint32(p, true) === 0 && this.arena.dv.getUint32(p + 4, true) === 0;
  }

  /**
   * Integer by its BTF type: signed/unsigned from the encoding (ENUM: kind_flag), sizes 1/2/4 →
   * number, 8 → bigint; bitfields → number (bigint beyond 53 bits); pointers → bigint.
   */
  int(ref: FieldRef): number | bigint {
    const f = this.f(ref);
    if (f.kind !== FieldKind.INT && f.kind !== FieldKind.ENUM && f.kind !== FieldKind.PTR)
      throw this.notScalar(f, 'an integer');
    return decodeInt(this.arena.dv, this.base + f.pos, f);
  }

  /** Integer as a number, 64-bit values too (exact below 2^53). */
  num(ref: FieldRef): number {
    const f = this.f(ref);
    if (f.kind !== FieldKind.INT && f.kind !== FieldKind.ENUM && f.kind !== FieldKind.PTR)
      throw this.notScalar(f, 'an integer');
    return decodeNum(this.arena.dv, this.base + f.pos, f);
  }

  bool(ref: FieldRef): boolean {
    return this.num(ref) !== 0;
  }

  /** Enumerator name of an enum field ('' when the value has none). */
  enumName(ref: FieldRef): string {
    const f = this.f(ref);
    if (f.kind !== FieldKind.ENUM) throw this.notScalar(f, 'an enum');
    return enumNameOf(this.layout.btf, f, decodeInt(this.arena.dv, this.base + f.pos, f));
  }

  /** A char array up to its first NUL (UTF-8; invalid bytes become U+FFFD). */
  str(ref: FieldRef): string {
    const f = this.f(ref);
    if (f.kind !== FieldKind.ARRAY || f.elemSize !== 1) {
      if (f.kind === FieldKind.PTR)
        throw usage(`${this.layout.name}.${f.name} is a pointer: read the string with kernel.readString()`, {
          struct: this.layout.name,
          field: f.name,
        });
      throw this.notScalar(f, 'a char array');
    }
    const p = this.base + f.pos;
    const b = this.arena.bytes;
    let e = b.indexOf(0, p);
    if (e < 0 || e > p + f.size) e = p + f.size;
    return b.toString('utf8', p, e);
  }

  /** The raw bytes of a field (a view into the batch's buffer: copy it to keep it). */
  bytes(ref: FieldRef): Uint8Array {
    const f = this.f(ref);
    const p = this.base + f.pos;
    return this.arena.bytes.subarray(p, p + f.size);
  }

  /** Number of elements of an array field (0 for flexible arrays). */
  length(ref: FieldRef): number {
    const f = this.f(ref);
    if (f.kind !== FieldKind.ARRAY) throw this.notScalar(f, 'an array');
    return f.nelems;
  }

  /** Element i of an array of integers/enums/pointers (as int(): number, or bigint for 8 bytes). */
  array(ref: FieldRef, i: number): number | bigint {
    const f = this.f(ref);
    const e = this.element(f, i);
    if (e.kind !== FieldKind.INT && e.kind !== FieldKind.ENUM && e.kind !== FieldKind.PTR)
      throw usage(
        `${this.layout.name}.${f.name}[] holds ${e.kind === FieldKind.STRUCT ? 'structs: use struct(name, i)' : 'non-integers'}`,
        {
          struct: this.layout.name,
          field: f.name,
        },
      );
    return decodeInt(this.arena.dv, this.base + f.pos + i * f.elemSize, e);
  }

  private element(f: Field, i: number): Scalar {
    if (f.kind !== FieldKind.ARRAY || !f.elem) throw this.notScalar(f, 'an array');
    if (!Number.isInteger(i) || i < 0 || i >= f.nelems)
      throw usage(`${this.layout.name}.${f.name}[${i}] is out of bounds (${f.nelems} elements)`, {
        struct: this.layout.name,
        field: f.name,
        index: i,
      });
    return f.elem;
  }

  /**
   * A view of an embedded struct/union member (`struct('tasks')` → a list_head view), or of
   * element i of an array of structs. Shares this object's bytes.
   */
  struct(ref: FieldRef, i?: number): StructView {
    const f = this.f(ref);
    let s: Scalar = f;
    let pos = this.base + f.pos;
    if (i !== undefined) {
      s = this.element(f, i);
      pos += i * f.elemSize;
    }
    if (s.kind !== FieldKind.STRUCT) throw this.notScalar(f, 'a struct');
    const l = wholeLayout(this.layout.btf, s.resolved);
    return new StructView(l, this.fieldAddress(f) + BigInt(pos - this.base - f.pos), this.arena, pos);
  }

  /** Virtual address of a field (for list heads embedded in the object, `&task->children`). */
  addressOf(ref: FieldRef): bigint {
    return this.fieldAddress(this.f(ref));
  }

  private fieldAddress(f: Field): bigint {
    if (f.hop < 0) return this.va + BigInt(f.offset);
    return this.hopTarget(f.hop) + BigInt(f.offset);
  }

  /** Address of the object a pointer hop reached. */
  private hopTarget(h: number): bigint {
    const hop = this.layout.hops[h];
    const parentBase =
      hop.parent < 0 ? -this.layout.start : this.layout.hops[hop.parent].pos - this.layout.hops[hop.parent].start;
    const p = this.base + parentBase + hop.ptrOffset;
    return vaJoin(this.arena.dv.getUint32(p + 4, true), this.arena.dv.getUint32(p, true));
  }

  /** Declared fields as a plain object (debugging, `--json` dumps): bigints as "0x…", strings for char arrays. */
  toJSON(): Record<string, unknown> {
    const out: Record<string, unknown> = { _struct: this.layout.name, _va: vaHex(this.va) };
    for (const f of this.layout.declared) {
      if (!this.reached(f)) {
        out[f.name] = null;
        continue;
      }
      if (f.kind === FieldKind.INT || f.kind === FieldKind.ENUM || f.kind === FieldKind.PTR) {
        const v = decodeInt(this.arena.dv, this.base + f.pos, f);
        out[f.name] = typeof v === 'bigint' ? vaHex(v) : v;
        if (f.kind === FieldKind.ENUM) out[f.name + '#'] = enumNameOf(this.layout.btf, f, v);
      } else if (f.kind === FieldKind.ARRAY && f.elemSize === 1) out[f.name] = this.str(f);
      else out[f.name] = Buffer.from(this.bytes(f)).toString('hex');
    }
    return out;
  }

  private notScalar(f: Field, what: string): PmiError {
    return usage(`${this.layout.name}.${f.name} (${this.layout.btf.typeToString(f.type)}) is not ${what}`, {
      struct: this.layout.name,
      field: f.name,
    });
  }
}

/** A top-level array (a global such as idt_table, sys_call_table, __per_cpu_offset). */
export class ArrayView {
  constructor(
    readonly va: bigint,
    readonly length: number,
    readonly elem: Scalar,
    readonly elemSize: number,
    private readonly arena: Arena,
    private readonly btf: Btf,
  ) {}

  private check(i: number): number {
    if (!Number.isInteger(i) || i < 0 || i >= this.length)
      throw usage(`index ${i} out of bounds (${this.length} elements)`, { index: i, length: this.length });
    return i * this.elemSize;
  }

  /** Element as int(): number, or bigint for 8-byte values and pointers. */
  get(i: number): number | bigint {
    return decodeInt(this.arena.dv, this.check(i), this.elem);
  }
  num(i: number): number {
    return decodeNum(this.arena.dv, this.check(i), this.elem);
  }
  ptr(i: number): bigint {
    if (this.elemSize !== 8) throw usage(`elements are ${this.elemSize} bytes, not pointers`);
    return this.arena.dv.getBigUint64(this.check(i), true);
  }
  /** Element i of an array of structs. */
  struct(i: number): StructView {
    if (this.elem.kind !== FieldKind.STRUCT) throw usage('elements are not structs');
    const off = this.check(i);
    return new StructView(wholeLayout(this.btf, this.elem.resolved), this.va + BigInt(off), this.arena, off);
  }
  /** All elements via get(). */
  values(): (number | bigint)[] {
    const out: (number | bigint)[] = new Array(this.length);
    for (let i = 0; i < this.length; i++) out[i] = this.get(i);
    return out;
  }
}
