import { PmiError } from '@pmi/core';
import { BTF_KIND_NAMES, BTF_LINKAGE, BtfKind, kindNumber, type BtfKindName, type BtfKindSpec } from './kinds.js';
import { BtfData, btfError, type ParseBtfOptions } from './parse.js';
import { structLayout, typeToString, type StructLayout } from './format.js';

/** A type id, or a type name looked up with `findType` (kind preference: struct/union/enum, typedef, base types, …). */
export type TypeRef = number | string;

/** One member of a struct/union as BTF records it (offsets relative to the containing struct). */
export interface BtfMember {
  /** '' for anonymous struct/union members. */
  readonly name: string;
  readonly type: number;
  /** Bit offset from the start of the containing struct/union. */
  readonly bitOffset: number;
  /** Bitfield width in bits; 0 for ordinary members. */
  readonly bitSize: number;
}

/** A field reached by a path such as `signal.rlim` or `pids[1].pid`, from a root struct. */
export interface BtfField {
  /** Byte offset of the field inside the object reached after following `derefs` (floor for bitfields). */
  readonly offset: number;
  /** Bit offset of the field from the start of that object (offset*8 unless a bitfield). */
  readonly bitOffset: number;
  /** Bitfield width; 0 for ordinary fields. */
  readonly bitSize: number;
  /** Member type id as declared (not resolved; use btf.resolve). */
  readonly type: number;
  /** Byte size of the field's type (the storage unit for bitfields; 0 when it has no size). */
  readonly size: number;
  /** The (resolved) field type is a pointer. */
  readonly pointer: boolean;
  /** For pointers: the pointee type id (as declared). */
  readonly target?: number;
  /**
   * Pointers the path goes through: byte offsets, each inside the object reached by the previous one
   * (the first inside the root). Empty when the field lies inside the root object itself.
   */
  readonly derefs: readonly number[];
}

export interface BtfEnumValue {
  readonly name: string;
  /** ENUM: a number (signed when the enum's kind_flag is set); ENUM64: a bigint. */
  readonly value: number | bigint;
}

export interface BtfParam {
  readonly name: string;
  /** 0 with name '' as the last parameter means `...`. */
  readonly type: number;
}

export interface BtfFuncProto {
  readonly ret: number;
  readonly params: readonly BtfParam[];
  readonly variadic: boolean;
}

export interface BtfVar {
  /** The VAR type id. */
  readonly id: number;
  readonly name: string;
  /** The variable's type id. */
  readonly type: number;
  readonly linkage: string;
  /** The DATASEC holding it ('' when the VAR is in none). */
  readonly section: string;
  /** Offset inside the section (for `.data..percpu`: the per-CPU offset). */
  readonly offset: number;
  readonly size: number;
}

export interface BtfDatasec {
  readonly id: number;
  readonly name: string;
  readonly size: number;
  readonly vars: readonly BtfVar[];
}

/** A decoded type record (fields present according to the kind). */
export interface BtfType {
  readonly id: number;
  readonly kind: number;
  readonly kindName: BtfKindName;
  readonly name: string;
  readonly kindFlag: boolean;
  readonly vlen: number;
  /** INT, STRUCT, UNION, ENUM, ENUM64, FLOAT, DATASEC. */
  readonly size?: number;
  /** PTR, TYPEDEF, qualifiers, TYPE_TAG, FUNC (its proto), VAR, DECL_TAG, ARRAY (element), FUNC_PROTO (return). */
  readonly type?: number;
  /** INT */
  readonly encoding?: { signed: boolean; char: boolean; bool: boolean };
  readonly bits?: number;
  readonly intOffset?: number;
  /** ARRAY */
  readonly indexType?: number;
  readonly nelems?: number;
  readonly members?: readonly BtfMember[];
  readonly values?: readonly BtfEnumValue[];
  readonly params?: readonly BtfParam[];
  /** FUNC, VAR */
  readonly linkage?: string;
  /** FWD: 'struct' or 'union' */
  readonly fwdKind?: 'struct' | 'union';
  /** DATASEC entries */
  readonly vars?: readonly { type: number; offset: number; size: number }[];
  /** DECL_TAG: -1 for the type itself, else the member/parameter index. */
  readonly componentIdx?: number;
}

