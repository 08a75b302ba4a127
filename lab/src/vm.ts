import { spawn } from 'node:child_process';
import { promises as fsp, openSync, closeSync, existsSync, statfsSync, readFileSync } from 'node:fs';
import { resolve as resolvePath, dirname, join } from 'node:path';
import { parseSize } from '@pmi/core';
import { runOnChannel, type RunResult } from './channel.js';
import { buildInitramfs, WORKLOAD } from './initramfs.js';
import { fetchKernel, resolveKernel } from './kernels.js';
import { QmpClient, qmpOnce } from './qmp.js';
import {
  findLabVm,
  isVmProcessAlive,
  labSourceUri,
  listLabVms,
  NAME_RE,
  removeVmFiles,
  removeVmFilesSync,
  statePath,
  writeState,
  type LabVmState,
} from './state.js';
import {
  KALLSYMS_SCRIPT,
  parseThreadsOutput,
  parseTruth,
  THREADS_SCRIPT,
  TRUTH_SCRIPT,
  type GroundTruth,
  type ThreadListing,
} from './truth.js';
import { joinVcpuViews, parseInfoRegisters, parseQemuCpuNotes, type VcpuEntry, type VcpuListing } from './vcpus.js';
import {
  execChecked,
  formatBytes,
  isPidAlive,
  labError,
  randomTag,
  rmQuiet,
  sleep,
  stateDir,
  tailLines,
  waitForPidExit,
} from './util.js';

export type Paging = 4 | 5;

export interface StartOptions {
  /** Lab kernel id or alias: 5.10, 6.1-cloud, 6.12 (6.12-generic), 7.x. */
  kernel: string;
  /** vCPUs (`-smp N`, TCG: one host thread each). Default 1. */
  smp?: number;
  /** 5 → `-cpu max` (LA57, 5-level paging); 4 → `-cpu max,la57=off`. Default 5. */
  paging?: Paging;
  /** Guest RAM: bytes or a size like "256M", "2G". Default 256 MiB. */
  memory?: number | string;
  /** VM name (state file, RAM file); default `pmi-<kernel>-p<paging>-<random>`. */
  name?: string;
  /** Extra kernel command-line arguments, appended after `console=ttyS0 panic=0 no_timer_check`. */
  append?: string;
  /** Detached VMs survive this process (`pmi-lab up`); attached ones are killed when it exits. */
  detached?: boolean;
  /** Spawn → ready deadline (default 180 s; PMI_LAB_BOOT_TIMEOUT_MS overrides). */
  bootTimeoutMs?: number;
  /** Collect ground truth after boot and write truth.json (default true). */
  collectTruth?: boolean;
  /** Boot this kernel image instead of the package's (tests: a bogus path must fail fast). */
  vmlinuz?: string;
  /** Progress messages. */
  log?: (msg: string) => void;
  /** Extra idle `sleep` processes the guest starts before it is ready (scale tests; default 0). */
  extraProcesses?: number;
}

export const PANIC_RE = /Kernel panic - not syncing/;
const DEFAULT_MEMORY = 256 * 2 ** 20;

/** The qemu command line for a VM (exported for diagnostics/tests). */
export function qemuArgs(st: LabVmState): string[] {
  const mib = st.memory_bytes / 2 ** 20;
  return [
    '-name',
    `pmi-lab-${st.name}`,
    '-machine',
    `${st.machine},memory-backend=mem`,
    '-object',
    `memory-backend-file,id=mem,size=${mib}M,mem-path=${st.ram_path},share=on`,
    '-m',
    `${mib}M`,
    '-smp',
    String(st.smp ?? 1),
    '-accel',
    'tcg',
    '-cpu',
    st.paging === 5 ? 'max' : 'max,la57=off',
    '-nodefaults',
    '-kernel',
    st.vmlinuz,
    '-initrd',
    st.initramfs,
    '-append',
    st.append,
    '-serial',
    `file:${st.serial_log}`,
    '-chardev',
    `socket,id=pmicmd,path=${st.cmd_socket},server=on,wait=off`,
    '-serial',
    'chardev:pmicmd',
    '-display',
    'none',
    '-vga',
    'none',
    '-monitor',
    'none',
    '-no-reboot',
    '-qmp',
    `unix:${st.qmp_socket},server=on,wait=off`,
    '-pidfile',
    st.pidfile,
  ];
}

