/**
 * Sockets (netstat): TCP/UDP over IPv4/IPv6 and unix sockets from the kernel's hash tables
 * (tcp_hashinfo's listening and established hashes, udp_table, the unix socket table — each of
 * every network namespace on net_namespace_list where the kernel keeps them per namespace),
 * merged with the sockets found in processes' fd tables (which give the owning pids). A socket no
 * process holds still appears (from the hashes); a socket outside the hashes still appears (from
 * the fds). Every row names its network namespace (`net.ns.inum`).
 */
import { PmiError } from '@pmi/core';
import type { KernelObjects, Layout, StructView } from '@pmi/kernel';
import { listOpenFiles, type OpenFile } from '../files/lsof.js';

export type SocketProto = 'tcp' | 'tcp6' | 'udp' | 'udp6' | 'unix';

export interface SocketRow {
  proto: SocketProto;
  /** TCP state name (LISTEN, ESTABLISHED, TIME_WAIT, …); UDP: ESTABLISHED when connected, else CLOSE;
   * unix: LISTEN, CONNECTED, UNCONNECTED, CONNECTING, DISCONNECTING — as /proc/net/unix derives them
   * (listener; else from sk_state and whether the sock has a struct socket: CONNECTING is a
   * connection not accepted yet). */
  state: string;
  /** IPv4 dotted quad or IPv6 text; unix: the bound path as /proc/net/unix prints it ("@name" for
   * abstract names, NUL bytes shown as '@'), or "". */
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
  /** The socket's network namespace: its inode number (`net.ns.inum`, as `readlink /proc/PID/ns/net`
   * shows `net:[INUM]`); null when unreadable. */
  netns: number | null;
}

export interface SocketsResult {
  rows: SocketRow[];
  warnings: string[];
  /** Which kernel tables were walked (how the kernel at hand keeps its sockets). */
  tables: SocketTables;
}

/**
 * The hash tables a listing walked, as this kernel lays them out (detected from BTF and symbols).
 * Table owners are `tcp_hashinfo` / `udp_table` / `unix_socket_table` (the kernel's global tables) or
 * `netns INUM` (a namespace's own table: established hash 6.1+, UDP 6.2+, unix 6.0+).
 */
export interface SocketTables {
  /** Established hashes (with time-wait and request socks), one entry per distinct table. */
  tcp_ehash: string[];
  /** How the listening hash `lhash2` chains its socks: through `sock_common.skc_nulls_node` (hlist_nulls,
   * 5.19+ layout) or `inet_connection_sock.icsk_listen_portaddr_node` (hlist, 4.17–5.18); `none` when it
   * was not walked (no lhash2). */
  tcp_listen: 'skc_nulls_node' | 'icsk_listen_portaddr_node' | 'none';
  /** UDP hash tables, one entry per distinct table. */
  udp: string[];
  /** Unix socket tables: `unix_socket_table` (global, before 6.0) or one `netns INUM` per namespace. */
  unix: string[];
}

