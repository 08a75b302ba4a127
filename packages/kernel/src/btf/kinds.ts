/** BTF kinds (include/uapi/linux/btf.h). Kind 0 is only used for id 0, `void`. */
export const BtfKind = {
  VOID: 0,
  INT: 1,
  PTR: 2,
  ARRAY: 3,
  STRUCT: 4,
  UNION: 5,
  ENUM: 6,
  FWD: 7,
  TYPEDEF: 8,
  VOLATILE: 9,
  CONST: 10,
  RESTRICT: 11,
  FUNC: 12,
  FUNC_PROTO: 13,
  VAR: 14,
  DATASEC: 15,
  FLOAT: 16,
  DECL_TAG: 17,
  TYPE_TAG: 18,
  ENUM64: 19,
} as const;

export type BtfKind = (typeof BtfKind)[keyof typeof BtfKind];
export type BtfKindName = keyof typeof BtfKind;

export const BTF_KIND_NAMES: readonly BtfKindName[] = [
  'VOID',
  'INT',
  'PTR',
  'ARRAY',
  'STRUCT',
  'UNION',
  'ENUM',
  'FWD',
  'TYPEDEF',
  'VOLATILE',
  'CONST',
  'RESTRICT',
  'FUNC',
  'FUNC_PROTO',
  'VAR',
  'DATASEC',
  'FLOAT',
  'DECL_TAG',
  'TYPE_TAG',
  'ENUM64',
];

/** Highest kind this parser knows; anything above cannot be skipped (its extra data size is unknown). */
export const BTF_KIND_MAX = 19;
export const BTF_MAGIC = 0xeb9f;
export const BTF_HEADER_LEN = 24;

/** INT encoding bits (btf_type.int_data bits 24–27). */
export const BtfIntEncoding = { SIGNED: 1, CHAR: 2, BOOL: 4 } as const;

/** FUNC linkage (vlen of a FUNC) and VAR linkage. */
export const BTF_LINKAGE = ['static', 'global', 'extern'] as const;

/** Accepts a kind number or its name ('STRUCT', 'struct'). */
export type BtfKindSpec = BtfKind | BtfKindName | Lowercase<BtfKindName>;

export function kindNumber(k: BtfKindSpec): number {
  if (typeof k === 'number') return k;
  const n = (BtfKind as Record<string, number>)[k.toUpperCase()];
  if (n === undefined) throw new TypeError(`unknown BTF kind name '${k}'`);
  return n;
}

/** Extra 32-bit words that follow the 12-byte record of a kind with vlen entries; -1 for unknown kinds. */
export function extraWords(kind: number, vlen: number): number {
  switch (kind) {
    case 1: // INT
    case 14: // VAR
    case 17: // DECL_TAG
      return 1;
    case 2:
    case 7:
    case 8:
    case 9:
    case 10:
    case 11:
    case 12:
    case 16:
    case 18:
      return 0;
    case 3: // ARRAY
      return 3;
    case 4: // STRUCT
    case 5: // UNION
    case 15: // DATASEC
    case 19: // ENUM64
      return 3 * vlen;
    case 6: // ENUM
    case 13: // FUNC_PROTO
      return 2 * vlen;
    default:
      return -1;
  }
}
