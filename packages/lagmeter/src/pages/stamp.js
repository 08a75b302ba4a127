// Pixel stamp: 64 bits (32-bit frame id, 24-bit input sequence, CRC-8) drawn as a 16×4 grid of
// big black/white blocks in the top band of every frame. Blocks are ≥ 40×20 px at 640×360, so
// the pattern survives any lossy codec at any sane bitrate; the CRC rejects misreads.
// Shared by the host page (draw), the client page (read) and the Node unit tests (pure bit logic).

export const COLS = 16;
export const ROWS = 4;
export const BITS = COLS * ROWS;

/** CRC-8 (poly 0x07) over the given bytes. */
export function crc8(bytes) {
  let c = 0;
  for (const b of bytes) {
    c ^= b & 0xff;
    for (let i = 0; i < 8; i++) c = c & 0x80 ? ((c << 1) ^ 0x07) & 0xff : (c << 1) & 0xff;
  }
  return c;
}

function payloadBytes(frameId, inputSeq) {
  return [
    (frameId >>> 24) & 0xff,
    (frameId >>> 16) & 0xff,
    (frameId >>> 8) & 0xff,
    frameId & 0xff,
    (inputSeq >>> 16) & 0xff,
    (inputSeq >>> 8) & 0xff,
    inputSeq & 0xff,
  ];
}

/** The 64 bits (MSB first) for a frame id and input sequence number. */
export function encodeBits(frameId, inputSeq) {
  const bytes = payloadBytes(frameId >>> 0, inputSeq & 0xffffff);
  bytes.push(crc8(bytes));
  const bits = [];
  for (const b of bytes) for (let i = 7; i >= 0; i--) bits.push((b >> i) & 1);
  return bits;
}

/** Inverse of encodeBits; null when the CRC does not match. */
export function decodeBits(bits) {
  if (bits.length !== BITS) return null;
  const bytes = [];
  for (let i = 0; i < 8; i++) {
    let b = 0;
    for (let j = 0; j < 8; j++) b = (b << 1) | (bits[i * 8 + j] ? 1 : 0);
    bytes.push(b);
  }
  if (crc8(bytes.slice(0, 7)) !== bytes[7]) return null;
  const frameId = ((bytes[0] << 24) | (bytes[1] << 16) | (bytes[2] << 8) | bytes[3]) >>> 0;
  const inputSeq = (bytes[4] << 16) | (bytes[5] << 8) | bytes[6];
  return { frameId, inputSeq };
}

/** Geometry of the stamp band for a frame of width w and height h. */
export function stampGeometry(w, h) {
  const bw = Math.floor(w / COLS);
  const bh = Math.max(4, Math.floor(h / 18));
  return { bw, bh, bandH: bh * ROWS };
}

/** Draw the stamp into a 2D context (host side). */
export function drawStamp(ctx, w, h, frameId, inputSeq) {
  const { bw, bh } = stampGeometry(w, h);
  const bits = encodeBits(frameId, inputSeq);
  for (let r = 0; r < ROWS; r++) {
    for (let c = 0; c < COLS; c++) {
      ctx.fillStyle = bits[r * COLS + c] ? '#ffffff' : '#000000';
      ctx.fillRect(c * bw, r * bh, bw, bh);
    }
  }
}

/** Sample size of the read-back canvas: 4×4 px per block. */
export const READ_W = COLS * 4;
export const READ_H = ROWS * 4;

/**
 * Read a stamp from RGBA pixels of the band scaled to READ_W × READ_H (client side): the
 * centre 2×2 pixels of each block, luma threshold at mid-grey.
 */
export function readStamp(rgba) {
  const bits = [];
  for (let r = 0; r < ROWS; r++) {
    for (let c = 0; c < COLS; c++) {
      let sum = 0;
      for (const [dx, dy] of [
        [1, 1],
        [2, 1],
        [1, 2],
        [2, 2],
      ]) {
        const i = ((r * 4 + dy) * READ_W + (c * 4 + dx)) * 4;
        sum += 0.299 * rgba[i] + 0.587 * rgba[i + 1] + 0.114 * rgba[i + 2];
      }
      bits.push(sum / 4 >= 128 ? 1 : 0);
    }
  }
  return decodeBits(bits);
}
