import { PmiError } from '@pmi/core';
import { BTF_HEADER_LEN, BTF_KIND_MAX, BTF_KIND_NAMES, BTF_MAGIC, BtfKind, extraWords } from './kinds.js';

/** The BTF header (offsets count from the end of the header). */
export interface BtfHeader {
  magic: number;
  version: number;
  flags: number;
  hdrLen: number;
  typeOff: number;
  typeLen: number;
  strOff: number;
  strLen: number;
  /** Bytes the blob spans: hdrLen + the end of the later section. */
  totalLen: number;
}

export interface ParseBtfOptions {
  /** Base BTF for split BTF (module BTF): ids and string offsets continue after the base's. */
  base?: BtfData;
  /** Size of a pointer in bytes (BTF does not record it); default: the base's, else 8. */
  pointerSize?: number;
}

const ORIGIN = 'btf';

export function btfError(
  msg: string,
  data: { offset?: number; type_id?: number; [k: string]: unknown } = {},
): PmiError {
  const where: string[] = [];
  if (data.type_id !== undefined) where.push(`type id ${data.type_id}`);
  if (data.offset !== undefined) where.push(`byte offset ${data.offset}`);
  return new PmiError('E_BTF', ORIGIN, `BTF: ${msg}${where.length ? ` (${where.join(', ')})` : ''}`, data);
}

/**
 * Read and check a BTF header. Throws E_BTF; never reads beyond `bytes`.
 * Only little-endian BTF is accepted (x86-64, arm64). `available`: bytes the blob may span
 * (defaults to bytes.length; the locator passes more to size a blob from its header alone).
 */
export function parseBtfHeader(bytes: Uint8Array, available = bytes.length): BtfHeader {
  if (bytes.length < BTF_HEADER_LEN)
    throw btfError(`blob of ${bytes.length} bytes is shorter than the header`, { offset: 0 });
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const magic = dv.getUint16(0, true);
  if (magic !== BTF_MAGIC) {
    const be = magic === 0x9feb ? ' (big-endian BTF is not supported)' : '';
    throw btfError(`bad magic 0x${magic.toString(16)}${be}`, { offset: 0 });
  }
  const version = bytes[2];
  if (version !== 1) throw btfError(`unsupported version ${version}`, { offset: 2 });
  const flags = bytes[3];
  const hdrLen = dv.getUint32(4, true);
  if (hdrLen < BTF_HEADER_LEN || hdrLen > available) throw btfError(`bad hdr_len ${hdrLen}`, { offset: 4 });
  const typeOff = dv.getUint32(8, true);
  const typeLen = dv.getUint32(12, true);
  const strOff = dv.getUint32(16, true);
  const strLen = dv.getUint32(20, true);
  const typeEnd = hdrLen + typeOff + typeLen;
  const strEnd = hdrLen + strOff + strLen;
  if (typeOff % 4 !== 0) throw btfError(`type_off ${typeOff} is not 4-aligned`, { offset: 8 });
  if (typeLen % 4 !== 0) throw btfError(`type_len ${typeLen} is not a multiple of 4`, { offset: 12 });
  if (typeEnd > available)
    throw btfError(`type section [${hdrLen + typeOff}, ${typeEnd}) beyond the ${available}-byte blob`, { offset: 8 });
  if (strEnd > available)
    throw btfError(`string section [${hdrLen + strOff}, ${strEnd}) beyond the ${available}-byte blob`, { offset: 16 });
  if (typeLen > 0 && strLen > 0 && typeOff < strOff + strLen && strOff < typeOff + typeLen)
    throw btfError('type and string sections overlap', { offset: 8 });
  return { magic, version, flags, hdrLen, typeOff, typeLen, strOff, strLen, totalLen: Math.max(typeEnd, strEnd) };
}

/**
 * The raw, validated tables of one BTF blob. Records live in `words` (the type section as u32s,
 * a copy so it is 4-aligned); `offs[i]` is the word index of local type `startId + i`.
 * Queries are in `Btf` (btf.ts), which extends this.
 */
