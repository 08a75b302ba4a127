/**
 * PCIe TLP codec for NetTLP datagrams (facts: ../shared/specs/nettlp-wire.md).
 *
 * Everything here is allocation-free: encoders write into a caller-supplied Uint8Array and
 * return the datagram length; the decoder fills a caller-owned {@link Tlp} in place and
 * returns a status code instead of throwing, so the adapter's receive loop and the client's
 * completion path never allocate per datagram. Multi-byte TLP fields are big-endian, read
 * byte by byte; 64-bit addresses are two 32-bit halves combined as hi * 2^32 + lo (physical
 * addresses are ≤ 52 bits, exact in a double).
 */

/** NetTLP header: u16 sequence, u32 timestamp (big-endian). LibTLP sends zeros. */
export const NETTLP_HDR_LEN = 6;
export const TLP_3DW = 12;
export const TLP_4DW = 16;
/** Largest TLP payload: Length is 10 bits, 0 meaning 1024 DW. */
export const MAX_PAYLOAD_BYTES = 4096;
/** Largest datagram we ever build or accept: header + 4DW + 4096 bytes of data. */
export const MAX_DATAGRAM = NETTLP_HDR_LEN + TLP_4DW + MAX_PAYLOAD_BYTES;

/** Fmt/Type byte values (byte 0 of the TLP). */
export const FMT_MRD32 = 0x00;
export const FMT_MRD64 = 0x20;
export const FMT_MWR32 = 0x40;
export const FMT_MWR64 = 0x60;
export const FMT_CPL = 0x0a;
export const FMT_CPLD = 0x4a;

/** Completion status (byte 6 bits 7–5 of a Cpl/CplD). */
export const CPL_SC = 0;
export const CPL_UR = 1;
export const CPL_CRS = 2;
export const CPL_CA = 4;

export function cplStatusName(status: number): string {
  switch (status) {
    case CPL_SC:
      return 'SC';
    case CPL_UR:
      return 'UR';
    case CPL_CRS:
      return 'CRS';
    case CPL_CA:
      return 'CA';
    default:
      return `reserved(${status})`;
  }
}

export const enum TlpKind {
  MemRead = 1,
  MemWrite = 2,
  Completion = 3,
}

/** Decoder results; 0 is success, the rest name what was wrong with the datagram. */
export const DECODE_OK = 0;
export const DECODE_TRUNCATED = 1; // shorter than the NetTLP header + TLP header
export const DECODE_UNSUPPORTED = 2; // a Fmt/Type this codec does not handle (config, messages, atomics…)
export const DECODE_LENGTH = 3; // payload shorter than Length says (or data on a type that has none)
export const DECODE_ADDRESS = 4; // 4DW header carrying an address < 4 GiB, or a >52-bit address
export const DECODE_RESERVED = 5; // reserved bits/values set where they must not be (e.g. TLP digest, AT)

export const DECODE_ERROR_NAMES = ['ok', 'truncated', 'unsupported type', 'bad length', 'bad address', 'reserved bits'];

/** A decoded TLP. Reused across decodes: copy what you keep. */
export class Tlp {
  kind: TlpKind = TlpKind.MemRead;
  fmtType = 0;
  /** NetTLP header fields. */
  seq = 0;
  timestamp = 0;
  /** Length in DW (1…1024; a wire value of 0 decodes to 1024). */
  lengthDw = 0;
  tc = 0;
  attr = 0;
  /** Requests: requester ID and tag. Completions: the requester ID and tag they answer. */
  requester = 0;
  tag = 0;
  firstBe = 0;
  lastBe = 0;
  /** Requests: the DW-aligned address from the header plus the first-BE offset (address of the first enabled byte). */
  address = 0;
  /** Requests: bytes enabled by the byte enables (exact request size). */
  byteLen = 0;
  /** Completions. */
  completer = 0;
  status = 0;
  bcm = 0;
  /** Bytes still outstanding including this completion (1…4096; wire 0 = 4096). */
  byteCount = 0;
  lowerAddress = 0;
  /** Offset of the TLP payload in the datagram, and its length in bytes (Length×4 when the type has data). */
  payloadOffset = 0;
  payloadLength = 0;
}

/** First-DW byte enable for a request of count bytes at addr (count ≥ 1). */
export function firstByteEnable(addr: number, count: number): number {
  const off = addr & 3;
  const lengthDw = ((off + count + 3) >>> 2) | 0;
  if (lengthDw === 1) return (((1 << count) - 1) << off) & 0xf;
  return (0xf << off) & 0xf;
}

