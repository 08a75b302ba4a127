/**
 * Decode the syscall dispatcher `x64_sys_call` (and `ia32_sys_call`, `x32_sys_call`) into its
 * number → function map, from the code the CPU really runs.
 *
 * Since 6.9 (and the 6.1.85 / 6.6.26 backports), the syscall entry no longer calls through
 * `sys_call_table`: `x64_sys_call(regs, nr)` is a C `switch` over the syscall numbers. Built with
 * retpolines, the compiler may not emit a jump table, so gcc lowers the switch to a binary tree of
 * `cmp $imm, %esi` + conditional branches whose leaves tail-call the syscall functions
 * (`jmp __x64_sys_read`) or, for noreturn ones (exit, exit_group), `call` them.
 *
 * The decoder executes that tree symbolically: each path carries the set of numbers that can reach
 * it (a list of disjoint intervals over the 32-bit unsigned `nr`), narrowed at every branch; a leaf
 * maps every number of its set to the target. Only the instruction forms such a tree contains are
 * accepted; anything else stops that path and is reported (`undecoded`), so a dispatcher compiled
 * differently yields a partial result, never a wrong one.
 */

/** Disjoint, sorted, inclusive intervals [lo, hi] over 0 … 2^32−1. */
type Set32 = [number, number][];

const U32_MAX = 0xffffffff;

function intersect(a: Set32, lo: number, hi: number): Set32 {
  const out: Set32 = [];
  for (const [x, y] of a) {
    const l = Math.max(x, lo);
    const h = Math.min(y, hi);
    if (l <= h) out.push([l, h]);
  }
  return out;
}

function minus(a: Set32, v: number): Set32 {
  const out: Set32 = [];
  for (const [x, y] of a) {
    if (v < x || v > y) out.push([x, y]);
    else {
      if (x <= v - 1) out.push([x, v - 1]);
      if (v + 1 <= y) out.push([v + 1, y]);
    }
  }
  return out;
}

/** The values v of a with `v <cond> imm` (unsigned/signed 32-bit compare after `cmp $imm, reg`). */
function narrow(a: Set32, cc: number, imm: number, taken: boolean): Set32 {
  // x86 condition codes (low nibble of 0x7X / 0x0F 0x8X), and their negation when not taken
  const c = taken ? cc : cc ^ 1;
  const S = 0x80000000;
  switch (c) {
    case 0x4: // e
      return intersect(a, imm, imm);
    case 0x5: // ne
      return minus(a, imm);
    case 0x2: // b  (unsigned <)
      return imm === 0 ? [] : intersect(a, 0, imm - 1);
    case 0x3: // ae (unsigned >=)
      return intersect(a, imm, U32_MAX);
    case 0x6: // be (unsigned <=)
      return intersect(a, 0, imm);
    case 0x7: // a  (unsigned >)
      return imm === U32_MAX ? [] : intersect(a, imm + 1, U32_MAX);
    case 0xc: // l  (signed <): negatives (>= 2^31 unsigned) and [0, imm-1] when imm >= 0
    case 0xd: // ge
    case 0xe: // le
    case 0xf: {
      // g
      const simm = imm >= S ? imm - 2 ** 32 : imm;
      const toU = (s: number) => (s < 0 ? s + 2 ** 32 : s);
      // the signed order: [S, U32_MAX] (negative) < [0, S-1]
      const less = (bound: number, incl: boolean): Set32 => {
        const b = incl ? simm : simm - 1; // v <= b (signed)
        if (b < -S) return [];
        if (b < 0) return intersect(a, S, toU(b));
        return [...intersect(a, 0, b), ...intersect(a, S, U32_MAX)].sort((p, q) => p[0] - q[0]);
      };
      const greater = (incl: boolean): Set32 => {
        const b = incl ? simm : simm + 1; // v >= b (signed)
        if (b > S - 1) return [];
        if (b >= 0) return intersect(a, b, S - 1);
        return [...intersect(a, 0, S - 1), ...intersect(a, toU(b), U32_MAX)].sort((p, q) => p[0] - q[0]);
      };
      if (c === 0xc) return less(imm, false);
      if (c === 0xe) return less(imm, true);
      if (c === 0xd) return greater(true);
      return greater(false);
    }
    default:
      return a; // flags we do not model: keep the set (the leaf check will catch ambiguity)
  }
}

