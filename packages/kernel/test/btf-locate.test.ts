import { describe, expect, it } from 'vitest';
import { BufferMemory, PmiError, type MemOp, type OpFailure, type PhysicalMemory } from '@pmi/core';
import { locateBtf } from '@pmi/kernel';
import { BtfBuilder, buildKernelLike, rng } from './fixtures/btf/builder.js';

const MiB = 1 << 20;
const kl = buildKernelLike();
const vmlinux = kl.b.build();

/** Header valid, type data broken after the first record (like the decompression leftover). */
function staleCopy(): Uint8Array {
  const s = vmlinux.slice();
  s.fill(0, 24 + 16, 24 + 64);
  return s;
}

/** Valid, self-contained BTF without task_struct / .data..percpu (a BPF program's). */
function programBtf(): Uint8Array {
  const b = new BtfBuilder();
  b.int('int', 4, { signed: true });
  b.struct('bpf_map_def', 8, [{ name: 'type', type: 1, bits: 0 }]);
  return b.build();
}

/** Like Debian bullseye's 5.10 vmlinux BTF (pahole before per-CPU VARs): no DATASEC at all. */
function vmlinuxWithoutDatasec(): Uint8Array {
  const b = new BtfBuilder();
  const int = b.int('int', 4, { signed: true });
  b.struct('task_struct', 8, [{ name: 'pid', type: int, bits: 0 }]);
  b.struct('module', 4, [{ name: 'state', type: int, bits: 0 }]);
  return b.build();
}

/** A CO-RE BPF object's BTF: complete task_struct and module (from vmlinux.h), plus its license DATASEC. */
function coreProgramBtf(): Uint8Array {
  const b = new BtfBuilder();
  const int = b.int('int', 4, { signed: true });
  const char = b.int('char', 1, { char: true });
  b.struct('task_struct', 8, [{ name: 'pid', type: int, bits: 0 }]);
  b.struct('module', 4, [{ name: 'state', type: int, bits: 0 }]);
  const lic = b.var('LICENSE', b.array(char, int, 4));
  b.datasec('license', 4, [[lic, 0, 4]]);
  return b.build();
}

/** Split (module) BTF: ids and strings continue after vmlinux's; unusable alone. */
function moduleBtf(): Uint8Array {
  const b = new BtfBuilder({ startId: kl.b.nextId, strStart: kl.b.strLen });
  b.struct('dummy_priv', 16, [{ name: 'l', type: kl.ids.list_head, bits: 0 }]);
  return b.build();
}

function memory(
  place: [number, Uint8Array][],
  size = 48 * MiB,
): { mem: BufferMemory; low: Uint8Array; high: Uint8Array } {
  // Two ranges like a small PC: [0, 8 MiB) and [16 MiB, size) — a hole in between.
  const low = new Uint8Array(8 * MiB);
  const high = new Uint8Array(size - 16 * MiB);
  for (const [addr, bytes] of place) {
    if (addr < 8 * MiB) low.set(bytes, addr);
    else high.set(bytes, addr - 16 * MiB);
  }
  const mem = new BufferMemory([
    { start: 0, bytes: low },
    { start: 16 * MiB, bytes: high },
  ]);
  return { mem, low, high };
}

const LIVE = 30 * MiB + 123;

