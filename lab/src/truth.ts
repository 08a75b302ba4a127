/**
 * Ground truth recorded inside a lab guest (by its own kernel's /proc), parsed on the host.
 * Field names are snake_case and addresses are lowercase "0x…" strings, never JSON numbers.
 */

export interface PsEntry {
  pid: number;
  ppid: number;
  /** Real uid / gid. */
  uid: number;
  gid: number;
  /** Task comm (≤ 15 chars), from /proc/PID/stat. */
  comm: string;
  /** /proc/PID/cmdline with NULs turned into spaces, trimmed; '' for kernel threads. */
  args: string;
  /** One-letter state from /proc/PID/stat (R, S, D, Z, I, …). */
  state: string;
  /** True for kernel threads (PF_KTHREAD cannot be seen from /proc text; empty args and ppid 2 or pid 2). */
  kernel_thread: boolean;
}

/**
 * One thread of a process (kernel threads included), from the guest's /proc/PID/task/TID/comm.
 * `pid` is the thread group leader's pid (the process), `tid` the thread's own id (= pid for the
 * leader). Workqueue workers show their current work as /proc prints it ("kworker/0:1-events"),
 * which changes from one work item to the next.
 */
export interface ThreadEntry {
  pid: number;
  tid: number;
  comm: string;
}

/** A thread listing taken apart from the truth (the lab tests: right after the RAM snapshot). */
export interface ThreadListing {
  /** ISO time the listing started. */
  collected_at: string;
  threads: ThreadEntry[];
}

export interface ModuleEntry {
  name: string;
  size: number;
  refcount: number;
  deps: string[];
  state: string;
  /** Load address of the module's core (0x… string; '0x0' when hidden). */
  address: string;
}

export interface KallsymsEntry {
  address: string;
  type: string;
  name: string;
  module?: string;
}

export interface NetTcpEntry {
  sl: number;
  /** As in /proc/net/tcp: hex in the kernel's (network-order-as-host-u32) layout. */
  local_address: string;
  local_port: number;
  /** Decoded address: "127.0.0.1", "::", "::1", … */
  local_ip: string;
  rem_address: string;
  rem_port: number;
  rem_ip: string;
  /** Socket state as the two hex digits in the file ("0A") … */
  st: string;
  /** … and its name (LISTEN, ESTABLISHED, …). */
  state: string;
  uid: number;
  inode: number;
  raw: string;
}

/**
 * A line of /proc/net/udp{,6}: the columns of /proc/net/tcp (sl is the hash slot) plus `drops`.
 * `st` is the sock's sk_state: 07 (CLOSE) when unconnected, 01 (ESTABLISHED) when connect()ed.
 */
export interface NetUdpEntry extends NetTcpEntry {
  drops: number;
}

/** A line of /proc/net/unix (the reading task's network namespace only). */
export interface NetUnixEntry {
  refcount: number;
  /** 0x10000 (__SO_ACCEPTCON) on listeners. */
  flags: number;
  /** SOCK_STREAM 1, SOCK_DGRAM 2, SOCK_SEQPACKET 5 … */
  type: number;
  /** SS_UNCONNECTED 1, SS_CONNECTING 2, SS_CONNECTED 3, SS_DISCONNECTING 4 (from sk_state and sk_socket). */
  st: number;
  /** LISTEN when flags has __SO_ACCEPTCON, else the name of st (UNCONNECTED, CONNECTED, …). */
  state: string;
  /** stream, dgram, seqpacket (else the number). */
  socket_type: string;
  /** 0 for socks without a struct socket (a connection not accepted yet). */
  inode: number;
  /** Bound path as the kernel prints it ("@name" for abstract names, NULs shown as '@'), or "". */
  path: string;
  raw: string;
}

/** A network namespace other than the collector's (init_net), seen through one of its processes. */
export interface NetnsEntry {
  /** Inode number of the namespace (`readlink /proc/PID/ns/net` = `net:[INUM]`). */
  inum: number;
  /** A process in it (the first in /proc order): its /proc/PID/net files were read. */
  pid: number;
  net_tcp: NetTcpEntry[];
  net_tcp6: NetTcpEntry[];
  net_udp: NetUdpEntry[];
  net_udp6: NetUdpEntry[];
  net_unix: NetUnixEntry[];
}

export interface IomemEntry {
  start: string;
  end: string;
  name: string;
  depth: number;
}

