import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { isPmiError } from '@pmi/core';
import { buildCpio, parseCpio } from './cpio.js';
import { isStaticElf } from './initramfs.js';
import { readModinfo, resolveKernel } from './kernels.js';
import { labSourceUri } from './state.js';
import { parseMemory, qemuArgs } from './vm.js';
import { main } from './cli.js';

describe('cpio newc writer', () => {
  it('round-trips files, dirs, symlinks and device nodes with 4-byte alignment', () => {
    const buf = buildCpio([
      { kind: 'dir', path: '/bin' },
      { kind: 'file', path: 'init', data: '#!/bin/sh\n', mode: 0o755 },
      { kind: 'symlink', path: 'bin/sh', target: '/bin/busybox' },
      { kind: 'char', path: 'dev/console', major: 5, minor: 1 },
    ]);
    expect(buf.length % 4).toBe(0);
    const e = parseCpio(buf);
    expect(e.map((x) => x.name)).toEqual(['bin', 'init', 'bin/sh', 'dev/console']);
    expect(e[1].data.toString()).toBe('#!/bin/sh\n');
    expect(e[1].mode).toBe(0o100755);
    expect(e[2].data.toString()).toBe('/bin/busybox');
    expect(e[3].mode & 0o170000).toBe(0o020000);
  });
});

describe('helpers', () => {
  it('isStaticElf: busybox-static yes, node no', () => {
    expect(isStaticElf(readFileSync('/bin/busybox'))).toBe(true);
    expect(isStaticElf(readFileSync(process.execPath))).toBe(false);
    expect(isStaticElf(Buffer.from('not an elf'))).toBe(false);
  });

  it('readModinfo', () => {
    const ko = Buffer.from('\x7fELF....\0license=GPL\0depends=a,b\0name=x\0');
    expect(readModinfo(ko, 'depends')).toBe('a,b');
    expect(readModinfo(ko, 'name')).toBe('x');
    expect(readModinfo(ko, 'vermagic')).toBe('');
  });

  it('kernels resolve by id and alias, unknown is E_LAB', () => {
    expect(resolveKernel('6.12-generic').package).toBe('linux-image-6.12.117+deb12-amd64-unsigned');
    expect(resolveKernel('6.1-cloud').package).toBe('linux-image-6.1.0-57-cloud-amd64-unsigned');
    expect(resolveKernel('5.10')).toMatchObject({ package: 'linux-image-5.10.0-32-amd64-unsigned', suite: 'bullseye' });
    expect(resolveKernel('7.x')).toMatchObject({
      package: 'linux-image-7.2.13+deb14-amd64',
      suite: 'sid',
      layout: 'meta',
    });
    expect(resolveKernel('7.x').workloadModules).toContain('crc32_cryptoapi');
    try {
      resolveKernel('4.19');
      expect.unreachable();
    } catch (e) {
      expect(isPmiError(e) && e.code).toBe('E_LAB');
    }
  });

  it('memory sizes', () => {
    expect(parseMemory(undefined)).toBe(256 * 2 ** 20);
    expect(parseMemory('4G')).toBe(4 * 2 ** 30);
    expect(() => parseMemory('1000')).toThrow();
  });

  it('source URI and qemu arguments', () => {
    const st = {
      name: 'x',
      ram_path: '/dev/shm/pmi-lab-x.ram',
      machine: 'pc' as const,
      memory_bytes: 256 * 2 ** 20,
      paging: 4 as const,
      serial_log: '/s',
      cmd_socket: '/c',
      qmp_socket: '/q',
      pidfile: '/p',
      vmlinuz: '/k',
      initramfs: '/i',
      append: 'console=ttyS0 panic=0',
    };
    expect(labSourceUri(st)).toBe('qemu:/dev/shm/pmi-lab-x.ram?machine=pc');
    const a = qemuArgs(st as Parameters<typeof qemuArgs>[0]);
    expect(a).toContain('max,la57=off');
    expect(a).toContain('memory-backend-file,id=mem,size=256M,mem-path=/dev/shm/pmi-lab-x.ram,share=on');
    expect(a).toContain('-no-reboot');
    expect(a).not.toContain('-nographic');
  });
});

describe('pmi-lab CLI errors', () => {
  it('usage errors exit 2, help exits 0', async () => {
    const write = process.stderr.write;
    const out = process.stdout.write;
    process.stderr.write = (() => true) as typeof process.stderr.write;
    process.stdout.write = (() => true) as typeof process.stdout.write;
    try {
      expect(await main(['node', 'pmi-lab', 'up', '--paging', '3'])).toBe(2);
      expect(await main(['node', 'pmi-lab', 'frobnicate'])).toBe(2);
      expect(await main(['node', 'pmi-lab', 'snapshot', 'a', 'b', 'c'])).toBe(2);
      expect(await main(['node', 'pmi-lab', '--help'])).toBe(0);
    } finally {
      process.stderr.write = write;
      process.stdout.write = out;
    }
  });
});
