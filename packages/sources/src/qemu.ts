import fs from 'node:fs';
import path from 'node:path';
import { PmiError, hex, type OpenOptions } from '@pmi/core';
import {
  FileMemory,
  closeQuietly,
  normalisedUri,
  openFile,
  parseFileUri,
  parseSizeParam,
  type Segment,
} from './file-memory.js';

export type QemuMachine = 'pc' | 'q35';

export const GiB = 2 ** 30;
export const FOUR_GIB = 4 * GiB;

/**
 * How much of the guest RAM QEMU maps below 4 GiB, from the RAM size — QEMU's own rules
 * (hw/i386/pc_piix.c and pc_q35.c, machine types since 1.7 with `gigabyte_align`):
 *
 * - `pc` (i440FX): RAM ≥ 3.5 GiB (0xE0000000) → 3 GiB (0xC0000000) below 4 GiB; otherwise all of it.
 * - `q35`: RAM ≥ 2.75 GiB (0xB0000000) → 2 GiB (0x80000000) below 4 GiB (the MMCONFIG/PCI hole
 *   starts at 2 GiB there); otherwise all of it.
 *
 * The remainder of the RAM block sits at 4 GiB. `-machine max-ram-below-4g=…` or old machine
 * types change this; then pass `below4g=` explicitly.
 */
export function qemuBelow4g(machine: QemuMachine, ramSize: number): number {
  if (machine === 'q35') return ramSize >= 0xb0000000 ? 0x80000000 : ramSize;
  return ramSize >= 0xe0000000 ? 0xc0000000 : ramSize;
}

/** The physical layout of a QEMU x86 RAM block of `ramSize` bytes with `below4g` of it below 4 GiB. */
export function qemuSegments(ramSize: number, below4g: number): Segment[] {
  const low = Math.min(ramSize, below4g);
  const segs: Segment[] = [{ start: 0, end: low, fileOffset: 0 }];
  if (ramSize > low) segs.push({ start: FOUR_GIB, end: FOUR_GIB + (ramSize - low), fileOffset: low });
  return segs;
}

/** Map a QEMU machine type name to its RAM layout family, or undefined if it is neither. */
export function machineFamily(name: string): QemuMachine | undefined {
  const t = name.toLowerCase();
  if (t === 'q35' || t.startsWith('pc-q35')) return 'q35';
  if (t === 'pc' || t === 'i440fx' || t.startsWith('pc-i440fx') || /^pc-\d/.test(t)) return 'pc';
  return undefined;
}

/**
 * Find a running QEMU whose memory-backend-file uses `absPath` (scans /proc/PID/cmdline) and
 * return its pid and machine family (`-machine TYPE,…` / `-M TYPE`). Best effort: undefined when
 * there is no such process or its command line cannot be read.
 */
export function findQemuProcess(absPath: string): { pid: number; machine: QemuMachine | undefined } | undefined {
  let pids: string[];
  try {
    pids = fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p));
  } catch {
    return undefined;
  }
  let real = absPath;
  try {
    real = fs.realpathSync(absPath);
  } catch {
    /* keep */
  }
  for (const pid of pids) {
    let argv: string[];
    try {
      argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    } catch {
      continue;
    }
    if (!/qemu/.test(path.basename(argv[0] ?? ''))) continue;
    const usesFile = argv.some((a) =>
      a.split(',').some((kv) => {
        if (!kv.startsWith('mem-path=')) return false;
        const v = kv.slice('mem-path='.length);
        return v === absPath || v === real || path.resolve(v) === real;
      }),
    );
    if (!usesFile) continue;
    let machine: QemuMachine | undefined;
    for (let i = 0; i < argv.length - 1; i++) {
      if (argv[i] !== '-machine' && argv[i] !== '-M' && argv[i] !== '--machine') continue;
      for (const kv of argv[i + 1].split(',')) {
        const type = kv.includes('=') ? (kv.startsWith('type=') ? kv.slice(5) : undefined) : kv;
        if (type !== undefined) machine = machineFamily(type) ?? machine;
      }
    }
    return { pid: Number(pid), machine };
  }
  return undefined;
}

function parseMachine(uri: string, v: string): QemuMachine {
  const fam = machineFamily(v);
  if (fam) return fam;
  throw new PmiError('E_SOURCE_URI', 'qemu', `unknown machine '${v}' in '${uri}' (expected pc or q35)`, {
    uri,
    parameter: 'machine',
  });
}

/**
 * `qemu:PATH[?machine=pc|q35][&below4g=SIZE]` — the RAM file of a running QEMU guest
 * (memory-backend-file, e.g. under /dev/shm, `share=on`). File offset x < below4g is physical x;
 * file offset below4g + y is physical 4 GiB + y. The legacy VGA/BIOS window 0xA0000–0xFFFFF is
 * backed by the RAM file too (the guest sees it after the BIOS enables shadow RAM), so it is
 * readable. `live: true`: the guest keeps running while we read.
 */
export class QemuRamSource extends FileMemory {
  constructor(
    init: ConstructorParameters<typeof FileMemory>[0],
    readonly machine: QemuMachine,
    readonly below4g: number,
    readonly below4gSource: 'rule' | 'explicit',
    /** Where the machine type came from: `machine=`, a running QEMU's command line, or the default. */
    readonly machineSource: string,
  ) {
    super(init);
  }

  override describe(): Record<string, unknown> {
    return {
      ...super.describe(),
      machine: this.machine,
      machine_from: this.machineSource,
      below_4g: hex(this.below4g),
      below_4g_from: this.below4gSource === 'rule' ? `QEMU ${this.machine} rule from the file size` : 'below4g=',
    };
  }
}

export async function openQemu(uri: string, rest: string, opts: OpenOptions = {}): Promise<QemuRamSource> {
  const u = parseFileUri('qemu', uri, rest, opts, ['machine', 'below4g']);
  const m = u.params.get('machine');
  let machine: QemuMachine = 'pc';
  let machineSource = 'default (pc)';
  if (m !== null && m.toLowerCase() !== 'auto') {
    machine = parseMachine(uri, m);
    machineSource = 'machine=';
  } else {
    const proc = findQemuProcess(u.absPath);
    if (proc?.machine) {
      machine = proc.machine;
      machineSource = `command line of qemu pid ${proc.pid}`;
    }
  }
  const b = u.params.get('below4g');
  let explicit: number | undefined;
  if (b !== null) {
    explicit = parseSizeParam('qemu', uri, 'below4g', b);
    if (explicit > FOUR_GIB) {
      throw new PmiError('E_SOURCE_URI', 'qemu', `below4g=${b} in '${uri}' is above 4 GiB`, { uri });
    }
  }
  const f = openFile('qemu', uri, u.path, u.writable);
  try {
    const below4g = Math.min(f.size, explicit ?? qemuBelow4g(machine, f.size));
    return new QemuRamSource(
      {
        kind: 'qemu',
        uri: normalisedUri('qemu', u.absPath, {
          machine,
          below4g: explicit === undefined ? undefined : hex(explicit),
        }),
        path: u.path,
        fd: f.fd,
        fileSize: f.size,
        readOnly: !u.writable,
        live: true,
        segments: qemuSegments(f.size, below4g),
      },
      machine,
      below4g,
      explicit === undefined ? 'rule' : 'explicit',
      machineSource,
    );
  } catch (e) {
    closeQuietly(f.fd);
    throw e;
  }
}
