/**
 * Sockets (netstat): TCP/UDP over IPv4/IPv6 from the kernel's hash tables (tcp_hashinfo's
 * listening and established hashes, udp_table), merged with the sockets found in processes'
 * fd tables (which also give the owning pids and the unix sockets). A socket no process holds
 * still appears (from the hashes); a socket outside the hashes still appears (from the fds).
 */
import { PmiError } from '@pmi/core';
import type { KernelObjects, Layout, StructView } from '@pmi/kernel';
import { listOpenFiles, type OpenFile } from '../files/lsof.js';

export type SocketProto = 'tcp' | 'tcp6' | 'udp' | 'udp6' | 'unix';

export interface SocketRow {
  proto: SocketProto;
  /** TCP state name (LISTEN, ESTABLISHED, TIME_WAIT, …); UDP: ESTABLISHED when connected, else CLOSE;
   * unix: LISTEN, CONNECTED, UNCONNECTED, CONNECTING, DISCONNECTING. */
  state: string;
  /** IPv4 dotted quad or IPv6 text; unix: the bound path ("@name" for abstract), or "". */
  local_address: string;
  local_port: number | null;
  remote_address: string;
  remote_port: number | null;
  /** Socket inode (socket:[INODE]); 0 when the socket has none (time-wait, request socks). */
  inode: number;
  uid: number | null;
  /** Processes holding the socket in their fd table (pid order). */
  pids: number[];
  comms: string[];
  /** unix: stream, dgram, seqpacket. */
  type?: string;
  /** `struct sock *`. */
  sock: bigint;
  /** Where it was found: 'hash' (kernel tables), 'fd' (an fd table), or both. */
  found: ('hash' | 'fd')[];
}

export interface SocketsResult {
  rows: SocketRow[];
  warnings: string[];
}

export interface SocketsOptions {
  /** Open files already listed (all processes): avoids a second fd scan. */
  files?: OpenFile[];
  /** Most sockets per hash chain (default 65536). */
  maxChain?: number;
}

const TCP_STATES = [
  '',
  'ESTABLISHED',
  'SYN_SENT',
  'SYN_RECV',
  'FIN_WAIT1',
  'FIN_WAIT2',
  'TIME_WAIT',
  'CLOSE',
  'CLOSE_WAIT',
  'LAST_ACK',
  'LISTEN',
  'CLOSING',
  'NEW_SYN_RECV',
];
const TCP_ESTABLISHED = 1;
const TCP_TIME_WAIT = 6;
const TCP_LISTEN = 10;
const TCP_NEW_SYN_RECV = 12;
const AF_UNIX = 1;
const AF_INET = 2;
const AF_INET6 = 10;
const IPPROTO_TCP = 6;
const IPPROTO_UDP = 17;
const SOCK_TYPES: Record<number, string> = { 1: 'stream', 2: 'dgram', 5: 'seqpacket' };
const SS_STATES: Record<number, string> = {
  0: 'FREE',
  1: 'UNCONNECTED',
  2: 'CONNECTING',
  3: 'CONNECTED',
  4: 'DISCONNECTING',
};

const hex = (v: bigint): string => '0x' + BigInt.asUintN(64, v).toString(16);

type Origin = 'tcp' | 'udp';