/** Last-DW byte enable: 0 for a 1-DW request, else the valid bytes of the last DW. */
export function lastByteEnable(addr: number, count: number): number {
  const off = addr & 3;
  const lengthDw = (off + count + 3) >>> 2;
  if (lengthDw === 1) return 0;
  const endMod = (addr + count) & 3;
  return endMod === 0 ? 0xf : (1 << endMod) - 1;
}

/** Length in DW covering count bytes at addr. */
export function lengthInDw(addr: number, count: number): number {
  return ((addr & 3) + count + 3) >>> 2;
}

function writeNetTlpHeader(buf: Uint8Array, seq: number, timestamp: number): void {
  buf[0] = (seq >>> 8) & 0xff;
  buf[1] = seq & 0xff;
  buf[2] = (timestamp >>> 24) & 0xff;
  buf[3] = (timestamp >>> 16) & 0xff;
  buf[4] = (timestamp >>> 8) & 0xff;
  buf[5] = timestamp & 0xff;
}

/** Writes DW0 (fmt/type, TC 0, attributes 0, AT 0, length) at offset o. Length 1024 encodes as 0. */
function writeDw0(buf: Uint8Array, o: number, fmtType: number, lengthDw: number): void {
  const wire = lengthDw & 0x3ff; // 1024 → 0; AT bits stay clear (LibTLP's masking bug sets them)
  buf[o] = fmtType;
  buf[o + 1] = 0;
  buf[o + 2] = (wire >>> 8) & 0x3;
  buf[o + 3] = wire & 0xff;
}

/** Writes the address field(s) at offset o; returns the header length (12 or 16). */
function writeAddress(buf: Uint8Array, o: number, addr: number, is64: boolean): void {
  const lo = addr % 0x1_0000_0000;
  if (is64) {
    const hi = Math.floor(addr / 0x1_0000_0000);
    buf[o] = (hi >>> 24) & 0xff;
    buf[o + 1] = (hi >>> 16) & 0xff;
    buf[o + 2] = (hi >>> 8) & 0xff;
    buf[o + 3] = hi & 0xff;
    o += 4;
  }
  buf[o] = (lo >>> 24) & 0xff;
  buf[o + 1] = (lo >>> 16) & 0xff;
  buf[o + 2] = (lo >>> 8) & 0xff;
  buf[o + 3] = lo & 0xfc;
}

/**
 * Encode a NetTLP datagram carrying a Memory Read of count bytes (1…4096) at addr.
 * The caller keeps requests within MRRS and inside one 4 KiB page. Returns the datagram length.
 */
export function encodeMemRead(
  buf: Uint8Array,
  addr: number,
  count: number,
  requester: number,
  tag: number,
  seq = 0,
  timestamp = 0,
): number {
  const is64 = addr >= 0x1_0000_0000;
  writeNetTlpHeader(buf, seq, timestamp);
  const o = NETTLP_HDR_LEN;
  writeDw0(buf, o, is64 ? FMT_MRD64 : FMT_MRD32, lengthInDw(addr, count));
  buf[o + 4] = (requester >>> 8) & 0xff;
  buf[o + 5] = requester & 0xff;
  buf[o + 6] = tag & 0xff;
  buf[o + 7] = (lastByteEnable(addr, count) << 4) | firstByteEnable(addr, count);
  writeAddress(buf, o + 8, addr, is64);
  return o + (is64 ? TLP_4DW : TLP_3DW);
}

/**
 * Encode a Memory Write of data (1…4096 bytes, within one 4 KiB page and MPS) at addr.
 * The payload is DW-aligned: data starts at byte (addr & 3) of the first DW; disabled
 * bytes are zero. Returns the datagram length.
 */
