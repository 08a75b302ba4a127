import { afterAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { MAX_DATAGRAM, Tlp, decodeTlp, encodeMemRead, completionDataBytes } from '@pmi/nettlp';

// The `pmi adapter` process, driven the way a NetTLP client drives the card: one UDP socket per
// tag bound to 127.0.0.1:PORTBASE+tag, requests to the adapter's same port. Truth: the image bytes.
const dir = mkdtempSync(join(tmpdir(), 'pmi-adapter-cli-'));
const image = join(dir, 'mem.raw');
const bytes = randomBytes(1 << 20);
writeFileSync(image, bytes);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const bin = join(__dirname, '../bin/pmi.js');
const portBase = 47000 + Math.floor(Math.random() * 1000) * 2;

async function readOnce(addr: number, len: number, tag: number): Promise<Buffer> {
  const sock = createSocket('udp4');
  sock.bind(portBase + tag, '127.0.0.1');
  await once(sock, 'listening');
  const req = new Uint8Array(MAX_DATAGRAM);
  const n = encodeMemRead(req, addr, len, 0x1b00, tag);
  const out = Buffer.alloc(len);
  let got = 0;
  const t = new Tlp();
  const done = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no completion for 0x${addr.toString(16)}`)), 2000);
    sock.on('message', (msg) => {
      expect(decodeTlp(msg, msg.length, t)).toBe(0);
      expect(t.status).toBe(0);
      const valid = completionDataBytes(t);
      const off = len - t.byteCount;
      msg.copy(out, off, t.payloadOffset + (t.lowerAddress & 3), t.payloadOffset + (t.lowerAddress & 3) + valid);
      got += valid;
      if (got >= len) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  sock.send(req.subarray(0, n), portBase + tag, '127.0.0.2');
  try {
    await done;
  } finally {
    sock.close();
  }
  return out;
}

describe('pmi adapter (the executable)', () => {
  it('announces its ports, serves reads, prints stats on SIGUSR1 and at exit, exits 0 on SIGTERM', async () => {
    const child = spawn(
      process.execPath,
      [
        bin,
        '--source',
        `raw:${image}`,
        'adapter',
        '--listen',
        '127.0.0.2',
        '--port-base',
        String(portBase),
        '--tags',
        '4',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const exited = once(child, 'exit');
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`adapter did not start: ${stderr}`)), 10_000);
        child.stdout.on('data', () => {
          if (stdout.includes('\n')) {
            clearTimeout(timer);
            resolve();
          }
        });
      });
      expect(stdout).toBe(`listening on 127.0.0.2 ports ${portBase}-${portBase + 3}\n`);
      for (const [addr, len, tag] of [
        [0x1000, 4, 0],
        [0x12345, 301, 1],
        [0xff000, 4096, 2],
      ]) {
        const got = await readOnce(addr, len, tag);
        expect(got.equals(bytes.subarray(addr, addr + len))).toBe(true);
      }
      child.kill('SIGUSR1');
      await new Promise((r) => setTimeout(r, 300));
      const first = JSON.parse(stderr.trim().split('\n')[0]);
      expect(first.event).toBe('stats');
      expect(first.requests_read).toBe(3);
      child.kill('SIGTERM');
      const [code] = await exited;
      expect(code).toBe(0);
      const last = JSON.parse(stderr.trim().split('\n').at(-1)!);
      expect(last.event).toBe('exit:SIGTERM');
      expect(last.bytes_read).toBe(4 + 301 + 4096);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  });

  it('refuses a non-loopback listen address without --allow (exit 2)', async () => {
    const child = spawn(process.execPath, [bin, '--source', `raw:${image}`, 'adapter', '--listen', '10.1.2.3'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const [code] = await once(child, 'exit');
    expect(code).toBe(2);
    expect(stderr).toMatch(/allow/);
  });
});