/* ---------------- process-exit safety net for VMs this process owns ---------------- */

const owned = new Map<string, LabVmState>();
let handlersInstalled = false;

function killOwnedSync(): void {
  for (const st of owned.values()) {
    try {
      process.kill(st.pid, 'SIGKILL');
    } catch {
      /* gone */
    }
    removeVmFilesSync(st);
  }
  owned.clear();
}

function installExitHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  process.on('exit', killOwnedSync);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const handler = (): void => {
      killOwnedSync();
      // Keep the default behaviour (terminate) unless someone else handles the signal too.
      if (process.listenerCount(sig) === 1) {
        process.removeListener(sig, handler);
        process.kill(process.pid, sig);
      }
    };
    process.on(sig, handler);
  }
}

/* ---------------- the VM handle ---------------- */

/** A lab VM: started here (owned) or opened from its state file (another process owns it). */
export class LabVm {
  constructor(public state: LabVmState) {}

  get name(): string {
    return this.state.name;
  }
  get sourceUri(): string {
    return labSourceUri(this.state);
  }
  get ramPath(): string {
    return this.state.ram_path;
  }
  get statePath(): string {
    return statePath(this.state.name);
  }

  isAlive(): boolean {
    return isVmProcessAlive(this.state);
  }

  /** The ttyS0 log (kernel console + init), `\r\n` normalised to `\n`. */
  serialLog(): string {
    try {
      return readFileSync(this.state.serial_log, 'latin1').replace(/\r/g, '');
    } catch {
      return '';
    }
  }

  /** True once the console shows a kernel panic (the guest then halts with RAM intact). */
  isPanicked(): boolean {
    return PANIC_RE.test(this.serialLog());
  }

  /**
   * Run a shell command in the guest (busybox sh, as root) and return its stdout, stderr and exit
   * status. Times out with E_LAB (default 30 s); fails early with E_LAB when the guest panics or
   * qemu exits.
   */
  run(command: string, opts: { timeoutMs?: number; guestTimeout?: boolean } = {}): Promise<RunResult> {
    if (!this.isAlive()) return Promise.reject(labError(`lab VM ${this.name} is not running`, { name: this.name }));
    return runOnChannel(this.state.cmd_socket, command, {
      ...opts,
      abortCheck: () => {
        if (!this.isAlive()) return 'qemu exited';
        if (this.isPanicked()) return 'guest kernel panicked';
        return undefined;
      },
    });
  }

  /**
   * Collect ground truth now (processes, modules, kallsyms, sockets, …) from inside the guest.
   * `kallsyms: false` skips the (seconds-long) /proc/kallsyms transfer; `write` updates truth.json.
   */
  async groundTruth(opts: { timeoutMs?: number; write?: boolean; kallsyms?: boolean } = {}): Promise<GroundTruth> {
    const timeoutMs = opts.timeoutMs ?? 300_000;
    const collectedAt = new Date();
    const t0 = Date.now();
    const main = await this.run(TRUTH_SCRIPT, { timeoutMs, guestTimeout: false });
    if (main.exitCode !== 0 && main.stdout.length === 0) {
      throw labError(`ground-truth collection failed in ${this.name}: ${main.stderr.slice(-500)}`, { name: this.name });
    }
    const tk = Date.now();
    const ks =
      opts.kallsyms === false ? undefined : await this.run(KALLSYMS_SCRIPT, { timeoutMs, guestTimeout: false });
    const kallsymsMs = ks ? Date.now() - tk : 0;
    const truth = parseTruth(
      main.stdout,
      { collected_at: collectedAt.toISOString(), collect_ms: Date.now() - t0, kallsyms_ms: kallsymsMs },
      ks?.stdout ?? '',
    );
    if (!truth.uname_r || truth.ps.length === 0 || (ks && truth.kallsyms.length === 0)) {
      throw labError(`incomplete ground truth from ${this.name}`, {
        name: this.name,
        uname_r: truth.uname_r,
        processes: truth.ps.length,
        kallsyms: truth.kallsyms.length,
      });
    }
    if (opts.write) await this.writeTruth(truth);
    return truth;
  }