export function encodeMemWrite(
  buf: Uint8Array,
  addr: number,
  data: Uint8Array,
  requester: number,
  tag: number,
  seq = 0,
  timestamp = 0,
): number {
  const count = data.length;
  const is64 = addr >= 0x1_0000_0000;
  const lengthDw = lengthInDw(addr, count);
  writeNetTlpHeader(buf, seq, timestamp);
  const o = NETTLP_HDR_LEN;
  writeDw0(buf, o, is64 ? FMT_MWR64 : FMT_MWR32, lengthDw);
  buf[o + 4] = (requester >>> 8) & 0xff;
  buf[o + 5] = requester & 0xff;
  buf[o + 6] = tag & 0xff;
  buf[o + 7] = (lastByteEnable(addr, count) << 4) | firstByteEnable(addr, count);
  writeAddress(buf, o + 8, addr, is64);
  const p = o + (is64 ? TLP_4DW : TLP_3DW);
  const end = p + lengthDw * 4;
  const lead = addr & 3;
  buf.fill(0, p, p + lead);
  buf.set(data, p + lead);
  buf.fill(0, p + lead + count, end);
  return end;
}

/**
 * Encode a completion. With data (CplD), `data` holds the valid bytes and is placed at
 * (lowerAddress & 3) in the first DW; Length covers the padded DWs. Without data (Cpl),
 * used for UR/CA/CRS. byteCount is 1…4096 (4096 encodes as 0).
 */
export function encodeCompletion(
  buf: Uint8Array,
  status: number,
  completer: number,
  requester: number,
  tag: number,
  byteCount: number,
  lowerAddress: number,
  data: Uint8Array | undefined,
  seq = 0,
  timestamp = 0,
): number {
  writeNetTlpHeader(buf, seq, timestamp);
  const o = NETTLP_HDR_LEN;
  const lead = lowerAddress & 3;
  // A CplD carries at least one DW (an empty data array would otherwise encode Length 0 = 1024 DW).
  const lengthDw = data ? Math.max(1, (lead + data.length + 3) >>> 2) : 0;
  writeDw0(buf, o, data ? FMT_CPLD : FMT_CPL, lengthDw);
  if (!data) buf[o + 3] = 0; // Cpl has no data: Length is reserved (0)
  const bc = byteCount & 0xfff; // 4096 → 0
  buf[o + 4] = (completer >>> 8) & 0xff;
  buf[o + 5] = completer & 0xff;
  buf[o + 6] = ((status & 7) << 5) | ((bc >>> 8) & 0xf);
  buf[o + 7] = bc & 0xff;
  buf[o + 8] = (requester >>> 8) & 0xff;
  buf[o + 9] = requester & 0xff;
  buf[o + 10] = tag & 0xff;
  buf[o + 11] = lowerAddress & 0x7f;
  const p = o + TLP_3DW;
  if (!data) return p;
  const end = p + lengthDw * 4;
  buf.fill(0, p, p + lead);
  buf.set(data, p + lead);
  buf.fill(0, p + lead + data.length, end);
  return end;
}

function u32(b: Uint8Array, o: number): number {
  return ((b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3]) >>> 0;
}

/** Number of enabled bytes from a request's byte enables and Length (PCIe rules). */
function enabledSpan(lengthDw: number, firstBe: number, lastBe: number): { lead: number; count: number } {
  // Leading disabled bytes in the first DW, trailing disabled bytes in the last DW.
  const lead = firstBe === 0 ? 0 : 31 - Math.clz32(firstBe & -firstBe);
  if (lengthDw === 1) {
    if (firstBe === 0) return { lead: 0, count: 0 }; // zero-length read (flush)
    const top = 31 - Math.clz32(firstBe);
    return { lead, count: top - lead + 1 };
  }
  const lastTop = lastBe === 0 ? -1 : 31 - Math.clz32(lastBe);
  return { lead, count: lengthDw * 4 - lead - (3 - lastTop) };
}

/**
 * Decode one NetTLP datagram (header + TLP) of length len into out. Returns DECODE_OK or
 * a DECODE_* code; never throws, never reads past len.
 */