const MAX_CHAIN = 64; // typedef/qualifier chains, array nesting, anonymous member nesting
const MAX_VISITS = 100_000; // members visited by one anonymous-member search (malformed DAGs)

const Q_MASK =
  (1 << BtfKind.TYPEDEF) |
  (1 << BtfKind.VOLATILE) |
  (1 << BtfKind.CONST) |
  (1 << BtfKind.RESTRICT) |
  (1 << BtfKind.TYPE_TAG);

function rank(kind: number): number {
  switch (kind) {
    case BtfKind.STRUCT:
    case BtfKind.UNION:
    case BtfKind.ENUM:
    case BtfKind.ENUM64:
      return 0;
    case BtfKind.TYPEDEF:
      return 1;
    case BtfKind.INT:
    case BtfKind.FLOAT:
      return 2;
    case BtfKind.FUNC:
    case BtfKind.VAR:
    case BtfKind.DATASEC:
      return 3;
    case BtfKind.FWD:
      return 4;
    default:
      return 5;
  }
}

function notFound(msg: string, data: Record<string, unknown>): PmiError {
  return new PmiError('E_NOT_FOUND', 'btf', msg, data);
}

/**
 * Parsed BTF with the queries later layers use. Records stay in typed arrays; names are decoded
 * on demand; the name index, member lists, field paths, enums and DATASEC maps are built lazily
 * and cached.
 */
export class Btf extends BtfData {
  declare readonly base: Btf | undefined;

  private nameIdx?: Map<string, number>;
  private nameDup?: Map<string, number[]>;
  private memberCache = new Map<number, readonly BtfMember[]>();
  private fieldCache = new Map<TypeRef, Map<string, BtfField>>();
  private enumCache = new Map<number, readonly BtfEnumValue[]>();
  private enumerators?: Map<string, { type: number; value: number | bigint }>;
  private varIdx?: Map<string, BtfVar>;

  constructor(bytes: Uint8Array, opts: ParseBtfOptions & { base?: Btf } = {}) {
    super(bytes, opts);
  }

  kindName(id: number): BtfKindName {
    return BTF_KIND_NAMES[this.kind(id)];
  }

  // ---------------------------------------------------------------- names

  private buildNameIndex(): void {
    const idx = new Map<string, number>();
    const dup = new Map<string, number[]>();
    const words = this.words;
    const offs = this.offs;
    for (let i = 0; i < offs.length; i++) {
      const no = words[offs[i]];
      if (no === 0) continue;
      const id = this.startId + i;
      const name = this.str(no);
      const first = idx.get(name);
      if (first === undefined) idx.set(name, id);
      else {
        const d = dup.get(name);
        if (d) d.push(id);
        else dup.set(name, [first, id]);
      }
    }
    this.nameIdx = idx;
    this.nameDup = dup;
  }

  /** Every id with this name (base ids first), any kind. */
  findTypes(name: string, kind?: BtfKindSpec): number[] {
    if (!this.nameIdx) this.buildNameIndex();
    const local = this.nameDup!.get(name) ?? (this.nameIdx!.has(name) ? [this.nameIdx!.get(name)!] : []);
    let all = this.base ? [...this.base.findTypes(name), ...local] : [...local];
    if (kind !== undefined) {
      const k = kindNumber(kind);
      all = all.filter((id) => this.rawKind(id) === k);
    }
    return all;
  }

  /**
   * The id of a named type, or undefined. Without a kind, complete struct/union/enum definitions
   * win over typedefs, then base types, functions/vars/datasecs, and forward declarations last;
   * among equals the lowest id.
   */
  findType(name: string, kind?: BtfKindSpec): number | undefined {
    if (!this.nameIdx) this.buildNameIndex();
    const k = kind === undefined ? -1 : kindNumber(kind);
    const baseHit = this.base?.findType(name, kind);
    const first = this.nameIdx!.get(name);
    if (first === undefined) return baseHit;
    const dup = this.nameDup!.get(name);
    if (k >= 0) {
      if (baseHit !== undefined) return baseHit;
      if (!dup) return this.rawKind(first) === k ? first : undefined;
      return dup.find((id) => this.rawKind(id) === k);
    }
    let best = baseHit ?? -1;
    let bestRank = best >= 0 ? rank(this.rawKind(best)) : 99;
    for (const id of dup ?? [first]) {
      const r = rank(this.rawKind(id));
      if (r < bestRank) {
        best = id;
        bestRank = r;
      }
    }
    return best >= 0 ? best : undefined;
  }