export interface SocketsOptions {
  /** Open files already listed (all processes): avoids a second fd scan. */
  files?: OpenFile[];
  /** Most sockets per hash chain (default 65536). */
  maxChain?: number;
  /** Most network namespaces walked on net_namespace_list (default 65536). */
  maxNetns?: number;
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

const hex = (v: bigint): string => '0x' + BigInt.asUintN(64, v).toString(16);

type Origin = 'tcp' | 'udp' | 'unix';

/** A network namespace from net_namespace_list (or init_net alone). */
interface Netns {
  va: bigint;
  inum: number | null;
  view: StructView;
}

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
    'skc_net.net?',
  ]);
  const nets = await listNetns(k, opts.maxNetns ?? 65536, warnings);

  // 1. hash tables → sock VAs with the table they came from
  const fromHash = new Map<bigint, Origin>();
  const walk: Walker = async (head, member, nulls, origin, name, T = C, accept) => {
    try {
      for await (const v of k.walkHlist(head, T, member, { nulls, max: maxChain, name })) {
        const bad = accept?.(v);
        if (bad) warnings.push(`${name}: ${bad}`);
        else fromHash.set(v.va, origin);
      }
    } catch (e) {
      if (e instanceof PmiError) warnings.push(`${name}: ${e.message}`);
      else throw e;
    }
  };
  const tables: SocketTables = { tcp_ehash: [], tcp_listen: 'none', udp: [], unix: [] };
  await tcpHash(k, nets, walk, tables, warnings);
  await udpHash(k, nets, walk, tables, warnings);
  await unixHash(k, nets, C, walk, tables, warnings);

  // 2. sockets from fd tables: file->private_data is the struct socket
  const owners = new Map<bigint, OpenFile[]>(); // struct socket * → fds
  for (const f of files)
    if (f.type === 'socket' && f.socket) owners.set(f.socket, [...(owners.get(f.socket) ?? []), f]);
  const SK = k.layout('socket', ['sk']);
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
  const netnsOf = await netnsResolver(
    k,
    nets,
    C.has('skc_net.net') ? commons.flatMap((v) => (v instanceof PmiError ? [] : [v.ptr('skc_net.net')])) : [],
    warnings,
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
    const netns = netnsOf(C.has('skc_net.net') ? c.ptr('skc_net.net') : undefined);
    if (family === AF_UNIX) {
      const u = unix.get(va);
      rows.push({
        proto: 'unix',
        // as unix_seq_show: __SO_ACCEPTCON for listeners, else SS_* from sk_state and sk_socket
        state:
          st === TCP_LISTEN
            ? 'LISTEN'
            : sockt
              ? st === TCP_ESTABLISHED
                ? 'CONNECTED'
                : 'UNCONNECTED'
              : st === TCP_ESTABLISHED
                ? 'CONNECTING'
                : 'DISCONNECTING',
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
        netns,
      });
      return;
    }
    if (family !== AF_INET && family !== AF_INET6) return;
    let origin = fromHash.get(va);
    if (!origin && fv) {
      const p = fv.num('sk_protocol');
      origin = p === IPPROTO_TCP ? 'tcp' : p === IPPROTO_UDP ? 'udp' : undefined;
    }
    if (!origin || origin === 'unix') return; // raw, sctp, …: not listed
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
      netns,
    });
  });
  const order: Record<string, number> = { tcp: 0, tcp6: 1, udp: 2, udp6: 3, unix: 4 };
  rows.sort(
    (a, b) =>
      order[a.proto] - order[b.proto] ||
      (a.local_port ?? 0) - (b.local_port ?? 0) ||
      a.inode - b.inode ||
      (a.netns ?? 0) - (b.netns ?? 0),
  );
  return { rows, warnings, tables };
}

/**
 * The network namespaces: net_namespace_list (`struct net.list`), bounded; init_net alone when
 * the list is missing, and always init_net (a broken list still yields it).
 */
async function listNetns(k: KernelObjects, max: number, warnings: string[]): Promise<Netns[]> {
  const N = k.layout('net', [
    'list',
    'ns.inum',
    'unx.table.buckets?',
    'ipv4.tcp_death_row.hashinfo?',
    'ipv4.udp_table?',
  ]);
  const out = new Map<bigint, Netns>();
  const add = (v: StructView): void => {
    out.set(v.va, { va: v.va, inum: v.num('ns.inum'), view: v });
  };
  if (k.hasGlobal('net_namespace_list')) {
    const head = k.symbol('net_namespace_list');
    const { items, error } = await k.collectList(head, N, 'list', { name: 'net_namespace_list', max });
    items.forEach(add);
    if (error) warnings.push(`net_namespace_list: ${error.message}`);
  } else warnings.push('net_namespace_list not found: sockets of init_net only from the per-namespace tables');
  if (k.hasGlobal('init_net')) {
    const va = k.symbol('init_net');
    if (!out.has(va)) {
      try {
        add(await k.read(va, N));
      } catch (e) {
        if (e instanceof PmiError) warnings.push(`init_net: ${e.message}`);
        else throw e;
      }
    }
  }
  return [...out.values()];
}

