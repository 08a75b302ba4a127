import { describe, expect, it } from 'vitest';
import { MAX_DATAGRAM, Tlp, decodeTlp, encodeMemRead, encodeMemWrite, DECODE_OK } from '../src/codec/tlp.js';
import { parseNetTlpUri } from '../src/client/index.js';

describe('codec regression (found while building the client)', () => {
  it('decodes request addresses with bit 31 set as positive numbers (3DW and 4DW)', () => {
    const b = new Uint8Array(MAX_DATAGRAM);
    const t = new Tlp();
    for (const a of [0x8000_0000, 0xffff_f000, 0xfee0_0003, 0x1_8000_0000, 0x7f_ffff_fffc]) {
      expect(decodeTlp(b, encodeMemRead(b, a, 16, 0, 1), t)).toBe(DECODE_OK);
      expect(t.address).toBe(a);
      expect(decodeTlp(b, encodeMemWrite(b, a, new Uint8Array(9), 0, 1), t)).toBe(DECODE_OK);
      expect(t.address).toBe(a);
    }
  });
});

describe('nettlp:// URI', () => {
  it('defaults for a loopback host', () => {
    const o = parseNetTlpUri('nettlp://127.0.0.2');
    expect(o).toMatchObject({
      host: '127.0.0.2',
      portBase: 0x3000,
      local: '127.0.0.1',
      tags: 16,
      mrrs: 512,
      mps: 256,
      timeoutMs: 5,
      retries: 5,
      requester: 0,
      probe: true,
      writable: false,
      io: 'auto',
      spinUs: 50,
    });
    expect(o.ranges).toBeUndefined();
  });

  it('all parameters', () => {
    const o = parseNetTlpUri(
      'nettlp://192.168.10.1:12288?local=192.168.10.3&tags=256&mrrs=4096&mps=128&timeout=50&retries=0&requester=01:00.1&ranges=0-0x9f000,0x100000%2B3G,4G+1G&pcap=/tmp/x.pcap&writable=1',
    );
    expect(o).toMatchObject({
      tags: 256,
      mrrs: 4096,
      mps: 128,
      timeoutMs: 50,
      retries: 0,
      requester: 0x0101,
      writable: true,
    });
    expect(o.ranges).toEqual([
      { start: 0, end: 0x9f000 },
      { start: 0x100000, end: 0x100000 + 3 * 2 ** 30 },
      { start: 2 ** 32, end: 2 ** 32 + 2 ** 30 },
    ]);
    expect(parseNetTlpUri('nettlp://10.0.0.1?local=10.0.0.2&requester=1b:00&probe=1').requester).toBe(0x1b00);
    expect(parseNetTlpUri('nettlp://127.0.0.2?io=dgram&spin=0')).toMatchObject({ io: 'dgram', spinUs: 0 });
    expect(parseNetTlpUri('nettlp://127.0.0.2?io=native&spin=200')).toMatchObject({ io: 'native', spinUs: 200 });
  });

  it.each([
    ['nettlp://127.0.0.2?tags=0', 'tags'],
    ['nettlp://127.0.0.2?tags=257', 'tags'],
    ['nettlp://127.0.0.2?mrrs=500', 'mrrs'],
    ['nettlp://127.0.0.2?mps=8192', 'mps'],
    ['nettlp://127.0.0.2?timeout=abc', 'timeout'],
    ['nettlp://127.0.0.2?requester=zz', 'requester'],
    ['nettlp://127.0.0.2?ranges=5-3', 'ranges'],
    ['nettlp://127.0.0.2?ranges=foo', 'ranges'],
    ['nettlp://127.0.0.2?local=nope', 'local'],
    ['nettlp://127.0.0.2?bogus=1', 'bogus'],
    ['nettlp://127.0.0.2:99999', 'port'],
    ['nettlp://127.0.0.2:65500?tags=100', 'tags'],
    ['nettlp://192.168.10.1?ranges=0-1G', 'local'],
    ['nettlp://192.168.10.1?local=192.168.10.3', 'ranges'],
    ['nettlp://127.0.0.2?probe=0', 'ranges'],
    ['nettlp:/x', 'host'],
    ['nettlp://127.0.0.2?io=fast', 'io'],
    ['nettlp://127.0.0.2?spin=-1', 'spin'],
    ['nettlp://127.0.0.2?spin=20000', 'spin'],
  ])('%s → E_SOURCE_URI naming %s', (uri, parameter) => {
    expect(() => parseNetTlpUri(uri)).toThrow(
      expect.objectContaining({ code: 'E_SOURCE_URI', data: expect.objectContaining({ parameter }) }),
    );
  });

  it('explains why a remote host needs ranges= or probe=1', () => {
    expect(() => parseNetTlpUri('nettlp://192.168.10.1?local=192.168.10.3')).toThrow(/MMIO/);
    expect(() => parseNetTlpUri('nettlp://192.168.10.1')).toThrow(/local=IP is required/);
  });
});