  /**
   * Every thread of every process now (the truth's `threads`, by the same script and parser):
   * `{collected_at, threads}`.
   */
  async threadsNow(opts: { timeoutMs?: number } = {}): Promise<ThreadListing> {
    const collectedAt = new Date().toISOString();
    const r = await this.run(THREADS_SCRIPT, { timeoutMs: opts.timeoutMs ?? 120_000, guestTimeout: false });
    const threads = parseThreadsOutput(r.stdout);
    if (!threads.some((t) => t.pid === 1)) {
      throw labError(`incomplete thread listing from ${this.name}: ${r.stderr.slice(-500)}`, {
        name: this.name,
        exit_code: r.exitCode,
        threads: threads.length,
      });
    }
    return { collected_at: collectedAt, threads };
  }

  async writeTruth(truth: GroundTruth): Promise<void> {
    const tmp = `${this.state.truth_path}.tmp-${process.pid}-${randomTag()}`;
    await fsp.writeFile(tmp, JSON.stringify(truth) + '\n');
    await fsp.rename(tmp, this.state.truth_path);
  }

  /** The truth recorded at boot (or by the last groundTruth({write: true})). */
  async recordedTruth(): Promise<GroundTruth> {
    try {
      return JSON.parse(await fsp.readFile(this.state.truth_path, 'utf8')) as GroundTruth;
    } catch (e) {
      throw labError(`no recorded truth for ${this.name} at ${this.state.truth_path}`, { name: this.name }, e);
    }
  }

  qmp<T = unknown>(command: string, args?: Record<string, unknown>, timeoutMs = 10_000): Promise<T> {
    return qmpOnce<T>(this.state.qmp_socket, command, args, timeoutMs);
  }

  /** QMP query-status: 'running', 'paused', 'internal-error', 'guest-panicked', … */
  async runState(): Promise<string> {
    const r = await this.qmp<{ status: string; running: boolean }>('query-status');
    return r.status;
  }

  /** Freeze the guest (QMP stop): RAM stays readable and stable. */
  async pause(): Promise<void> {
    await this.qmp('stop');
  }

  /** Resume a paused guest (QMP cont). */
  async resume(): Promise<void> {
    await this.qmp('cont');
  }

  /**
   * QEMU's view of each vCPU now: `info registers -a` joined with the CPU state notes of a
   * one-page `dump-guest-memory` ELF (for KernelGSbase, which the register dump lacks); see
   * vcpus.ts. Consistent only while the guest is paused (snapshot() reads it in its pause).
   */
  async readVcpus(timeoutMs = 30_000): Promise<VcpuEntry[]> {
    const elf = join(dirname(this.state.truth_path), `${this.name}.vcpus-${process.pid}-${randomTag()}.elf`);
    const c = await QmpClient.connect(this.state.qmp_socket, timeoutMs);
    try {
      const text = await c.execute<string>('human-monitor-command', { 'command-line': 'info registers -a' }, timeoutMs);
      // paging=false + begin/length: just the ELF notes and one page of low RAM, written synchronously
      await c.execute(
        'dump-guest-memory',
        { paging: false, protocol: `file:${elf}`, begin: 0, length: 4096 },
        timeoutMs,
      );
      return joinVcpuViews(parseInfoRegisters(text), parseQemuCpuNotes(await fsp.readFile(elf)));
    } catch (e) {
      if ((e as { code?: string }).code === 'E_LAB') throw e;
      throw labError(`cannot read the vCPU registers of ${this.name}: ${(e as Error).message}`, { name: this.name }, e);
    } finally {
      c.close();
      await rmQuiet(elf);
    }
  }