export async function listSockets(k: KernelObjects, opts: SocketsOptions = {}): Promise<SocketsResult> {
  const warnings: string[] = [];
  const maxChain = opts.maxChain ?? 65536;
  let files = opts.files;
  if (!files) {
    const r = await listOpenFiles(k);
    files = r.rows;
    warnings.push(...r.warnings);
  }
  const C = k.layout('sock_common', [
    'skc_daddr',
    'skc_rcv_saddr',
    'skc_dport',
    'skc_num',
    'skc_family',
    'skc_state',
    'skc_v6_daddr?',
    'skc_v6_rcv_saddr?',
    'skc_nulls_node',
    'skc_node',
  ]);

  // 1. hash tables → sock VAs with the table they came from
  const fromHash = new Map<bigint, Origin>();
  const walk: Walker = async (head, member, nulls, origin, name, T = C) => {
    try {
      for await (const v of k.walkHlist(head, T, member, { nulls, max: maxChain, name })) fromHash.set(v.va, origin);
    } catch (e) {
      if (e instanceof PmiError) warnings.push(`${name}: ${e.message}`);
      else throw e;
    }
  };
  await tcpHash(k, walk, warnings);
  await udpHash(k, walk, warnings);

  // 2. sockets from fd tables: file->private_data is the struct socket
  const owners = new Map<bigint, OpenFile[]>(); // struct socket * → fds
  for (const f of files)
    if (f.type === 'socket' && f.socket) owners.set(f.socket, [...(owners.get(f.socket) ?? []), f]);
  const SK = k.layout('socket', ['state', 'type', 'sk']);
  const socketVas = [...owners.keys()];
  const sockOfSocket = new Map<bigint, StructView>();
  (await k.readStructs(socketVas, SK)).forEach((v, i) => {
    if (v instanceof PmiError) warnings.push(`struct socket at ${hex(socketVas[i])} unreadable: ${v.message}`);
    else if (!v.isNull('sk')) sockOfSocket.set(v.ptr('sk'), v);
  });

  // 3. every sock once: common fields, then full-sock fields (uid, socket inode) for non-mini socks
  const all = [...new Set([...fromHash.keys(), ...sockOfSocket.keys()])];
  const commons = await k.readStructs(all, C);
  const S = k.layout('sock', ['sk_uid', 'sk_socket', 'sk_type', 'sk_protocol']);
  const full: bigint[] = [];
  commons.forEach((v, i) => {
    if (v instanceof PmiError) return;
    const st = v.num('skc_state');
    if (st !== TCP_TIME_WAIT && st !== TCP_NEW_SYN_RECV) full.push(all[i]);
  });
  const fullViews = new Map<bigint, StructView>();
  (await k.readStructs(full, S)).forEach((v, i) => {
    if (!(v instanceof PmiError)) fullViews.set(full[i], v);
  });
  // socket inodes: struct socket_alloc { struct socket socket; struct inode vfs_inode; }
  const A = k.layout('socket_alloc', ['vfs_inode.i_ino']);
  const socketsOfSock = [...new Set([...fullViews.values()].map((v) => v.ptr('sk_socket')).filter((p) => p !== 0n))];
  const inodeOf = new Map<bigint, number>();
  (await k.readStructs(socketsOfSock, A)).forEach((v, i) => {
    if (!(v instanceof PmiError)) inodeOf.set(socketsOfSock[i], v.num('vfs_inode.i_ino'));
  });
  const unix = await unixInfo(
    k,
    all.filter((va, i) => {
      const v = commons[i];
      return !(v instanceof PmiError) && v.num('skc_family') === AF_UNIX;
    }),
  );

  const rows: SocketRow[] = [];
  all.forEach((va, i) => {
    const c = commons[i];
    if (c instanceof PmiError) {
      warnings.push(`sock at ${hex(va)} unreadable: ${c.message}`);
      return;
    }
    const family = c.num('skc_family');
    const st = c.num('skc_state');
    const fv = fullViews.get(va);
    const sockt =
      fv && !fv.isNull('sk_socket') ? fv.ptr('sk_socket') : sockOfSocket.has(va) ? sockOfSocket.get(va)!.va : 0n;
    const fds = sockt ? (owners.get(sockt) ?? []) : [];
    const pids = [...new Set(fds.map((f) => f.pid))].sort((a, b) => a - b);
    const comms = pids.map((p) => fds.find((f) => f.pid === p)!.comm);
    const inode = fds[0]?.inode ?? (sockt ? (inodeOf.get(sockt) ?? 0) : 0);
    const found: ('hash' | 'fd')[] = [];
    if (fromHash.has(va)) found.push('hash');
    if (sockOfSocket.has(va)) found.push('fd');
    const uid = fv ? fv.u32('sk_uid') : null;
    if (family === AF_UNIX) {
      const u = unix.get(va);
      const sv = sockOfSocket.get(va);
      const ss = sv ? sv.num('state') : -1;
      rows.push({
        proto: 'unix',
        state: st === TCP_LISTEN ? 'LISTEN' : (SS_STATES[ss] ?? (u?.peer ? 'CONNECTED' : 'UNCONNECTED')),
        local_address: u?.path ?? '',
        local_port: null,
        remote_address: '',
        remote_port: null,
        inode,
        uid,
        pids,
        comms,
        type: fv ? (SOCK_TYPES[fv.num('sk_type')] ?? String(fv.num('sk_type'))) : undefined,
        sock: va,
        found,
      });
      return;
    }
    if (family !== AF_INET && family !== AF_INET6) return;
    let origin = fromHash.get(va);
    if (!origin && fv) {
      const p = fv.num('sk_protocol');
      origin = p === IPPROTO_TCP ? 'tcp' : p === IPPROTO_UDP ? 'udp' : undefined;
    }
    if (!origin) return; // raw, sctp, …: not listed
    const v6 = family === AF_INET6;
    const proto = (origin + (v6 ? '6' : '')) as SocketProto;
    const state =
      origin === 'udp'
        ? st === TCP_ESTABLISHED
          ? 'ESTABLISHED'
          : 'CLOSE'
        : (TCP_STATES[st] ?? `0x${st.toString(16)}`);
    rows.push({
      proto,
      state,
      local_address:
        v6 && c.has('skc_v6_rcv_saddr') ? ipv6(c.bytes('skc_v6_rcv_saddr')) : ipv4(c.bytes('skc_rcv_saddr')),
      local_port: c.num('skc_num'),
      remote_address: v6 && c.has('skc_v6_daddr') ? ipv6(c.bytes('skc_v6_daddr')) : ipv4(c.bytes('skc_daddr')),
      remote_port: be16(c.bytes('skc_dport')),
      inode,
      uid,
      pids,
      comms,
      sock: va,
      found,
    });
  });
  const order: Record<string, number> = { tcp: 0, tcp6: 1, udp: 2, udp6: 3, unix: 4 };
  rows.sort(
    (a, b) => order[a.proto] - order[b.proto] || (a.local_port ?? 0) - (b.local_port ?? 0) || a.inode - b.inode,
  );
  return { rows, warnings };
}

