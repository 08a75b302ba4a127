import { describe, expect, it } from 'vitest';
import {
  CPL_SC,
  CPL_UR,
  DECODE_OK,
  DECODE_TRUNCATED,
  DECODE_UNSUPPORTED,
  DECODE_LENGTH,
  MAX_DATAGRAM,
  Tlp,
  TlpKind,
  completionDataBytes,
  decodeTlp,
  encodeCompletion,
  encodeMemRead,
  encodeMemWrite,
  firstByteEnable,
  lastByteEnable,
  parseRequesterId,
} from '../src/codec/tlp.js';

const hexBytes = (s: string) => Uint8Array.from(Buffer.from(s.replace(/[\s|]/g, ''), 'hex'));

// Test vectors from the public capture of the NetTLP hardware (../shared/specs/nettlp-wire.md).
describe('spec test vectors, byte for byte', () => {
  it('LibTLP MRd: 4 DW at 0x2f001000, requester 1b:00, tag 3', () => {
    const buf = new Uint8Array(MAX_DATAGRAM);
    const n = encodeMemRead(buf, 0x2f001000, 16, 0x1b00, 3);
    expect(Buffer.from(buf.subarray(0, n)).toString('hex')).toBe('000000000000' + '00000004' + '1b0003ff' + '2f001000');
    const t = new Tlp();
    expect(decodeTlp(buf, n, t)).toBe(DECODE_OK);
    expect([t.kind, t.address, t.byteLen, t.requester, t.tag, t.lengthDw]).toEqual([
      TlpKind.MemRead,
      0x2f001000,
      16,
      0x1b00,
      3,
      4,
    ]);
  });

  it('root-complex CplD: completer 00:00.0, SC, ByteCount 16, LowerAddress 0', () => {
    const data = Uint8Array.from({ length: 16 }, (_, i) => 0xa0 + i);
    const wire = hexBytes('000000000000 4a000004 00000010 1b000300' + Buffer.from(data).toString('hex'));
    const buf = new Uint8Array(MAX_DATAGRAM);
    const n = encodeCompletion(buf, CPL_SC, 0x0000, 0x1b00, 3, 16, 0, data);
    expect(Buffer.from(buf.subarray(0, n)).equals(Buffer.from(wire))).toBe(true);
    const t = new Tlp();
    expect(decodeTlp(wire, wire.length, t)).toBe(DECODE_OK);
    expect([t.kind, t.status, t.byteCount, t.lowerAddress, t.requester, t.tag, t.completer]).toEqual([
      TlpKind.Completion,
      CPL_SC,
      16,
      0,
      0x1b00,
      3,
      0,
    ]);
    expect(completionDataBytes(t)).toBe(16);
    expect(Buffer.from(wire.subarray(t.payloadOffset, t.payloadOffset + 16)).equals(Buffer.from(data))).toBe(true);
  });
});

describe('byte enables (spec formulas, independent table)', () => {
  // [addr, count, firstBe, lastBe, lengthDw] worked out by hand from the PCIe rules
  const cases: [number, number, number, number][] = [
    [0x1000, 4, 0xf, 0x0],
    [0x1000, 1, 0x1, 0x0],
    [0x1001, 1, 0x2, 0x0],
    [0x1003, 1, 0x8, 0x0],
    [0x1001, 2, 0x6, 0x0],
    [0x1002, 4, 0xc, 0x3],
    [0x1003, 2, 0x8, 0x1],
    [0x1000, 8, 0xf, 0xf],
    [0x1001, 8, 0xe, 0x1],
    [0x1000, 5, 0xf, 0x1],
    [0x1000, 7, 0xf, 0x7],
  ];
  it.each(cases)('addr %i count %i', (addr, count, fbe, lbe) => {
    expect(firstByteEnable(addr, count)).toBe(fbe);
    expect(lastByteEnable(addr, count)).toBe(lbe);
    const buf = new Uint8Array(MAX_DATAGRAM);
    const n = encodeMemRead(buf, addr, count, 0x0100, 7);
    const t = new Tlp();
    expect(decodeTlp(buf, n, t)).toBe(DECODE_OK);
    expect(t.address).toBe(addr);
    expect(t.byteLen).toBe(count);
  });
});

