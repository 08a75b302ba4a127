/**
 * The x64_sys_call decoder against truth it did not produce:
 * - real code: Debian 6.12's x64_sys_call (bytes and the guest's kallsyms names at its branch
 *   targets, recorded in a fixture) decoded into number → function, compared with the x86-64
 *   syscall ABI as the host's kernel headers state it (linux-libc-dev's asm/unistd_64.h);
 * - synthetic trees: hand-assembled compare trees with signed and unsigned branches, an
 *   instruction outside the subset (reported, never guessed), a tampered leaf.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { decodeDispatch, decodeGate } from '../src/index.js';

const fixture = JSON.parse(readFileSync(new URL('./__fixtures__/x64_sys_call-6.12.json', import.meta.url), 'utf8')) as {
  functions: Record<string, { base: string; bytes: string; names: Record<string, string[]> }>;
};

const UNISTD = '/usr/include/x86_64-linux-gnu/asm/unistd_64.h';

function abi(): Map<number, string> {
  let text: string;
  try {
    text = readFileSync(UNISTD, 'utf8');
  } catch {
    throw new Error(`${UNISTD} is missing: install linux-libc-dev (./run setup installs libc6-dev, which brings it)`);
  }
  const m = new Map<number, string>();
  for (const l of text.split('\n')) {
    const x = /^#define __NR_(\w+) (\d+)$/.exec(l.trim());
    if (x) m.set(Number(x[2]), x[1]);
  }
  return m;
}

// Where the kernel's entry point is not __x64_sys_<ABI name> (arch/x86/entry/syscalls/syscall_64.tbl).
const ALIASES: Record<string, string> = {
  umount2: 'umount',
  sendfile: 'sendfile64',
  stat: 'newstat',
  fstat: 'newfstat',
  lstat: 'newlstat',
  uname: 'newuname',
  fstatat: 'newfstatat',
  newfstatat: 'newfstatat',
};
// Numbers the ABI keeps but the kernel no longer implements (they dispatch to sys_ni_syscall).
const NOT_IMPLEMENTED = new Set([
  'create_module',
  'get_kernel_syms',
  'query_module',
  'nfsservctl',
  'getpmsg',
  'putpmsg',
  'afs_syscall',
  'tuxcall',
  'security',
  'vserver',
  '_sysctl',
  'uselib',
  'set_thread_area', // 32-bit only: no 64-bit entry point in syscall_64.tbl
  'get_thread_area',
  'epoll_ctl_old',
  'epoll_wait_old',
  'lookup_dcookie', // removed in 6.7
]);

describe('x64_sys_call decoding (Debian 6.12, real code)', () => {
  const f = fixture.functions.x64_sys_call;
  const bytes = new Uint8Array(Buffer.from(f.bytes, 'base64'));
  const base = BigInt(f.base);
  const r = decodeDispatch(bytes, base, 1024);
  const nameSets = new Map(Object.entries(f.names).map(([k, v]) => [BigInt(k), v]));

  it('follows every path: no undecoded instruction, no number reached by two targets', () => {
    expect(r.undecoded).toEqual([]);
    expect(r.conflicts).toEqual([]);
    expect(r.register).toBe(6); // %esi: nr is the second argument
    expect(r.map.size).toBe(1024);
  });

  it('maps every number of the x86-64 ABI (host unistd_64.h) to that syscall’s function', () => {
    const bad: string[] = [];
    let checked = 0;
    for (const [n, name] of abi()) {
      const t = r.map.get(n);
      const names = t === undefined ? [] : (nameSets.get(t) ?? []);
      const want = ALIASES[name] ?? name;
      const ok = NOT_IMPLEMENTED.has(name)
        ? names.some((x) => x.endsWith('sys_ni_syscall'))
        : names.some((x) => x === `__x64_sys_${want}` || x === `__do_sys_${want}`);
      checked++;
      if (!ok) bad.push(`${n} ${name} → ${names.join('/') || 'nothing'}`);
    }
    expect(checked).toBeGreaterThan(350);
    expect(bad).toEqual([]);
  });

  it('every number above the ABI lands in sys_ni_syscall', () => {
    const max = Math.max(...abi().keys());
    // 6.12 has a few syscalls newer than the host headers (bookworm's 6.1): skip to the table end
    for (let n = max + 20; n < 1024; n++) {
      const names = nameSets.get(r.map.get(n)!) ?? [];
      expect(
        names.some((x) => x.endsWith('sys_ni_syscall')),
        `nr ${n}`,
      ).toBe(true);
    }
  });

  it('a patched leaf (getppid → getpid) changes exactly that number', () => {
    const getppid = r.map.get(110)!;
    const getpid = r.map.get(39)!;
    const leaf = r.leaves.find((l) => l.target === getppid)!;
    const patched = new Uint8Array(bytes);
    const rel = Number(getpid - (base + BigInt(leaf.at) + 5n));
    Buffer.from(patched.buffer).writeInt32LE(rel, leaf.at + 1);
    const p = decodeDispatch(patched, base, 1024);
    const changed = [...p.map].filter(([n, t]) => r.map.get(n) !== t).map(([n]) => n);
    expect(changed).toEqual([110]);
    expect(p.map.get(110)).toBe(getpid);
  });
});

describe('decodeDispatch on hand-assembled trees', () => {
  const base = 0xffffffff81000000n;
  // cmp $5,%esi; je L1; ja L2; cmp $-1? …  Layout (offsets):
  //  0: 83 fe 05        cmp $5,%esi
  //  3: 74 07           je  +7 → 12
  //  5: 77 0a           ja  +10 → 17
  //  7: e9 xx xx xx xx  jmp A (numbers 0..4)
  // 12: e9 xx xx xx xx  jmp B (5)
  // 17: e8 xx xx xx xx  call C (> 5, noreturn)
  const code = new Uint8Array(22);
  code.set([0x83, 0xfe, 0x05, 0x74, 0x07, 0x77, 0x0a, 0xe9], 0);
  const put = (at: number, target: number) => Buffer.from(code.buffer).writeInt32LE(target - (at + 5), at + 1);
  code[12] = 0xe9;
  code[17] = 0xe8;
  put(7, 0x1000);
  put(12, 0x2000);
  put(17, 0x3000);

  it('narrows unsigned branches and treats call as a noreturn leaf', () => {
    const r = decodeDispatch(code, base, 8);
    expect(r.undecoded).toEqual([]);
    expect([...r.map].map(([n, t]) => [n, Number(t - base)])).toEqual(
      expect.arrayContaining([
        [0, 0x1000],
        [4, 0x1000],
        [5, 0x2000],
        [6, 0x3000],
        [7, 0x3000],
      ]),
    );
    expect(r.leaves.find((l) => l.kind === 'call')?.target).toBe(base + 0x3000n);
  });

  it('stops a path at an instruction outside the subset and says where', () => {
    const bad = new Uint8Array(code);
    bad[7] = 0x48; // REX.W + mov: not part of a compare tree
    bad[8] = 0x89;
    bad[9] = 0xf7;
    const r = decodeDispatch(bad, base, 8);
    expect(r.undecoded).toEqual([{ at: 7, byte: 0x89, reason: 'unexpected instruction after REX prefix' }]);
    expect(r.map.has(0)).toBe(false); // never guessed
    expect(r.map.get(5)).toBe(base + 0x2000n);
  });

  it('signed compares split negatives from positives', () => {
    // cmp $3,%esi; jl +5 → 10; jmp A; jmp B
    const c = new Uint8Array(15);
    c.set([0x83, 0xfe, 0x03, 0x7c, 0x05, 0xe9], 0);
    c[10] = 0xe9;
    Buffer.from(c.buffer).writeInt32LE(0x100 - 10, 6);
    Buffer.from(c.buffer).writeInt32LE(0x200 - 15, 11);
    const r = decodeDispatch(c, 0n, 6);
    expect(r.map.get(2)).toBe(0x200n); // 2 < 3: taken
    expect(r.map.get(3)).toBe(0x100n);
    expect(r.map.get(5)).toBe(0x100n);
  });
});

describe('IDT gate decoding', () => {
  it('splits the handler over the three offset fields and reads type, DPL, IST, present', () => {
    const b = new Uint8Array(16);
    const h = 0xffffffffa1c01230n;
    b[0] = 0x30;
    b[1] = 0x12;
    b[2] = 0x10; // selector 0x10
    b[4] = 3; // IST 3
    b[5] = 0x8e; // present, DPL 0, interrupt gate
    b[6] = 0xc0;
    b[7] = 0xa1;
    Buffer.from(b.buffer).writeUInt32LE(Number(h >> 32n), 8);
    expect(decodeGate(b, 0)).toEqual({
      vector: 0,
      present: true,
      type: 0xe,
      dpl: 0,
      ist: 3,
      selector: 0x10,
      handler: h,
    });
    b[5] = 0xef; // present, DPL 3, trap gate
    expect(decodeGate(b, 0)).toMatchObject({ dpl: 3, type: 0xf });
  });
});
