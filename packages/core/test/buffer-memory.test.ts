import { describe, expect, it } from 'vitest';
import { BufferMemory, readPhys } from '../src/index.js';

describe('BufferMemory', () => {
  const a = Uint8Array.from({ length: 100 }, (_, i) => i);
  const b = Uint8Array.from({ length: 50 }, (_, i) => 200 + i);
  it('reads across adjacent segments and refuses gaps with the first missing address', async () => {
    const m = new BufferMemory([
      { start: 100, bytes: b },
      { start: 0, bytes: a },
    ]);
    expect([...(await readPhys(m, 98, 4))]).toEqual([98, 99, 200, 201]);
    await expect(readPhys(m, 140, 20)).rejects.toMatchObject({ code: 'E_OUT_OF_RANGE', data: { address: '0x96' } });
    const f = await m.readBatch([
      { addr: 0, buf: new Uint8Array(1) },
      { addr: 1000, buf: new Uint8Array(1) },
    ]);
    expect(f.map((x) => x.index)).toEqual([1]);
  });
  it('is read-only unless writable', async () => {
    const ro = new BufferMemory([{ start: 0, bytes: new Uint8Array(8) }]);
    await expect(ro.writeBatch([{ addr: 0, buf: new Uint8Array(1) }])).rejects.toMatchObject({ code: 'E_READ_ONLY' });
    const bytes = new Uint8Array(8);
    const rw = new BufferMemory([{ start: 0x1000, bytes }], { writable: true });
    await rw.writeBatch([{ addr: 0x1002, buf: Uint8Array.of(7, 8) }]);
    expect([...bytes]).toEqual([0, 0, 7, 8, 0, 0, 0, 0]);
  });
});