export class BtfData {
  readonly header: BtfHeader;
  /** The blob this was parsed from (exactly header.totalLen bytes). */
  readonly bytes: Uint8Array;
  readonly base: BtfData | undefined;
  /** First id held by this blob (1 for base BTF; base.count for split BTF). */
  readonly startId: number;
  /** One past the highest id (ids 0..count-1 exist, 0 being void). */
  readonly count: number;
  /** First string offset held by this blob (0, or the end of the base's strings). */
  readonly strStart: number;
  /** One past the last valid string offset. */
  readonly strEnd: number;
  readonly pointerSize: number;
  protected readonly words: Uint32Array;
  protected readonly offs: Uint32Array;
  protected readonly strs: Uint8Array;
  /** Byte offset of the type section in `bytes` (for error messages). */
  protected readonly typeBase: number;

  constructor(input: Uint8Array, opts: ParseBtfOptions = {}) {
    const h = parseBtfHeader(input);
    this.header = h;
    this.bytes = input.length === h.totalLen ? input : input.subarray(0, h.totalLen);
    const base = opts.base;
    this.base = base;
    this.startId = base ? base.count : 1;
    this.strStart = base ? base.strEnd : 0;
    this.strEnd = this.strStart + h.strLen;
    this.typeBase = h.hdrLen + h.typeOff;
    this.strs = input.subarray(h.hdrLen + h.strOff, h.hdrLen + h.strOff + h.strLen);
    if (!base && (h.strLen === 0 || this.strs[0] !== 0))
      throw btfError('string section must start with a NUL byte', { offset: h.hdrLen + h.strOff });
    if (h.strLen > 0 && this.strs[h.strLen - 1] !== 0)
      throw btfError('string section is not NUL-terminated', { offset: h.hdrLen + h.strOff + h.strLen - 1 });

    // 4-aligned copy of the type section (little-endian hosts: x86-64, arm64).
    const nWords = h.typeLen >>> 2;
    const words = new Uint32Array(nWords);
    new Uint8Array(words.buffer).set(input.subarray(this.typeBase, this.typeBase + h.typeLen));
    this.words = words;

    // Pass 1: record boundaries, kinds, name offsets, extra-data sizes.
    const offsTmp = new Uint32Array(Math.floor(nWords / 3) + 1);
    let n = 0;
    let pos = 0;
    const strEnd = this.strEnd;
    while (pos < nWords) {
      const id = this.startId + n;
      if (pos + 3 > nWords) throw btfError('truncated type record', { type_id: id, offset: this.typeBase + pos * 4 });
      const info = words[pos + 1];
      const kind = (info >>> 24) & 0x1f;
      const vlen = info & 0xffff;
      if (kind === 0 || kind > BTF_KIND_MAX)
        throw btfError(`unknown kind ${kind}`, { type_id: id, offset: this.typeBase + pos * 4, kind });
      if (words[pos] >= strEnd)
        throw btfError(`name offset ${words[pos]} beyond the strings (${strEnd})`, {
          type_id: id,
          offset: this.typeBase + pos * 4,
        });
      const extra = extraWords(kind, vlen);
      if (pos + 3 + extra > nWords)
        throw btfError(`${BTF_KIND_NAMES[kind]} record with vlen ${vlen} is truncated`, {
          type_id: id,
          offset: this.typeBase + pos * 4,
        });
      offsTmp[n++] = pos;
      pos += 3 + extra;
    }
    this.offs = offsTmp.slice(0, n);
    this.count = this.startId + n;

    this.pointerSize = opts.pointerSize ?? base?.pointerSize ?? 8;
    this.checkRecords();
  }