  /** Like findType but throws E_NOT_FOUND. */
  getType(name: string, kind?: BtfKindSpec): number {
    const id = this.findType(name, kind);
    if (id === undefined)
      throw notFound(`BTF has no ${kind === undefined ? 'type' : String(kind).toLowerCase()} named '${name}'`, {
        name,
        kind: kind === undefined ? undefined : String(kind),
      });
    return id;
  }

  /** A TypeRef as an id (names through getType). */
  id(ref: TypeRef): number {
    if (typeof ref === 'number') {
      this.checkId(ref);
      return ref;
    }
    return this.getType(ref);
  }

  // ---------------------------------------------------------------- resolution and sizes

  /** Follow typedef/const/volatile/restrict/type_tag to the underlying type. */
  resolve(ref: TypeRef): number {
    let id = this.id(ref);
    for (let i = 0; i < MAX_CHAIN; i++) {
      const k = this.rawKind(id);
      if (((1 << k) & Q_MASK) === 0) return id;
      id = this.sizeOrType(id);
    }
    throw btfError('typedef/qualifier chain too long (a cycle?)', { type_id: this.id(ref) });
  }

  /** Byte size of a type (through typedefs and qualifiers; arrays: nelems × element). */
  sizeOf(ref: TypeRef): number {
    let id = this.resolve(ref);
    let mul = 1;
    for (let depth = 0; depth < MAX_CHAIN; depth++) {
      const k = this.rawKind(id);
      switch (k) {
        case BtfKind.INT:
        case BtfKind.STRUCT:
        case BtfKind.UNION:
        case BtfKind.ENUM:
        case BtfKind.ENUM64:
        case BtfKind.FLOAT:
        case BtfKind.DATASEC:
          return mul * this.sizeOrType(id);
        case BtfKind.PTR:
          return mul * this.pointerSize;
        case BtfKind.ARRAY:
          mul *= this.extra(id, 2);
          id = this.resolve(this.extra(id, 0));
          break;
        case BtfKind.VAR:
          id = this.resolve(this.sizeOrType(id));
          break;
        default:
          throw btfError(`${BTF_KIND_NAMES[k]} has no size`, { type_id: id });
      }
    }
    throw btfError('array nesting too deep (a cycle?)', { type_id: this.id(ref) });
  }

  /** Pointee of a pointer (through typedefs), as declared. */
  pointee(ref: TypeRef): number {
    const id = this.resolve(ref);
    if (this.rawKind(id) !== BtfKind.PTR) throw btfError(`${this.describe(id)} is not a pointer`, { type_id: id });
    return this.sizeOrType(id);
  }

  /** ARRAY details (through typedefs). */
  array(ref: TypeRef): { type: number; indexType: number; nelems: number } {
    const id = this.resolve(ref);
    if (this.rawKind(id) !== BtfKind.ARRAY) throw btfError(`${this.describe(id)} is not an array`, { type_id: id });
    return { type: this.extra(id, 0), indexType: this.extra(id, 1), nelems: this.extra(id, 2) };
  }

  /** Short description for messages: "STRUCT 'task_struct' [123]". */
  describe(id: number): string {
    const n = this.name(id);
    return `${this.kindName(id)}${n ? ` '${n}'` : ''} [${id}]`;
  }

  // ---------------------------------------------------------------- struct members and field paths

  /** Members of a struct/union (through typedefs). Cached; do not mutate. */
  members(ref: TypeRef): readonly BtfMember[] {
    const id = this.resolve(ref);
    const cached = this.memberCache.get(id);
    if (cached) return cached;
    const k = this.rawKind(id);
    if (k !== BtfKind.STRUCT && k !== BtfKind.UNION)
      throw btfError(`${this.describe(id)} is not a struct or union`, { type_id: id });
    const info = this.info(id);
    const vlen = info & 0xffff;
    const kflag = info >>> 31 === 1;
    const out: BtfMember[] = new Array(vlen);
    for (let j = 0; j < vlen; j++) {
      const nameOff = this.extra(id, 3 * j);
      const type = this.extra(id, 3 * j + 1);
      const off = this.extra(id, 3 * j + 2);
      let bitOffset = kflag ? off & 0xffffff : off;
      let bitSize = kflag ? off >>> 24 : 0;
      if (!kflag) {
        // Old encoding: the bitfield is described by the INT member type itself.
        const t = this.resolveSafe(type);
        if (t > 0 && this.rawKind(t) === BtfKind.INT) {
          const d = this.extra(t, 0);
          const bits = d & 0xff;
          const intOff = (d >>> 16) & 0xff;
          if (intOff !== 0 || bits !== this.sizeOrType(t) * 8) {
            bitSize = bits;
            bitOffset += intOff;
          }
        }
      }
      out[j] = Object.freeze({ name: this.str(nameOff), type, bitOffset, bitSize });
    }
    Object.freeze(out);
    this.memberCache.set(id, out);
    return out;
  }