  /**
   * Copy the RAM file (sparse) to path, pausing the guest around the copy so the image is
   * consistent (it is resumed only if it was running before). In the same pause, QEMU's view of
   * each vCPU (readVcpus) is written to `<path>.vcpus.json` ({collected_at, vcpus}).
   */
  async snapshot(
    path: string,
    opts: { timeoutMs?: number } = {},
  ): Promise<{ path: string; bytes: number; ms: number; vcpus_path: string }> {
    const out = resolvePath(path);
    const vcpusPath = `${out}.vcpus.json`;
    await fsp.mkdir(dirname(out), { recursive: true });
    const t0 = Date.now();
    const wasRunning = (await this.runState()) === 'running';
    if (wasRunning) await this.pause();
    let listing: VcpuListing;
    try {
      listing = { collected_at: new Date().toISOString(), vcpus: await this.readVcpus() };
      await execChecked('cp', ['--sparse=always', this.state.ram_path, out], {
        timeoutMs: opts.timeoutMs ?? 300_000,
      });
    } finally {
      if (wasRunning) await this.resume();
    }
    const tmp = `${vcpusPath}.tmp-${process.pid}-${randomTag()}`;
    await fsp.writeFile(tmp, JSON.stringify(listing, null, 2) + '\n');
    await fsp.rename(tmp, vcpusPath);
    const st = await fsp.stat(out);
    return { path: out, bytes: st.size, ms: Date.now() - t0, vcpus_path: vcpusPath };
  }

  /** QMP dump-guest-memory (paging=false) into an ELF core at path; waits for completion. */
  async dumpGuestMemory(
    path: string,
    opts: { timeoutMs?: number } = {},
  ): Promise<{ path: string; bytes: number; ms: number }> {
    const out = resolvePath(path);
    await fsp.mkdir(dirname(out), { recursive: true });
    const timeoutMs = opts.timeoutMs ?? 300_000;
    const t0 = Date.now();
    const c = await QmpClient.connect(this.state.qmp_socket);
    try {
      await c.execute('dump-guest-memory', { paging: false, protocol: `file:${out}`, detach: true });
      for (;;) {
        const r = await c.execute<{ status: string; completed?: number; total?: number }>('query-dump');
        if (r.status === 'completed') break;
        if (r.status === 'failed')
          throw labError(`dump-guest-memory of ${this.name} failed`, { name: this.name, path: out });
        if (Date.now() - t0 > timeoutMs) {
          throw labError(`dump-guest-memory of ${this.name} did not finish within ${timeoutMs} ms`, {
            name: this.name,
            status: r.status,
          });
        }
        await sleep(200);
      }
    } finally {
      c.close();
    }
    const st = await fsp.stat(out);
    return { path: out, bytes: st.size, ms: Date.now() - t0 };
  }

  /** Stop the VM (QMP quit, then SIGTERM, then SIGKILL) and remove its RAM file, sockets and state. */
  async stop(): Promise<void> {
    const st = this.state;
    if (isVmProcessAlive(st)) {
      await qmpOnce(st.qmp_socket, 'quit', undefined, 3000).catch(() => undefined);
      if (!(await waitForPidExit(st.pid, 5000))) {
        signal(st.pid, 'SIGTERM');
        if (!(await waitForPidExit(st.pid, 3000))) {
          signal(st.pid, 'SIGKILL');
          await waitForPidExit(st.pid, 5000);
        }
      }
    }
    if (owned.has(st.name)) {
      // our own child: give libuv a moment to reap it, so no zombie outlives stop()
      for (let i = 0; i < 40 && existsSync(`/proc/${st.pid}`); i++) await sleep(25);
    }
    owned.delete(st.name);
    await removeVmFiles(st);
  }
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    /* gone */
  }
}

/** Open a running VM by name (or the only one) from its state file. */
export function openLabVm(name?: string): LabVm {
  return new LabVm(findLabVm(name));
}

export function parseMemory(m: number | string | undefined): number {
  if (m === undefined) return DEFAULT_MEMORY;
  const bytes = typeof m === 'number' ? m : parseSize(m, 'memory');
  if (bytes < 64 * 2 ** 20 || bytes % 2 ** 20 !== 0) {
    throw labError(`guest memory must be a whole number of MiB ≥ 64M (got ${m})`, { memory: String(m) });
  }
  return bytes;
}