  /** Pass 2: every referenced type id exists (and has the right kind where the format demands it). */
  private checkRecords(): void {
    const words = this.words;
    const offs = this.offs;
    const count = this.count;
    const strEnd = this.strEnd;
    for (let i = 0; i < offs.length; i++) {
      const p = offs[i];
      const id = this.startId + i;
      const info = words[p + 1];
      const kind = (info >>> 24) & 0x1f;
      const vlen = info & 0xffff;
      const st = words[p + 2];
      const fail = (msg: string, word = 0): never => {
        throw btfError(`${BTF_KIND_NAMES[kind]}: ${msg}`, { type_id: id, offset: this.typeBase + (p + word) * 4 });
      };
      switch (kind) {
        case BtfKind.INT: {
          const d = words[p + 3];
          const bits = d & 0xff;
          const off = (d >>> 16) & 0xff;
          const enc = (d >>> 24) & 0x0f;
          if (st !== 1 && st !== 2 && st !== 4 && st !== 8 && st !== 16) fail(`bad size ${st}`, 2);
          if (bits === 0 || bits > 128 || off + bits > st * 8)
            fail(`bad bits ${bits} / offset ${off} for size ${st}`, 3);
          if (enc !== 0 && enc !== 1 && enc !== 2 && enc !== 4) fail(`bad encoding ${enc}`, 3);
          break;
        }
        case BtfKind.PTR:
        case BtfKind.TYPEDEF:
        case BtfKind.VOLATILE:
        case BtfKind.CONST:
        case BtfKind.RESTRICT:
        case BtfKind.TYPE_TAG:
          if (st >= count) fail(`type id ${st} out of range (${count} types)`, 2);
          break;
        case BtfKind.FUNC:
          if (st >= count || this.rawKind(st) !== BtfKind.FUNC_PROTO) fail(`type id ${st} is not a FUNC_PROTO`, 2);
          break;
        case BtfKind.VAR:
          if (st >= count || st === 0) fail(`type id ${st} out of range (${count} types)`, 2);
          break;
        case BtfKind.DECL_TAG:
          if (st >= count || st === 0) fail(`type id ${st} out of range (${count} types)`, 2);
          if ((words[p + 3] | 0) < -1) fail(`bad component index ${words[p + 3] | 0}`, 3);
          break;
        case BtfKind.ARRAY:
          if (words[p + 3] >= count) fail(`element type id ${words[p + 3]} out of range (${count} types)`, 3);
          if (words[p + 4] >= count) fail(`index type id ${words[p + 4]} out of range (${count} types)`, 4);
          break;
        case BtfKind.STRUCT:
        case BtfKind.UNION:
          for (let j = 0, q = p + 3; j < vlen; j++, q += 3) {
            if (words[q] >= strEnd) fail(`member ${j} name offset ${words[q]} beyond the strings (${strEnd})`, q - p);
            if (words[q + 1] >= count)
              fail(`member ${j} type id ${words[q + 1]} out of range (${count} types)`, q + 1 - p);
          }
          break;
        case BtfKind.ENUM:
          if (st !== 1 && st !== 2 && st !== 4 && st !== 8) fail(`bad size ${st}`, 2);
          for (let j = 0, q = p + 3; j < vlen; j++, q += 2)
            if (words[q] >= strEnd)
              fail(`enumerator ${j} name offset ${words[q]} beyond the strings (${strEnd})`, q - p);
          break;
        case BtfKind.ENUM64:
          if (st !== 1 && st !== 2 && st !== 4 && st !== 8) fail(`bad size ${st}`, 2);
          for (let j = 0, q = p + 3; j < vlen; j++, q += 3)
            if (words[q] >= strEnd)
              fail(`enumerator ${j} name offset ${words[q]} beyond the strings (${strEnd})`, q - p);
          break;
        case BtfKind.FUNC_PROTO:
          if (st >= count) fail(`return type id ${st} out of range (${count} types)`, 2);
          for (let j = 0, q = p + 3; j < vlen; j++, q += 2) {
            if (words[q] >= strEnd)
              fail(`parameter ${j} name offset ${words[q]} beyond the strings (${strEnd})`, q - p);
            if (words[q + 1] >= count)
              fail(`parameter ${j} type id ${words[q + 1]} out of range (${count} types)`, q + 1 - p);
          }
          break;
        case BtfKind.DATASEC:
          for (let j = 0, q = p + 3; j < vlen; j++, q += 3) {
            const t = words[q];
            if (t >= count || t === 0 || this.rawKind(t) !== BtfKind.VAR)
              fail(`entry ${j} type id ${t} is not a VAR`, q - p);
          }
          break;
        case BtfKind.FLOAT:
          if (st !== 2 && st !== 4 && st !== 8 && st !== 12 && st !== 16) fail(`bad size ${st}`, 2);
          break;
        case BtfKind.FWD:
          break;
      }
    }
  }

