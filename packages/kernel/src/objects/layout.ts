/**
 * Resolved layouts: a struct type plus the fields a caller wants, resolved once through BTF into
 * byte positions inside one flat per-object record (the root span, then one span per pointer hop).
 * Accessors (view.ts) only index into that record; nothing is looked up in BTF per read.
 */
import { PmiError } from '@pmi/core';
import type { Btf, BtfField, TypeRef } from '../btf/btf.js';
import { BtfKind } from '../btf/kinds.js';
import { missingField, usage } from './errors.js';

/** Value kinds of a field (after typedefs/qualifiers). */
export const FieldKind = {
  OTHER: 0,
  INT: 1,
  ENUM: 2,
  PTR: 3,
  ARRAY: 4,
  STRUCT: 5,
  FLOAT: 6,
} as const;
export type FieldKind = (typeof FieldKind)[keyof typeof FieldKind];

const KIND_NAMES = ['other', 'int', 'enum', 'pointer', 'array', 'struct', 'float'] as const;

/** How to decode one value. */
export interface Scalar {
  readonly kind: FieldKind;
  /** Byte size of the value (storage unit for bitfields). */
  readonly size: number;
  /** Signed integer/enum (BTF INT encoding, ENUM kind_flag). */
  readonly signed: boolean;
  readonly bool: boolean;
  /** Bitfields: bit position inside the byte at `offset`, and width; bitSize 0 otherwise. */
  readonly bitShift: number;
  readonly bitSize: number;
  /** Declared type id (typedefs kept) and resolved type id. */
  readonly type: number;
  readonly resolved: number;
}

/** A resolved field of a layout. Pass it instead of the name to accessors in hot loops. */
export interface Field extends Scalar {
  /** The path as declared (`pid`, `cred.uid`, `pids[1].pid`). */
  readonly name: string;
  /** Byte offset inside the object holding it (the root struct, or the last pointer's target). */
  readonly offset: number;
  /** -1: inside the root struct; else the index of the pointer hop whose target holds it. */
  readonly hop: number;
  /** Byte position inside the object record (what accessors index with). */
  readonly pos: number;
  /** Arrays: element decoding, count and element size. */
  readonly elem?: Scalar;
  readonly nelems: number;
  readonly elemSize: number;
  /** Pointer offsets followed from the root (BtfField.derefs). */
  readonly derefs: readonly number[];
}

/** One pointer followed by a layout: read a pointer in the parent object, then `[start, end)` of its target. */
export interface Hop {
  /** -1 = the root object. */
  readonly parent: number;
  /** Offset of the pointer inside the parent object. */
  readonly ptrOffset: number;
  readonly level: number;
  /** Span of the target object read (offsets inside the target type). */
  start: number;
  end: number;
  /** Position of that span in the object record. */
  pos: number;
  /** The first declared path through this hop (for messages). */
  readonly path: string;
  readonly key: string;
}

export interface LayoutOptions {
  /** Read the whole root struct even when fields are listed (lazy access to any root field). */
  whole?: boolean;
}

function align8(n: number): number {
  return (n + 7) & ~7;
}

/** Decoding info for a type id (typedefs and qualifiers resolved). */
export function scalarOf(btf: Btf, type: number, bitOffset = 0, bitSize = 0): Scalar {
  const resolved = btf.resolve(type);
  const k = btf.kind(resolved);
  let kind: FieldKind = FieldKind.OTHER;
  let size = 0;
  let signed = false;
  let bool = false;
  switch (k) {
    case BtfKind.INT: {
      const t = btf.type(resolved);
      kind = FieldKind.INT;
      size = t.size!;
      signed = t.encoding!.signed;
      bool = t.encoding!.bool;
      // old-style bitfield types (INT with bits < size*8) are handled by members() already.
      break;
    }
    case BtfKind.ENUM:
    case BtfKind.ENUM64:
      kind = FieldKind.ENUM;
      size = btf.sizeOrType(resolved);
      signed = btf.kindFlag(resolved);
      break;
    case BtfKind.PTR:
      kind = FieldKind.PTR;
      size = btf.pointerSize;
      break;
    case BtfKind.ARRAY:
      kind = FieldKind.ARRAY;
      size = safeSize(btf, resolved);
      break;
    case BtfKind.STRUCT:
    case BtfKind.UNION:
      kind = FieldKind.STRUCT;
      size = btf.sizeOrType(resolved);
      break;
    case BtfKind.FLOAT:
      kind = FieldKind.FLOAT;
      size = btf.sizeOrType(resolved);
      break;
    default:
      size = safeSize(btf, resolved);
  }
  return { kind, size, signed, bool, bitShift: bitSize ? bitOffset & 7 : 0, bitSize, type, resolved };
}

