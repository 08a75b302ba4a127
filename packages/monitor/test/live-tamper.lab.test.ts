/**
 * The monitor against a live guest, over NetTLP, as the seed describes it: a dedicated lab VM
 * (6.12, not one of the shared matrix guests, which other files read afterwards) served by
 * `pmi adapter --writable`; `pmi watch` on `nettlp://`; a separate process tampering through pmi's
 * NetTLP client; truth from inside the guest.
 *
 * 1. No false positives: 60 s of a normal workload (processes starting and exiting, a module
 *    unloaded and loaded again, kernel-log traffic) → zero alerts.
 * 2. A `sys_call_table` entry overwritten by DMA → `pmi watch` alerts (NDJSON), `pmi check` exits 4,
 *    `pmi repair --write` restores it and a re-read equals the expected entry, `pmi check` exits 0.
 * 3. A tamper with a visible effect: `x64_sys_call`'s leaf for getppid (110) retargeted to getpid
 *    (39) — in the guest `sh -c 'echo $PPID $$'` prints two equal numbers; watch alerts; repair;
 *    the guest prints two different numbers again.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:net';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openSource, readPhys, writePhys, type PhysicalMemory } from '@pmi/core';
import '@pmi/sources';
import '@pmi/nettlp';
import { discoverKernel, type DiscoveredKernel } from '@pmi/kernel';
import { startLabVm, type LabVm } from '@pmi/lab';
import { decodeDispatch, symbolSize } from '../src/index.js';

const PMI = fileURLToPath(new URL('../../cli/bin/pmi.js', import.meta.url));
const KERNEL = process.env.PMI_MONITOR_KERNEL ?? '6.12';
const QUIET_MS = Number(process.env.PMI_MONITOR_QUIET_MS ?? 60_000);

interface Line {
  type: 'alert' | 'event';
  [k: string]: unknown;
}

/** `pmi watch --json` as a child: lines collected, waiters resolved as they arrive. */
class WatchProc {
  lines: Line[] = [];
  private waiters: { pred: (l: Line) => boolean; resolve: (l: Line) => void }[] = [];
  stderr = '';
  constructor(readonly child: ChildProcess) {
    createInterface({ input: child.stdout! }).on('line', (t) => {
      let l: Line;
      try {
        l = JSON.parse(t) as Line;
      } catch {
        return;
      }
      this.lines.push(l);
      for (const w of [...this.waiters])
        if (w.pred(l)) {
          this.waiters.splice(this.waiters.indexOf(w), 1);
          w.resolve(l);
        }
    });
    child.stderr!.on('data', (b: Buffer) => (this.stderr += b.toString()));
  }
  wait(pred: (l: Line) => boolean, ms: number, what: string): Promise<Line> {
    const seen = this.lines.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const t = setTimeout(
        () => reject(new Error(`no ${what} within ${ms} ms; watch stderr: ${this.stderr.slice(-2000)}`)),
        ms,
      );
      this.waiters.push({
        pred,
        resolve: (l) => {
          clearTimeout(t);
          resolve(l);
        },
      });
    });
  }
  async stop(): Promise<number | null> {
    if (this.child.exitCode !== null) return this.child.exitCode;
    this.child.kill('SIGINT');
    return new Promise((r) => this.child.once('exit', (code) => r(code)));
  }
}

/** The URI of the one-shot commands (check, repair): one local address of their own (they run one
 * at a time, beside the watch and the tamperer), the same each time so discovery hints are reused. */
const once = (uri: string) => `${uri}&local=127.0.3.1`;

/**
 * Write `bytes` at kernel VA `va` through QEMU's gdbstub (GDB remote protocol `M` packet over TCP):
 * QEMU then invalidates its translated code for that page. Started at run time over QMP.
 */