export interface DispatchLeaf {
  /** Target of the tail jump / noreturn call (absolute VA). */
  target: bigint;
  /** Offset of the jmp/call instruction inside the function. */
  at: number;
  set: Set32;
  kind: 'jmp' | 'call';
}

export interface DecodedDispatch {
  /** nr → target, for every nr < `limit` that some leaf reaches. */
  map: Map<number, bigint>;
  leaves: DispatchLeaf[];
  /** Every direct branch target that leaves the function (jmp/call): what the body can reach. */
  externalTargets: bigint[];
  /** Paths the decoder could not follow: offset and the byte that stopped it. */
  undecoded: { at: number; byte: number; reason: string }[];
  /** Numbers reached by two different targets (a decoding error or a tampered tree). */
  conflicts: number[];
  /** Register compared with the syscall number (x86 reg index 0–15), −1 when none was seen. */
  register: number;
}

interface PathState {
  pc: number;
  set: Set32;
  /** last compare: register, immediate (as unsigned 32-bit), or null */
  cmp: { reg: number; imm: number } | null;
}

/** Length of a ModRM-encoded operand (ModRM byte at p, no immediate), or −1 when out of bounds. */
function modrmLength(code: Uint8Array, p: number, addr32: boolean): number {
  if (p >= code.length) return -1;
  const m = code[p];
  const mod = m >> 6;
  const rm = m & 7;
  let len = 1;
  if (mod !== 3 && rm === 4 && !addr32) {
    if (p + 1 >= code.length) return -1;
    const sib = code[p + 1];
    len += 1;
    if (mod === 0 && (sib & 7) === 5) len += 4;
  }
  if (mod === 0 && rm === 5) len += 4;
  else if (mod === 1) len += 1;
  else if (mod === 2) len += 4;
  return len;
}

const s8 = (b: number) => (b << 24) >> 24;
const s32 = (code: Uint8Array, p: number) => code[p] | (code[p + 1] << 8) | (code[p + 2] << 16) | (code[p + 3] << 24);

/**
 * Decode a dispatcher whose bytes `code` start at virtual address `base`.
 * `limit`: numbers ≥ limit are not reported in `map` (the table size, e.g. 512).
 * Bounded: at most `maxSteps` instructions over all paths.
 */