function safeSize(btf: Btf, id: number): number {
  try {
    return btf.sizeOf(id);
  } catch {
    return 0;
  }
}

/** Bytes a field occupies from its `offset` (bitfields: the bytes holding its bits). */
function extent(f: BtfField): number {
  if (f.bitSize) return Math.ceil(((f.bitOffset & 7) + f.bitSize) / 8);
  return f.size;
}

/**
 * A struct type with resolved fields. Made by `KernelObjects.layout()` (cached); immutable once
 * built, except that fields inside the spans may be resolved lazily on first use.
 */
export class Layout {
  /** Struct name (or the type description for anonymous types). */
  readonly name: string;
  readonly typeId: number;
  /** sizeof(struct). */
  readonly size: number;
  /** Root span read from each object: `[start, end)` byte offsets inside the struct. */
  readonly start: number;
  readonly end: number;
  /** Bytes per object record (root span + hop spans, 8-aligned). */
  readonly stride: number;
  readonly hops: readonly Hop[];
  /** Fields as declared, in order (missing optional fields excluded). */
  readonly declared: readonly Field[];
  /** Levels of pointer hops (0 when none): round trips after the first for readStructs. */
  readonly depth: number;
  /** `start` as a bigint (added to every object VA). */
  readonly startN: bigint;

  private readonly byName = new Map<string, Field | null>();
  private readonly hopByKey = new Map<string, number>();

  constructor(
    readonly btf: Btf,
    type: TypeRef,
    fields?: readonly string[],
    opts: LayoutOptions = {},
  ) {
    let id: number;
    try {
      id = btf.resolve(type);
    } catch (e) {
      if (e instanceof PmiError && e.code === 'E_NOT_FOUND')
        throw new PmiError('E_NOT_FOUND', 'objects', `BTF has no type '${String(type)}'`, { type: String(type) });
      throw e;
    }
    const k = btf.kind(id);
    if (k !== BtfKind.STRUCT && k !== BtfKind.UNION)
      throw usage(`layout(): ${btf.describe(id)} is not a struct or union`, { type: String(type) });
    this.typeId = id;
    this.name = btf.name(id) || btf.describe(id);
    this.size = btf.sizeOrType(id);

    const whole = fields === undefined || opts.whole === true;
    let start = whole ? 0 : Infinity;
    let end = whole ? this.size : 0;
    const hops: Hop[] = [];
    const pending: { name: string; f: BtfField; hop: number }[] = [];
    for (const raw of fields ?? []) {
      const optional = raw.endsWith('?');
      const name = optional ? raw.slice(0, -1) : raw;
      let f: BtfField;
      try {
        f = btf.field(id, name);
      } catch (e) {
        if (e instanceof PmiError && e.code === 'E_NOT_FOUND') {
          if (optional) {
            this.byName.set(name, null);
            continue;
          }
          throw missingField(this.name, name, e.message);
        }
        throw e;
      }
      // pointer hops along the path
      let parent = -1;
      let key = '';
      for (let d = 0; d < f.derefs.length; d++) {
        const off = f.derefs[d];
        key += `/${off}`;
        let h = this.hopByKey.get(key);
        if (h === undefined) {
          h = hops.length;
          hops.push({ parent, ptrOffset: off, level: d + 1, start: Infinity, end: 0, pos: 0, path: name, key });
          this.hopByKey.set(key, h);
        }
        // the parent must contain the pointer
        if (parent < 0) {
          start = Math.min(start, off);
          end = Math.max(end, off + 8);
        } else {
          hops[parent].start = Math.min(hops[parent].start, off);
          hops[parent].end = Math.max(hops[parent].end, off + 8);
        }
        parent = h;
      }
      const len = extent(f);
      if (parent < 0) {
        start = Math.min(start, f.offset);
        end = Math.max(end, f.offset + len);
      } else {
        hops[parent].start = Math.min(hops[parent].start, f.offset);
        hops[parent].end = Math.max(hops[parent].end, f.offset + len);
      }
      pending.push({ name, f, hop: parent });
    }
    if (start === Infinity) {
      start = 0;
      end = 0;
    }
    this.start = start;
    this.end = end;
    this.startN = BigInt(start);
    let pos = align8(end - start);
    for (const h of hops) {
      if (h.start === Infinity) h.start = h.end = 0;
      h.pos = pos;
      pos += align8(h.end - h.start);
    }
    this.stride = Math.max(8, pos);
    this.hops = hops;
    this.depth = hops.reduce((m, h) => Math.max(m, h.level), 0);
    const declared: Field[] = [];
    for (const p of pending) {
      const fd = this.makeField(p.name, p.f, p.hop);
      this.byName.set(p.name, fd);
      declared.push(fd);
    }
    this.declared = declared;
  }

