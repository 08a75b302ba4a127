import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { main } from '../src/main.js';
import { hexdump } from '../src/output.js';

// Truth for these tests is the image file written here; pmi must read it back exactly.
const dir = mkdtempSync(join(tmpdir(), 'pmi-cli-'));
const image = join(dir, 'mem.raw');
const SIZE = 9 << 20;
const bytes = randomBytes(SIZE);
const marker = Buffer.from('Linux version 9.9.9-pmi-test');
const markerAt = [0x12345, (4 << 20) - 10 /* straddles the 4 MiB scan window */, SIZE - marker.length];
const emptyLabDir = join(dir, 'lab-empty');

async function runCli(args: string[], env: Record<string, string | undefined> = {}) {
  const out: Buffer[] = [];
  const err: string[] = [];
  const saved = { ...process.env };
  Object.assign(process.env, { PMI_LAB_DIR: emptyLabDir, PMI_SOURCE: '' }, env);
  for (const [k, v] of Object.entries(env)) if (v === undefined) delete process.env[k];
  const so = vi.spyOn(process.stdout, 'write').mockImplementation((chunk: unknown, ...rest: unknown[]) => {
    out.push(Buffer.from(chunk as Uint8Array | string));
    const cb = rest.find((r) => typeof r === 'function') as (() => void) | undefined;
    cb?.();
    return true;
  });
  const se = vi.spyOn(process.stderr, 'write').mockImplementation((chunk: unknown) => {
    err.push(String(chunk));
    return true;
  });
  try {
    const code = await main(args);
    return { code, stdout: Buffer.concat(out), stderr: err.join('') };
  } finally {
    so.mockRestore();
    se.mockRestore();
    process.env = saved;
  }
}