export interface GroundTruth {
  /** ISO time the collection started. */
  collected_at: string;
  /** Wall time of the whole collection (ms) and of the kallsyms transfer alone. */
  collect_ms: number;
  kallsyms_ms: number;
  uname_r: string;
  /** /proc/version (the kernel's linux_banner). */
  version: string;
  cmdline: string;
  /** MemTotal in bytes, and all of /proc/meminfo in kB. */
  mem_total_bytes: number;
  meminfo: Record<string, number>;
  /** Whether the guest CPU exposes LA57 (5-level paging possible; these kernels then use it). */
  la57: boolean;
  /**
   * The shell that collected this truth (its own pid). It and its children, and the lab's
   * `timeout` watchers of earlier commands, are left out of `ps`.
   */
  collector_pid: number;
  ps: PsEntry[];
  /**
   * Every thread of every process, kernel threads included (pid, tid order), without the
   * collector's and the lab machinery's processes (those left out of `ps`).
   */
  threads: ThreadEntry[];
  /** SHA-256 (lowercase hex) of the guest's /sys/kernel/btf/vmlinux; '' when it has none. */
  btf_vmlinux_sha256: string;
  modules: ModuleEntry[];
  /** Whole /proc/kallsyms. */
  kallsyms: KallsymsEntry[];
  net_tcp: NetTcpEntry[];
  net_tcp6: NetTcpEntry[];
  /** /proc/net/udp and /proc/net/udp6 of the collector's namespace. */
  net_udp: NetUdpEntry[];
  net_udp6: NetUdpEntry[];
  /** /proc/net/unix of the collector's namespace. */
  net_unix: NetUnixEntry[];
  /** The collector's network namespace (init_net): inode number, null when not recorded. */
  netns: number | null;
  /** Every other network namespace a process is in, with its sockets (pid order). */
  other_netns: NetnsEntry[];
  /** Last ~50 lines of dmesg, raw. */
  dmesg_tail: string[];
  /** /proc/iomem as root (the physical memory map). */
  iomem: IomemEntry[];
}

const SECTION_RE = /^@@PMI-SECTION ([a-z0-9_]+)@@$/;

