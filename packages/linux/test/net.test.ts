import { describe, expect, it } from 'vitest';
import { ipv6 } from '../src/net/index.js';

const bytes = (hex: string): Uint8Array => Uint8Array.from(Buffer.from(hex, 'hex'));

describe('ipv6 text (RFC 5952, as the lab truth decodes /proc/net/tcp6)', () => {
  it.each([
    ['00000000000000000000000000000000', '::'],
    ['00000000000000000000000000000001', '::1'],
    ['00000000000000000000ffff7f000001', '::ffff:127.0.0.1'],
    ['fe800000000000000000000000000001', 'fe80::1'],
    ['20010db8000000010000000000000001', '2001:db8:0:1::1'],
    ['20010db8000100010001000100010001', '2001:db8:1:1:1:1:1:1'],
    ['20010000000000010000000000000000', '2001:0:0:1::'],
  ])('%s → %s', (hex, text) => expect(ipv6(bytes(hex))).toBe(text));
});