  private makeField(name: string, f: BtfField, hop: number): Field {
    const btf = this.btf;
    const s = scalarOf(btf, f.type, f.bitOffset, f.bitSize);
    const base = hop < 0 ? -this.start : this.hops[hop].pos - this.hops[hop].start;
    let elem: Scalar | undefined;
    let nelems = 0;
    let elemSize = 0;
    if (s.kind === FieldKind.ARRAY) {
      const a = btf.array(s.resolved);
      elem = scalarOf(btf, a.type);
      nelems = a.nelems;
      elemSize = elem.size;
    }
    return Object.freeze({
      ...s,
      name,
      offset: f.offset,
      hop,
      pos: base + f.offset,
      elem,
      nelems,
      elemSize,
      derefs: f.derefs,
    });
  }

  /** Does this kernel's struct have the field (feature detection; never throws for a missing field). */
  has(name: string): boolean {
    const hit = this.byName.get(name);
    if (hit !== undefined) return hit !== null;
    return this.btf.hasField(this.typeId, name);
  }

  /** The resolved field, or undefined when the struct lacks it. Throws E_USAGE when it exists but lies outside what is read. */
  tryField(name: string): Field | undefined {
    const hit = this.byName.get(name);
    if (hit !== undefined) return hit ?? undefined;
    const f = this.btf.tryField(this.typeId, name);
    if (!f) {
      this.byName.set(name, null);
      return undefined;
    }
    return this.lazy(name, f);
  }

  /** The resolved field; E_NOT_FOUND naming the struct and field when it does not exist. */
  field(name: string): Field {
    const hit = this.byName.get(name);
    if (hit) return hit;
    const f = this.tryField(name);
    if (!f) throw missingField(this.name, name);
    return f;
  }

  private lazy(name: string, f: BtfField): Field {
    let hop = -1;
    if (f.derefs.length > 0) {
      const key = '/' + f.derefs.join('/');
      const h = this.hopByKey.get(key);
      if (h === undefined)
        throw usage(`${this.name}.${name} goes through a pointer the layout does not follow: declare '${name}'`, {
          struct: this.name,
          field: name,
        });
      hop = h;
    }
    const lo = hop < 0 ? this.start : this.hops[hop].start;
    const hi = hop < 0 ? this.end : this.hops[hop].end;
    if (f.offset < lo || f.offset + extent(f) > hi)
      throw usage(
        `${this.name}.${name} (offset ${f.offset}) is outside the bytes this layout reads [${lo}, ${hi}): declare it`,
        { struct: this.name, field: name },
      );
    const fd = this.makeField(name, f, hop);
    this.byName.set(name, fd);
    return fd;
  }

  /** Byte offset of a field inside the root struct (no pointers). */
  offsetOf(name: string): number {
    const f = this.btf.tryField(this.typeId, name);
    if (!f) throw missingField(this.name, name);
    if (f.derefs.length) throw usage(`${this.name}.${name} goes through a pointer`, { struct: this.name, field: name });
    return f.offset;
  }

  /** container_of: the object's address from the address of its member `name`. */
  containerOf(memberVa: bigint, name: string): bigint {
    return memberVa - BigInt(this.offsetOf(name));
  }

  /** Short description for messages and debugging. */
  describe(): string {
    const fs = this.declared.map((f) => `${f.name}:${KIND_NAMES[f.kind]}${f.size}@${f.offset}`).join(' ');
    return `struct ${this.name} [${this.start}, ${this.end}) stride ${this.stride}${fs ? ' ' + fs : ''}`;
  }
}

export { KIND_NAMES as FIELD_KIND_NAMES };