describe('locateBtf on synthetic memory', () => {
  const layout: [number, Uint8Array][] = [
    [2 * MiB, staleCopy()],
    [20 * MiB, moduleBtf()],
    [24 * MiB + 8, programBtf()],
    [LIVE, vmlinux],
  ];

  it('finds the vmlinux BTF, rejecting module and program BTF on the way', async () => {
    const { mem } = memory(layout);
    const r = await locateBtf(mem);
    expect(r.physAddress).toBe(LIVE);
    expect(r.size).toBe(vmlinux.length);
    expect(Uint8Array.from(r.btf.bytes)).toEqual(vmlinux);
    expect(r.btf.fieldOffset('task_struct', 'comm')).toBe(36);
    // scanned from 16 MiB up: the two blobs below LIVE were tried, the stale copy at 2 MiB not yet
    expect(r.candidates.map((c) => c.addr)).toEqual(['0x1400000', '0x1800008', '0x1e0007b']);
    expect(r.candidates[0].verdict).toMatch(/parse failed: .*NUL/);
    expect(r.candidates[1].verdict).toMatch(/not vmlinux BTF .*no complete struct task_struct, struct module/);
    expect(r.candidates[2].verdict).toMatch(/^accepted/);
    expect(r.ms).toBeGreaterThanOrEqual(0);
    expect(r.scanned).toBeLessThanOrEqual(32 * MiB);
  });

  it('all: reports every candidate, including the stale copy below 16 MiB', async () => {
    const { mem } = memory(layout);
    const r = await locateBtf(mem, { all: true });
    expect(r.physAddress).toBe(LIVE);
    expect(r.candidates.map((c) => c.addr)).toEqual(['0x1400000', '0x1800008', '0x1e0007b', '0x200000']);
    expect(r.candidates[3].verdict).toMatch(/parse failed: BTF: unknown kind 0 \(type id 2/);
    expect(r.scanned).toBe(8 * MiB + 32 * MiB);
  });

  it('vmlinux BTF without any DATASEC (5.10) is accepted; a CO-RE BPF object with task_struct is not', async () => {
    const { mem } = memory([
      [20 * MiB, coreProgramBtf()],
      [22 * MiB + 4, vmlinuxWithoutDatasec()],
    ]);
    const r = await locateBtf(mem);
    expect(r.physAddress).toBe(22 * MiB + 4);
    expect(r.candidates[0].verdict).toMatch(/has DATASEC license: a BPF object's BTF/);
    expect(r.candidates[1].verdict).toMatch(/^accepted/);
    expect(r.btf.findType('.data..percpu', 'datasec')).toBeUndefined();
  });

  it('a hint is scanned first (and alone with hintOnly)', async () => {
    const { mem } = memory(layout);
    const r = await locateBtf(mem, { hint: { start: 30 * MiB, end: 31 * MiB }, hintOnly: true });
    expect(r.physAddress).toBe(LIVE);
    expect(r.candidates).toHaveLength(1);
    expect(r.scanned).toBe(MiB);
    await expect(locateBtf(mem, { hint: { start: 0, end: MiB }, hintOnly: true })).rejects.toMatchObject({
      code: 'E_NOT_FOUND',
    });
  });

  it('zeroed vmlinux BTF: E_NOT_FOUND listing every candidate and why', async () => {
    const { mem, high } = memory(layout);
    high.fill(0, LIVE - 16 * MiB, LIVE - 16 * MiB + vmlinux.length);
    const err = (await locateBtf(mem).catch((e: unknown) => e)) as PmiError;
    expect(err).toBeInstanceOf(PmiError);
    expect(err.code).toBe('E_NOT_FOUND');
    expect(err.message).toMatch(/0x200000: parse failed/);
    expect(err.message).toMatch(/0x1800008: not vmlinux BTF/);
    const cands = err.data.candidates as { addr: string; verdict: string }[];
    expect(cands).toHaveLength(3);
    expect(err.toJSON()).toMatchObject({ code: 'E_NOT_FOUND', scanned: 40 * MiB });
  });

  it('corrupted vmlinux BTF (one bad type record) is rejected with the parse error', async () => {
    const bad = vmlinux.slice();
    bad[24 + 16 * 3 + 7] = 20; // kind byte of the 4th record (three INTs of 16 bytes before it)
    const { mem } = memory([[LIVE, bad]]);
    const err = (await locateBtf(mem).catch((e: unknown) => e)) as PmiError;
    expect(err.code).toBe('E_NOT_FOUND');
    expect(err.message).toMatch(/0x1e0007b: parse failed: BTF: unknown kind 20 \(type id 4, byte offset 72\)/);
  });

  it('a header straddling scan windows and a blob running past the end of memory', async () => {
    const W = 64 * 1024;
    const at = 16 * MiB + 5 * W - 10;
    const tail = 48 * MiB - 100; // claims more bytes than exist
    const { mem } = memory([
      [at, vmlinux],
      [tail, vmlinux.subarray(0, 100)],
    ]);
    const r = await locateBtf(mem, { windowSize: W, all: true });
    expect(r.physAddress).toBe(at);
    expect(r.candidates.find((c) => c.addr === '0x2ffff9c')?.verdict).toMatch(/runs past the end of memory/);
  });

  it('random memory with planted magics: E_NOT_FOUND quickly, no crash', async () => {
    const rand = rng(7);
    const size = 32 * MiB;
    const high = new Uint8Array(size);
    for (let i = 0; i < size; i += 4) {
      const v = (rand() * 2 ** 32) >>> 0;
      high[i] = v;
      high[i + 1] = v >>> 8;
      high[i + 2] = v >>> 16;
      high[i + 3] = v >>> 24;
    }
    // 300 headers with random (often sane) lengths followed by garbage
    for (let k = 0; k < 300; k++) {
      const o = Math.floor(rand() * (size - 64));
      high.set([0x9f, 0xeb, 0x01, 0x00, 0x18, 0, 0, 0], o);
      const dv = new DataView(high.buffer, o);
      const tl = Math.floor(rand() * 4096) * 4;
      dv.setUint32(8, 0, true);
      dv.setUint32(12, tl, true);
      dv.setUint32(16, tl, true);
      dv.setUint32(20, Math.floor(rand() * 8192), true);
    }
    const mem = new BufferMemory([{ start: 16 * MiB, bytes: high }]);
    const t0 = performance.now();
    const err = (await locateBtf(mem, { all: true }).catch((e: unknown) => e)) as PmiError;
    const ms = performance.now() - t0;
    expect(err).toBeInstanceOf(PmiError);
    expect(err.code).toBe('E_NOT_FOUND');
    expect((err.data.candidates as unknown[]).length).toBeGreaterThanOrEqual(290);
    expect(ms).toBeLessThan(20_000);
  });

  it('batch-only sources with unreadable windows', async () => {
    const { mem } = memory(layout);
    const failing: PhysicalMemory = {
      info: mem.info,
      readBatch: async (ops: readonly MemOp[]): Promise<OpFailure[]> => {
        const out: OpFailure[] = [];
        for (let i = 0; i < ops.length; i++) {
          if (ops[i].addr < 20 * MiB && ops[i].addr >= 16 * MiB)
            out.push({ index: i, error: new PmiError('E_SOURCE_IO', 'test', 'boom') });
          else out.push(...(await mem.readBatch([ops[i]])).map((f) => ({ ...f, index: i })));
        }
        return out;
      },
      writeBatch: async () => undefined,
      close: async () => undefined,
    };
    const r = await locateBtf(failing, { windowSize: MiB });
    expect(r.physAddress).toBe(LIVE);
    expect(r.scanned).toBe(LIVE - 20 * MiB - 123 + MiB);
  });
});