beforeAll(() => {
  for (const at of markerAt) marker.copy(bytes, at);
  writeFileSync(image, bytes);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('pmi read', () => {
  it('writes the exact bytes of the image to stdout', async () => {
    const r = await runCli(['--source', `raw:${image}`, 'read', '0x1ff0', '0x2345']);
    expect(r.code).toBe(0);
    expect(r.stdout.equals(bytes.subarray(0x1ff0, 0x1ff0 + 0x2345))).toBe(true);
  });

  it('accepts decimal and unit lengths, and PMI_SOURCE', async () => {
    const r = await runCli(['read', '4096', '1K'], { PMI_SOURCE: `raw:${image}` });
    expect(r.code).toBe(0);
    expect(r.stdout.equals(bytes.subarray(4096, 4096 + 1024))).toBe(true);
  });

  it('--json gives address as a hex string and the data', async () => {
    const r = await runCli(['--source', `raw:${image}`, '--json', 'read', '0x10', '8']);
    const doc = JSON.parse(r.stdout.toString());
    expect(doc).toEqual({
      address: '0x10',
      length: 8,
      virtual: false,
      data_hex: bytes.subarray(0x10, 0x18).toString('hex'),
    });
  });

  it('--hex output equals `hexdump -C -s ADDR -n LEN` of the image (addresses included)', async () => {
    bytes.fill(0, 0x3000, 0x3100); // repeated lines exercise hexdump's '*' collapsing
    writeFileSync(image, bytes);
    for (const [addr, len] of [
      [0x100, 20],
      [0x2ff0, 0x140],
      [0x3000, 0x100],
      [0x12345, 77],
    ]) {
      const r = await runCli(['--source', `raw:${image}`, 'read', '0x' + addr.toString(16), String(len), '--hex']);
      const truth = spawnSync('hexdump', ['-C', '-s', String(addr), '-n', String(len), image], { encoding: 'utf8' });
      expect(truth.status).toBe(0);
      expect(r.stdout.toString()).toBe(truth.stdout);
    }
  });

  it('reading past the end writes nothing and exits 1 naming the first missing address', async () => {
    const r = await runCli(['--source', `raw:${image}`, 'read', String(SIZE - 4), '16']);
    expect(r.code).toBe(1);
    expect(r.stdout.length).toBe(0);
    expect(r.stderr).toContain('0x' + SIZE.toString(16));
  });

  it('errors are one JSON line on stderr with --json', async () => {
    const r = await runCli(['--json', '--source', `raw:${image}`, 'read', String(SIZE), '1']);
    expect(r.code).toBe(1);
    expect(r.stdout.length).toBe(0);
    const lines = r.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    const e = JSON.parse(lines[0]).error;
    expect(e.code).toBe('E_OUT_OF_RANGE');
    expect(e.address).toBe('0x' + SIZE.toString(16));
  });

  it('malformed numbers are usage errors (exit 2)', async () => {
    expect((await runCli(['--source', `raw:${image}`, 'read', '0xZZ', '4'])).code).toBe(2);
    expect((await runCli(['--source', `raw:${image}`, 'read', '12abc', '4'])).code).toBe(2);
    expect((await runCli(['--source', `raw:${image}`, 'nosuchcommand'])).code).toBe(2);
    const j = await runCli(['--json', '--source', `raw:${image}`, 'read', '0xZZ', '4']);
    expect(j.code).toBe(2);
    expect(j.stdout.length).toBe(0);
    expect(JSON.parse(j.stderr.trim()).error.code).toBe('E_USAGE');
  });
});

describe('pmi grep', () => {
  it('finds every planted marker, including one straddling a scan window', async () => {
    const r = await runCli(['--source', `raw:${image}`, '--json', 'grep', 'Linux version 9.9.9-pmi-test']);
    expect(r.code).toBe(0);
    const doc = JSON.parse(r.stdout.toString());
    expect(doc.rows.map((x: { address: string }) => x.address)).toEqual(markerAt.map((a) => '0x' + a.toString(16)));
    expect(doc.warnings).toEqual([]);
  });

  it('--max truncates with a warning; --hex patterns work', async () => {
    const hexPat = marker.subarray(0, 6).toString('hex');
    const r = await runCli(['--source', `raw:${image}`, '--json', 'grep', '--hex', hexPat, '--max', '2']);
    const doc = JSON.parse(r.stdout.toString());
    expect(doc.rows).toHaveLength(2);
    expect(doc.warnings[0]).toMatch(/--max/);
  });
});

describe('pmi source', () => {
  it('describes a raw image', async () => {
    const r = await runCli(['--source', `raw:${image}`, '--json', 'source']);
    const doc = JSON.parse(r.stdout.toString());
    expect(doc.kind).toBe('raw');
    expect(doc.read_only).toBe(true);
    expect(doc.total_bytes).toBe(SIZE);
    expect(doc.chosen_by).toBe('option');
    expect(doc.ranges).toEqual([{ start: '0x0', end: '0x' + SIZE.toString(16), size: SIZE }]);
  });

  it('without --source, PMI_SOURCE or a lab VM: E_NO_SOURCE saying how to name one', async () => {
    const r = await runCli(['--json', 'source'], { PMI_SOURCE: undefined });
    expect(r.code).toBe(1);
    const e = JSON.parse(r.stderr.trim()).error;
    expect(e.code).toBe('E_NO_SOURCE');
    expect(e.message).toMatch(/--source/);
    expect(e.message).toMatch(/PMI_SOURCE/);
  });
});

describe('hexdump renderer', () => {
  it('collapses repeated lines like hexdump -C', () => {
    const text = hexdump(new Uint8Array(64), 0n);
    expect(text).toBe(
      // what `head -c 64 /dev/zero | hexdump -C` prints
      '00000000  00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00  |................|\n*\n00000040\n',
    );
  });
});

describe('the pmi executable', () => {
  it('--help lists the commands (needs `npm run build`)', () => {
    const r = spawnSync(process.execPath, [join(__dirname, '../bin/pmi.js'), '--help'], { encoding: 'utf8' });
    expect(r.status).toBe(0);
    for (const c of ['source', 'read', 'grep']) expect(r.stdout).toMatch(new RegExp(`^\\s+${c}\\b`, 'm'));
  });
});