export function decodeDispatch(code: Uint8Array, base: bigint, limit: number, maxSteps = 200_000): DecodedDispatch {
  const leaves: DispatchLeaf[] = [];
  const external = new Set<bigint>();
  const undecoded: DecodedDispatch['undecoded'] = [];
  let register = -1;
  const work: PathState[] = [{ pc: 0, set: [[0, U32_MAX]], cmp: null }];
  let steps = 0;
  const leaf = (target: bigint, at: number, set: Set32, kind: 'jmp' | 'call') => {
    external.add(target);
    if (set.length) leaves.push({ target, at, set, kind });
  };
  while (work.length > 0) {
    const st = work.pop()!;
    let { pc, set, cmp } = st;
    for (;;) {
      if (++steps > maxSteps) {
        undecoded.push({ at: pc, byte: code[pc] ?? -1, reason: 'step budget exhausted' });
        break;
      }
      if (set.length === 0) break; // unreachable path
      if (pc < 0 || pc >= code.length) {
        undecoded.push({ at: pc, byte: -1, reason: 'branch outside the function bytes' });
        break;
      }
      const b0 = code[pc];
      // endbr64
      if (b0 === 0xf3 && code[pc + 1] === 0x0f && code[pc + 2] === 0x1e && code[pc + 3] === 0xfa) {
        pc += 4;
        continue;
      }
      // one-byte nop, and multi-byte nops (0F 1F /0, with 66 / 2E prefixes)
      if (b0 === 0x90) {
        pc += 1;
        continue;
      }
      {
        let q = pc;
        while (q < pc + 6 && (code[q] === 0x66 || code[q] === 0x2e)) q++;
        if (code[q] === 0x0f && code[q + 1] === 0x1f) {
          const l = modrmLength(code, q + 2, false);
          if (l < 0) {
            undecoded.push({ at: pc, byte: b0, reason: 'truncated nop' });
            break;
          }
          pc = q + 2 + l;
          continue;
        }
      }
      // optional REX prefix (for cmp with a 64-bit or r8–r15 register)
      let rex = 0;
      let p = pc;
      if ((code[p] & 0xf0) === 0x40) {
        rex = code[p];
        p++;
      }
      const op = code[p];
      // cmp $imm8, r/m32 (83 /7 ib) and cmp $imm32, r/m32 (81 /7 id), register form only
      if ((op === 0x83 || op === 0x81) && (code[p + 1] & 0xf8) === 0xf8) {
        const reg = (code[p + 1] & 7) | (rex & 1 ? 8 : 0);
        const imm = op === 0x83 ? s8(code[p + 2]) : s32(code, p + 2);
        if (register === -1) register = reg;
        if (reg !== register) {
          undecoded.push({ at: pc, byte: op, reason: `compare of another register (${reg} vs ${register})` });
          break;
        }
        cmp = { reg, imm: imm >>> 0 };
        pc = p + (op === 0x83 ? 3 : 6);
        continue;
      }
      // cmp $imm32, %eax (3D id)
      if (op === 0x3d) {
        if (register === -1) register = 0;
        if (register !== 0) {
          undecoded.push({ at: pc, byte: op, reason: 'compare of eax, not the syscall number register' });
          break;
        }
        cmp = { reg: 0, imm: s32(code, p + 1) >>> 0 };
        pc = p + 5;
        continue;
      }
      // test %reg, %reg (85 /r with mod=11, same reg): compare with 0 for je/jne
      if (op === 0x85 && code[p + 1] >> 6 === 3 && (code[p + 1] & 7) === ((code[p + 1] >> 3) & 7)) {
        const reg = (code[p + 1] & 7) | (rex & 1 ? 8 : 0);
        if (register === -1) register = reg;
        if (reg !== register) {
          undecoded.push({ at: pc, byte: op, reason: 'test of another register' });
          break;
        }
        cmp = { reg, imm: 0 };
        pc = p + 2;
        continue;
      }
      if (rex !== 0) {
        undecoded.push({ at: pc, byte: op, reason: 'unexpected instruction after REX prefix' });
        break;
      }
      // jcc rel8 / rel32
      let cc = -1;
      let next = 0;
      let rel = 0;
      if (op >= 0x70 && op <= 0x7f) {
        cc = op & 0xf;
        rel = s8(code[p + 1]);
        next = p + 2;
      } else if (op === 0x0f && code[p + 1] >= 0x80 && code[p + 1] <= 0x8f) {
        cc = code[p + 1] & 0xf;
        rel = s32(code, p + 2);
        next = p + 6;
      }
      if (cc >= 0) {
        if (!cmp) {
          undecoded.push({ at: pc, byte: op, reason: 'conditional branch without a preceding compare' });
          break;
        }
        const target = next + rel;
        const takenSet = narrow(set, cc, cmp.imm, true);
        const otherSet = narrow(set, cc, cmp.imm, false);
        if (target >= 0 && target < code.length) work.push({ pc: target, set: takenSet, cmp });
        else leaf(base + BigInt(target), pc, takenSet, 'jmp');
        set = otherSet;
        pc = next;
        continue;
      }
      // jmp rel8 / rel32, call rel32
      if (op === 0xeb || op === 0xe9 || op === 0xe8) {
        const len = op === 0xeb ? 2 : 5;
        const target = p + len + (op === 0xeb ? s8(code[p + 1]) : s32(code, p + 1));
        if (op !== 0xe8 && target >= 0 && target < code.length) {
          pc = target;
          continue;
        }
        leaf(base + BigInt(target), pc, set, op === 0xe8 ? 'call' : 'jmp');
        break;
      }
      // ret, int3, ud2: the path ends without a target
      if (op === 0xc3 || op === 0xcc || (op === 0x0f && code[p + 1] === 0x0b)) break;
      undecoded.push({ at: pc, byte: op, reason: 'instruction outside the dispatcher subset' });
      break;
    }
  }
  const map = new Map<number, bigint>();
  const conflicts = new Set<number>();
  for (const l of leaves) {
    for (const [lo, hi] of l.set) {
      for (let n = lo; n <= Math.min(hi, limit - 1); n++) {
        const prev = map.get(n);
        if (prev !== undefined && prev !== l.target) conflicts.add(n);
        else map.set(n, l.target);
      }
    }
  }
  return {
    map,
    leaves,
    externalTargets: [...external].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)),
    undecoded,
    conflicts: [...conflicts].sort((a, b) => a - b),
    register,
  };
}