  private resolveSafe(id: number): number {
    try {
      return this.resolve(id);
    } catch {
      return -1;
    }
  }

  /**
   * Find a member by name, looking inside anonymous struct/union members as C does
   * (`task_struct.pid` when it sits in an anonymous union). bitOffset is from the start of `ref`.
   */
  findMember(ref: TypeRef, name: string): BtfMember | undefined {
    const id = this.resolve(ref);
    return this.findMemberIn(id, name, 0, 0, { visits: 0, root: id });
  }

  private findMemberIn(
    id: number,
    name: string,
    baseBits: number,
    depth: number,
    budget: { visits: number; root: number },
  ): BtfMember | undefined {
    if (depth > MAX_CHAIN) throw btfError('anonymous member nesting too deep (a cycle?)', { type_id: budget.root });
    const ms = this.members(id);
    budget.visits += ms.length;
    if (budget.visits > MAX_VISITS) throw btfError('too many nested anonymous members', { type_id: budget.root });
    for (const m of ms) {
      if (m.name === name) return baseBits === 0 ? m : { ...m, bitOffset: m.bitOffset + baseBits };
    }
    for (const m of ms) {
      if (m.name !== '') continue;
      const t = this.resolve(m.type);
      const k = this.rawKind(t);
      if (k !== BtfKind.STRUCT && k !== BtfKind.UNION) continue;
      const hit = this.findMemberIn(t, name, baseBits + m.bitOffset, depth + 1, budget);
      if (hit) return hit;
    }
    return undefined;
  }