describe('lengths and addresses', () => {
  it('1024 DW encodes as Length 0 with AT clear, and decodes back to 1024', () => {
    const buf = new Uint8Array(MAX_DATAGRAM);
    const n = encodeMemRead(buf, 0x200000, 4096, 0x1b00, 1);
    expect(buf[6 + 2]).toBe(0);
    expect(buf[6 + 3]).toBe(0);
    const t = new Tlp();
    expect(decodeTlp(buf, n, t)).toBe(DECODE_OK);
    expect(t.lengthDw).toBe(1024);
    expect(t.byteLen).toBe(4096);
  });

  it('addresses ≥ 4 GiB use the 4DW form', () => {
    const buf = new Uint8Array(MAX_DATAGRAM);
    const addr = 0x12_3456_7ff0 + 2;
    const n = encodeMemRead(buf, addr, 10, 0x1b00, 9);
    expect(n).toBe(6 + 16);
    expect(buf[6]).toBe(0x20);
    expect(Buffer.from(buf.subarray(6 + 8, 6 + 16)).toString('hex')).toBe('00000012' + '34567ff0');
    const t = new Tlp();
    expect(decodeTlp(buf, n, t)).toBe(DECODE_OK);
    expect(t.address).toBe(addr);
  });

  it('MWr payload is DW-aligned in memory order with disabled bytes zero', () => {
    const buf = new Uint8Array(MAX_DATAGRAM);
    const n = encodeMemWrite(buf, 0x1003, Uint8Array.of(1, 2, 3, 4, 5), 0x1b00, 2);
    expect(Buffer.from(buf.subarray(6, n)).toString('hex')).toBe(
      '40000002' + '1b0002f8' + '00001000' + '00000001' + '02030405',
    );
    const t = new Tlp();
    expect(decodeTlp(buf, n, t)).toBe(DECODE_OK);
    expect([t.kind, t.address, t.byteLen, t.payloadLength]).toEqual([TlpKind.MemWrite, 0x1003, 5, 8]);
  });

  it('split CplD reassembly rule with an unaligned start', () => {
    // A 200-byte read at 0x1006 answered by a second completion starting at 0x1040 (RCB 64).
    const buf = new Uint8Array(MAX_DATAGRAM);
    const data = new Uint8Array(150).fill(7);
    const n = encodeCompletion(buf, CPL_SC, 0, 0x1b00, 4, 200 - 58, 0x40, data.subarray(0, 142));
    const t = new Tlp();
    expect(decodeTlp(buf, n, t)).toBe(DECODE_OK);
    expect(t.byteCount).toBe(142);
    expect(completionDataBytes(t)).toBe(142);
    // offset in the request = requested − ByteCount
    expect(200 - t.byteCount).toBe(58);
    // ByteCount 4096 encodes as 0
    const m = encodeCompletion(buf, CPL_SC, 0, 0x1b00, 4, 4096, 0, new Uint8Array(256));
    expect(decodeTlp(buf, m, t)).toBe(DECODE_OK);
    expect(t.byteCount).toBe(4096);
    expect(completionDataBytes(t)).toBe(256);
  });

  it('Cpl with UR status carries no data', () => {
    const buf = new Uint8Array(MAX_DATAGRAM);
    const n = encodeCompletion(buf, CPL_UR, 0, 0x1b00, 5, 64, 0x10, undefined);
    expect(n).toBe(6 + 12);
    const t = new Tlp();
    expect(decodeTlp(buf, n, t)).toBe(DECODE_OK);
    expect([t.status, t.payloadLength, t.tag]).toEqual([CPL_UR, 0, 5]);
  });
});

describe('malformed datagrams', () => {
  it('are reported, not thrown', () => {
    const t = new Tlp();
    expect(decodeTlp(new Uint8Array(5), 5, t)).toBe(DECODE_TRUNCATED);
    expect(decodeTlp(hexBytes('000000000000 04000001 00000000 00000000'), 18, t)).toBe(DECODE_UNSUPPORTED); // CfgRd0
    expect(decodeTlp(hexBytes('000000000000 4a000004 00000010 1b000300 0000'), 20, t)).toBe(DECODE_LENGTH);
    expect(decodeTlp(hexBytes('000000000000 20000001 1b00000f 00000000'), 18, t)).toBe(DECODE_TRUNCATED);
  });
});

describe('requester ids', () => {
  it('parses BB:DF and BB:DD.F', () => {
    expect(parseRequesterId('1b:00')).toBe(0x1b00);
    expect(parseRequesterId('01:00.1')).toBe(0x0101);
    expect(parseRequesterId('01:1f.7')).toBe(0x01ff);
    expect(parseRequesterId('zz')).toBeUndefined();
  });
});

describe('pcap', () => {
  it('writes frames tshark/tcpdump-style readers accept (checked by parsing the layout)', async () => {
    const { PcapWriter } = await import('../src/pcap/writer.js');
    const { mkdtempSync, readFileSync, rmSync } = await import('node:fs');
    const { join } = await import('node:path');
    const { tmpdir } = await import('node:os');
    const dir = mkdtempSync(join(tmpdir(), 'pmi-pcap-'));
    const file = join(dir, 'x.pcap');
    const w = new PcapWriter(file);
    const buf = new Uint8Array(MAX_DATAGRAM);
    const n = encodeMemRead(buf, 0x2f001000, 16, 0x1b00, 3);
    w.write('127.0.0.1', 0x3003, '127.0.0.2', 0x3003, buf, n);
    w.close();
    const b = readFileSync(file);
    rmSync(dir, { recursive: true });
    expect(b.readUInt32LE(0)).toBe(0xa1b23c4d);
    expect(b.readUInt32LE(20)).toBe(1);
    expect(b.readUInt32LE(24 + 8)).toBe(14 + 20 + 8 + n);
    const ip = 24 + 16 + 14;
    expect(b[ip + 9]).toBe(17);
    expect(b.readUInt16BE(ip + 20)).toBe(0x3003);
    // IPv4 header checksum verifies to 0xffff
    let sum = 0;
    for (let i = 0; i < 20; i += 2) sum += b.readUInt16BE(ip + i);
    while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
    expect(sum).toBe(0xffff);
    expect(b.subarray(ip + 28, ip + 28 + n).equals(Buffer.from(buf.subarray(0, n)))).toBe(true);
  });
});
