import { Reject, Win } from './window.js';

/** `30 00 31 00 … 39 00`: the digits keep their own ASCII slot in kallsyms_token_table. */
export const DIGIT_RUN = new Uint8Array([
  0x30, 0, 0x31, 0, 0x32, 0, 0x33, 0, 0x34, 0, 0x35, 0, 0x36, 0, 0x37, 0, 0x38, 0, 0x39, 0,
]);

/** Longest token accepted (kallsyms tokens are short; KSYM_NAME_LEN bounds them anyway). */
const MAX_TOKEN = 512;

export interface TokenTable {
  /** Buffer position of token 0 (kallsyms_token_table). */
  start: number;
  /** Position just after the last token's NUL. */
  end: number;
  /** Position of kallsyms_token_index (256 × u16). */
  index: number;
  /** Token bytes, 256 entries. */
  tokens: Uint8Array[];
}

function printable(c: number): boolean {
  return c >= 0x20 && c < 0x7f;
}

/**
 * Parse the token table around a digit-run hit at `hit` (position of the '0' token):
 * walk back 47 strings to token 1, forward to token 255's end, then find token_index (256 u16 at
 * the end, aligned 2/4/8) whose entries equal the strings' own offsets; token 0's start comes
 * from token_index[1] (what precedes token 0 is other data, so it cannot be found by walking).
 */
export function parseTokenTable(w: Win, hit: number): TokenTable {
  const starts = new Int32Array(257);
  starts[0x30] = hit;
  // Backwards: token i ends with the NUL just before token i+1.
  for (let i = 0x2f; i >= 1; i--) {
    const nul = starts[i + 1] - 1;
    w.need(nul - MAX_TOKEN, MAX_TOKEN + 1, 'token_table');
    if (w.u8(nul) !== 0) throw new Reject(`token ${i} is not NUL-terminated`);
    let s = nul;
    while (s > nul - MAX_TOKEN && w.u8(s - 1) !== 0) {
      if (!printable(w.u8(s - 1))) throw new Reject(`token ${i} has a non-printable byte`);
      s--;
    }
    if (s === nul - MAX_TOKEN) throw new Reject(`token ${i} is longer than ${MAX_TOKEN} bytes`);
    starts[i] = s;
  }
  // Forwards from '0' to the end of token 255.
  for (let i = 0x30; i <= 0xff; i++) {
    let p = starts[i];
    w.need(p, MAX_TOKEN + 1, 'token_table');
    const lim = p + MAX_TOKEN;
    while (p < lim && w.u8(p) !== 0) {
      if (!printable(w.u8(p))) throw new Reject(`token ${i} has a non-printable byte`);
      p++;
    }
    if (p === lim) throw new Reject(`token ${i} is longer than ${MAX_TOKEN} bytes`);
    starts[i + 1] = p + 1;
  }
  const end = starts[256];
  // token_index: entry i = offset of token i from token 0.
  let lastWhy = '';
  for (const align of [8, 4, 2]) {
    const pa = w.pa(end);
    const idx = end + ((align - (pa % align)) % align);
    w.need(idx, 512, 'token_index');
    if (w.u16(idx) !== 0) {
      lastWhy = 'token_index[0] is not 0';
      continue;
    }
    const off1 = w.u16(idx + 2);
    const t0 = starts[1] - off1;
    if (off1 < 1 || off1 > MAX_TOKEN) {
      lastWhy = `token_index[1] = ${off1} is not a plausible length of token 0`;
      continue;
    }
    w.need(t0, off1, 'token_table');
    let ok = true;
    for (let p = t0; p < starts[1] - 1; p++) {
      if (!printable(w.u8(p))) {
        ok = false;
        break;
      }
    }
    if (!ok || w.u8(starts[1] - 1) !== 0) {
      lastWhy = 'token 0 (located through token_index[1]) is not a printable string';
      continue;
    }
    starts[0] = t0;
    for (let i = 2; i < 256; i++) {
      if (w.u16(idx + 2 * i) !== starts[i] - t0) {
        ok = false;
        lastWhy = `token_index[${i}] = ${w.u16(idx + 2 * i)} differs from the table's own offset ${starts[i] - t0}`;
        break;
      }
    }
    if (!ok) continue;
    const tokens: Uint8Array[] = [];
    for (let i = 0; i < 256; i++) tokens.push(w.buf.slice(starts[i], starts[i + 1] - 1));
    return { start: t0, end, index: idx, tokens };
  }
  throw new Reject(`no token_index after the table: ${lastWhy}`);
}