/** Split the collector output into sections by `@@PMI-SECTION name@@` lines. */
export function splitSections(text: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  let cur: string[] | undefined;
  for (const raw of text.split('\n')) {
    const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    const m = SECTION_RE.exec(line);
    if (m) {
      cur = [];
      out.set(m[1], cur);
    } else if (cur) cur.push(line);
  }
  for (const lines of out.values()) {
    while (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  }
  return out;
}

/** "ffffffff81000000" → "0xffffffff81000000" (lowercase, leading zeros dropped). */
export function hexAddr(text: string): string {
  const t = text.trim().toLowerCase().replace(/^0x/, '');
  if (!/^[0-9a-f]+$/.test(t)) throw new Error(`not a hex address: '${text}'`);
  return '0x' + BigInt('0x' + t).toString(16);
}

export function parseProcModules(lines: readonly string[]): ModuleEntry[] {
  const out: ModuleEntry[] = [];
  for (const line of lines) {
    const f = line.trim().split(/\s+/);
    if (f.length < 5) continue;
    const deps = f[3] === '-' ? [] : f[3].split(',').filter((s) => s.length > 0);
    out.push({
      name: f[0],
      size: Number(f[1]),
      refcount: Number(f[2]),
      deps,
      state: f[4],
      address: f[5] ? hexAddr(f[5]) : '0x0',
    });
  }
  return out;
}

export function parseKallsyms(lines: readonly string[]): KallsymsEntry[] {
  const out: KallsymsEntry[] = [];
  for (const line of lines) {
    const f = line.trim().split(/\s+/);
    if (f.length < 3 || !/^[0-9a-fA-F]+$/.test(f[0])) continue;
    const e: KallsymsEntry = { address: hexAddr(f[0]), type: f[1], name: f[2] };
    if (f[3] && f[3].startsWith('[') && f[3].endsWith(']')) e.module = f[3].slice(1, -1);
    out.push(e);
  }
  return out;
}

const TCP_STATES: Record<number, string> = {
  1: 'ESTABLISHED',
  2: 'SYN_SENT',
  3: 'SYN_RECV',
  4: 'FIN_WAIT1',
  5: 'FIN_WAIT2',
  6: 'TIME_WAIT',
  7: 'CLOSE',
  8: 'CLOSE_WAIT',
  9: 'LAST_ACK',
  10: 'LISTEN',
  11: 'CLOSING',
  12: 'NEW_SYN_RECV',
};

/** Decode the hex address of /proc/net/tcp{,6}: u32 words printed in host (little-endian) order. */
export function decodeProcNetAddress(hexText: string): string {
  // each u32 is printed as a host-order (little-endian) number of network-order bytes
  const bytes: number[] = [];
  for (let i = 0; i + 8 <= hexText.length; i += 8) {
    const w = parseInt(hexText.slice(i, i + 8), 16);
    bytes.push(w & 0xff, (w >>> 8) & 0xff, (w >>> 16) & 0xff, (w >>> 24) & 0xff);
  }
  if (bytes.length === 4) return bytes.join('.');
  if (bytes.length !== 16) return hexText;
  if (bytes.slice(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff) {
    return `::ffff:${bytes.slice(12).join('.')}`;
  }
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i] << 8) | bytes[i + 1]).toString(16));
  // compress the longest run of zero groups
  let best = -1;
  let bestLen = 0;
  for (let i = 0; i < 8;) {
    if (groups[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen && j - i > 1) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (best < 0) return groups.join(':');
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLen).join(':')}`;
}

export function parseProcNetTcp(lines: readonly string[]): NetTcpEntry[] {
  const out: NetTcpEntry[] = [];
  for (const line of lines) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10 || !/^\d+:$/.test(f[0])) continue;
    const [la, lp] = f[1].split(':');
    const [ra, rp] = f[2].split(':');
    const st = parseInt(f[3], 16);
    out.push({
      sl: parseInt(f[0], 10),
      local_address: la.toLowerCase(),
      local_port: parseInt(lp, 16),
      local_ip: decodeProcNetAddress(la),
      rem_address: ra.toLowerCase(),
      rem_port: parseInt(rp, 16),
      rem_ip: decodeProcNetAddress(ra),
      st: f[3].toUpperCase(),
      state: TCP_STATES[st] ?? `0x${f[3]}`,
      uid: Number(f[7]),
      inode: Number(f[9]),
      raw: line.trim(),
    });
  }
  return out;
}

/**
 * Parse /proc/net/udp or /proc/net/udp6 (header skipped): `sl local rem st tx:rx tr:when retrnsmt
 * uid timeout inode ref pointer drops`, addresses and states decoded as in /proc/net/tcp.
 */
export function parseProcNetUdp(lines: readonly string[]): NetUdpEntry[] {
  const out: NetUdpEntry[] = [];
  for (const line of lines) {
    const [e] = parseProcNetTcp([line]);
    if (!e) continue;
    const drops = Number(line.trim().split(/\s+/)[12]);
    out.push({ ...e, drops: Number.isFinite(drops) ? drops : 0 });
  }
  return out;
}

const SOCK_TYPES: Record<number, string> = { 1: 'stream', 2: 'dgram', 3: 'raw', 4: 'rdm', 5: 'seqpacket' };
const SS_STATES: Record<number, string> = {
  0: 'FREE',
  1: 'UNCONNECTED',
  2: 'CONNECTING',
  3: 'CONNECTED',
  4: 'DISCONNECTING',
};

/** Parse /proc/net/unix: `Num RefCount Protocol Flags Type St Inode [Path]` (the header is skipped). */
export function parseProcNetUnix(lines: readonly string[]): NetUnixEntry[] {
  const out: NetUnixEntry[] = [];
  for (const line of lines) {
    const m =
      /^\s*[0-9a-fA-F]+: ([0-9A-Fa-f]+) [0-9A-Fa-f]+ ([0-9A-Fa-f]+) ([0-9A-Fa-f]+) ([0-9A-Fa-f]+) +(\d+)(?: (.*))?$/.exec(
        line,
      );
    if (!m) continue;
    const flags = parseInt(m[2], 16);
    const type = parseInt(m[3], 16);
    const st = parseInt(m[4], 16);
    out.push({
      refcount: parseInt(m[1], 16),
      flags,
      type,
      st,
      state: flags & 0x10000 ? 'LISTEN' : (SS_STATES[st] ?? String(st)),
      socket_type: SOCK_TYPES[type] ?? String(type),
      inode: Number(m[5]),
      path: m[6] ?? '',
      raw: line,
    });
  }
  return out;
}

/** "net:[4026531840]" → 4026531840; null when the text is not a namespace link. */
export function parseNsLink(text: string): number | null {
  const m = /^[a-z_]+:\[(\d+)\]$/.exec(text.trim());
  return m ? Number(m[1]) : null;
}

/**
 * Parse the collector's listing of other network namespaces: per namespace
 *   N <pid> net:[INUM] / 4 <line of /proc/PID/net/tcp> / 6 <… tcp6> / u4 <… udp> / u6 <… udp6> /
 *   U <… unix>
 */
export function parseNetnsListing(lines: readonly string[]): NetnsEntry[] {
  const out: NetnsEntry[] = [];
  type Tag = '4' | '6' | 'u4' | 'u6' | 'U';
  let cur: { e: NetnsEntry; lines: Record<Tag, string[]> } | undefined;
  const flush = (): void => {
    if (!cur) return;
    cur.e.net_tcp = parseProcNetTcp(cur.lines['4']);
    cur.e.net_tcp6 = parseProcNetTcp(cur.lines['6']);
    cur.e.net_udp = parseProcNetUdp(cur.lines.u4);
    cur.e.net_udp6 = parseProcNetUdp(cur.lines.u6);
    cur.e.net_unix = parseProcNetUnix(cur.lines.U);
    out.push(cur.e);
    cur = undefined;
  };
  for (const line of lines) {
    const m = /^(N|4|6|u4|u6|U) /.exec(line);
    if (!m) continue;
    const rest = line.slice(m[0].length);
    if (m[1] === 'N') {
      flush();
      const [pid, link] = rest.trim().split(/\s+/);
      const inum = parseNsLink(link ?? '');
      if (inum !== null)
        cur = {
          e: { inum, pid: Number(pid), net_tcp: [], net_tcp6: [], net_udp: [], net_udp6: [], net_unix: [] },
          lines: { '4': [], '6': [], u4: [], u6: [], U: [] },
        };
    } else if (cur) cur.lines[m[1] as Tag].push(rest);
  }
  flush();
  return out.sort((a, b) => a.pid - b.pid);
}

/**
 * Parse the collector's process listing: per process
 *   P <pid> / S <contents of /proc/PID/stat> / T Uid: r e s f / T Gid: r e s f / C <cmdline, NUL→space>
 * Processes that vanished mid-listing (no stat) are dropped.
 */
export function parsePsListing(lines: readonly string[]): PsEntry[] {
  const out: PsEntry[] = [];
  let cur: Partial<PsEntry> & { pid?: number } = {};
  const flush = (): void => {
    if (cur.pid !== undefined && cur.comm !== undefined && cur.ppid !== undefined) {
      const args = cur.args ?? '';
      out.push({
        pid: cur.pid,
        ppid: cur.ppid,
        uid: cur.uid ?? -1,
        gid: cur.gid ?? -1,
        comm: cur.comm,
        args,
        state: cur.state ?? '?',
        kernel_thread: args === '' && (cur.pid === 2 || cur.ppid === 2),
      });
    }
    cur = {};
  };
  for (const line of lines) {
    const tag = line.slice(0, 2);
    const rest = line.slice(2);
    if (tag === 'P ') {
      flush();
      cur.pid = Number(rest.trim());
    } else if (tag === 'S ') {
      const open = rest.indexOf('(');
      const close = rest.lastIndexOf(')');
      if (open < 0 || close < open) continue;
      cur.comm = rest.slice(open + 1, close);
      const after = rest
        .slice(close + 1)
        .trim()
        .split(/\s+/);
      cur.state = after[0];
      cur.ppid = Number(after[1]);
    } else if (tag === 'T ') {
      const f = rest.trim().split(/\s+/);
      if (f[0] === 'Uid:') cur.uid = Number(f[1]);
      else if (f[0] === 'Gid:') cur.gid = Number(f[1]);
    } else if (line === 'C' || tag === 'C ') {
      cur.args = rest.trim();
    }
  }
  flush();
  return out.sort((a, b) => a.pid - b.pid);
}

/** Drop a process and all its descendants (the collector's own shells, cat, tr, …). */
export function withoutDescendants(ps: readonly PsEntry[], rootPid: number): PsEntry[] {
  const drop = new Set<number>([rootPid]);
  let grew = true;
  while (grew) {
    grew = false;
    for (const p of ps) {
      if (!drop.has(p.pid) && drop.has(p.ppid)) {
        drop.add(p.pid);
        grew = true;
      }
    }
  }
  return ps.filter((p) => !drop.has(p.pid));
}

/**
 * The processes of the guest without the lab's own transient machinery: the collector's subtree
 * and the busybox `timeout` watchers of earlier commands (they linger ≤ 1 s after a command).
 */
export function withoutLabMachinery(ps: readonly PsEntry[], collectorPid: number): PsEntry[] {
  return withoutDescendants(ps, collectorPid).filter(
    (p) => !(p.comm === 'timeout' && p.args.includes('/tmp/pmi-cmd.')),
  );
}

/**
 * Parse the collector's thread listing: one line `TH <pid> <tid> <comm>` per thread, from
 * /proc/PID/task/TID/comm (comm is the rest of the line, kept exactly: it may hold spaces).
 * Sorted by pid, then tid; threads that vanished mid-listing are simply absent.
 */
export function parseThreadListing(lines: readonly string[]): ThreadEntry[] {
  const out: ThreadEntry[] = [];
  for (const line of lines) {
    const m = /^TH (\d+) (\d+) (.*)$/.exec(line);
    if (m) out.push({ pid: Number(m[1]), tid: Number(m[2]), comm: m[3] });
  }
  return out.sort((a, b) => a.pid - b.pid || a.tid - b.tid);
}

/**
 * Threads without the processes `withoutLabMachinery` leaves out of ps (`rawPs`: the unfiltered
 * listing taken just before the threads): the collector, its children, the `timeout` watchers.
 */
export function withoutLabThreads(
  threads: readonly ThreadEntry[],
  rawPs: readonly PsEntry[],
  collectorPid: number,
): ThreadEntry[] {
  const kept = new Set(withoutLabMachinery(rawPs, collectorPid).map((p) => p.pid));
  const dropped = new Set(rawPs.filter((p) => !kept.has(p.pid)).map((p) => p.pid));
  dropped.add(collectorPid);
  return threads.filter((t) => !dropped.has(t.pid));
}

/** `sha256sum` output → the lowercase hex digest, '' when there is none. */
export function parseSha256(line: string): string {
  const h = line.trim().split(/\s+/)[0]?.toLowerCase() ?? '';
  return /^[0-9a-f]{64}$/.test(h) ? h : '';
}

export function parseMeminfo(lines: readonly string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of lines) {
    const m = /^([A-Za-z0-9_()]+):\s+(\d+)/.exec(line.trim());
    if (m) out[m[1]] = Number(m[2]);
  }
  return out;
}

export function parseIomem(lines: readonly string[]): IomemEntry[] {
  const out: IomemEntry[] = [];
  for (const line of lines) {
    const m = /^(\s*)([0-9a-fA-F]+)-([0-9a-fA-F]+) : (.*)$/.exec(line);
    if (!m) continue;
    out.push({ start: hexAddr(m[2]), end: hexAddr(m[3]), name: m[4].trim(), depth: m[1].length / 2 });
  }
  return out;
}

/** Build a GroundTruth from the collector's sectioned output. */
export function parseTruth(
  text: string,
  timing: { collected_at: string; collect_ms: number; kallsyms_ms: number },
  kallsymsText?: string,
): GroundTruth {
  const s = splitSections(text);
  const get = (k: string): string[] => s.get(k) ?? [];
  const first = (k: string): string => (get(k)[0] ?? '').trim();
  const meminfo = parseMeminfo(get('meminfo'));
  const collectorPid = Number(first('collector_pid'));
  const rawPs = parsePsListing(get('ps'));
  const flags = first('cpu_flags').split(/\s+/);
  const kallsymsLines =
    kallsymsText !== undefined ? (splitSections(kallsymsText).get('kallsyms') ?? []) : get('kallsyms');
  return {
    collected_at: timing.collected_at,
    collect_ms: timing.collect_ms,
    kallsyms_ms: timing.kallsyms_ms,
    uname_r: first('uname_r'),
    version: first('version'),
    cmdline: first('cmdline'),
    mem_total_bytes: (meminfo.MemTotal ?? 0) * 1024,
    meminfo,
    la57: flags.includes('la57'),
    collector_pid: collectorPid,
    ps: withoutLabMachinery(rawPs, collectorPid),
    threads: withoutLabThreads(parseThreadListing(get('threads')), rawPs, collectorPid),
    btf_vmlinux_sha256: parseSha256(first('btf_vmlinux_sha256')),
    modules: parseProcModules(get('modules')),
    kallsyms: parseKallsyms(kallsymsLines),
    net_tcp: parseProcNetTcp(get('net_tcp')),
    net_tcp6: parseProcNetTcp(get('net_tcp6')),
    net_udp: parseProcNetUdp(get('net_udp')),
    net_udp6: parseProcNetUdp(get('net_udp6')),
    net_unix: parseProcNetUnix(get('net_unix')),
    netns: parseNsLink(first('netns')),
    other_netns: parseNetnsListing(get('other_netns')),
    dmesg_tail: get('dmesg'),
    iomem: parseIomem(get('iomem')),
  };
}

const SECTION_FN = `sec() { printf '@@PMI-SECTION %s@@\\n' "$1"; }
sec collector_pid; echo $$
`;

/** Per process: its stat, Uid/Gid lines and cmdline (parsePsListing). */
const PS_PART = `sec ps
for d in /proc/[0-9]*; do
  p=\${d#/proc/}
  IFS= read -r st < "$d/stat" 2>/dev/null || continue
  echo "P $p"
  echo "S $st"
  while read -r k v; do case "$k" in Uid:|Gid:) echo "T $k $v" ;; esac; done < "$d/status" 2>/dev/null
  printf 'C '; tr '\\000' ' ' < "$d/cmdline" 2>/dev/null; echo
