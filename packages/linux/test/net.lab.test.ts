/**
 * netstat against the guest's own /proc/net/tcp{,6}, /proc/net/udp{,6} and /proc/net/unix: the
 * workload's listeners (boot truth) and connections opened inside the guest for this test (fresh
 * truth, then a fresh snapshot), owners from the guest's ps; UDP v4/v6 sockets (unconnected and
 * connected) of the lab helper in init_net and in its own namespace; unix sockets (inode, path,
 * type, state) of init_net and of every other network namespace (/proc/PID/net/* of a process in
 * it), including socks no process holds by fd; the same rows over nettlp://; a cyclic hash chain in
 * a copied image gives partial rows + a warning (library) and exit 3 (CLI), no hang. The guest's
 * /proc/net files show only the reader's namespace, so pmi's rows are compared per `netns`. Which
 * tables were walked is checked against each kernel's history (global unix_socket_table before 6.0,
 * a namespace's own TCP ehash from 6.1 and UDP hash from 6.2, lhash2 chained through
 * icsk_listen_portaddr_node before 5.19), so an old kernel proves the old paths.
 */
import { openLabKernel, openSnapshotOverNettlp } from './lab-kernel.js';
import { spawnSync } from 'node:child_process';
import { closeSync, copyFileSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import '@pmi/sources';
import {
  openLabVm,
  parseProcNetTcp,
  parseProcNetUdp,
  parseProcNetUnix,
  WORKLOAD,
  type GroundTruth,
  type NetTcpEntry,
  type NetUnixEntry,
} from '@pmi/lab';
import { listSockets, type SocketRow, type SocketTables } from '../src/index.js';
import { releaseAtLeast } from './lab-expect.js';

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
/** pmi's inet rows of one family pair (tcp/tcp6 or udp/udp6) in one namespace, as /proc shows them. */
const inetRows = (rows: SocketRow[], netns: number | null, p: 'tcp' | 'udp') =>
  rows
    .filter((r) => (r.proto === p || r.proto === `${p}6`) && r.netns === netns)
    .map(fromPmi)
    .sort((a, b) => a.key.localeCompare(b.key));
const inetTruth = (p: 'tcp' | 'udp', t4: NetTcpEntry[], t6: NetTcpEntry[]) =>
  [...t4.map((e) => fromTruth(p, e)), ...t6.map((e) => fromTruth(`${p}6`, e))].sort((a, b) =>
    a.key.localeCompare(b.key),
  );
const tcpRows = (rows: SocketRow[], netns: number | null) => inetRows(rows, netns, 'tcp');
const tcpTruth = (t4: NetTcpEntry[], t6: NetTcpEntry[]) => inetTruth('tcp', t4, t6);
const udpRows = (rows: SocketRow[], netns: number | null) => inetRows(rows, netns, 'udp');
const udpTruth = (u4: NetTcpEntry[], u6: NetTcpEntry[]) => inetTruth('udp', u4, u6);
// unix: what /proc/net/unix shows of a socket (its kernel address is hashed there)
const unixKey = (inode: number, type: string, state: string, path: string): string =>
  `${inode} ${type} ${state} ${JSON.stringify(path)}`;
const unixRows = (rows: SocketRow[], netns: number | null): string[] =>
  rows
    .filter((r) => r.proto === 'unix' && r.netns === netns)
    .map((r) => unixKey(r.inode, r.type ?? '?', r.state, r.local_address))
    .sort();
const unixTruth = (entries: NetUnixEntry[]): string[] =>
  entries.map((e) => unixKey(e.inode, e.socket_type, e.state, e.path)).sort();

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
      expect(truth.netns).toEqual(expect.any(Number));
      expect(tcpRows(r.rows, truth.netns)).toEqual(tcpTruth(truth.net_tcp, truth.net_tcp6));
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

  it('the tables walked are the ones this kernel keeps its sockets in (old kernels: the old paths)', async () => {
    const { mem, k } = await openLabKernel('raw:' + target.snapshot_path, target);
    try {
      const r = await listSockets(k);
      expect(r.warnings).toEqual([]);
      const rel = target.release;
      const inNetns = truth.ps.find((p) => p.comm === WORKLOAD.unix.netnsComm)!.pid;
      const other = truth.other_netns.find((n) => n.pid === inNetns)!;
      expect(other).toBeDefined();
      const namespaces = [truth.netns, ...truth.other_netns.map((n) => n.inum)];
      // the helper's namespace gets its own TCP ehash (tcp_child_ehash_entries, 6.1+) and UDP hash
      // (udp_child_hash_entries, 6.2+); unix tables are per namespace from 6.0; lhash2 is linked through
      // sock_common.skc_nulls_node from 5.19, through inet_connection_sock.icsk_listen_portaddr_node before
      const want: SocketTables = {
        tcp_ehash: ['tcp_hashinfo', ...(releaseAtLeast(rel, 6, 1) ? [`netns ${other.inum}`] : [])],
        tcp_listen: releaseAtLeast(rel, 5, 19) ? 'skc_nulls_node' : 'icsk_listen_portaddr_node',
        udp: ['udp_table', ...(releaseAtLeast(rel, 6, 2) ? [`netns ${other.inum}`] : [])],
        unix: releaseAtLeast(rel, 6, 0) ? namespaces.map((n) => `netns ${n}`).sort() : ['unix_socket_table'],
      };
      expect({ ...r.tables, unix: [...r.tables.unix].sort() }).toEqual(want);
      console.log(`[net] ${target.id} (${rel}): tables ${JSON.stringify(r.tables)}`);
      // every listener is found in the listening hash, whichever way it is chained
      const listeners = r.rows.filter((s) => s.proto.startsWith('tcp') && s.state === 'LISTEN');
      expect(listeners.length).toBeGreaterThanOrEqual(3);
      expect(listeners.filter((s) => !s.found.includes('hash')).map((s) => `${s.proto} ${s.local_port}`)).toEqual([]);
    } finally {
      await mem.close();
    }
  });

  it('UDP v4 and v6 per namespace: rows equal /proc/net/udp{,6} (of a process in it), the helpers own theirs', async () => {
    const { mem, k } = await openLabKernel('raw:' + target.snapshot_path, target);
    try {
      const r = await listSockets(k);
      expect(r.warnings).toEqual([]);
      const H = WORKLOAD.unix;
      const pidOf = (comm: string) => truth.ps.filter((p) => p.comm === comm).map((p) => p.pid);
      const [helper] = pidOf(H.comm);
      const [inNetns] = pidOf(H.netnsComm);
      expect([helper, inNetns]).toEqual([expect.any(Number), expect.any(Number)]);
      const other = truth.other_netns.find((n) => n.pid === inNetns);
      expect(other, `netns of ${H.netnsComm}`).toBeDefined();
      // the truth holds the helpers' sockets (so the comparisons below are not of empty sets); the
      // connected one has an ephemeral local port
      const view = (es: NetTcpEntry[], eph?: number) =>
        es
          .map((e) => [e.local_ip, e.local_port === eph ? 'ephemeral' : e.local_port, e.rem_ip, e.rem_port, e.state])
          .sort();
      const eph = truth.net_udp.find((e) => e.rem_port === H.udpPort)?.local_port;
      expect(eph).toBeGreaterThan(1023);
      expect(view(truth.net_udp, eph)).toEqual(
        [
          ['0.0.0.0', H.udpPort, '0.0.0.0', 0, 'CLOSE'],
          ['127.0.0.1', 'ephemeral', '127.0.0.1', H.udpPort, 'ESTABLISHED'],
        ].sort(),
      );
      expect(view(truth.net_udp6)).toEqual([['::', H.udp6Port, '::', 0, 'CLOSE']]);
      expect(view(other!.net_udp)).toEqual([['0.0.0.0', H.netnsUdpPort, '0.0.0.0', 0, 'CLOSE']]);
      expect(other!.net_udp6).toEqual([]);
      // per namespace: proto, local and remote address:port, state, inode, uid equal /proc's
      expect(udpRows(r.rows, truth.netns)).toEqual(udpTruth(truth.net_udp, truth.net_udp6));
      for (const ns of truth.other_netns)
        expect(udpRows(r.rows, ns.inum), `netns ${ns.inum}`).toEqual(udpTruth(ns.net_udp, ns.net_udp6));
      // every UDP socket of the guest is the helpers': owned by them, in the kernel's tables and their fds
      const owner = (netns: number | null) => (netns === truth.netns ? [helper, H.comm] : [inNetns, H.netnsComm]);
      const udp = r.rows.filter((s) => s.proto === 'udp' || s.proto === 'udp6');
      expect(udp).toHaveLength(4);
      for (const s of udp) {
        const [pid, comm] = owner(s.netns);
        expect([s.proto, s.local_port, s.pids, s.comms, s.found], `${s.proto} ${s.local_port}`).toEqual([
          s.proto,
          s.local_port,
          [pid],
          [comm],
          ['hash', 'fd'],
        ]);
      }
      expect(
        udp.map((s) => [s.netns === truth.netns ? 'init' : 'other', s.proto, s.state, s.remote_port]).sort(),
      ).toEqual(
        [
          ['init', 'udp', 'CLOSE', 0],
          ['init', 'udp', 'ESTABLISHED', H.udpPort],
          ['init', 'udp6', 'CLOSE', 0],
          ['other', 'udp', 'CLOSE', 0],
        ].sort(),
      );
      console.log(
        `[net] ${target.id}: udp ` +
          udp
            .map(
              (s) =>
                `${s.proto} ${s.local_address}:${s.local_port}->${s.remote_address}:${s.remote_port} ${s.state} netns ${s.netns}`,
            )
            .join('; '),
      );
    } finally {
      await mem.close();
    }
  });

  it('unix sockets and other network namespaces: rows per netns equal /proc/net/unix (and tcp) of a process in it', async () => {
    const { mem, k } = await openLabKernel('raw:' + target.snapshot_path, target);
    try {
      const r = await listSockets(k);
      expect(r.warnings).toEqual([]);
      // init_net: every unix socket of the guest's /proc/net/unix, none more
      expect(truth.net_unix.length).toBeGreaterThan(0);
      expect(unixRows(r.rows, truth.netns)).toEqual(unixTruth(truth.net_unix));
      // the other namespaces (the workload's `unshare -n` helper at least): unix and tcp per namespace
      const pidOf = (comm: string) => truth.ps.filter((p) => p.comm === comm).map((p) => p.pid);
      const [helper] = pidOf(WORKLOAD.unix.comm);
      const [inNetns] = pidOf(WORKLOAD.unix.netnsComm);
      expect(helper).toBeDefined();
      const other = truth.other_netns.find((n) => n.pid === inNetns);
      expect(other, `netns of ${WORKLOAD.unix.netnsComm} in ${JSON.stringify(truth.other_netns)}`).toBeDefined();
      expect(other!.inum).not.toBe(truth.netns);
      for (const ns of truth.other_netns) {
        expect(unixRows(r.rows, ns.inum), `netns ${ns.inum}`).toEqual(unixTruth(ns.net_unix));
        expect(tcpRows(r.rows, ns.inum), `netns ${ns.inum}`).toEqual(tcpTruth(ns.net_tcp, ns.net_tcp6));
      }
      expect(other!.net_unix.length).toBeGreaterThan(0);
      // a listener and a connection over the namespace's lo, not accepted: the server end (inode 0) is
      // held by no fd and is only in an established hash (the namespace's own on 6.1+, the global one before)
      expect(other!.net_tcp.map((e) => [e.state, e.inode === 0]).sort()).toEqual([
        ['ESTABLISHED', false],
        ['ESTABLISHED', true],
        ['LISTEN', false],
      ]);
      const child = r.rows.find((s) => s.netns === other!.inum && s.proto === 'tcp' && s.inode === 0);
      expect([child?.state, child?.pids, child?.found]).toEqual(['ESTABLISHED', [], ['hash']]);
      // every row is in a namespace the guest knows of
      const known = new Set([truth.netns, ...truth.other_netns.map((n) => n.inum)]);
      expect(r.rows.filter((s) => !known.has(s.netns)).map((s) => `${s.proto} ${s.inode} netns ${s.netns}`)).toEqual(
        [],
      );
      // owners: each listener is its helper's (a path in init_net, an abstract name in the other namespace)
      const listener = (netns: number | null, path: string) =>
        r.rows.filter(
          (s) => s.proto === 'unix' && s.netns === netns && s.local_address === path && s.state === 'LISTEN',
        );
      expect(listener(truth.netns, WORKLOAD.unix.streamPath).map((s) => [s.pids, s.comms, s.found])).toEqual([
        [[helper], [WORKLOAD.unix.comm], ['hash', 'fd']],
      ]);
      expect(listener(other!.inum, WORKLOAD.unix.netnsStreamName).map((s) => [s.pids, s.comms])).toEqual([
        [[inNetns], [WORKLOAD.unix.netnsComm]],
      ]);
      // socks no process holds by fd, found only in the kernel's tables: the connection not accepted
      // yet (no struct socket: inode 0, CONNECTING, as in /proc/net/unix) and the seqpacket end that
      // lives only in an SCM_RIGHTS message
      const unheld = r.rows.filter((s) => s.proto === 'unix' && s.pids.length === 0);
      expect(unheld.every((s) => JSON.stringify(s.found) === '["hash"]')).toBe(true);
      const embryos = unheld.filter((s) => s.inode === 0).map((s) => [s.netns, s.local_address, s.state]);
      expect(embryos.sort()).toEqual(
        [
          [truth.netns, WORKLOAD.unix.streamPath, 'CONNECTING'],
          [other!.inum, WORKLOAD.unix.netnsStreamName, 'CONNECTING'],
        ].sort(),
      );
      expect(unheld.filter((s) => s.inode !== 0).map((s) => [s.netns, s.type, s.state])).toEqual([
        [truth.netns, 'seqpacket', 'CONNECTED'],
      ]);
      console.log(
        `[net] ${target.id}: unix ${truth.net_unix.length} in init_net (${truth.netns}), ` +
          truth.other_netns.map((n) => `${n.net_unix.length} unix + ${n.net_tcp.length} tcp in ${n.inum}`).join(', ') +
          `; ${unheld.length} unix socks held by no fd`,
      );
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
      const cat = await vm.run(
        'cat /proc/net/tcp; echo @@6; cat /proc/net/tcp6; echo @@U; cat /proc/net/unix; ' +
          'echo @@u4; cat /proc/net/udp; echo @@u6; cat /proc/net/udp6',
      );
      await vm.snapshot(snap);
      const [t4, rest] = cat.stdout.split('@@6');
      const [t6, rest2] = rest.split('@@U');
      const [tu, rest3] = rest2.split('@@u4');
      const [u4, u6] = rest3.split('@@u6');
      const want = tcpTruth(parseProcNetTcp(t4.split('\n')), parseProcNetTcp(t6.split('\n')));
      const { mem, k } = await openLabKernel('raw:' + snap, target);
      try {
        const r = await listSockets(k);
        expect(r.warnings).toEqual([]);
        expect(tcpRows(r.rows, truth.netns)).toEqual(want);
        expect(unixRows(r.rows, truth.netns)).toEqual(unixTruth(parseProcNetUnix(tu.split('\n'))));
        const udpWant = udpTruth(parseProcNetUdp(u4.split('\n')), parseProcNetUdp(u6.split('\n')));
        expect(udpWant.length).toBeGreaterThan(0);
        expect(udpRows(r.rows, truth.netns)).toEqual(udpWant);
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

  it('cyclic hash chains (tcp, unix) in a copied image: partial rows + warnings, CLI exit 3, no hang', async () => {
    const { mem, k } = await openLabKernel('raw:' + target.snapshot_path, target);
    // the tcp and the unix listener's hash links point at themselves (hlist_node.next / hlist_nulls_node.next
    // is the node's first word)
    const nodes: { va: bigint; phys: number }[] = [];
    try {
      const r = await listSockets(k);
      const tcp = r.rows.find((s) => s.proto === 'tcp' && s.local_port === WORKLOAD.tcpPort && s.state === 'LISTEN')!;
      const unix = r.rows.find(
        (s) => s.proto === 'unix' && s.local_address === WORKLOAD.unix.streamPath && s.state === 'LISTEN',
      )!;
      // the link the listening hash chains the tcp listener by (see the tables test)
      const tcpLink =
        r.tables.tcp_listen === 'icsk_listen_portaddr_node'
          ? k.btf.fieldOffset('inet_connection_sock', 'icsk_listen_portaddr_node')
          : k.btf.fieldOffset('sock_common', 'skc_nulls_node');
      for (const va of [tcp.sock + BigInt(tcpLink), unix.sock + BigInt(k.btf.fieldOffset('sock_common', 'skc_node'))])
        nodes.push({ va, phys: await k.paging.translate(va) });
    } finally {
      await mem.close();
    }
    const copy = join(scratch, 'cyclic.ram');
    copyFileSync(target.snapshot_path, copy);
    const fd = openSync(copy, 'r+');
    for (const n of nodes) {
      const b = Buffer.alloc(8);
      b.writeBigUInt64LE(BigInt.asUintN(64, n.va));
      writeSync(fd, b, 0, 8, n.phys);
    }
    closeSync(fd);
    try {
      const bad = await openLabKernel('raw:' + copy, target);
      try {
        const r = await listSockets(bad.k);
        expect(r.warnings.some((w) => /^tcp .*cycle/.test(w))).toBe(true);
        expect(r.warnings.some((w) => /^unix table bucket .*cycle/.test(w))).toBe(true);
        expect(r.rows.find((s) => s.local_port === WORKLOAD.tcpPort && s.state === 'LISTEN')).toBeDefined();
        expect(r.rows.find((s) => s.local_address === WORKLOAD.unix.streamPath && s.state === 'LISTEN')).toBeDefined();
        expect(r.rows.find((s) => s.local_port === WORKLOAD.tcp6Port && s.state === 'LISTEN')).toBeDefined();
      } finally {
        await bad.mem.close();
      }
      const cli = spawnSync(process.execPath, [PMI, '--json', '-s', 'raw:' + copy, 'netstat'], {
        encoding: 'utf8',
        timeout: 120_000,
      });
      expect(cli.status).toBe(3);
      const doc = JSON.parse(cli.stdout) as {
        rows: { proto: string; local_port: number; netns: number | null }[];
        warnings: string[];
      };
      expect(doc.rows.some((r) => r.local_port === WORKLOAD.tcpPort && r.netns === truth.netns)).toBe(true);
      expect(doc.rows.some((r) => r.proto === 'unix')).toBe(true);
      expect(doc.warnings.some((w) => /cycle/.test(w))).toBe(true);
    } finally {
      rmSync(copy, { force: true });
    }
  });
});
