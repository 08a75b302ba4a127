/**
 * Minimal harness for the QEMU-backed tests: starts qemu-system-x86_64 paused at reset (-S, no
 * guest code runs) with its RAM in a shared memory-backend-file, talks QMP over a unix socket,
 * and guarantees the process is gone afterwards (QMP quit, then SIGKILL).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';

export const QEMU_BIN = process.env.PMI_QEMU ?? 'qemu-system-x86_64';

/** Throws (fails the test, never skips) when QEMU is missing. */
export function requireQemu(): string {
  const r = spawnSync(QEMU_BIN, ['--version'], { encoding: 'utf8' });
  if (r.error || r.status !== 0) {
    throw new Error(
      `${QEMU_BIN} is required by this test but could not be run (${r.error?.message ?? r.stderr}). ` +
        `Install it: apt-get install qemu-system-x86 (or set PMI_QEMU to the binary).`,
    );
  }
  return r.stdout.split('\n')[0];
}

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  cmd: string;
}

export class QemuVm {
  private sock!: net.Socket;
  private buf = '';
  private nextId = 1;
  private pending = new Map<number, Pending>();
  private stderr = '';
  private exited = false;

  private constructor(
    readonly proc: ChildProcess,
    readonly shmPath: string,
    readonly qmpPath: string,
  ) {
    proc.stderr?.on('data', (d: Buffer) => (this.stderr += d.toString()));
    proc.on('exit', () => {
      this.exited = true;
      for (const p of this.pending.values()) p.reject(new Error(`qemu exited during ${p.cmd}: ${this.stderr}`));
      this.pending.clear();
    });
  }

  /** Start QEMU with `size` of RAM backed by shmPath (created by QEMU). */
  static async start(opts: { machine: 'pc' | 'q35'; size: string; shmPath: string; workDir: string }): Promise<QemuVm> {
    const qmpPath = path.join(opts.workDir, `qmp-${process.pid}-${Date.now()}.sock`);
    const args = [
      '-S',
      '-machine',
      `${opts.machine},memory-backend=mem`,
      '-object',
      `memory-backend-file,id=mem,size=${opts.size},mem-path=${opts.shmPath},share=on`,
      '-m',
      opts.size,
      '-display',
      'none',
      '-vga',
      'none',
      '-monitor',
      'none',
      '-nodefaults',
      '-qmp',
      `unix:${qmpPath},server=on,wait=off`,
    ];
    const proc = spawn(QEMU_BIN, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    const vm = new QemuVm(proc, opts.shmPath, qmpPath);
    // Last line of defence: never leave a qemu behind if the test process goes away.
    const killer = () => proc.kill('SIGKILL');
    process.once('exit', killer);
    proc.once('exit', () => process.removeListener('exit', killer));
    try {
      await vm.connect();
      await vm.qmp('qmp_capabilities');
    } catch (e) {
      await vm.stop();
      throw new Error(`starting ${QEMU_BIN} ${args.join(' ')} failed: ${(e as Error).message}\n${vm.stderr}`);
    }
    return vm;
  }

  private async connect(): Promise<void> {
    const deadline = Date.now() + 20_000;
    for (;;) {
      if (this.exited) throw new Error(`qemu exited at startup: ${this.stderr}`);
      if (fs.existsSync(this.qmpPath)) {
        try {
          await new Promise<void>((resolve, reject) => {
            const s = net.createConnection(this.qmpPath);
            s.once('connect', () => {
              this.sock = s;
              resolve();
            });
            s.once('error', reject);
          });
          break;
        } catch {
          /* retry */
        }
      }
      if (Date.now() > deadline) throw new Error('timed out waiting for the QMP socket');
      await new Promise((r) => setTimeout(r, 25));
    }
    this.sock.on('error', () => {});
    this.sock.on('data', (d) => {
      this.buf += d.toString();
      let i;
      while ((i = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, i).trim();
        this.buf = this.buf.slice(i + 1);
        if (!line) continue;
        const m = JSON.parse(line) as { id?: number; return?: unknown; error?: { desc: string } };
        if (m.id === undefined) continue; // greeting or event
        const p = this.pending.get(m.id);
        if (!p) continue;
        this.pending.delete(m.id);
        if (m.error) p.reject(new Error(`QMP ${p.cmd}: ${m.error.desc}`));
        else p.resolve(m.return);
      }
    });
  }

  qmp<T = unknown>(cmd: string, args?: Record<string, unknown>): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      if (this.exited) return reject(new Error(`qemu is not running (${cmd})`));
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, cmd });
      this.sock.write(JSON.stringify({ execute: cmd, arguments: args, id }) + '\n');
    });
  }

  /** dump-guest-memory (paging off) to file, optionally filtered to [begin, begin+length); waits for completion. */
  async dump(file: string, filter?: { begin: number; length: number }): Promise<void> {
    await this.qmp('dump-guest-memory', { paging: false, protocol: `file:${file}`, ...(filter ?? {}) });
    const deadline = Date.now() + 120_000;
    for (;;) {
      const s = await this.qmp<{ status: string }>('query-dump');
      if (s.status === 'completed') return;
      if (s.status === 'failed') throw new Error(`dump-guest-memory to ${file} failed`);
      if (Date.now() > deadline) throw new Error('dump-guest-memory timed out');
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** Guest-RAM regions of QEMU's flat view of the system address space (`info mtree -f`). */
  async ramRegions(backendId = 'mem'): Promise<{ start: number; end: number; offset: number }[]> {
    const text = await this.qmp<string>('human-monitor-command', { 'command-line': 'info mtree -f' });
    const lines = text.split(/\r?\n/);
    const as = lines.findIndex((l) => /^\s*AS "memory"/.test(l));
    if (as < 0) throw new Error(`no AS "memory" in info mtree -f:\n${text}`);
    const out: { start: number; end: number; offset: number }[] = [];
    for (let i = as + 1; i < lines.length && !/^FlatView/.test(lines[i]); i++) {
      const m = /^\s+([0-9a-f]+)-([0-9a-f]+) \(prio -?\d+, ([\w-]+)\): (\S+)(?: @([0-9a-f]+))?/.exec(lines[i]);
      if (m && m[3] === 'ram' && m[4] === backendId) {
        out.push({ start: parseInt(m[1], 16), end: parseInt(m[2], 16) + 1, offset: m[5] ? parseInt(m[5], 16) : 0 });
      }
    }
    if (out.length === 0) throw new Error(`no '${backendId}' RAM regions in info mtree -f:\n${text}`);
    return out;
  }

  /** Quit over QMP; SIGKILL if it lingers. Always safe to call. */
  async stop(): Promise<void> {
    if (this.exited || this.proc.exitCode !== null) return;
    const gone = new Promise<void>((r) => this.proc.once('exit', () => r()));
    try {
      if (this.sock) {
        await Promise.race([this.qmp('quit').catch(() => {}), new Promise((r) => setTimeout(r, 2000))]);
      }
    } catch {
      /* fall through to SIGKILL */
    }
    const t = setTimeout(() => this.proc.kill('SIGKILL'), this.sock ? 3000 : 0);
    await gone;
    clearTimeout(t);
    this.sock?.destroy();
    fs.rmSync(this.qmpPath, { force: true });
  }
}
