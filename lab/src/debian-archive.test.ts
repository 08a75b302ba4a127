import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { compareKernelVersions, machineMirror, privateApt, updatePrivateApt } from './debian-archive.js';
import { KERNELS, newestKernelAbi } from './kernels.js';

const tmp = mkdtempSync(join(tmpdir(), 'pmi-apt-test-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function etc(name: string, files: Record<string, string>): string {
  const dir = join(tmp, name);
  mkdirSync(join(dir, 'sources.list.d'), { recursive: true });
  for (const [f, text] of Object.entries(files)) writeFileSync(join(dir, f), text);
  return dir;
}

describe('private apt configuration for other Debian suites', () => {
  it("takes the machine's own mirror: deb822 .sources (skipping -security) and one-line sources.list", () => {
    const deb822 = etc('a', {
      'sources.list.d/debian.sources':
        'Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\nComponents: main\n\n' +
        'Types: deb\n# a comment\nURIs: http://mirror.example/debian/\nSuites: bookworm bookworm-updates\nComponents: main\n',
    });
    expect(machineMirror(deb822)).toBe('http://mirror.example/debian');
    const oneLine = etc('b', {
      'sources.list': '# x\ndeb [arch=amd64] http://ftp.example/debian bookworm main\n',
    });
    expect(machineMirror(oneLine)).toBe('http://ftp.example/debian');
    expect(() => machineMirror(etc('c', {}))).toThrow(/no Debian mirror found/);
  });

  it('writes bullseye and sid with the archive keyring, and options that never touch /etc/apt', async () => {
    const apt = await privateApt(join(tmp, 'cache1'), 'http://mirror.example/debian');
    expect(apt.options.join(' ')).toContain(`Dir::Etc::sourcelist=${join(tmp, 'cache1', 'apt', 'sources.list')}`);
    expect(apt.options.join(' ')).toContain('Dir::Etc::sourceparts=-');
    expect(apt.options.join(' ')).not.toMatch(/\/etc\/apt/);
  });

  it('a suite the mirror does not serve fails naming the suite and the mirror (never silently)', async () => {
    // Nothing listens on 127.0.0.1:9: apt-get update fails at once and no InRelease appears.
    const apt = await privateApt(join(tmp, 'cache2'), 'http://127.0.0.1:9/debian');
    await expect(updatePrivateApt(apt, 'bullseye')).rejects.toThrow(
      /Debian suite 'bullseye' is not served by http:\/\/127\.0\.0\.1:9\/debian/,
    );
  }, 120_000);

  it('when the pinned sid kernel has left, the newest 7.x generic kernel is taken (not cloud/rt, not 6.x)', () => {
    const spec = KERNELS.find((k) => k.id === '7.x')!;
    const names = [
      'linux-image-6.16.12+deb14-amd64',
      'linux-image-7.2.13+deb14-amd64',
      'linux-image-7.10.2+deb14-amd64',
      'linux-image-7.10.2+deb14-cloud-amd64',
      'linux-image-7.10.2+deb14-rt-amd64',
      'linux-image-7.9.40+deb14-amd64',
      'linux-image-amd64',
    ];
    expect(newestKernelAbi(names, spec.newest!)).toBe('7.10.2+deb14-amd64');
    expect(newestKernelAbi(['linux-image-6.16.12+deb14-amd64'], spec.newest!)).toBeUndefined();
    expect(compareKernelVersions('7.10.2+deb14', '7.9.40+deb14')).toBeGreaterThan(0);
    expect(compareKernelVersions('7.2.13+deb14', '7.2.13+deb14')).toBe(0);
  });
});
