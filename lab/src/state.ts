import { promises as fsp, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { isPidAlive, labError, procCmdline, rmQuiet, stateDir } from './util.js';

/** `<state dir>/<name>.json`: everything another process needs to find and drive a lab VM. */
export interface LabVmState {
  name: string;
  /** qemu-system-x86_64 pid. */
  pid: number;
  /** Lab kernel id (5.10, 6.1-cloud, 6.12, 7.x). */
  kernel: string;
  /** The lab's pinned Debian package for that kernel. */
  package: string;
  /** The Debian packages actually booted (sid: linux-binary-* + linux-modules-*; a newer one when the pin left sid). */
  packages?: string[];
  /** vCPUs (`-smp`); 1 when absent (state written before SMP targets). */
  smp?: number;
  /** `uname -r` from the guest's truth ('' until collected). */
  release: string;
  paging: 4 | 5;
  memory_bytes: number;
  machine: 'pc';
  /** The guest RAM (memory-backend-file, share=on): offset = guest physical address for low RAM. */
  ram_path: string;
  /** ttyS0: kernel console and init messages (`\r\n` line ends). */
  serial_log: string;
  qmp_socket: string;
  /** ttyS1: the command channel (unix socket, one client at a time). */
  cmd_socket: string;
  truth_path: string;
  qemu_log: string;
  pidfile: string;
  /** Kernel command line given to the guest. */
  append: string;
  /** 'attached': dies with the process that started it; 'detached': lives until `pmi-lab down`. */
  mode: 'attached' | 'detached';
  /** Process that started the VM (attached VMs whose owner died are reaped by listLabVms). */
  owner_pid: number;
  status: 'booting' | 'ready';
  /** Spawn → READY line on the console, ms. */
  boot_ms: number;
  started_at: string;
  vmlinuz: string;
  initramfs: string;
}

export const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$/;

export function statePath(name: string, dir = stateDir()): string {
  return join(dir, `${name}.json`);
}

/** `qemu:<ram_path>?machine=pc` — the pmi source URI of a lab VM's live RAM. */
export function labSourceUri(vm: Pick<LabVmState, 'ram_path' | 'machine'>): string {
  return `qemu:${vm.ram_path}?machine=${vm.machine}`;
}

export async function writeState(st: LabVmState): Promise<void> {
  const dir = stateDir();
  await fsp.mkdir(dir, { recursive: true });
  const p = statePath(st.name, dir);
  const tmp = `${p}.tmp-${process.pid}`;
  await fsp.writeFile(tmp, JSON.stringify(st, null, 2) + '\n');
  await fsp.rename(tmp, p);
}

export function readStateSync(path: string): LabVmState | undefined {
  try {
    const st = JSON.parse(readFileSync(path, 'utf8')) as LabVmState;
    if (typeof st.name !== 'string' || typeof st.pid !== 'number' || typeof st.ram_path !== 'string') return undefined;
    return st;
  } catch {
    return undefined;
  }
}

/** True when the state's qemu process is alive and really is that VM (guards against pid reuse). */
export function isVmProcessAlive(st: LabVmState): boolean {
  if (!isPidAlive(st.pid)) return false;
  const cmd = procCmdline(st.pid);
  if (!cmd) return false;
  return cmd.some((a) => a.includes(st.ram_path));
}

/** Every file a VM leaves behind (state, RAM, sockets, logs, truth). */
export function vmFiles(st: LabVmState): string[] {
  return [
    st.ram_path,
    st.qmp_socket,
    st.cmd_socket,
    st.pidfile,
    st.serial_log,
    st.qemu_log,
    st.truth_path,
    statePath(st.name),
  ];
}

export function removeVmFilesSync(st: LabVmState): void {
  for (const f of vmFiles(st)) {
    try {
      rmSync(f, { force: true });
    } catch {
      /* best effort */
    }
  }
}

export async function removeVmFiles(st: LabVmState): Promise<void> {
  for (const f of vmFiles(st)) await rmQuiet(f);
}

/**
 * Lab VMs whose qemu process is alive. State files of dead VMs are removed (with their RAM
 * files); attached VMs whose starting process died are killed and removed.
 */
export function listLabVms(): LabVmState[] {
  const dir = stateDir();
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  const out: LabVmState[] = [];
  for (const f of names) {
    if (!f.endsWith('.json') || f.endsWith('.truth.json')) continue;
    const st = readStateSync(join(dir, f));
    if (!st) continue;
    const alive = isVmProcessAlive(st);
    if (alive && st.mode === 'attached' && st.owner_pid !== process.pid && !isPidAlive(st.owner_pid)) {
      try {
        process.kill(st.pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
      removeVmFilesSync(st);
      continue;
    }
    if (!alive) {
      removeVmFilesSync(st);
      continue;
    }
    out.push(st);
  }
  return out.sort((a, b) => a.name.localeCompare(b.name));
}

/** The state of a running VM by name, or the only one running when no name is given. */
export function findLabVm(name?: string): LabVmState {
  const vms = listLabVms();
  if (name !== undefined) {
    const st = vms.find((v) => v.name === name);
    if (!st) throw labError(`no running lab VM named '${name}'`, { name, running: vms.map((v) => v.name) });
    return st;
  }
  if (vms.length === 1) return vms[0];
  if (vms.length === 0) throw labError('no lab VM is running (start one with `pmi-lab up`)', { running: [] });
  throw labError(`${vms.length} lab VMs are running; name one: ${vms.map((v) => v.name).join(', ')}`, {
    running: vms.map((v) => v.name),
  });
}