export function decodeTlp(buf: Uint8Array, len: number, out: Tlp): number {
  if (len > buf.length) len = buf.length;
  if (len < NETTLP_HDR_LEN + TLP_3DW) return DECODE_TRUNCATED;
  out.seq = (buf[0] << 8) | buf[1];
  out.timestamp = u32(buf, 2);
  const o = NETTLP_HDR_LEN;
  const fmtType = buf[o];
  out.fmtType = fmtType;
  const b2 = buf[o + 2];
  out.tc = (buf[o + 1] >>> 4) & 7;
  out.attr = (b2 >>> 4) & 3;
  if (b2 & 0x80) return DECODE_RESERVED; // TD: NetTLP carries no digest
  const wireLen = ((b2 & 3) << 8) | buf[o + 3];
  const lengthDw = wireLen === 0 ? 1024 : wireLen;
  out.lengthDw = lengthDw;
  switch (fmtType) {
    case FMT_MRD32:
    case FMT_MRD64:
    case FMT_MWR32:
    case FMT_MWR64: {
      const is64 = (fmtType & 0x20) !== 0;
      const hdr = is64 ? TLP_4DW : TLP_3DW;
      if (len < o + hdr) return DECODE_TRUNCATED;
      if (b2 & 0x0c) return DECODE_RESERVED; // AT must be 0 (untranslated)
      out.kind = fmtType & 0x40 ? TlpKind.MemWrite : TlpKind.MemRead;
      out.requester = (buf[o + 4] << 8) | buf[o + 5];
      out.tag = buf[o + 6];
      out.firstBe = buf[o + 7] & 0xf;
      out.lastBe = buf[o + 7] >>> 4;
      if ((lengthDw === 1 && out.lastBe !== 0) || (lengthDw > 1 && (out.firstBe === 0 || out.lastBe === 0))) {
        return DECODE_RESERVED;
      }
      let base: number;
      if (is64) {
        const hi = u32(buf, o + 8);
        if (hi === 0 || hi > 0xfffff) return DECODE_ADDRESS; // 4DW must be ≥ 4 GiB; we support 52-bit physical
        base = hi * 0x1_0000_0000 + ((u32(buf, o + 12) & 0xfffffffc) >>> 0); // `&` is signed: >>> 0 keeps bit 31
      } else {
        base = (u32(buf, o + 8) & 0xfffffffc) >>> 0;
      }
      const span = enabledSpan(lengthDw, out.firstBe, out.lastBe);
      out.address = base + span.lead;
      out.byteLen = span.count;
      out.payloadOffset = o + hdr;
      if (out.kind === TlpKind.MemWrite) {
        out.payloadLength = lengthDw * 4;
        if (len < out.payloadOffset + out.payloadLength) return DECODE_LENGTH;
      } else {
        out.payloadLength = 0;
      }
      return DECODE_OK;
    }
    case FMT_CPL:
    case FMT_CPLD: {
      out.kind = TlpKind.Completion;
      out.completer = (buf[o + 4] << 8) | buf[o + 5];
      out.status = buf[o + 6] >>> 5;
      out.bcm = (buf[o + 6] >>> 4) & 1;
      const bc = ((buf[o + 6] & 0xf) << 8) | buf[o + 7];
      out.byteCount = bc === 0 ? 4096 : bc;
      out.requester = (buf[o + 8] << 8) | buf[o + 9];
      out.tag = buf[o + 10];
      out.lowerAddress = buf[o + 11] & 0x7f;
      out.payloadOffset = o + TLP_3DW;
      if (fmtType === FMT_CPLD) {
        out.payloadLength = lengthDw * 4;
        if (len < out.payloadOffset + out.payloadLength) return DECODE_LENGTH;
      } else {
        out.payloadLength = 0;
      }
      return DECODE_OK;
    }
    default:
      return DECODE_UNSUPPORTED;
  }
}

/**
 * Valid data bytes carried by a decoded CplD (spec rule): min(Length×4 − (LowerAddress & 3), ByteCount).
 * Their offset in the request is (requested − ByteCount); they start at payloadOffset + (LowerAddress & 3).
 */
export function completionDataBytes(t: Tlp): number {
  const avail = t.payloadLength - (t.lowerAddress & 3);
  return avail < t.byteCount ? avail : t.byteCount;
}

/** Requester/completer ID from "BB:DD.F" or "BB:DF" (hex bus, devfn byte) forms. */
export function parseRequesterId(text: string): number | undefined {
  let m = /^([0-9a-f]{1,2}):([0-9a-f]{1,2})$/i.exec(text.trim());
  if (m) return (parseInt(m[1], 16) << 8) | parseInt(m[2], 16);
  m = /^([0-9a-f]{1,2}):([0-1]?[0-9a-f])\.([0-7])$/i.exec(text.trim());
  if (m) {
    const dev = parseInt(m[2], 16);
    if (dev > 31) return undefined;
    return (parseInt(m[1], 16) << 8) | (dev << 3) | parseInt(m[3], 10);
  }
  return undefined;
}

export function formatRequesterId(id: number): string {
  return `${((id >>> 8) & 0xff).toString(16).padStart(2, '0')}:${(id & 0xff).toString(16).padStart(2, '0')}`;
}
