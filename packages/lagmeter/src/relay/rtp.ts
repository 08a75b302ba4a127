import type { RtpHeader } from './types.js';

/**
 * Parse the fixed RTP header when the datagram is RTP (RFC 3550; SRTP leaves it in clear).
 * Demultiplexing per RFC 7983/5761: first byte 128–191 (version 2) and the second byte not in
 * 192–223 (RTCP: SR 200, RR 201, SDES 202, BYE 203, APP 204, RTPFB 205, PSFB 206, XR 207 …).
 * Payload types accepted: dynamic 96–127 and the static ones 0–34.
 */
export function parseRtp(buf: Uint8Array): RtpHeader | undefined {
  if (buf.length < 12) return undefined;
  const b0 = buf[0];
  const b1 = buf[1];
  if (b0 >> 6 !== 2) return undefined;
  if (b1 >= 192 && b1 <= 223) return undefined;
  const pt = b1 & 0x7f;
  if (!((pt >= 96 && pt <= 127) || pt <= 34)) return undefined;
  const cc = b0 & 0x0f;
  if (buf.length < 12 + 4 * cc) return undefined;
  return {
    ssrc: ((buf[8] << 24) | (buf[9] << 16) | (buf[10] << 8) | buf[11]) >>> 0,
    seq: (buf[2] << 8) | buf[3],
    ts: ((buf[4] << 24) | (buf[5] << 16) | (buf[6] << 8) | buf[7]) >>> 0,
    marker: (b1 & 0x80) !== 0,
    pt,
  };
}

/** Build a minimal RTP packet (tests, benches). */
export function buildRtp(h: RtpHeader, payloadBytes: number): Buffer {
  const b = Buffer.alloc(12 + payloadBytes);
  b[0] = 0x80;
  b[1] = (h.marker ? 0x80 : 0) | (h.pt & 0x7f);
  b.writeUInt16BE(h.seq & 0xffff, 2);
  b.writeUInt32BE(h.ts >>> 0, 4);
  b.writeUInt32BE(h.ssrc >>> 0, 8);
  return b;
}
