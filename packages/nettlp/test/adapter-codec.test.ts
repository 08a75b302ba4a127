/** Codec fixes found while building the adapter (kept here: the adapter owns these tests). */
import { describe, expect, it } from 'vitest';
import { CPL_SC, DECODE_OK, MAX_DATAGRAM, Tlp, decodeTlp, encodeCompletion } from '../src/codec/tlp.js';

describe('encodeCompletion', () => {
  it('a CplD with an empty data array still carries one DW (Length 1, not 0 = 1024 DW)', () => {
    const buf = new Uint8Array(MAX_DATAGRAM).fill(0xaa);
    const n = encodeCompletion(buf, CPL_SC, 0, 0x0100, 1, 1, 0x40, new Uint8Array(0));
    expect(n).toBe(6 + 12 + 4);
    expect(buf[6]).toBe(0x4a);
    expect([buf[8] & 3, buf[9]]).toEqual([0, 1]);
    expect([...buf.subarray(18, 22)]).toEqual([0, 0, 0, 0]);
    const t = new Tlp();
    expect(decodeTlp(buf, n, t)).toBe(DECODE_OK);
    expect(t.payloadLength).toBe(4);
  });
});

describe('decodeTlp', () => {
  it('3DW/4DW addresses with bit 31 set decode as positive (the `&` mask is signed in JS)', () => {
    const t = new Tlp();
    const mrd32 = Buffer.from('000000000000' + '00000001' + '0100000f' + 'fffff000', 'hex');
    expect(decodeTlp(mrd32, mrd32.length, t)).toBe(DECODE_OK);
    expect(t.address).toBe(0xfffff000);
    const mrd64 = Buffer.from('000000000000' + '20000001' + '0100000f' + '00000001' + '80000004', 'hex');
    expect(decodeTlp(mrd64, mrd64.length, t)).toBe(DECODE_OK);
    expect(t.address).toBe(0x1_8000_0004);
  });
});
