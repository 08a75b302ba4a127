/**
 * Just enough x86-64 decoding to recognise what the kernel writes over its own text at boot and at
 * run time: NOPs (every encoding add_nops/optimize_nops emit, and "JMP over INT3s" padding), INT3,
 * RET, direct CALL/JMP/Jcc with their targets, and register-indirect CALL/JMP (retpoline sites).
 */

/** Length of the ModRM (+SIB +displacement) bytes at buf[p], or −1. */
function modrmLen(buf: Uint8Array, p: number, end: number): number {
  if (p >= end) return -1;
  const m = buf[p];
  const mod = m >> 6;
  const rm = m & 7;
  let len = 1;
  if (mod !== 3 && rm === 4) {
    if (p + 1 >= end) return -1;
    const sib = buf[p + 1];
    len++;
    if (mod === 0 && (sib & 7) === 5) len += 4;
  }
  if (mod === 1) len += 1;
  else if (mod === 2) len += 4;
  else if (mod === 0 && rm === 5) len += 4;
  return p + len <= end ? len : -1;
}

/** Length of one NOP instruction at buf[p] (prefixes 66/2e/3e + 90, or [prefixes] 0f 1f /0), or 0. */
export function nopLen(buf: Uint8Array, p: number, end: number): number {
  let q = p;
  while (q < end && q - p < 14 && (buf[q] === 0x66 || buf[q] === 0x2e || buf[q] === 0x3e)) q++;
  if (q >= end) return 0;
  if (buf[q] === 0x90) return q + 1 - p;
  if (buf[q] === 0x0f && q + 1 < end && buf[q + 1] === 0x1f) {
    if (q + 2 >= end || ((buf[q + 2] >> 3) & 7) !== 0) return 0;
    const ml = modrmLen(buf, q + 2, end);
    return ml < 0 ? 0 : q + 2 + ml - p;
  }
  return 0;
}

/**
 * Length of the run of padding from p up to at most `end`: NOP instructions, and "JMP.d8/JMP.d32 to
 * the end of the run followed by INT3s" (add_nop for long runs). Returns 0 when buf[p] starts none.
 */
export function padRun(buf: Uint8Array, p: number, end: number, int3Ok = false): number {
  let q = p;
  while (q < end) {
    const n = nopLen(buf, q, end);
    if (n > 0) {
      q += n;
      continue;
    }
    if (int3Ok && buf[q] === 0xcc) {
      q++;
      continue;
    }
    // JMP over INT3 padding (only to the end of the run)
    if (buf[q] === 0xeb && q + 1 < end) {
      const t = q + 2 + ((buf[q + 1] << 24) >> 24);
      if (t > q + 2 && t <= end && allInt3(buf, q + 2, t)) {
        q = t;
        continue;
      }
    }
    if (buf[q] === 0xe9 && q + 4 < end) {
      const t = q + 5 + readI32(buf, q + 1);
      if (t > q + 5 && t <= end && allInt3(buf, q + 5, t)) {
        q = t;
        continue;
      }
    }
    break;
  }
  return q - p;
}

function allInt3(buf: Uint8Array, a: number, b: number): boolean {
  for (let i = a; i < b; i++) if (buf[i] !== 0xcc) return false;
  return true;
}

export function readI32(buf: Uint8Array, p: number): number {
  return buf[p] | (buf[p + 1] << 8) | (buf[p + 2] << 16) | (buf[p + 3] << 24) | 0;
}

export function readU32(buf: Uint8Array, p: number): number {
  return readI32(buf, p) >>> 0;
}

export type Insn =
  | { op: 'nop' | 'int3' | 'ret' | 'lfence'; len: number }
  | { op: 'call' | 'jmp' | 'jcc'; len: number; target: number }
  | { op: 'callr' | 'jmpr'; len: number; reg: number };

/**
 * Decode one instruction of the small set above at buf[p] (positions are relative: a rel target is
 * returned as a position in the same coordinate as p, i.e. p + len + displacement), or undefined.
 * `cs` prefixes (0x2e) before CALL/JMP are accepted (retpoline/call-depth padding).
 */
export function decodeInsn(buf: Uint8Array, p: number, end: number): Insn | undefined {
  const n = nopLen(buf, p, end);
  if (n > 0) return { op: 'nop', len: n };
  let q = p;
  while (q < end && buf[q] === 0x2e && q - p < 3) q++;
  if (q >= end) return undefined;
  const o = buf[q];
  if (q === p) {
    if (o === 0xcc) return { op: 'int3', len: 1 };
    if (o === 0xc3) return { op: 'ret', len: 1 };
    if (o === 0x0f && q + 2 < end && buf[q + 1] === 0xae && buf[q + 2] === 0xe8) return { op: 'lfence', len: 3 };
  }
  if ((o === 0xe8 || o === 0xe9) && q + 5 <= end) {
    const len = q + 5 - p;
    return { op: o === 0xe8 ? 'call' : 'jmp', len, target: p + len + readI32(buf, q + 1) };
  }
  if (o === 0xeb && q + 2 <= end) return { op: 'jmp', len: q + 2 - p, target: q + 2 + ((buf[q + 1] << 24) >> 24) };
  if (o >= 0x70 && o <= 0x7f && q + 2 <= end)
    return { op: 'jcc', len: q + 2 - p, target: q + 2 + ((buf[q + 1] << 24) >> 24) };
  if (o === 0x0f && q + 6 <= end && (buf[q + 1] & 0xf0) === 0x80) {
    return { op: 'jcc', len: q + 6 - p, target: q + 6 + readI32(buf, q + 2) };
  }
  // [41] ff /2 or /4 with mod = 3: call/jmp *%reg
  let rex = 0;
  let r = q;
  if (buf[r] === 0x41 && r + 1 < end) {
    rex = 8;
    r++;
  }
  if (buf[r] === 0xff && r + 1 < end) {
    const m = buf[r + 1];
    if (m >> 6 === 3) {
      const sub = (m >> 3) & 7;
      if (sub === 2) return { op: 'callr', len: r + 2 - p, reg: (m & 7) + rex };
      if (sub === 4) return { op: 'jmpr', len: r + 2 - p, reg: (m & 7) + rex };
    }
  }
  return undefined;
}

export function hexBytes(b: Uint8Array, max = 32): string {
  const s = Buffer.from(b.buffer, b.byteOffset, Math.min(b.length, max)).toString('hex');
  return b.length > max ? s + '…' : s;
}

export const REG_NAMES = [
  'rax',
  'rcx',
  'rdx',
  'rbx',
  'rsp',
  'rbp',
  'rsi',
  'rdi',
  'r8',
  'r9',
  'r10',
  'r11',
  'r12',
  'r13',
  'r14',
  'r15',
];