async function invalidateTcgCode(vm: LabVm, va: bigint, bytes: Uint8Array): Promise<void> {
  const port = 40000 + (process.pid % 20000);
  await vm.qmp('human-monitor-command', { 'command-line': `gdbserver tcp:127.0.0.1:${port}` });
  const sock = connect(port, '127.0.0.1');
  await new Promise<void>((res, rej) => {
    sock.once('connect', () => res());
    sock.once('error', rej);
  });
  let buf = '';
  sock.on('data', (b: Buffer) => (buf += b.toString('latin1')));
  const packet = async (body: string): Promise<string> => {
    let sum = 0;
    for (const c of body) sum = (sum + c.charCodeAt(0)) & 0xff;
    buf = '';
    sock.write(`$${body}#${sum.toString(16).padStart(2, '0')}`);
    const t0 = Date.now();
    for (;;) {
      const m = /\$([^#]*)#[0-9a-f]{2}/.exec(buf);
      if (m) {
        sock.write('+');
        return m[1];
      }
      if (Date.now() - t0 > 10_000) throw new Error(`gdbstub: no reply to ${body.slice(0, 20)} (got ${buf})`);
      await new Promise((r) => setTimeout(r, 5));
    }
  };
  await packet('?'); // attaching stops the VM
  const reply = await packet(`M${va.toString(16)},${bytes.length}:${Buffer.from(bytes).toString('hex')}`);
  if (reply !== 'OK') throw new Error(`gdbstub refused the write: ${reply}`);
  sock.write('$D#44'); // detach: the VM runs again
  await new Promise((r) => setTimeout(r, 100));
  sock.destroy();
  await vm.qmp('human-monitor-command', { 'command-line': 'gdbserver none' });
  if ((await vm.runState()) !== 'running') await vm.qmp('cont');
}

function pmi(args: string[], env: NodeJS.ProcessEnv = {}) {
  const r = spawnSync(process.execPath, [PMI, ...args], {
    encoding: 'utf8',
    env: { ...process.env, PMI_SOURCE: '', ...env },
    timeout: 120_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe(`monitor on a live ${KERNEL} guest over nettlp:// (dedicated VM)`, () => {
  let vm: LabVm;
  let adapter: ChildProcess;
  let uri: string;
  let scratch: string;
  let db: string;
  let mem: PhysicalMemory; // the tamperer's own NetTLP client
  let d: DiscoveredKernel;
  let watch: WatchProc;

  beforeAll(async () => {
    scratch = mkdtempSync(join(tmpdir(), 'pmi-monitor-'));
    db = join(scratch, 'pmi.db');
    vm = await startLabVm({ kernel: KERNEL, paging: 4, name: `mon${process.pid}`, collectTruth: false, log: () => {} });
    const host = `127.0.0.${20 + (process.pid % 200)}`;
    const portBase = 30000 + (process.pid % 300) * 64;
    adapter = spawn(
      process.execPath,
      [
        PMI,
        'adapter',
        '--listen',
        host,
        '--port-base',
        String(portBase),
        '--tags',
        '32',
        '--writable',
        '--source',
        vm.sourceUri,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    await new Promise<void>((resolve, reject) => {
      adapter.stdout!.once('data', () => resolve());
      adapter.once('exit', (c) => reject(new Error(`adapter exited ${c}`)));
    });
    // generous timeouts: CI runs this beside the lab matrix on 2 cores, where a read can wait for a CPU
    uri = `nettlp://${host}:${portBase}?tags=32&timeout=100&retries=20&ranges=0+${vm.state.memory_bytes}`;
    // NetTLP clients bind the same port numbers as the adapter's: concurrent clients need their own
    // local address (the tamperer, the watch, and each one-shot check/repair)
    mem = await openSource(`${uri}&local=127.0.0.1`, { writable: true });
    d = await discoverKernel(mem, {});
  }, 300_000);

  afterAll(async () => {
    await watch?.stop();
    await mem?.close();
    adapter?.kill('SIGTERM');
    await vm?.stop();
    rmSync(scratch, { recursive: true, force: true });
  });

  const startWatch = async (): Promise<WatchProc> => {
    const child = spawn(
      process.execPath,
      [PMI, 'watch', '--source', `${uri}&local=127.0.2.1`, '--json', '--db', db, '--interval', '1', '--budget', '8'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const w = new WatchProc(child);
    await w.wait((l) => l.type === 'event' && l.event === 'started', 120_000, 'started event');
    return w;
  };

  it(`a clean guest under a normal workload: no alert in ${QUIET_MS / 1000} s`, async () => {
    watch = await startWatch();
    const t0 = Date.now();
    let rounds = 0;
    while (Date.now() - t0 < QUIET_MS) {
      // processes start and exit, a module goes and comes back, the kernel log gets lines
      const r = await vm.run(
        'for i in 1 2 3; do sh -c "echo $$ > /dev/null"; done; ' +
          'rmmod dummy; insmod /lib/modules/$(uname -r)/pmi/dummy.ko; ' +
          // (ls /proc races with exiting processes — readdir then stat — so its status is not the test's)
          'echo "pmi-monitor-test round" > /dev/kmsg; { ls /proc > /dev/null 2>&1 || true; }',
        { timeoutMs: 30_000 },
      );
      expect(r.exitCode, r.stderr).toBe(0);
      rounds++;
      await new Promise((res) => setTimeout(res, 1000));
    }
    const alerts = watch.lines.filter((l) => l.type === 'alert');
    console.log(
      `[monitor] quiet ${QUIET_MS / 1000} s: ${rounds} workload rounds, ${alerts.length} alerts, ` +
        `${watch.lines.filter((l) => l.type === 'event').length} events`,
    );
    expect(alerts).toEqual([]);
  }, 300_000);

  it('a sys_call_table entry overwritten by DMA: watch alerts, check exits 4, repair restores it', async () => {
    const table = d.symbols.addressOf('sys_call_table');
    const pa = await d.paging.translate(table + 110n * 8n);
    const before = Buffer.from(await readPhys(mem, pa, 8));
    const evil = Buffer.alloc(8);
    evil.writeBigUInt64LE(d.symbols.addressOf('__x64_sys_getpid'));
    const tWrite = Date.now();
    await writePhys(mem, pa, evil);
    const alert = await watch.wait(
      (l) => l.type === 'alert' && l.key === 'sys_call_table:110',
      10_000,
      'alert for sys_call_table[110]',
    );
    const latency = Date.parse(String(alert.time)) - tWrite;
    console.log(
      `[monitor] sys_call_table[110] alert ${latency} ms after the write (ms resolution), detected_after_ms ${alert.detected_after_ms}`,
    );
    expect(alert).toMatchObject({ check: 'syscalls', severity: 'critical', symbol: 'sys_call_table[110]' });
    expect(alert.new).toBe('0x' + evil.readBigUInt64LE(0).toString(16).padStart(16, '0'));
    expect(alert.old).toBe('0x' + before.readBigUInt64LE(0).toString(16).padStart(16, '0'));

    const check = pmi(['check', '--source', once(uri), '--checks', 'syscalls,idt', '--json']);
    expect(check.code, check.stderr).toBe(4);
    expect(JSON.parse(check.stdout).rows.map((r: { key: string }) => r.key)).toContain('sys_call_table:110');

    const dry = pmi(['repair', String(alert.id), '--db', db, '--source', once(uri)]);
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stdout).toMatch(/would restore sys_call_table\[110\]/);
    expect(Buffer.compare(Buffer.from(await readPhys(mem, pa, 8)), evil)).toBe(0); // dry run wrote nothing

    const fix = pmi(['repair', String(alert.id), '--db', db, '--source', once(uri), '--write']);
    expect(fix.code, fix.stdout + fix.stderr).toBe(0);
    expect(Buffer.compare(Buffer.from(await readPhys(mem, pa, 8)), before)).toBe(0);
    await watch.wait(
      (l) => l.type === 'event' && l.event === 'restored' && String(l.detail).includes('sys_call_table[110]'),
      10_000,
      'restored event',
    );
    const again = pmi(['check', '--source', once(uri), '--checks', 'syscalls,idt']);
    expect(again.code, again.stdout + again.stderr).toBe(0);
  }, 300_000);

  it('x64_sys_call patched so getppid runs getpid: visible in the guest, alerted, repaired', async () => {
    const fn = symbolSize(d, 'x64_sys_call', 1 << 16);
    expect(fn, 'this kernel dispatches through x64_sys_call').toBeDefined();
    const body = new Uint8Array(fn!.size);
    await d.paging.readVirtualBatch([{ va: fn!.va, buf: body }]);
    const dec = decodeDispatch(body, fn!.va, 512);
    const getppid = dec.map.get(110)!;
    const getpid = dec.map.get(39)!;
    const leaf = dec.leaves.find((l) => l.target === getppid && l.kind === 'jmp')!;
    expect(leaf, 'a jmp leaf for getppid').toBeDefined();
    const ids = async () => {
      const r = await vm.run('sh -c \'echo "$PPID $$"\'');
      const [ppid, pid] = r.stdout.trim().split(/\s+/).map(Number);
      return { ppid, pid };
    };
    const clean = await ids();
    expect(clean.ppid).not.toBe(clean.pid);

    const rel = Buffer.alloc(4);
    rel.writeInt32LE(Number(getpid - (fn!.va + BigInt(leaf.at) + 5n)));
    const pa = await d.paging.translate(fn!.va + BigInt(leaf.at) + 1n);
    await writePhys(mem, pa, rel);
    // QEMU TCG runs translated copies of guest code and does not see writes made to the RAM file
    // from outside (a real CPU fetches the DMA-written bytes). Make it retranslate that code: write
    // the same bytes again through QEMU's gdbstub, which invalidates translations of the page. The
    // tamper itself is the DMA write above; this only removes an emulator artifact.
    await invalidateTcgCode(vm, fn!.va + BigInt(leaf.at) + 1n, rel);
    const alert = await watch.wait(
      (l) => l.type === 'alert' && String(l.key).startsWith('x64_sys_call:') && !String(l.key).includes('target'),
      10_000,
      'alert for x64_sys_call bytes',
    );
    const tampered = await ids();
    console.log(
      `[monitor] x64_sys_call+0x${leaf.at.toString(16)} patched: guest getppid() → ${tampered.ppid}, getpid() → ${tampered.pid}; alert ${alert.symbol}`,
    );
    expect(tampered.ppid).toBe(tampered.pid); // getppid now returns the caller's own pid

    const fix = pmi(['repair', String(alert.id), '--db', db, '--source', once(uri), '--write']);
    expect(fix.code, fix.stdout + fix.stderr).toBe(0);
    await invalidateTcgCode(vm, fn!.va + BigInt(leaf.at) + 1n, Buffer.from(await readPhys(mem, pa, 4)));
    const after = await ids();
    expect(after.ppid).not.toBe(after.pid);
    const check = pmi(['check', '--source', once(uri), '--checks', 'syscalls']);
    expect(check.code, check.stdout + check.stderr).toBe(0);
  }, 300_000);

  it('watch stops with exit 0 on SIGINT; pmi alerts lists what it raised', async () => {
    expect(await watch.stop()).toBe(0);
    const list = pmi(['alerts', '--db', db, '--json']);
    expect(list.code, list.stderr).toBe(0);
    const keys = JSON.parse(list.stdout).rows.map((r: { key: string }) => r.key);
    expect(keys).toContain('sys_call_table:110');
    expect(keys.some((k: string) => k.startsWith('x64_sys_call:'))).toBe(true);
  }, 60_000);
});