  /** Kind of a valid id without range checks (used during validation). */
  protected rawKind(id: number): number {
    if (id === 0) return 0;
    if (id >= this.startId) return (this.words[this.offs[id - this.startId] + 1] >>> 24) & 0x1f;
    return this.base!.rawKind(id);
  }

  /** Number of types, not counting void (the figure bpftool prints as the last id). */
  get typeCount(): number {
    return this.count - 1;
  }

  /** Types held by this blob itself (count - startId). */
  get localCount(): number {
    return this.offs.length;
  }

  // ---- raw record access (hot; every query builds on these) ----

  /** Throws E_BTF for ids that do not exist. */
  protected checkId(id: number): void {
    if (!(id >= 0 && id < this.count && Number.isInteger(id)))
      throw btfError(`type id ${id} out of range (${this.count} types)`, { type_id: id });
  }

  /** The BtfData holding id (this, or a base). */
  protected owner(id: number): BtfData {
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    let b: BtfData = this;
    while (id < b.startId && b.base) b = b.base;
    return b;
  }

  kind(id: number): number {
    this.checkId(id);
    return this.rawKind(id);
  }

  /** info word: vlen (bits 0–15), kind (24–28), kind_flag (31). 0 for void. */
  info(id: number): number {
    this.checkId(id);
    if (id === 0) return 0;
    const b = this.owner(id);
    return b.words[b.offs[id - b.startId] + 1];
  }

  vlen(id: number): number {
    return this.info(id) & 0xffff;
  }

  kindFlag(id: number): boolean {
    return this.info(id) >>> 31 === 1;
  }

  /** The size|type word of the record (size for INT/STRUCT/UNION/ENUM/ENUM64/FLOAT/DATASEC, else a type id). */
  sizeOrType(id: number): number {
    this.checkId(id);
    if (id === 0) return 0;
    const b = this.owner(id);
    return b.words[b.offs[id - b.startId] + 2];
  }

  nameOff(id: number): number {
    this.checkId(id);
    if (id === 0) return 0;
    const b = this.owner(id);
    return b.words[b.offs[id - b.startId]];
  }

  /** Extra-data word k of a record (k = 0 is the first word after the 12-byte record). */
  extra(id: number, k: number): number {
    const b = this.owner(id);
    return b.words[b.offs[id - b.startId] + 3 + k];
  }

  /** Byte offset of a type's record inside its own blob. */
  recordOffset(id: number): number {
    this.checkId(id);
    if (id === 0) return -1;
    const b = this.owner(id);
    return b.typeBase + b.offs[id - b.startId] * 4;
  }

  /** The whole string section decoded once (latin1); names are slices of it. */
  private strText?: string;

  /** The NUL-terminated string at a (global) string offset. */
  str(off: number): string {
    if (off === 0) return '';
    if (off < this.strStart) return this.base!.str(off);
    if (!(off < this.strEnd))
      throw btfError(`string offset ${off} out of range (${this.strEnd})`, { string_offset: off });
    const start = off - this.strStart;
    const end = this.strs.indexOf(0, start); // the section ends with a NUL (checked at parse)
    if (this.strText === undefined) this.strText = latin1(this.strs);
    return this.strText.slice(start, end);
  }

  /** Name of a type ('' for anonymous types and void). */
  name(id: number): string {
    return this.str(this.nameOff(id));
  }
}

function latin1(b: Uint8Array): string {
  if (typeof Buffer !== 'undefined') return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('latin1');
  let s = '';
  for (let i = 0; i < b.length; i += 4096)
    s += String.fromCharCode.apply(null, b.subarray(i, Math.min(b.length, i + 4096)) as unknown as number[]);
  return s;
}
