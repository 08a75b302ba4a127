import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openSource, registeredSchemes } from '@pmi/core';
import '@pmi/sources'; // registers the schemes
import { sniffKind, writeLimeFile } from '@pmi/sources';
import { pmiError, randomBytes, tmpDir } from './helpers.js';

let dir: string;
const shmFiles: string[] = [];

/** A minimal valid ELF64 core: header only, no program headers. */
function minimalCore(): Buffer {
  const eh = Buffer.alloc(64);
  eh.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1], 0);
  eh.writeUInt16LE(4, 16);
  eh.writeUInt16LE(62, 18);
  eh.writeBigUInt64LE(64n, 32);
  eh.writeUInt16LE(64, 52);
  eh.writeUInt16LE(56, 54);
  return eh;
}

function shmFile(name: string, data: Uint8Array): string {
  const f = `/dev/shm/pmi-sniff-${process.pid}-${name}`;
  fs.writeFileSync(f, data);
  shmFiles.push(f);
  return f;
}

beforeAll(() => {
  dir = tmpDir();
});
afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
  for (const f of shmFiles) fs.rmSync(f, { force: true });
});

describe('bare path sniffing', () => {
  it('registers the schemes', () => {
    expect(registeredSchemes()).toEqual(expect.arrayContaining(['raw', 'qemu', 'lime', 'elf']));
  });

  it('picks the right kind for each format', async () => {
    const elf = path.join(dir, 'dump.bin');
    fs.writeFileSync(elf, minimalCore());
    const lime = path.join(dir, 'memory.dat');
    writeLimeFile(lime, [{ start: 0x1000, data: randomBytes(1, 4096) }]);
    const raw = path.join(dir, 'image.img');
    fs.writeFileSync(raw, randomBytes(2, 8192));
    const ram = path.join(dir, 'guest.ram');
    fs.writeFileSync(ram, randomBytes(3, 8192));
    const backMem = path.join(dir, 'qemu_back_mem.pc.ram.Xa1b2c');
    fs.writeFileSync(backMem, randomBytes(4, 8192));
    const shm = shmFile('ram', randomBytes(5, 8192));
    const shmElf = shmFile('core', minimalCore());
    const empty = path.join(dir, 'empty');
    fs.writeFileSync(empty, '');

    const expected: [string, string][] = [
      [elf, 'elf'],
      [lime, 'lime'],
      [raw, 'raw'],
      [ram, 'qemu'],
      [backMem, 'qemu'],
      [shm, 'qemu'],
      [shmElf, 'elf'], // contents beat the path
      [empty, 'raw'],
    ];
    for (const [f, kind] of expected) {
      expect(sniffKind(f), f).toBe(kind);
      const mem = await openSource(f);
      try {
        expect(mem.info.kind, f).toBe(kind);
        expect(mem.info.uri.startsWith(`${kind}:`)).toBe(true);
      } finally {
        await mem.close();
      }
    }
    // Relative paths and ?params on bare paths.
    const rel = path.relative(process.cwd(), raw);
    const m = await openSource(`${rel}?writable=1`);
    expect(m.info).toMatchObject({ kind: 'raw', readOnly: false, uri: `raw:${raw}` });
    await m.close();
  });

  it('reports a missing bare path as E_SOURCE_IO', async () => {
    const e = await pmiError(() => openSource(path.join(dir, 'nope.img')));
    expect(e.code).toBe('E_SOURCE_IO');
    expect(e.message).toContain('nope.img');
  });
});