  /**
   * Resolve a field path from a root type: `field('task_struct', 'signal.rlim')`, or
   * `field('task_struct.signal.rlim')`. Members are found through anonymous structs/unions;
   * `.` after a pointer follows it (recorded in `derefs`); `[n]` indexes arrays (or pointers,
   * which is a deref). `->` is accepted as a separator too. Cached per (root, path).
   */
  field(root: TypeRef, path?: string): BtfField {
    if (path === undefined) {
      if (typeof root !== 'string') throw new PmiError('E_USAGE', 'btf', 'field(id) needs a path');
      const m = /^([^.[-]+)(?:\.|->)?(.*)$/.exec(root);
      if (!m || !m[2]) throw new PmiError('E_USAGE', 'btf', `'${root}' is not a type.field path`, { path: root });
      root = m[1];
      path = m[2];
    }
    let byPath = this.fieldCache.get(root);
    if (!byPath) this.fieldCache.set(root, (byPath = new Map()));
    const hit = byPath.get(path);
    if (hit) return hit;
    const f = this.walk(root, path);
    byPath.set(path, f);
    return f;
  }

  /** field() or undefined when a member on the path does not exist (feature detection). */
  tryField(root: TypeRef, path?: string): BtfField | undefined {
    try {
      return this.field(root, path);
    } catch (e) {
      if (e instanceof PmiError && e.code === 'E_NOT_FOUND') return undefined;
      throw e;
    }
  }

  hasField(root: TypeRef, path?: string): boolean {
    return this.tryField(root, path) !== undefined;
  }

  /** Byte offset of a field inside the root object (paths must not cross pointers). */
  fieldOffset(root: TypeRef, path: string): number {
    const f = this.field(root, path);
    if (f.derefs.length > 0)
      throw new PmiError('E_USAGE', 'btf', `path '${path}' goes through a pointer; use field() and its derefs`, {
        path,
      });
    return f.offset;
  }

  /** Alias of field(): `layout.field('mm_struct', 'pgd')`. */
  get layout(): { field: (root: TypeRef, path?: string) => BtfField } {
    return { field: (r, p) => this.field(r, p) };
  }

  private walk(root: TypeRef, path: string): BtfField {
    const rootId = this.id(root);
    const rootName = typeof root === 'string' ? root : this.describe(rootId);
    const tokens = path.split(/\.|->/);
    let cur = rootId;
    let bit = 0;
    let bitSize = 0;
    const derefs: number[] = [];
    const bad = (msg: string): PmiError =>
      new PmiError('E_NOT_FOUND', 'btf', `${rootName}: path '${path}': ${msg}`, { type: rootName, path });
    const deref = (): number => {
      if (bit % 8 !== 0) throw bad('pointer inside a bitfield');
      derefs.push(bit / 8);
      bit = 0;
      return this.resolve(this.sizeOrType(this.resolve(cur)));
    };
    const parsed = tokens.map((tok) => {
      const m = /^([A-Za-z_$][\w$]*)?((?:\[\d+\])*)$/.exec(tok.trim());
      if (!m || (!m[1] && !m[2]))
        throw new PmiError('E_USAGE', 'btf', `bad path component '${tok}' in '${path}'`, { path });
      return m;
    });
    for (const m of parsed) {
      if (m[1]) {
        let t = this.resolve(cur);
        if (this.rawKind(t) === BtfKind.PTR) t = deref();
        const k = this.rawKind(t);
        if (k !== BtfKind.STRUCT && k !== BtfKind.UNION) throw bad(`${this.describe(t)} has no member '${m[1]}'`);
        const mem = this.findMember(t, m[1]);
        if (!mem) throw bad(`${this.describe(t)} has no member '${m[1]}'`);
        bit += mem.bitOffset;
        bitSize = mem.bitSize;
        cur = mem.type;
      }
      if (m[2]) {
        for (const ix of m[2].slice(1, -1).split('][')) {
          const n = Number(ix);
          const t = this.resolve(cur);
          const k = this.rawKind(t);
          if (k === BtfKind.ARRAY) {
            const elem = this.extra(t, 0);
            bit += n * this.sizeOf(elem) * 8;
            cur = elem;
          } else if (k === BtfKind.PTR) {
            const target = this.sizeOrType(t);
            deref();
            bit = n * this.sizeOf(target) * 8;
            cur = target;
          } else throw bad(`${this.describe(t)} cannot be indexed`);
          bitSize = 0;
        }
      }
    }
    const rt = this.resolve(cur);
    const pointer = this.rawKind(rt) === BtfKind.PTR;
    let size = 0;
    try {
      size = this.sizeOf(cur);
    } catch {
      size = 0;
    }
    const f: BtfField = {
      offset: Math.floor(bit / 8),
      bitOffset: bit,
      bitSize,
      type: cur,
      size,
      pointer,
      derefs: Object.freeze(derefs),
    };
    if (pointer) (f as { target?: number }).target = this.sizeOrType(rt);
    return Object.freeze(f);
  }

  // ---------------------------------------------------------------- enums

  /** Enumerators of an ENUM/ENUM64 (through typedefs). Cached. */
  enumValues(ref: TypeRef): readonly BtfEnumValue[] {
    const id = this.resolve(ref);
    const c = this.enumCache.get(id);
    if (c) return c;
    const k = this.rawKind(id);
    const info = this.info(id);
    const vlen = info & 0xffff;
    const signed = info >>> 31 === 1;
    const out: BtfEnumValue[] = [];
    if (k === BtfKind.ENUM) {
      for (let j = 0; j < vlen; j++) {
        const v = this.extra(id, 2 * j + 1);
        out.push({ name: this.str(this.extra(id, 2 * j)), value: signed ? v | 0 : v });
      }
    } else if (k === BtfKind.ENUM64) {
      for (let j = 0; j < vlen; j++) {
        const lo = BigInt(this.extra(id, 3 * j + 1));
        const hi = BigInt(this.extra(id, 3 * j + 2));
        const u = (hi << 32n) | lo;
        out.push({ name: this.str(this.extra(id, 3 * j)), value: signed ? BigInt.asIntN(64, u) : u });
      }
    } else throw btfError(`${this.describe(id)} is not an enum`, { type_id: id });
    Object.freeze(out);
    this.enumCache.set(id, out);
    return out;
  }

  /** Value of an enumerator; with one argument, searched across every enum (`enumValue('PIDTYPE_TGID')`). */
  enumValue(refOrName: TypeRef, name?: string): number | bigint {
    if (name === undefined) {
      const e = this.enumerator(String(refOrName));
      if (!e) throw notFound(`BTF has no enumerator '${String(refOrName)}'`, { name: refOrName });
      return e.value;
    }
    const v = this.enumValues(refOrName).find((x) => x.name === name);
    if (!v) throw notFound(`enum ${String(refOrName)} has no enumerator '${name}'`, { type: refOrName, name });
    return v.value;
  }

  /** Name of the enumerator with this value ('' when none). */
  enumName(ref: TypeRef, value: number | bigint): string {
    const want = typeof value === 'bigint' ? value : Number.isInteger(value) ? BigInt(value) : undefined;
    if (want === undefined) return '';
    for (const v of this.enumValues(ref)) if (BigInt(v.value) === want) return v.name;
    return '';
  }

  /** Global enumerator lookup (first definition wins). */
  enumerator(name: string): { type: number; value: number | bigint } | undefined {
    if (!this.enumerators) {
      const m = new Map<string, { type: number; value: number | bigint }>();
      for (let id = 1; id < this.count; id++) {
        const k = this.rawKind(id);
        if (k !== BtfKind.ENUM && k !== BtfKind.ENUM64) continue;
        for (const v of this.enumValues(id)) if (!m.has(v.name)) m.set(v.name, { type: id, value: v.value });
      }
      this.enumerators = m;
    }
    return this.enumerators.get(name);
  }

  // ---------------------------------------------------------------- functions

  funcProto(ref: TypeRef): BtfFuncProto {
    let id = this.resolve(ref);
    if (this.rawKind(id) === BtfKind.FUNC) id = this.sizeOrType(id);
    if (this.rawKind(id) === BtfKind.PTR && this.rawKind(this.resolve(this.sizeOrType(id))) === BtfKind.FUNC_PROTO)
      id = this.resolve(this.sizeOrType(id));
    if (this.rawKind(id) !== BtfKind.FUNC_PROTO)
      throw btfError(`${this.describe(id)} is not a function`, { type_id: id });
    const vlen = this.vlen(id);
    const params: BtfParam[] = [];
    for (let j = 0; j < vlen; j++)
      params.push({ name: this.str(this.extra(id, 2 * j)), type: this.extra(id, 2 * j + 1) });
    const last = params[params.length - 1];
    const variadic = last !== undefined && last.type === 0 && last.name === '';
    if (variadic) params.pop();
    return { ret: this.sizeOrType(id), params, variadic };
  }

  // ---------------------------------------------------------------- DATASEC / VAR

  datasec(name: string): BtfDatasec {
    const id = this.getType(name, BtfKind.DATASEC);
    const vlen = this.vlen(id);
    const vars: BtfVar[] = [];
    for (let j = 0; j < vlen; j++) {
      const v = this.extra(id, 3 * j);
      vars.push({
        id: v,
        name: this.name(v),
        type: this.sizeOrType(v),
        linkage: BTF_LINKAGE[this.extra(v, 0)] ?? String(this.extra(v, 0)),
        section: name,
        offset: this.extra(id, 3 * j + 1),
        size: this.extra(id, 3 * j + 2),
      });
    }
    return { id, name, size: this.sizeOrType(id), vars };
  }

  /** A variable described by BTF (only per-CPU variables in vmlinux BTF), with its section and offset. */
  findVar(name: string, section?: string): BtfVar | undefined {
    if (!this.varIdx) {
      const m = new Map<string, BtfVar>();
      for (let id = 1; id < this.count; id++) {
        if (this.rawKind(id) !== BtfKind.DATASEC) continue;
        for (const v of this.datasec(this.name(id)).vars) if (!m.has(v.name)) m.set(v.name, v);
      }
      this.varIdx = m;
    }
    const v = this.varIdx.get(name);
    if (v && section !== undefined && v.section !== section)
      return this.datasec(section).vars.find((x) => x.name === name);
    if (v) return v;
    const id = this.findType(name, BtfKind.VAR);
    if (id === undefined || section !== undefined) return undefined;
    return {
      id,
      name,
      type: this.sizeOrType(id),
      linkage: BTF_LINKAGE[this.extra(id, 0)] ?? '',
      section: '',
      offset: 0,
      size: this.sizeOf(id),
    };
  }

  /** A `.data..percpu` variable (`runqueues`, `current_task`, …); throws E_NOT_FOUND. */
  percpuVar(name: string): BtfVar {
    const v = this.findVar(name, '.data..percpu');
    if (!v) throw notFound(`no per-CPU variable '${name}' in BTF's .data..percpu`, { name });
    return v;
  }

  // ---------------------------------------------------------------- decoding and printing

  /** Decode one record into a plain object (for dumps, tests and the CLI; queries don't need it). */
  type(id: number): BtfType {
    const kind = this.kind(id);
    const info = this.info(id);
    const vlen = info & 0xffff;
    const kindFlag = info >>> 31 === 1;
    const base = { id, kind, kindName: BTF_KIND_NAMES[kind], name: this.name(id), kindFlag, vlen };
    const st = this.sizeOrType(id);
    switch (kind) {
      case BtfKind.VOID:
        return base;
      case BtfKind.INT: {
        const d = this.extra(id, 0);
        const enc = (d >>> 24) & 0xf;
        return {
          ...base,
          size: st,
          bits: d & 0xff,
          intOffset: (d >>> 16) & 0xff,
          encoding: { signed: (enc & 1) !== 0, char: (enc & 2) !== 0, bool: (enc & 4) !== 0 },
        };
      }
      case BtfKind.PTR:
      case BtfKind.TYPEDEF:
      case BtfKind.VOLATILE:
      case BtfKind.CONST:
      case BtfKind.RESTRICT:
      case BtfKind.TYPE_TAG:
        return { ...base, type: st };
      case BtfKind.ARRAY:
        return { ...base, type: this.extra(id, 0), indexType: this.extra(id, 1), nelems: this.extra(id, 2) };
      case BtfKind.STRUCT:
      case BtfKind.UNION:
        return { ...base, size: st, members: this.members(id) };
      case BtfKind.ENUM:
      case BtfKind.ENUM64:
        return { ...base, size: st, values: this.enumValues(id) };
      case BtfKind.FWD:
        return { ...base, fwdKind: kindFlag ? 'union' : 'struct' };
      case BtfKind.FUNC:
        return { ...base, type: st, linkage: BTF_LINKAGE[vlen] ?? String(vlen) };
      case BtfKind.FUNC_PROTO: {
        const params: BtfParam[] = [];
        for (let j = 0; j < vlen; j++)
          params.push({ name: this.str(this.extra(id, 2 * j)), type: this.extra(id, 2 * j + 1) });
        return { ...base, type: st, params };
      }
      case BtfKind.VAR:
        return { ...base, type: st, linkage: BTF_LINKAGE[this.extra(id, 0)] ?? String(this.extra(id, 0)) };
      case BtfKind.DATASEC: {
        const vars: { type: number; offset: number; size: number }[] = [];
        for (let j = 0; j < vlen; j++)
          vars.push({
            type: this.extra(id, 3 * j),
            offset: this.extra(id, 3 * j + 1),
            size: this.extra(id, 3 * j + 2),
          });
        return { ...base, size: st, vars };
      }
      case BtfKind.FLOAT:
        return { ...base, size: st };
      case BtfKind.DECL_TAG:
        return { ...base, type: st, componentIdx: this.extra(id, 0) | 0 };
      default:
        return base;
    }
  }

  /** C-like spelling: `struct list_head *`, `char [16]`, `void (*)(int)`; with a name: `char comm[16]`. */
  typeToString(ref: TypeRef, name = ''): string {
    return typeToString(this, this.id(ref), name);
  }

  /** pahole-like layout of a struct/union; anonymous members are expanded in place (see README-btf.md). */
  structLayout(ref: TypeRef): StructLayout {
    return structLayout(this, this.resolve(ref));
  }
}

/** Parse a BTF blob (vmlinux BTF, or split/module BTF with `base`). Throws E_BTF naming byte offset and type id. */
export function parseBtf(bytes: Uint8Array, opts: ParseBtfOptions & { base?: Btf } = {}): Btf {
  return new Btf(bytes, opts);
}
