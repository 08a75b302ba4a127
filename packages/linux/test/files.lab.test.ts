/**
 * lsof against the guest's own /proc/PID/fd (readlink, collected with the serial command runner),
 * the workload's known files (pmi-holder fd 3) and the httpd listening socket (inode from
 * /proc/net/tcp); the same rows over nettlp://; a corrupt fd table pointer in a copied image gives
 * partial rows + a warning and exit 3 from the CLI.
 */
import { openLabKernel, openSnapshotOverNettlp } from './lab-kernel.js';
import { spawnSync } from 'node:child_process';
import { closeSync, copyFileSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { PhysicalMemory } from '@pmi/core';
import '@pmi/sources';
import type { KernelObjects } from '@pmi/kernel';
import { openLabVm, WORKLOAD, type GroundTruth } from '@pmi/lab';
import { listOpenFiles, type OpenFilesResult } from '../src/index.js';

const targets = inject('labTargets');
const PMI = fileURLToPath(new URL('../../cli/bin/pmi.js', import.meta.url));

describe.each(targets.map((t) => [t.id, t] as const))('lsof, lab target %s', (_id, target) => {
  let truth: GroundTruth;
  let mem: PhysicalMemory;
  let k: KernelObjects;
  let files: OpenFilesResult;
  let scratch: string;
  const pidOf = (comm: string, args = ''): number => {
    const p = truth.ps.filter((e) => e.comm === comm && e.args.includes(args));
    expect(p, `${comm} ${args}`).toHaveLength(1);
    return p[0].pid;
  };

  beforeAll(async () => {
    truth = JSON.parse(readFileSync(target.truth_path, 'utf8')) as GroundTruth;
    scratch = mkdtempSync(join(tmpdir(), 'pmi-files-'));
    ({ mem, k } = await openLabKernel('raw:' + target.snapshot_path, target));
    const t0 = performance.now();
    files = await listOpenFiles(k);
    console.log(
      `[files] ${target.id}: ${files.rows.length} open files of ${new Set(files.rows.map((r) => r.pid)).size} processes in ${(performance.now() - t0).toFixed(0)} ms`,
    );
  });
  afterAll(async () => {
    await mem?.close();
    rmSync(scratch, { recursive: true, force: true });
  });

  it('pmi-holder holds /etc/pmi-marker.txt on fd 3 (a regular file, read-only, at offset 0)', () => {
    const holder = pidOf(WORKLOAD.holder.comm);
    const fd3 = files.rows.find((r) => r.pid === holder && r.fd === 3);
    expect(fd3).toMatchObject({ comm: 'pmi-holder', type: 'file', path: WORKLOAD.holder.file, mode: 'r', pos: 0 });
    expect(files.warnings).toEqual([]);
  });

  it('fds 0-2 (and every fd) of workload processes equal readlink /proc/PID/fd/N in the guest', async () => {
    const pids = [
      pidOf(WORKLOAD.sleeper.comm),
      pidOf(WORKLOAD.userSleeper.comm),
      pidOf(WORKLOAD.holder.comm),
      pidOf('httpd', `0.0.0.0:${WORKLOAD.tcpPort}`),
      1, // init
    ];
    const script = pids
      .map((p) => `for f in /proc/${p}/fd/*; do echo "${p} \${f##*/} $(readlink $f)"; done`)
      .join('\n');
    const out = await openLabVm(target.name).run(script);
    const want = out.stdout
      .trim()
      .split('\n')
      .map((l) => l.split(' '))
      .map(([pid, fd, path]) => `${pid} ${fd} ${path}`)
      .sort();
    const got = files.rows
      .filter((r) => pids.includes(r.pid))
      .map((r) => `${r.pid} ${r.fd} ${r.path}`)
      .sort();
    // these processes' fds do not change after boot (not so the command loop's: busybox sh saves and
    // redirects its own fds 0-2 while it runs our command, so it is left out)
    expect(got).toEqual(want);
    for (const p of pids) expect(want.filter((w) => w.startsWith(`${p} `)).length).toBeGreaterThanOrEqual(3);
  });

  it("httpd's listening sockets show as socket:[INODE] with the inode of /proc/net/tcp{,6}", () => {
    for (const [arg, rows] of [
      [`0.0.0.0:${WORKLOAD.tcpPort}`, truth.net_tcp],
      [`-p ${WORKLOAD.tcp6Port}`, truth.net_tcp6],
    ] as const) {
      const port = arg.includes('0.0.0.0') ? WORKLOAD.tcpPort : WORKLOAD.tcp6Port;
      const listen = rows.find((e) => e.local_port === port && e.state === 'LISTEN')!;
      const pid = pidOf('httpd', arg);
      const socks = files.rows.filter((r) => r.pid === pid && r.type === 'socket');
      expect(socks.map((r) => r.path)).toEqual([`socket:[${listen.inode}]`]);
      expect(socks[0].inode).toBe(listen.inode);
    }
  });

  it('lsof PID gives that process only; the same rows over nettlp://', async () => {
    const holder = pidOf(WORKLOAD.holder.comm);
    const one = await listOpenFiles(k, { pid: holder });
    expect(one.rows).toEqual(files.rows.filter((r) => r.pid === holder));
    const remote = await openSnapshotOverNettlp(target);
    try {
      const t0 = performance.now();
      const r = await listOpenFiles(remote.k);
      console.log(`[files] ${target.id}: lsof over nettlp:// ${(performance.now() - t0).toFixed(0)} ms`);
      expect(r).toEqual(files);
    } finally {
      await remote.close();
    }
  });

  it('a corrupt fd table pointer in a copied image: partial rows + warning, CLI exit 3, no hang', async () => {
    const holder = pidOf(WORKLOAD.holder.comm);
    const T = k.layout('task_struct', ['tgid', 'tasks', 'files']);
    let filesVa = 0n;
    for await (const t of k.walkList(k.symbol('init_task') + BigInt(T.offsetOf('tasks')), T, 'tasks'))
      if (t.num('tgid') === holder) filesVa = t.ptr('files');
    expect(filesVa).not.toBe(0n);
    const fdtPhys = await k.paging.translate(filesVa + BigInt(k.btf.fieldOffset('files_struct', 'fdt')));
    const copy = join(scratch, 'badfdt.ram');
    copyFileSync(target.snapshot_path, copy);
    const fd = openSync(copy, 'r+');
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(0xdead0000beef000n); // a user address: not mapped in the kernel page table
    writeSync(fd, b, 0, 8, fdtPhys);
    closeSync(fd);
    try {
      const bad = await openLabKernel('raw:' + copy, target);
      try {
        const r = await listOpenFiles(bad.k);
        expect(r.warnings.some((w) => w.includes(`pid ${holder}`))).toBe(true);
        expect(r.rows.filter((x) => x.pid === holder)).toEqual([]);
        expect(r.rows).toEqual(files.rows.filter((x) => x.pid !== holder));
      } finally {
        await bad.mem.close();
      }
      const cli = spawnSync(process.execPath, [PMI, '--json', '-s', 'raw:' + copy, 'lsof'], {
        encoding: 'utf8',
        timeout: 120_000,
      });
      expect(cli.status).toBe(3);
      const doc = JSON.parse(cli.stdout) as { rows: { pid: number; file: string }[]; warnings: string[] };
      expect(doc.rows.length).toBe(files.rows.length - files.rows.filter((x) => x.pid === holder).length);
      expect(doc.rows.every((x) => /^0x[0-9a-f]+$/.test(x.file))).toBe(true);
      expect(doc.warnings.some((w) => w.includes(`pid ${holder}`))).toBe(true);
    } finally {
      rmSync(copy, { force: true });
    }
  });
});
