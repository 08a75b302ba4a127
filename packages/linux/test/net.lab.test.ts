/**
 * netstat against the guest's own /proc/net/tcp{,6}: the workload's listeners (boot truth) and
 * connections opened inside the guest for this test (fresh truth, then a fresh snapshot), owners
 * from the guest's ps; the same rows over nettlp://; a cyclic hash chain in a copied image gives
 * partial rows + a warning (library) and exit 3 (CLI), no hang.
 */
import { openLabKernel, openSnapshotOverNettlp } from './lab-kernel.js';
import { spawnSync } from 'node:child_process';
import { closeSync, copyFileSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import '@pmi/sources';
import { openLabVm, parseProcNetTcp, WORKLOAD, type GroundTruth, type NetTcpEntry } from '@pmi/lab';
import { listSockets, type SocketRow } from '../src/index.js';

const targets = inject('labTargets');
const PMI = fileURLToPath(new URL('../../cli/bin/pmi.js', import.meta.url));

const key = (proto: string, la: string, lp: number, ra: string, rp: number): string =>
  `${proto} ${la}:${lp} ${ra}:${rp}`;
const fromTruth = (proto: string, e: NetTcpEntry) => ({
  key: key(proto, e.local_ip, e.local_port, e.rem_ip, e.rem_port),
  state: e.state,
  inode: e.inode,
  uid: e.uid,
});
const fromPmi = (s: SocketRow) => ({
  key: key(s.proto, s.local_address, s.local_port!, s.remote_address, s.remote_port!),
  state: s.state,
  inode: s.inode,
  uid: s.uid ?? 0,
});
const tcpRows = (rows: SocketRow[]) =>
  rows
    .filter((r) => r.proto === 'tcp' || r.proto === 'tcp6')
    .map(fromPmi)
    .sort((a, b) => a.key.localeCompare(b.key));

describe.each(targets.map((t) => [t.id, t] as const))('netstat, lab target %s', (_id, target) => {
  let truth: GroundTruth;
  let scratch: string;
  beforeAll(() => {
    truth = JSON.parse(readFileSync(target.truth_path, 'utf8')) as GroundTruth;
    scratch = mkdtempSync(join(tmpdir(), 'pmi-net-'));
  });
  afterAll(() => rmSync(scratch, { recursive: true, force: true }));

  it('boot snapshot: the workload listeners with ports, states, inodes and the httpd owners', async () => {
    const { mem, k } = await openLabKernel('raw:' + target.snapshot_path, target);
    try {
      const t0 = performance.now();
      const r = await listSockets(k);
      console.log(`[net] ${target.id}: ${r.rows.length} sockets in ${(performance.now() - t0).toFixed(0)} ms`);
      expect(r.warnings).toEqual([]);
      const want = [
        ...truth.net_tcp.map((e) => fromTruth('tcp', e)),
        ...truth.net_tcp6.map((e) => fromTruth('tcp6', e)),
      ].sort((a, b) => a.key.localeCompare(b.key));
      expect(tcpRows(r.rows)).toEqual(want);
      for (const [port, proto, arg] of [
        [WORKLOAD.tcpPort, 'tcp', `0.0.0.0:${WORKLOAD.tcpPort}`],
        [WORKLOAD.tcp6Port, 'tcp6', `-p ${WORKLOAD.tcp6Port}`],
      ] as const) {
        const row = r.rows.find((s) => s.proto === proto && s.local_port === port && s.state === 'LISTEN');
        expect(row, `${proto} ${port}`).toBeDefined();
        const httpd = truth.ps.filter((p) => p.comm === 'httpd' && p.args.includes(arg)).map((p) => p.pid);
        expect(httpd).toHaveLength(1);
        expect(row!.pids).toEqual(httpd);
        expect(row!.comms).toEqual(['httpd']);
        expect(row!.found).toEqual(['hash', 'fd']);
      }
    } finally {
      await mem.close();
    }
  });

  it('connections opened in the guest: ESTABLISHED rows equal /proc/net/tcp{,6} read right before a fresh snapshot', async () => {
    const vm = openLabVm(target.name);
    const port = 9100 + Math.floor(Math.random() * 800);
    // unique sleep duration, to find and kill the feeders (an nc whose stdin ends closes its connection)
    const tag = 6000 + Math.floor(Math.random() * 999);
    const start = await vm.run(
      [
        `sleep ${tag} | nc -l -p ${port} >/dev/null 2>&1 & echo L $!`,
        'sleep 1',
        `sleep ${tag} | nc 127.0.0.1 ${port} >/dev/null 2>&1 & echo C1 $!`,
        `sleep ${tag} | nc 127.0.0.1 ${WORKLOAD.tcpPort} >/dev/null 2>&1 & echo C2 $!`,
        'sleep 1',
      ].join('\n'),
    );
    const pids = Object.fromEntries([...start.stdout.matchAll(/^(L|C1|C2) (\d+)$/gm)].map((m) => [m[1], Number(m[2])]));
    const snap = join(scratch, 'live.ram');
    try {
      expect(Object.keys(pids).sort()).toEqual(['C1', 'C2', 'L']);
      const cat = await vm.run('cat /proc/net/tcp; echo @@6; cat /proc/net/tcp6');
      await vm.snapshot(snap);
      const [t4, t6] = cat.stdout.split('@@6');
      const want = [
        ...parseProcNetTcp(t4.split('\n')).map((e) => fromTruth('tcp', e)),
        ...parseProcNetTcp(t6.split('\n')).map((e) => fromTruth('tcp6', e)),
      ].sort((a, b) => a.key.localeCompare(b.key));
      const { mem, k } = await openLabKernel('raw:' + snap, target);
      try {
        const r = await listSockets(k);
        expect(r.warnings).toEqual([]);
        expect(tcpRows(r.rows)).toEqual(want);
        // our client connections: ESTABLISHED with the right ports, owned by the nc we started
        const c1 = r.rows.find((s) => s.remote_port === port && s.state === 'ESTABLISHED');
        expect(c1?.pids).toEqual([pids.C1]);
        expect(c1?.proto).toBe('tcp');
        // nc -l listens on [::]: the accepted v4 connection is a v4-mapped tcp6 socket
        const srv = r.rows.find((s) => s.local_port === port && s.state === 'ESTABLISHED');
        expect(srv?.proto).toBe('tcp6');
        expect(srv?.local_address).toBe('::ffff:127.0.0.1');
        expect(srv?.pids).toEqual([pids.L]);
        const c2 = r.rows.find((s) => s.remote_port === WORKLOAD.tcpPort && s.state === 'ESTABLISHED');
        expect(c2?.pids).toEqual([pids.C2]);
        expect(c2?.local_address).toBe('127.0.0.1');
        console.log(
          `[net] ${target.id}: ${want.length} tcp rows from /proc equal; ` +
            r.rows.map((s) => `${s.proto} ${s.local_port}->${s.remote_port} ${s.state} ${s.pids.join(',')}`).join('; '),
        );
      } finally {
        await mem.close();
      }
    } finally {
      await vm.run(
        `kill ${Object.values(pids).join(' ')} 2>/dev/null; ` +
          `for p in /proc/[0-9]*; do grep -q 'sleep.${tag}' $p/cmdline 2>/dev/null && kill \${p#/proc/}; done; true`,
      );
      rmSync(snap, { force: true });
    }
  });

  it('the same rows over nettlp:// (software adapter serving the snapshot)', async () => {
    const { mem, k } = await openLabKernel('raw:' + target.snapshot_path, target);
    const local = await listSockets(k);
    await mem.close();
    const remote = await openSnapshotOverNettlp(target);
    try {
      const t0 = performance.now();
      const r = await listSockets(remote.k);
      console.log(`[net] ${target.id}: netstat over nettlp:// ${(performance.now() - t0).toFixed(0)} ms`);
      expect(r).toEqual(local);
    } finally {
      await remote.close();
    }
  });

  it('a cyclic hash chain in a copied image: partial rows + warning, CLI exit 3, no hang', async () => {
    const { mem, k } = await openLabKernel('raw:' + target.snapshot_path, target);
    let nodePhys: number;
    let nodeVa: bigint;
    try {
      const r = await listSockets(k);
      const row = r.rows.find((s) => s.proto === 'tcp' && s.local_port === WORKLOAD.tcpPort && s.state === 'LISTEN')!;
      // the listener's hash link points at itself
      nodeVa = row.sock + BigInt(k.btf.fieldOffset('sock_common', 'skc_nulls_node'));
      nodePhys = await k.paging.translate(nodeVa);
    } finally {
      await mem.close();
    }
    const copy = join(scratch, 'cyclic.ram');
    copyFileSync(target.snapshot_path, copy);
    const fd = openSync(copy, 'r+');
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt.asUintN(64, nodeVa));
    writeSync(fd, b, 0, 8, nodePhys);
    closeSync(fd);
    try {
      const bad = await openLabKernel('raw:' + copy, target);
      try {
        const r = await listSockets(bad.k);
        expect(r.warnings.some((w) => /cycle/.test(w))).toBe(true);
        expect(r.rows.find((s) => s.local_port === WORKLOAD.tcpPort && s.state === 'LISTEN')).toBeDefined();
        expect(r.rows.find((s) => s.local_port === WORKLOAD.tcp6Port && s.state === 'LISTEN')).toBeDefined();
      } finally {
        await bad.mem.close();
      }
      const cli = spawnSync(process.execPath, [PMI, '--json', '-s', 'raw:' + copy, 'netstat'], {
        encoding: 'utf8',
        timeout: 120_000,
      });
      expect(cli.status).toBe(3);
      const doc = JSON.parse(cli.stdout) as { rows: { local_port: number }[]; warnings: string[] };
      expect(doc.rows.some((r) => r.local_port === WORKLOAD.tcpPort)).toBe(true);
      expect(doc.warnings.some((w) => /cycle/.test(w))).toBe(true);
    } finally {
      rmSync(copy, { force: true });
    }
  });
});