/**
 * `struct net *` → namespace inode number: from the namespace list, else read (a namespace
 * being torn down is no longer on the list). Without skc_net (no CONFIG_NET_NS) every socket is
 * in init_net.
 */
async function netnsResolver(
  k: KernelObjects,
  nets: Netns[],
  netPtrs: bigint[],
  warnings: string[],
): Promise<(net: bigint | undefined) => number | null> {
  const inum = new Map<bigint, number | null>(nets.map((n) => [n.va, n.inum]));
  const missing = [...new Set(netPtrs)].filter((p) => p !== 0n && !inum.has(p));
  if (missing.length > 0) {
    const N = k.layout('net', ['ns.inum']);
    (await k.readStructs(missing, N)).forEach((v, i) => {
      if (v instanceof PmiError) {
        warnings.push(`struct net at ${hex(missing[i])} unreadable: ${v.message}`);
        inum.set(missing[i], null);
      } else inum.set(missing[i], v.num('ns.inum'));
    });
  }
  const initVa = k.hasGlobal('init_net') ? k.symbol('init_net') : undefined;
  const initInum = initVa !== undefined ? (inum.get(initVa) ?? null) : null;
  return (net) => (net === undefined ? initInum : (inum.get(net) ?? null));
}

/** Walk one hash chain; `accept` returns why an item is not one of the chain's socks (a warning), or null. */
type Walker = (
  head: bigint,
  member: string,
  nulls: boolean,
  origin: Origin,
  name: string,
  T?: Layout,
  accept?: (v: StructView) => string | null,
) => Promise<void>;

/**
 * Heads of non-empty buckets in an array of `count` buckets of `size` bytes whose head is at
 * `headOff`; none (and a warning naming `table`) when the array does not read.
 */
