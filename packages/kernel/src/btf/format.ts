import { BtfKind } from './kinds.js';
import type { Btf } from './btf.js';
import { btfError } from './parse.js';

const MAX_DEPTH = 48;
/** Work limits so malformed BTF (cycles, exponential DAGs) cannot hang printing. */
const MAX_CALLS = 20_000;
const MAX_ROWS = 100_000;

/** One row of `structLayout` (the shape `pmi types STRUCT` renders). */
export interface StructLayoutRow {
  /** Byte offset from the start of the outer struct (floor for bitfields). */
  offset: number;
  /** Byte size of the member's type (storage unit for bitfields). */
  size: number;
  /** Bitfields only: absolute bit offset from the start of the outer struct. */
  bit_offset?: number;
  /** Bitfields only: width in bits. */
  bit_size?: number;
  /** Member name; '' for the header row of an anonymous struct/union. */
  name: string;
  /** C spelling of the member type (`struct list_head *`, `char [16]`, `union {...}`). */
  type: string;
  type_id: number;
  /** Nesting: 0 for direct members; members of an anonymous struct/union are one deeper. */
  depth: number;
  /** Set on the header row of an anonymous struct/union member; its members follow at depth+1. */
  anon?: 'struct' | 'union';
}

export interface StructLayout {
  id: number;
  name: string;
  kind: 'struct' | 'union';
  size: number;
  rows: StructLayoutRow[];
}

function tagged(btf: Btf, id: number, kw: string): string {
  const n = btf.name(id);
  return n ? `${kw} ${n}` : `${kw} {...}`;
}

function join(base: string, inner: string): string {
  return inner ? `${base} ${inner}` : base;
}

/** C declarator spelling (right-left rule), bounded depth so malformed cycles terminate. */
export function typeToString(btf: Btf, id: number, inner = ''): string {
  return decl(btf, id, inner, 0, { calls: 0 });
}

function decl(btf: Btf, id: number, inner: string, depth: number, budget: { calls: number }): string {
  if (depth > MAX_DEPTH || ++budget.calls > MAX_CALLS) return join('...', inner);
  const rec = (b: Btf, t: number, i: string, d: number): string => decl(b, t, i, d, budget);
  const k = btf.kind(id);
  switch (k) {
    case BtfKind.VOID:
      return join('void', inner);
    case BtfKind.INT:
    case BtfKind.FLOAT:
    case BtfKind.TYPEDEF:
      return join(btf.name(id) || '(anon)', inner);
    case BtfKind.STRUCT:
      return join(tagged(btf, id, 'struct'), inner);
    case BtfKind.UNION:
      return join(tagged(btf, id, 'union'), inner);
    case BtfKind.ENUM:
    case BtfKind.ENUM64:
      return join(tagged(btf, id, 'enum'), inner);
    case BtfKind.FWD:
      return join(`${btf.kindFlag(id) ? 'union' : 'struct'} ${btf.name(id)}`, inner);
    case BtfKind.PTR:
      return rec(btf, btf.sizeOrType(id), `*${inner}`, depth + 1);
    case BtfKind.CONST:
    case BtfKind.VOLATILE:
    case BtfKind.RESTRICT: {
      const q = k === BtfKind.CONST ? 'const' : k === BtfKind.VOLATILE ? 'volatile' : 'restrict';
      const t = btf.sizeOrType(id);
      // A qualified pointer: the qualifier goes after the '*' (char *const p).
      if (btf.kind(t) === BtfKind.PTR)
        return rec(btf, btf.sizeOrType(t), `*${q}${inner ? ` ${inner}` : ''}`, depth + 2);
      return `${q} ${rec(btf, t, inner, depth + 1)}`;
    }
    case BtfKind.TYPE_TAG:
      return rec(btf, btf.sizeOrType(id), inner, depth + 1);
    case BtfKind.ARRAY: {
      const a = btf.array(id);
      const wrapped = inner.startsWith('*') ? `(${inner})` : inner;
      return rec(btf, a.type, `${wrapped}[${a.nelems}]`, depth + 1);
    }
    case BtfKind.FUNC_PROTO: {
      const p = btf.funcProto(id);
      const params = p.params.map((x) => rec(btf, x.type, x.name, depth + 1));
      if (p.variadic) params.push('...');
      const wrapped = inner.startsWith('*') ? `(${inner})` : inner;
      return rec(btf, p.ret, `${wrapped}(${params.length ? params.join(', ') : 'void'})`, depth + 1);
    }
    case BtfKind.FUNC:
      return rec(btf, btf.sizeOrType(id), inner || btf.name(id), depth + 1);
    case BtfKind.VAR:
      return rec(btf, btf.sizeOrType(id), inner || btf.name(id), depth + 1);
    case BtfKind.DATASEC:
      return join(`SEC("${btf.name(id)}")`, inner);
    case BtfKind.DECL_TAG:
      return join(`__attribute__((btf_decl_tag("${btf.name(id)}")))`, inner);
    default:
      return join(`<kind ${k}>`, inner);
  }
}

function sizeOr0(btf: Btf, id: number): number {
  try {
    return btf.sizeOf(id);
  } catch {
    return 0;
  }
}

/**
 * Rows for every member; an anonymous struct/union member gets a header row (`anon`, name '')
 * followed by its own members at depth+1, with offsets from the start of the *outer* struct —
 * what pahole prints, flattened into a table.
 */
export function structLayout(btf: Btf, id: number): StructLayout {
  const k = btf.kind(id);
  const rows: StructLayoutRow[] = [];
  const walk = (t: number, baseBits: number, depth: number): void => {
    if (depth > MAX_DEPTH) throw btfError('anonymous member nesting too deep (a cycle?)', { type_id: id });
    for (const m of btf.members(t)) {
      const bits = baseBits + m.bitOffset;
      const mt = btf.resolve(m.type);
      const mk = btf.kind(mt);
      const row: StructLayoutRow = {
        offset: Math.floor(bits / 8),
        size: sizeOr0(btf, m.type),
        name: m.name,
        type: typeToString(btf, m.type),
        type_id: m.type,
        depth,
      };
      if (m.bitSize > 0) {
        row.bit_offset = bits;
        row.bit_size = m.bitSize;
      }
      if (m.name === '' && (mk === BtfKind.STRUCT || mk === BtfKind.UNION) && btf.name(mt) === '') {
        row.anon = mk === BtfKind.STRUCT ? 'struct' : 'union';
        rows.push(row);
        walk(mt, bits, depth + 1);
      } else rows.push(row);
      if (rows.length > MAX_ROWS)
        throw btfError(`more than ${MAX_ROWS} layout rows (malformed nesting)`, { type_id: id });
    }
  };
  walk(id, 0, 0);
  return {
    id,
    name: btf.name(id),
    kind: k === BtfKind.UNION ? 'union' : 'struct',
    size: btf.sizeOf(id),
    rows,
  };
}