done
`;

/**
 * Per thread: `TH pid tid comm` (parseThreadListing). Only shell builtins (no child processes), so
 * the listing adds nothing of its own; run right after PS_PART, whose listing filters it.
 */
const THREADS_PART = `sec threads
for d in /proc/[0-9]*; do
  p=\${d#/proc/}
  for t in "$d"/task/[0-9]*; do
    IFS= read -r c < "$t/comm" 2>/dev/null || continue
    echo "TH $p \${t##*/} $c"
  done
done
`;

/** The guest-side collector (busybox sh). Kallsyms is a separate call so its transfer is timed on its own. */
export const TRUTH_SCRIPT = `${SECTION_FN}sec uname_r; uname -r
sec version; cat /proc/version
sec cmdline; cat /proc/cmdline
sec cpu_flags; grep -m1 '^flags' /proc/cpuinfo
sec meminfo; cat /proc/meminfo
sec modules; cat /proc/modules
sec net_tcp; cat /proc/net/tcp
sec net_tcp6; cat /proc/net/tcp6
sec net_udp; cat /proc/net/udp
sec net_udp6; cat /proc/net/udp6
sec net_unix; cat /proc/net/unix
sec netns; readlink /proc/self/ns/net
sec other_netns
seen=" $(readlink /proc/self/ns/net) "
for d in /proc/[0-9]*; do
  n=$(readlink "$d/ns/net" 2>/dev/null) || continue
  case "$seen" in *" $n "*) continue ;; esac
  seen="$seen$n "
  echo "N \${d#/proc/} $n"
  sed 's/^/4 /' "$d/net/tcp" 2>/dev/null
  sed 's/^/6 /' "$d/net/tcp6" 2>/dev/null
  sed 's/^/u4 /' "$d/net/udp" 2>/dev/null
  sed 's/^/u6 /' "$d/net/udp6" 2>/dev/null
  sed 's/^/U /' "$d/net/unix" 2>/dev/null
done
sec iomem; cat /proc/iomem
sec dmesg; dmesg | tail -n 50
sec btf_vmlinux_sha256; if [ -e /sys/kernel/btf/vmlinux ]; then sha256sum /sys/kernel/btf/vmlinux; fi
${PS_PART}${THREADS_PART}`;

/**
 * The thread listing alone (the same ps and thread parts as TRUTH_SCRIPT, so the same filter
 * applies): parse its output with parseThreadsOutput.
 */
export const THREADS_SCRIPT = `${SECTION_FN}${PS_PART}${THREADS_PART}`;

/** Threads from THREADS_SCRIPT's (or TRUTH_SCRIPT's) output, without the lab's own processes. */
export function parseThreadsOutput(text: string): ThreadEntry[] {
  const s = splitSections(text);
  const collectorPid = Number((s.get('collector_pid')?.[0] ?? '').trim());
  return withoutLabThreads(parseThreadListing(s.get('threads') ?? []), parsePsListing(s.get('ps') ?? []), collectorPid);
}

export const KALLSYMS_SCRIPT = `printf '@@PMI-SECTION kallsyms@@\\n'; cat /proc/kallsyms\n`;