async function nonEmpty(
  k: KernelObjects,
  base: bigint,
  count: number,
  size: number,
  headOff: number,
  nulls: boolean,
  table: string,
  warnings: string[],
): Promise<bigint[]> {
  let buf: Uint8Array;
  try {
    buf = await k.readBytes(base, count * size);
  } catch (e) {
    if (!(e instanceof PmiError)) throw e;
    warnings.push(`${table} (${count} buckets at ${hex(base)}) unreadable: ${e.message}`);
    return [];
  }
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

/** Distinct non-NULL table pointers, each with its first owner's name, in order. */
function owned(list: readonly (readonly [bigint, string])[]): [bigint, string][] {
  const out = new Map<bigint, string>();
  for (const [p, owner] of list) if (p !== 0n && !out.has(p)) out.set(p, owner);
  return [...out];
}

const netnsName = (n: Netns): string => `netns ${n.inum ?? hex(n.va)}`;

/** Item check of a TCP/UDP chain: the sock's family (at `path` of the walked layout) is AF_INET or AF_INET6. */
const inetFamily =
  (path: string) =>
  (v: StructView): string | null => {
    const f = v.num(path);
    return f === AF_INET || f === AF_INET6
      ? null
      : `sock at ${hex(v.va)} has family ${f}, not AF_INET/AF_INET6: skipped`;
  };

/**
 * TCP: `tcp_hashinfo`, plus each namespace's `net->ipv4.tcp_death_row.hashinfo` (6.1+: a namespace
 * may have its own established hash, `tcp_child_ehash_entries`; the listening hash stays shared).
 * Each distinct ehash and lhash2 is walked once.
 */
async function tcpHash(
  k: KernelObjects,
  nets: Netns[],
  walk: Walker,
  tables: SocketTables,
  warnings: string[],
): Promise<void> {
  const H = k.layout('inet_hashinfo', ['ehash', 'ehash_mask', 'lhash2?', 'lhash2_mask?', 'listening_hash?']);
  const infos = owned([
    ...(k.hasGlobal('tcp_hashinfo') ? [[k.symbol('tcp_hashinfo'), 'tcp_hashinfo'] as const] : []),
    ...nets.map(
      (n) =>
        [
          n.view.has('ipv4.tcp_death_row.hashinfo') ? n.view.ptr('ipv4.tcp_death_row.hashinfo') : 0n,
          netnsName(n),
        ] as const,
    ),
  ]);
  if (infos.length === 0) {
    warnings.push('tcp_hashinfo not found: TCP sockets only from fd tables');
    return;
  }
  const seen = new Set<bigint>();
  const views = await k.readStructs(
    infos.map(([va]) => va),
    H,
  );
  for (let i = 0; i < infos.length; i++) {
    const h = views[i];
    if (h instanceof PmiError) warnings.push(`inet_hashinfo of ${infos[i][1]} at ${hex(infos[i][0])}: ${h.message}`);
    else await tcpHashinfo(k, h, H, infos[i][1], seen, walk, tables, warnings);
  }
}

async function tcpHashinfo(
  k: KernelObjects,
  h: StructView,
  H: Layout,
  owner: string,
  seen: Set<bigint>,
  walk: Walker,
  tables: SocketTables,
  warnings: string[],
): Promise<void> {
  // established (and time-wait, request socks): hlist_nulls chains through sock_common.skc_nulls_node
  const eMask = h.num('ehash_mask');
  const ehash = h.ptr('ehash');
  if (seen.has(ehash)) {
    // shared with a namespace already walked
  } else if (eMask + 1 > MAX_BUCKETS)
    warnings.push(`tcp ehash_mask ${eMask} of ${owner} implausible: established sockets skipped`);
  else {
    seen.add(ehash);
    tables.tcp_ehash.push(owner);
    const bsize = k.btf.sizeOf(k.btf.findType('inet_ehash_bucket', 'struct')!);
    const chainOff = k.btf.fieldOffset('inet_ehash_bucket', 'chain');
    const accept = inetFamily('skc_family');
    for (const b of await nonEmpty(k, ehash, eMask + 1, bsize, chainOff, true, 'tcp ehash', warnings))
      await walk(b + BigInt(chainOff), 'skc_nulls_node', true, 'tcp', `tcp ehash bucket ${hex(b)}`, undefined, accept);
  }
  // listening: lhash2 (buckets keyed by port+addr)
  const LB = 'inet_listen_hashbucket';
  if (H.has('lhash2') && !h.isNull('lhash2')) {
    const lhash2 = h.ptr('lhash2');
    if (seen.has(lhash2)) return;
    seen.add(lhash2);
    const lMask = h.num('lhash2_mask');
    if (lMask + 1 > MAX_BUCKETS) {
      warnings.push(`tcp lhash2_mask ${lMask} of ${owner} implausible: listening sockets skipped`);
      return;
    }
    const bsize = k.btf.sizeOf(k.btf.findType(LB, 'struct')!);
    if (k.hasField('inet_connection_sock', 'icsk_listen_portaddr_node')) {
      // 4.17–5.18: lhash2 links inet_connection_sock.icsk_listen_portaddr_node on the bucket's plain
      // hlist `head` (its `nulls_head`, in a union with it, is for the port-only listening_hash), and
      // the sock is at offset 0 of the inet_connection_sock
      tables.tcp_listen = 'icsk_listen_portaddr_node';
      const off = k.btf.fieldOffset(LB, 'head');
      const FAMILY = 'icsk_inet.sk.__sk_common.skc_family';
      const I = k.layout('inet_connection_sock', ['icsk_listen_portaddr_node', FAMILY]);
      const accept = inetFamily(FAMILY);
      for (const b of await nonEmpty(k, lhash2, lMask + 1, bsize, off, false, 'tcp lhash2', warnings))
        await walk(
          b + BigInt(off),
          'icsk_listen_portaddr_node',
          false,
          'tcp',
          `tcp lhash2 bucket ${hex(b)}`,
          I,
          accept,
        );
    } else {
      // 5.19+: hlist_nulls `nulls_head` through sock_common.skc_nulls_node
      tables.tcp_listen = 'skc_nulls_node';
      const off = k.btf.fieldOffset(LB, 'nulls_head');
      const accept = inetFamily('skc_family');
      for (const b of await nonEmpty(k, lhash2, lMask + 1, bsize, off, true, 'tcp lhash2', warnings))
        await walk(b + BigInt(off), 'skc_nulls_node', true, 'tcp', `tcp lhash2 bucket ${hex(b)}`, undefined, accept);
    }
  } else if (H.has('listening_hash')) {
    const msg = 'tcp listening_hash (older kernels) is not walked: listening sockets only from fd tables';
    if (!warnings.includes(msg)) warnings.push(msg);
  }
}

/** UDP: `udp_table`, plus each namespace's `net->ipv4.udp_table` (6.2+, `udp_child_hash_entries`). */
async function udpHash(
  k: KernelObjects,
  nets: Netns[],
  walk: Walker,
  tables: SocketTables,
  warnings: string[],
): Promise<void> {
  if (!k.hasType('udp_table')) {
    warnings.push('udp_table not found: UDP sockets only from fd tables');
    return;
  }
  const list = owned([
    ...(k.symbols.get('udp_table') ? [[k.symbol('udp_table'), 'udp_table'] as const] : []),
    ...nets.map((n) => [n.view.has('ipv4.udp_table') ? n.view.ptr('ipv4.udp_table') : 0n, netnsName(n)] as const),
  ]);
  if (list.length === 0) {
    warnings.push('udp_table not found: UDP sockets only from fd tables');
    return;
  }
  const U = k.layout('udp_table', ['hash', 'mask']);
  const size = k.btf.sizeOf(k.btf.findType('udp_hslot', 'struct')!);
  const off = k.btf.fieldOffset('udp_hslot', 'head');
  const accept = inetFamily('skc_family');
  const views = await k.readStructs(
    list.map(([va]) => va),
    U,
  );
  for (let i = 0; i < list.length; i++) {
    const [va, owner] = list[i];
    const t = views[i];
    if (t instanceof PmiError) {
      warnings.push(`udp_table of ${owner} at ${hex(va)}: ${t.message}`);
      continue;
    }
    const mask = t.num('mask');
    if (mask + 1 > MAX_BUCKETS) {
      warnings.push(`udp_table mask ${mask} of ${owner} implausible: UDP sockets only from fd tables`);
      continue;
    }
    tables.udp.push(owner);
    for (const b of await nonEmpty(k, t.ptr('hash'), mask + 1, size, off, false, 'udp_table', warnings))
      await walk(b + BigInt(off), 'skc_node', false, 'udp', `udp_table slot ${hex(b)}`, undefined, accept);
  }
}

/** Largest power of two ≤ n (n ≥ 1). */
const floorPow2 = (n: number): number => 2 ** Math.floor(Math.log2(n));

/**
 * Buckets of a namespace's unix table (`net->unx.table.buckets`, 6.0+): UNIX_HASH_SIZE, a #define
 * BTF does not carry. The kernel sizes its static `bsd_socket_buckets` (the bound-path hash) as
 * UNIX_HASH_SIZE / 2, so the table has twice that symbol's span in `hlist_head`s.
 */
async function unixTableSize(k: KernelObjects, warnings: string[]): Promise<number> {
  const DEFAULT = 512;
  if (k.symbols.get('bsd_socket_buckets')) {
    if (!k.globalSpec('bsd_socket_buckets'))
      k.defineGlobal('bsd_socket_buckets', { type: 'hlist_head', shape: 'array', count: 'symbol', maxCount: 1 << 16 });
    const n = (await k.globalInfo('bsd_socket_buckets')).count ?? 0;
    if (n >= 1) return 2 * floorPow2(n);
  }
  warnings.push(`unix table size not derivable (no bsd_socket_buckets symbol): assuming ${DEFAULT} buckets`);
  return DEFAULT;
}

/**
 * Unix sockets: every namespace's `net->unx.table.buckets` (6.0+), or the global
 * `unix_socket_table[2 * UNIX_HASH_SIZE]` of older kernels (bound socks in the first half, unbound
 * ones in the second; its size is its symbol's span, rounded down to a power of two: 512 on 5.10);
 * socks are linked through `sock_common.skc_node`. Every sock of the chain must be AF_UNIX and
 * (per-namespace tables) of that namespace, else it is left out with a warning (a wrong table size
 * or a changing target).
 */
async function unixHash(
  k: KernelObjects,
  nets: Netns[],
  C: Layout,
  walk: Walker,
  tables: SocketTables,
  warnings: string[],
): Promise<void> {
  const headSize = k.btf.sizeOf(k.btf.findType('hlist_head', 'struct')!);
  const firstOff = k.btf.fieldOffset('hlist_head', 'first');
  const notUnix = (v: StructView): string | null =>
    v.num('skc_family') === AF_UNIX
      ? null
      : `sock at ${hex(v.va)} has family ${v.num('skc_family')}, not AF_UNIX: skipped`;
  const perNs = nets.filter((n) => n.view.has('unx.table.buckets'));
  if (perNs.length > 0) {
    const size = await unixTableSize(k, warnings);
    for (const n of perNs) {
      const buckets = n.view.ptr('unx.table.buckets');
      if (buckets === 0n) continue; // namespace being set up or torn down
      const accept = (v: StructView): string | null =>
        notUnix(v) ??
        (C.has('skc_net.net') && v.ptr('skc_net.net') !== n.va
          ? `sock at ${hex(v.va)} is not in netns ${n.inum}: skipped`
          : null);
      const table = `unix table of netns ${n.inum}`;
      tables.unix.push(netnsName(n));
      for (const b of await nonEmpty(k, buckets, size, headSize, firstOff, false, table, warnings))
        await walk(b + BigInt(firstOff), 'skc_node', false, 'unix', `unix table bucket ${hex(b)}`, C, accept);
    }
    return;
  }
  if (k.symbols.get('unix_socket_table')) {
    if (!k.globalSpec('unix_socket_table'))
      k.defineGlobal('unix_socket_table', { type: 'hlist_head', shape: 'array', count: 'symbol', maxCount: 1 << 16 });
    const g = await k.globalInfo('unix_socket_table');
    const count = floorPow2(Math.max(1, g.count ?? 1));
    tables.unix.push('unix_socket_table');
    for (const b of await nonEmpty(k, g.va, count, headSize, firstOff, false, 'unix_socket_table', warnings))
      await walk(b + BigInt(firstOff), 'skc_node', false, 'unix', `unix table bucket ${hex(b)}`, C, notUnix);
    return;
  }
  warnings.push('no unix socket table (net.unx.table, unix_socket_table): unix sockets only from fd tables');
}

interface UnixInfo {
  path: string;
}

/** Bound path of unix socks, as unix_seq_show prints it. */
async function unixInfo(k: KernelObjects, socks: bigint[]): Promise<Map<bigint, UnixInfo>> {
  const out = new Map<bigint, UnixInfo>();
  if (socks.length === 0 || !k.hasType('unix_sock')) return out;
  const U: Layout = k.layout('unix_sock', ['addr.len']);
  const views = await k.readStructs(socks, U);
  const nameOff = BigInt(k.btf.fieldOffset('unix_address', 'name'));
  const ops: { va: bigint; buf: Uint8Array; sock: bigint }[] = [];
  views.forEach((v, i) => {
    if (v instanceof PmiError) return;
    out.set(socks[i], { path: '' });
    if (!v.reached('addr.len')) return;
    // addr->len covers sun_family (2 bytes) and the name; a path's name includes its NUL
    const len = Math.min(v.num('addr.len'), 112);
    if (len > 2) ops.push({ va: v.ptr('addr') + nameOff, buf: new Uint8Array(len), sock: socks[i] });
  });
  const bad = new Set((await k.paging.readVirtualBatch(ops)).map((f) => f.index));
  ops.forEach((op, i) => {
    if (bad.has(i)) return;
    const p = Buffer.from(op.buf.subarray(2)); // after sun_family
    // abstract: '@' then the name; a path: without its NUL; NUL bytes inside shown as '@'
    const name = p[0] === 0 ? p.subarray(1) : p.subarray(0, p.length - 1);
    const text = Buffer.from(name.map((b) => (b === 0 ? 0x40 : b))).toString('utf8');
    out.get(op.sock)!.path = (p[0] === 0 ? '@' : '') + text;
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
