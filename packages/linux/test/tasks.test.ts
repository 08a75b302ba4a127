import { describe, expect, it } from 'vitest';
import { CountingMemory, PageTableBuilder, X86Paging } from '@pmi/kernel';
import { nulSeparated, readProcessBatch, taskStateLetter } from '../src/index.js';

describe('taskStateLetter (fs/proc/array.c)', () => {
  it('maps state | exit_state to the ps letter', () => {
    expect(taskStateLetter(0, 0)).toBe('R');
    expect(taskStateLetter(1, 0)).toBe('S');
    expect(taskStateLetter(2, 0)).toBe('D');
    expect(taskStateLetter(4, 0)).toBe('T');
    expect(taskStateLetter(8, 0)).toBe('t');
    expect(taskStateLetter(0, 0x10)).toBe('X');
    expect(taskStateLetter(0, 0x20)).toBe('Z');
    expect(taskStateLetter(0x40, 0)).toBe('P');
    expect(taskStateLetter(0x402, 0)).toBe('I'); // TASK_IDLE
    expect(taskStateLetter(0x1000, 0)).toBe('D'); // TASK_RTLOCK_WAIT
    expect(taskStateLetter(0x2001, 0)).toBe('S'); // TASK_FREEZABLE | INTERRUPTIBLE
  });
  it('nulSeparated drops trailing NULs', () => {
    expect(nulSeparated(new TextEncoder().encode('a\0bc\0\0'))).toEqual(['a', 'bc']);
    expect(nulSeparated(new Uint8Array(3))).toEqual([]);
  });
});

describe.each([4, 5] as const)('readProcessBatch, %i-level', (levels) => {
  function build() {
    const b = new PageTableBuilder({ levels, ramSize: 32 << 20 });
    const fill = (pa: number, size: number, seed: number) => {
      const buf = new Uint8Array(size);
      for (let i = 0; i < size; i++) buf[i] = (i * 31 + seed) & 255;
      b.write(pa, buf);
    };
    const p4k = b.alloc(3 * 4096);
    fill(p4k, 3 * 4096, 1);
    b.map(0x400000n, p4k, 2 * 4096); // two pages, then a hole at 0x402000
    b.map(0x7ffff000n, p4k + 2 * 4096, 4096);
    const p2m = b.alloc(2 << 20, 2 << 20);
    fill(p2m, 2 << 20, 7);
    b.map(0x40000000n, p2m, 2 << 20, { pageSize: '2M' });
    return { b, mem: b.memory() };
  }

  it('equals X86Paging reads across spaces, pages and large pages; truncates at a hole; levels + 1 batches', async () => {
    const { b, mem } = build();
    const counting = new CountingMemory(mem, { sync: false });
    const s1 = new X86Paging(counting, b.dtb, levels, { tableCache: false });
    const reads = [
      { space: s1, va: 0x400ff0n, len: 40 },
      { space: s1, va: 0x401f00n, len: 0x300 }, // runs into the hole at 0x402000
      { space: s1, va: 0x7ffff800n, len: 0x800 },
      { space: s1, va: 0x401f00n, len: 0x100 },
      { space: s1, va: 0x40000000n + 0x1ff000n, len: 0x1000 }, // inside the 2 MiB page
      { space: s1, va: 0x500000n, len: 16 }, // unmapped
    ];
    counting.reset();
    const res = await readProcessBatch(reads);
    expect(counting.batches).toBe(levels + 1);
    const ref = new X86Paging(mem, b.dtb, levels);
    for (const [i, r] of reads.entries()) {
      if (i === 1) {
        expect(res[i].bytes.length).toBe(0x100);
        expect(res[i].error?.code).toBe('E_PAGE_FAULT');
        expect(res[i].bytes).toEqual(await ref.readVirtual(r.va, 0x100));
      } else if (i === 5) {
        expect(res[i].bytes.length).toBe(0);
        expect(res[i].error?.code).toBe('E_PAGE_FAULT');
      } else {
        expect(res[i].error).toBeUndefined();
        expect(res[i].bytes).toEqual(await ref.readVirtual(r.va, r.len));
      }
    }
  });
});
