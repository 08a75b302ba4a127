/**
 * Volatility 3 ISF (Intermediate Symbol Format) JSON: symbols (name → address) and user_types
 * (struct/union sizes, field offsets and types), read losslessly (64-bit addresses exact).
 * `.json.xz` is decompressed with the `xz` tool (xz-utils; Node has no xz), `.json.gz` with zlib.
 */
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { gunzipSync } from 'node:zlib';
import { PmiError } from '@pmi/core';
import { SymbolTableBuilder, splitAddress, type SymbolTable } from '../kallsyms/symbols.js';
import { parseJsonLossless, toBigInt } from './json-lossless.js';

export interface IsfField {
  offset: number;
  /** Readable type: "int", "struct list_head", "char[16]", "struct mm_struct *", "unsigned int:1@3". */
  type: string;
  /** Bitfields only. */
  bitPosition?: number;
  bitLength?: number;
}

export interface IsfStruct {
  kind: string;
  size: number;
  fields: Record<string, IsfField>;
}

/** The shape the BTF layer can compare with. */
export interface IsfTypeLayouts {
  structs: Record<string, IsfStruct>;
}

export interface IsfSymbols extends IsfTypeLayouts {
  /** Symbols; type letters are '?' (ISF carries no nm letter). Addresses as stored (link-time for dwarf2json). */
  symbols: SymbolTable;
  /** The ISF type of each symbol that has one (readable string). */
  symbolTypes: Map<string, string>;
  /** metadata.format and producer, when present. */
  format?: string;
  producer?: string;
  /** Linux banner(s) from metadata, when present. */
  banners: string[];
}

type Json = Record<string, unknown>;

function isObj(v: unknown): v is Json {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** Readable name of an ISF type descriptor. */
export function isfTypeName(t: unknown, depth = 0): string {
  if (!isObj(t) || depth > 32) return '?';
  const kind = String(t.kind ?? '?');
  switch (kind) {
    case 'base':
      return String(t.name ?? '?');
    case 'struct':
    case 'union':
    case 'enum':
    case 'class':
      return `${kind} ${String(t.name ?? '?')}`;
    case 'pointer':
      return `${isfTypeName(t.subtype, depth + 1)} *`;
    case 'array':
      return `${isfTypeName(t.subtype, depth + 1)}[${String(t.count ?? '')}]`;
    case 'bitfield':
      return `${isfTypeName(t.type, depth + 1)}:${String(t.bit_length)}@${String(t.bit_position)}`;
    case 'function':
      return 'function';
    default:
      return kind;
  }
}

/** Parse ISF JSON text. */
export function parseIsf(text: string): IsfSymbols {
  const doc = parseJsonLossless(text, 'isf');
  if (!isObj(doc) || (!isObj(doc.symbols) && !isObj(doc.user_types)))
    throw new PmiError('E_SYMBOLS', 'isf', 'not an ISF file: no "symbols" or "user_types" object', {});
  const syms = isObj(doc.symbols) ? doc.symbols : {};
  const names = Object.keys(syms);
  const b = new SymbolTableBuilder(names.length);
  const symbolTypes = new Map<string, string>();
  // keep table order sorted by address (as kallsyms is), names ascending for equal addresses
  const rows: { name: string; addr: bigint }[] = [];
  for (const name of names) {
    const s = syms[name];
    if (!isObj(s)) continue;
    const addr = toBigInt(s.address);
    if (addr === undefined) continue;
    rows.push({ name, addr: BigInt.asUintN(64, addr) });
    if (s.type !== undefined) symbolTypes.set(name, isfTypeName(s.type));
  }
  rows.sort((x, y) => (x.addr < y.addr ? -1 : x.addr > y.addr ? 1 : x.name < y.name ? -1 : 1));
  for (const r of rows) {
    const [hi, lo] = splitAddress(r.addr);
    const at = b.reserveBytes(r.name.length);
    for (let k = 0; k < r.name.length; k++) b.nameBuffer[at + k] = r.name.charCodeAt(k) & 0xff;
    b.commit(r.name.length, 0x3f, hi, lo);
  }
  const structs: Record<string, IsfStruct> = {};
  if (isObj(doc.user_types)) {
    for (const [name, t] of Object.entries(doc.user_types)) {
      if (!isObj(t)) continue;
      const fields: Record<string, IsfField> = {};
      if (isObj(t.fields)) {
        for (const [fname, f] of Object.entries(t.fields)) {
          if (!isObj(f)) continue;
          const field: IsfField = { offset: Number(f.offset ?? 0), type: isfTypeName(f.type) };
          if (isObj(f.type) && f.type.kind === 'bitfield') {
            field.bitPosition = Number(f.type.bit_position);
            field.bitLength = Number(f.type.bit_length);
          }
          fields[fname] = field;
        }
      }
      structs[name] = { kind: String(t.kind ?? 'struct'), size: Number(t.size ?? 0), fields };
    }
  }
  const meta = isObj(doc.metadata) ? doc.metadata : {};
  const producer = isObj(meta.producer)
    ? `${String(meta.producer.name ?? '')} ${String(meta.producer.version ?? '')}`.trim()
    : undefined;
  const banners: string[] = [];
  // dwarf2json records linux_banner's bytes as base64 constant_data
  const lb = syms.linux_banner;
  if (isObj(lb) && typeof lb.constant_data === 'string') {
    banners.push(Buffer.from(lb.constant_data, 'base64').toString('latin1').replace(/\0+$/, ''));
  }
  return {
    symbols: b.build(),
    symbolTypes,
    structs,
    format: typeof meta.format === 'string' ? meta.format : undefined,
    producer,
    banners,
  };
}

/** Decompress with `xz -dc` (xz-utils). */
function xzDecompress(path: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const p = spawn('xz', ['-dc', '--', path], { stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    p.stdout.on('data', (d: Buffer) => out.push(d));
    p.stderr.on('data', (d: Buffer) => err.push(d));
    p.on('error', (e) =>
      reject(
        new PmiError(
          'E_SOURCE_IO',
          'isf',
          `cannot run xz to read ${path} (install xz-utils): ${e.message}`,
          { path },
          e,
        ),
      ),
    );
    p.on('close', (code) => {
      if (code === 0) resolve(Buffer.concat(out));
      else
        reject(
          new PmiError('E_SYMBOLS', 'isf', `xz -dc ${path} failed: ${Buffer.concat(err).toString().trim()}`, { path }),
        );
    });
  });
}

/** Read an ISF file: `.json`, `.json.xz` or `.json.gz`. */
export async function readIsfFile(path: string): Promise<IsfSymbols> {
  let data: Buffer;
  try {
    if (path.endsWith('.xz')) data = await xzDecompress(path);
    else {
      data = await readFile(path);
      if (path.endsWith('.gz') || (data[0] === 0x1f && data[1] === 0x8b)) data = gunzipSync(data);
    }
  } catch (e) {
    if (e instanceof PmiError) throw e;
    throw new PmiError('E_SOURCE_IO', 'isf', `cannot read ${path}: ${(e as Error).message}`, { path }, e);
  }
  return parseIsf(data.toString('utf8'));
}