type Walker = (head: bigint, member: string, nulls: boolean, origin: Origin, name: string, T?: Layout) => Promise<void>;

/** Heads of non-empty buckets in an array of `count` buckets of `size` bytes whose head is at `headOff`. */
async function nonEmpty(
  k: KernelObjects,
  base: bigint,
  count: number,
  size: number,
  headOff: number,
  nulls: boolean,
): Promise<bigint[]> {
  const buf = await k.readBytes(base, count * size);
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.length);
  const out: bigint[] = [];
  for (let i = 0; i < count; i++) {
    const lo = dv.getUint32(i * size + headOff, true);
    const hi = dv.getUint32(i * size + headOff + 4, true);
    if ((lo === 0 && hi === 0) || (nulls && (lo & 1) === 1)) continue;
    out.push(base + BigInt(i * size));
  }
  return out;
}

/** Largest hash table read (buckets); a larger mask is taken as corrupt. */
const MAX_BUCKETS = 1 << 24;

async function tcpHash(k: KernelObjects, walk: Walker, warnings: string[]): Promise<void> {
  if (!k.hasGlobal('tcp_hashinfo')) {
    warnings.push('tcp_hashinfo not found: TCP sockets only from fd tables');
    return;
  }
  const H = k.layout('inet_hashinfo', ['ehash', 'ehash_mask', 'lhash2?', 'lhash2_mask?', 'listening_hash?']);
  const h = await k.global('tcp_hashinfo', H);
  // established (and time-wait, request socks): hlist_nulls chains through sock_common.skc_nulls_node
  const eMask = h.num('ehash_mask');
  if (eMask + 1 > MAX_BUCKETS) warnings.push(`tcp ehash_mask ${eMask} implausible: established sockets skipped`);
  else {
    const bsize = k.btf.sizeOf(k.btf.findType('inet_ehash_bucket', 'struct')!);
    const chainOff = k.btf.fieldOffset('inet_ehash_bucket', 'chain');
    for (const b of await nonEmpty(k, h.ptr('ehash'), eMask + 1, bsize, chainOff, true))
      await walk(b + BigInt(chainOff), 'skc_nulls_node', true, 'tcp', `tcp ehash bucket ${hex(b)}`);
  }
  // listening: lhash2 (buckets keyed by port+addr) — with nulls_head (hlist_nulls through
  // skc_nulls_node) or head (hlist through inet_connection_sock.icsk_listen_portaddr_node)
  const LB = 'inet_listen_hashbucket';
  if (H.has('lhash2') && !h.isNull('lhash2')) {
    const lMask = h.num('lhash2_mask');
    if (lMask + 1 > MAX_BUCKETS) {
      warnings.push(`tcp lhash2_mask ${lMask} implausible: listening sockets skipped`);
      return;
    }
    const bsize = k.btf.sizeOf(k.btf.findType(LB, 'struct')!);
    if (k.hasField(LB, 'nulls_head')) {
      const off = k.btf.fieldOffset(LB, 'nulls_head');
      for (const b of await nonEmpty(k, h.ptr('lhash2'), lMask + 1, bsize, off, true))
        await walk(b + BigInt(off), 'skc_nulls_node', true, 'tcp', `tcp lhash2 bucket ${hex(b)}`);
    } else {
      // older layout: hlist through inet_connection_sock.icsk_listen_portaddr_node (the sock is at offset 0)
      const off = k.btf.fieldOffset(LB, 'head');
      const I = k.layout('inet_connection_sock', ['icsk_listen_portaddr_node']);
      for (const b of await nonEmpty(k, h.ptr('lhash2'), lMask + 1, bsize, off, false))
        await walk(b + BigInt(off), 'icsk_listen_portaddr_node', false, 'tcp', `tcp lhash2 bucket ${hex(b)}`, I);
    }
  } else if (H.has('listening_hash')) {
    warnings.push('tcp listening_hash (older kernels) is not walked: listening sockets only from fd tables');
  }
}