/**
 * Boot a lab VM: fetch the kernel, build the initramfs, start qemu with its RAM in a shared
 * file, wait for the workload to be up, and record ground truth. Any failure kills qemu and
 * removes its files before the E_LAB error (with the console tail) is thrown.
 */
export async function startLabVm(opts: StartOptions): Promise<LabVm> {
  const spec = resolveKernel(opts.kernel);
  const paging = opts.paging ?? 5;
  if (paging !== 4 && paging !== 5) throw labError(`paging must be 4 or 5 (got ${String(paging)})`, {});
  const smp = opts.smp ?? 1;
  if (!Number.isInteger(smp) || smp < 1 || smp > 8) throw labError(`smp must be 1..8 (got ${String(smp)})`, {});
  const memory = parseMemory(opts.memory);
  const name = opts.name ?? `pmi-${spec.id.replace(/\./g, '')}-p${paging}-${randomTag().slice(0, 4)}`;
  if (!NAME_RE.test(name)) throw labError(`invalid VM name '${name}' (letters, digits, _ and -)`, { name });
  const bootTimeoutMs = opts.bootTimeoutMs ?? (Number(process.env.PMI_LAB_BOOT_TIMEOUT_MS) || 180_000);
  const log = opts.log ?? (() => undefined);

  const kernel = await fetchKernel(spec.id, { log });
  const initramfs = await buildInitramfs(kernel, { extraProcesses: opts.extraProcesses });

  const dir = stateDir();
  await fsp.mkdir(dir, { recursive: true });
  if (listLabVms().some((v) => v.name === name))
    throw labError(`a lab VM named '${name}' is already running`, { name });
  const shmDir = process.env.PMI_LAB_SHM || '/dev/shm';
  const st: LabVmState = {
    name,
    pid: 0,
    kernel: spec.id,
    package: spec.package,
    packages: [...kernel.packages],
    release: '',
    paging,
    smp,
    memory_bytes: memory,
    machine: 'pc',
    ram_path: resolvePath(shmDir, `pmi-lab-${name}.ram`),
    serial_log: resolvePath(dir, `${name}.serial.log`),
    qmp_socket: resolvePath(dir, `${name}.qmp`),
    cmd_socket: resolvePath(dir, `${name}.cmd`),
    truth_path: resolvePath(dir, `${name}.truth.json`),
    qemu_log: resolvePath(dir, `${name}.qemu.log`),
    pidfile: resolvePath(dir, `${name}.pid`),
    // no_timer_check: under TCG on a loaded host the kernel's IO-APIC timer check can miss ticks and
    // panic ("IO-APIC + timer doesn't work!"); the check is meaningless for an emulated PIT.
    append: ['console=ttyS0', 'panic=0', 'no_timer_check', opts.append ?? ''].join(' ').trim(),
    mode: opts.detached ? 'detached' : 'attached',
    owner_pid: process.pid,
    status: 'booting',
    boot_ms: 0,
    started_at: new Date().toISOString(),
    vmlinuz: resolvePath(opts.vmlinuz ?? kernel.vmlinuz),
    initramfs,
  };
  for (const s of [st.qmp_socket, st.cmd_socket]) {
    if (Buffer.byteLength(s) > 107)
      throw labError(`socket path too long for a unix socket: ${s} (set PMI_LAB_DIR)`, { path: s });
  }
  try {
    const fs = statfsSync(shmDir);
    const free = fs.bavail * fs.bsize;
    if (free < memory) {
      throw labError(
        `not enough space in ${shmDir} for ${formatBytes(memory)} of guest RAM (${formatBytes(free)} free)`,
        {
          free_bytes: free,
        },
      );
    }
  } catch (e) {
    if ((e as { code?: string }).code === 'E_LAB') throw e;
  }
  for (const f of [st.ram_path, st.qmp_socket, st.cmd_socket, st.serial_log, st.qemu_log, st.pidfile, st.truth_path]) {
    await rmQuiet(f);
  }

  const logFd = openSync(st.qemu_log, 'w');
  const t0 = Date.now();
  let child;
  try {
    child = spawn('qemu-system-x86_64', qemuArgs(st), {
      stdio: ['ignore', logFd, logFd],
      detached: st.mode === 'detached',
    });
  } finally {
    closeSync(logFd);
  }
  let spawnError: Error | undefined;
  let exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  child.on('error', (e) => {
    spawnError = e;
  });
  child.on('exit', (code, sig) => {
    exited = { code, signal: sig };
  });
  if (st.mode === 'detached') child.unref();
  st.pid = child.pid ?? 0;
  const vm = new LabVm(st);
  if (st.mode === 'attached') {
    installExitHandlers();
    owned.set(name, st);
  }

  const failure = (msg: string, data: Record<string, unknown> = {}, cause?: unknown) => {
    const serial = tailLines(vm.serialLog(), 40);
    let qemuLog = '';
    try {
      qemuLog = readFileSync(st.qemu_log, 'utf8').trim();
    } catch {
      /* none */
    }
    return labError(
      `${msg}${qemuLog ? `\nqemu: ${tailLines(qemuLog, 10)}` : ''}\n--- serial log tail (${name}) ---\n${serial || '(empty)'}`,
      { name, kernel: spec.id, paging, ...data, qemu_log: tailLines(qemuLog, 20), serial_tail: serial },
      cause,
    );
  };

  try {
    if (!st.pid) throw failure(`cannot start qemu-system-x86_64: ${spawnError?.message ?? 'no pid'}`);
    await writeState(st);
    log(
      `pmi-lab: booting ${name} (${spec.id}: ${kernel.packages.join(' + ')} ${kernel.version}, ${paging === 5 ? 'LA57 CPU (5-level paging where the kernel has it)' : '4-level paging'}, ${smp} vCPU, ${formatBytes(memory)})` +
        (kernel.substituted ? ` — ${kernel.substituted}` : ''),
    );
    // Wait for the command loop's READY line on the console.
    const deadline = t0 + bootTimeoutMs;
    for (;;) {
      await sleep(200);
      if (spawnError) throw failure(`cannot start qemu-system-x86_64: ${spawnError.message}`);
      const serial = vm.serialLog();
      if (serial.includes(`${WORKLOAD.readyLine} `)) break;
      if (PANIC_RE.test(serial)) throw failure(`lab VM ${name} panicked during boot`);
      if (exited || !isPidAlive(st.pid)) {
        throw failure(
          `qemu exited during boot of ${name} (exit ${exited?.code ?? '?'}${exited?.signal ? `, ${exited.signal}` : ''})`,
        );
      }
      if (Date.now() > deadline)
        throw failure(`lab VM ${name} did not reach userspace within ${bootTimeoutMs} ms`, {
          timeout_ms: bootTimeoutMs,
        });
    }
    st.boot_ms = Date.now() - t0;
    // The loop prints READY after `stty`; confirm the channel end to end.
    let ping: RunResult | undefined;
    for (let i = 0; i < 3 && !ping; i++) {
      ping = await vm.run('echo pmi-ping', { timeoutMs: 15_000 }).catch((e: unknown) => {
        if (i === 2) throw failure(`command channel of ${name} does not answer`, {}, e);
        return undefined;
      });
    }
    if (!ping || ping.stdout.trim() !== 'pmi-ping') throw failure(`command channel of ${name} answered garbage`);
    if (opts.collectTruth !== false) {
      const truth = await vm.groundTruth({ write: true });
      st.release = truth.uname_r;
      log(
        `pmi-lab: ${name} ready in ${(st.boot_ms / 1000).toFixed(1)} s; truth: ${truth.ps.length} processes, ` +
          `${truth.kallsyms.length} symbols (kallsyms ${(truth.kallsyms_ms / 1000).toFixed(1)} s)`,
      );
    }
    st.status = 'ready';
    await writeState(st);
    return vm;
  } catch (e) {
    await vm.stop().catch(() => undefined);
    if (!isPidAlive(st.pid)) owned.delete(name);
    throw e;
  }
}

/** Stop every running lab VM (all processes' VMs). Returns their names. */
export async function stopAllLabVms(): Promise<string[]> {
  const vms = listLabVms();
  await Promise.all(vms.map((st) => new LabVm(st).stop()));
  return vms.map((v) => v.name);
}