async function udpHash(k: KernelObjects, walk: Walker, warnings: string[]): Promise<void> {
  if (!k.symbols.get('udp_table') || !k.hasType('udp_table')) {
    warnings.push('udp_table not found: UDP sockets only from fd tables');
    return;
  }
  if (!k.globalSpec('udp_table')) k.defineGlobal('udp_table', { type: 'udp_table' });
  const U = await k.global('udp_table', k.layout('udp_table', ['hash', 'mask']));
  const mask = U.num('mask');
  if (mask + 1 > MAX_BUCKETS) {
    warnings.push(`udp_table mask ${mask} implausible: UDP sockets only from fd tables`);
    return;
  }
  const size = k.btf.sizeOf(k.btf.findType('udp_hslot', 'struct')!);
  const off = k.btf.fieldOffset('udp_hslot', 'head');
  for (const b of await nonEmpty(k, U.ptr('hash'), mask + 1, size, off, false))
    await walk(b + BigInt(off), 'skc_node', false, 'udp', `udp_table slot ${hex(b)}`);
}

interface UnixInfo {
  path: string;
  peer: boolean;
}

/** Bound path (or "@abstract") and peer of unix socks. */
async function unixInfo(k: KernelObjects, socks: bigint[]): Promise<Map<bigint, UnixInfo>> {
  const out = new Map<bigint, UnixInfo>();
  if (socks.length === 0 || !k.hasType('unix_sock')) return out;
  const U: Layout = k.layout('unix_sock', ['addr.len', 'peer']);
  const views = await k.readStructs(socks, U);
  const nameOff = BigInt(k.btf.fieldOffset('unix_address', 'name'));
  const ops: { va: bigint; buf: Uint8Array; sock: bigint }[] = [];
  views.forEach((v, i) => {
    if (v instanceof PmiError) return;
    out.set(socks[i], { path: '', peer: !v.isNull('peer') });
    if (!v.reached('addr.len')) return;
    const len = Math.min(v.num('addr.len'), 110);
    if (len > 2) ops.push({ va: v.ptr('addr') + nameOff, buf: new Uint8Array(len), sock: socks[i] });
  });
  const bad = new Set((await k.paging.readVirtualBatch(ops)).map((f) => f.index));
  ops.forEach((op, i) => {
    if (bad.has(i)) return;
    const p = Buffer.from(op.buf.subarray(2)); // after sun_family
    let path: string;
    if (p[0] === 0) path = '@' + p.subarray(1).toString('latin1');
    else {
      const nul = p.indexOf(0);
      path = (nul >= 0 ? p.subarray(0, nul) : p).toString('utf8');
    }
    out.get(op.sock)!.path = path;
  });
  return out;
}

function ipv4(b: Uint8Array): string {
  return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
}

function be16(b: Uint8Array): number {
  return (b[0] << 8) | b[1];
}

/** RFC 5952 text (longest zero run compressed; v4-mapped as ::ffff:a.b.c.d). */
export function ipv6(b: Uint8Array): string {
  if (b.slice(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff)
    return `::ffff:${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
  const g: number[] = [];
  for (let i = 0; i < 16; i += 2) g.push((b[i] << 8) | b[i + 1]);
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const t = g.map((x) => x.toString(16));
  if (best < 0) return t.join(':');
  return t.slice(0, best).join(':') + '::' + t.slice(best + bestLen).join(':');
}
