import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  decodeProcNetAddress,
  hexAddr,
  parseIomem,
  parseKallsyms,
  parseNetnsListing,
  parseNsLink,
  parseProcModules,
  parsePsListing,
  parseSha256,
  parseThreadListing,
  parseThreadsOutput,
  parseProcNetTcp,
  parseProcNetUdp,
  parseProcNetUnix,
  parseTruth,
  splitSections,
  THREADS_SCRIPT,
  TRUTH_SCRIPT,
  withoutLabThreads,
} from './truth.js';
import { PANIC_RE } from './vm.js';

const fixture = (n: string) => readFileSync(new URL(`./__fixtures__/${n}`, import.meta.url), 'utf8');
const timing = { collected_at: '2026-01-01T00:00:00.000Z', collect_ms: 1, kallsyms_ms: 1 };

describe.each([
  ['6.1-cloud, 4-level', '61-cloud-p4', '6.1.0-57-cloud-amd64', false],
  ['6.12, 5-level', '612-p5', '6.12.117+deb12-amd64', true],
] as const)('truth parser on a recorded %s boot', (_label, tag, release, la57) => {
  const t = parseTruth(fixture(`truth-${tag}.txt`), timing, fixture(`kallsyms-${tag}.txt`));

  it('basic fields', () => {
    expect(t.uname_r).toBe(release);
    expect(t.version).toMatch(new RegExp(`^Linux version ${release.replace(/[+.]/g, '\\$&')} `));
    expect(t.cmdline).toBe('console=ttyS0 panic=0');
    expect(t.la57).toBe(la57);
    expect(t.mem_total_bytes).toBe(t.meminfo.MemTotal * 1024);
    expect(t.mem_total_bytes).toBeGreaterThan(128 * 2 ** 20);
    expect(t.dmesg_tail.length).toBeGreaterThan(10);
    expect(t.dmesg_tail.every((l) => !l.includes('\r'))).toBe(true);
  });

  it('ps: workload processes, uids, kernel threads, collector excluded', () => {
    const sleeper = t.ps.find((p) => p.comm === 'pmi-sleeper')!;
    expect(sleeper.args).toBe('/bin/sh /pmi/bin/pmi-sleeper --marker alpha');
    expect(sleeper.ppid).toBe(1);
    const user = t.ps.find((p) => p.comm === 'pmi-usersleeper')!;
    expect([user.uid, user.gid]).toEqual([1000, 1000]);
    expect(t.ps.find((p) => p.pid === 2)).toMatchObject({ comm: 'kthreadd', args: '', kernel_thread: true });
    expect(t.ps.some((p) => p.pid === t.collector_pid || p.ppid === t.collector_pid)).toBe(false);
    expect(t.ps.some((p) => p.comm === 'timeout')).toBe(false);
    expect(t.ps.map((p) => p.pid)).toEqual([...t.ps.map((p) => p.pid)].sort((a, b) => a - b));
  });

  it('modules and kallsyms', () => {
    expect(t.modules.map((m) => m.name).sort()).toEqual(['crc32_generic', 'dummy']);
    for (const m of t.modules) expect(m.address).toMatch(/^0xffffffffc[0-9a-f]{7}$/);
    const text = t.kallsyms.find((k) => k.name === '_text')!;
    expect(text.address).toMatch(/^0xffffffff[89a-f][0-9a-f]{7}$/);
    expect(t.kallsyms[0]).toEqual({ address: '0x0', type: 'A', name: 'fixed_percpu_data' });
    const mod = t.kallsyms.find((k) => k.module === 'dummy' && k.name === '__this_module');
    expect(mod?.type).toBe('d');
  });

  it('sockets and iomem', () => {
    expect(t.net_tcp.map((r) => [r.local_ip, r.local_port, r.state])).toEqual([['0.0.0.0', 8081, 'LISTEN']]);
    expect(t.net_tcp6.map((r) => [r.local_ip, r.local_port, r.state])).toEqual([['::', 8080, 'LISTEN']]);
    expect(t.iomem[0]).toEqual({ start: '0x0', end: '0xfff', name: 'Reserved', depth: 0 });
    expect(t.iomem.find((r) => r.name === 'Kernel code')?.depth).toBe(1);
  });
});

describe('truth parser units', () => {
  it('splitSections strips \\r and trailing blank lines', () => {
    const s = splitSections('junk\r\n@@PMI-SECTION a@@\r\nx\r\n\r\n@@PMI-SECTION b@@\ny\n');
    expect(s.get('a')).toEqual(['x']);
    expect(s.get('b')).toEqual(['y']);
    expect(s.has('junk')).toBe(false);
  });

  it('hexAddr normalises', () => {
    expect(hexAddr('FFFFFFFF81000000')).toBe('0xffffffff81000000');
    expect(hexAddr('0000000000001000')).toBe('0x1000');
    expect(() => hexAddr('zz')).toThrow();
  });

  it('/proc/modules lines with and without deps/addresses', () => {
    const m = parseProcModules([
      'dummy 16384 0 - Live 0xffffffffc030f000',
      'b 100 2 a,c, Loading 0x0000000000000000 (OE)',
      'hidden 100 0 - Live',
    ]);
    expect(m[0]).toEqual({
      name: 'dummy',
      size: 16384,
      refcount: 0,
      deps: [],
      state: 'Live',
      address: '0xffffffffc030f000',
    });
    expect(m[1].deps).toEqual(['a', 'c']);
    expect(m[1].address).toBe('0x0');
    expect(m[2].address).toBe('0x0');
  });

  it('kallsyms module column', () => {
    expect(parseKallsyms(['ffffffffc03df2d0 t cleanup_module\t[dummy]', 'garbage'])).toEqual([
      { address: '0xffffffffc03df2d0', type: 't', name: 'cleanup_module', module: 'dummy' },
    ]);
  });

  it('/proc/net/tcp addresses', () => {
    expect(decodeProcNetAddress('0100007F')).toBe('127.0.0.1');
    expect(decodeProcNetAddress('00000000000000000000000001000000')).toBe('::1');
    expect(decodeProcNetAddress('0000000000000000FFFF00000100007F')).toBe('::ffff:127.0.0.1');
    expect(decodeProcNetAddress('B80D01200000000000000000000000FF')).toBe('2001:db8::ff00:0');
    const [r] = parseProcNetTcp([
      '   1: 0100007F:1F91 0200007F:D431 01 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0000000000000000 20 4 30 10 -1',
    ]);
    expect(r).toMatchObject({ sl: 1, local_ip: '127.0.0.1', local_port: 8081, rem_ip: '127.0.0.2', rem_port: 54321 });
    expect(r).toMatchObject({ st: '01', state: 'ESTABLISHED', uid: 1000, inode: 4242 });
  });

  // as a 6.x kernel prints them (udp4_seq_show pads the v4 lines to 127 columns; sl is the hash slot)
  const UDP_HEAD =
    '   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops            ';
  const UDP_LINES = [
    ' 9418: 00000000:14E9 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 120615 2 000000005aad3650 0        ',
    ' 9811: 0100007F:D672 0100007F:14E9 01 00000000:00000000 00:00000000 00000000  1000        0 120616 2 00000000240682ce 3        ',
  ];
  const UDP6_HEAD =
    '  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops';
  const UDP6_LINE =
    ' 9419: 00000000000000000000000000000000:14EA 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 120617 2 00000000907b31f2 0';

  it('/proc/net/udp{,6}: unconnected (07 CLOSE) and connected (01 ESTABLISHED), v4 and v6, uid, inode, drops', () => {
    const u = parseProcNetUdp([UDP_HEAD, ...UDP_LINES, '']);
    expect(
      u.map((e) => [e.local_ip, e.local_port, e.rem_ip, e.rem_port, e.st, e.state, e.uid, e.inode, e.drops]),
    ).toEqual([
      ['0.0.0.0', 5353, '0.0.0.0', 0, '07', 'CLOSE', 0, 120615, 0],
      ['127.0.0.1', 54898, '127.0.0.1', 5353, '01', 'ESTABLISHED', 1000, 120616, 3],
    ]);
    expect(u[0]).toMatchObject({
      sl: 9418,
      local_address: '00000000',
      rem_address: '00000000',
      raw: UDP_LINES[0].trim(),
    });
    const [v6] = parseProcNetUdp([UDP6_HEAD, UDP6_LINE]);
    expect([v6.local_ip, v6.local_port, v6.rem_ip, v6.rem_port, v6.state, v6.inode]).toEqual([
      '::',
      5354,
      '::',
      0,
      'CLOSE',
      120617,
    ]);
    // the same lines through the tcp parser: the common columns agree
    expect(parseProcNetTcp(UDP_LINES).map((e) => e.inode)).toEqual([120615, 120616]);
  });

  it('parseTruth: net_udp and net_udp6 sections; missing sections (older recordings) are empty', () => {
    const text = [
      '@@PMI-SECTION net_udp@@',
      UDP_HEAD,
      ...UDP_LINES,
      '@@PMI-SECTION net_udp6@@',
      UDP6_HEAD,
      UDP6_LINE,
    ].join('\n');
    const t = parseTruth(text, timing);
    expect(t.net_udp.map((e) => [e.local_port, e.state])).toEqual([
      [5353, 'CLOSE'],
      [54898, 'ESTABLISHED'],
    ]);
    expect(t.net_udp6.map((e) => [e.local_ip, e.local_port])).toEqual([['::', 5354]]);
    expect(t.net_tcp).toEqual([]);
    const old = parseTruth('@@PMI-SECTION net_tcp@@\n', timing);
    expect([old.net_udp, old.net_udp6]).toEqual([[], []]);
  });

  it('/proc/net/unix: listeners, states, types, abstract names, no path, inode 0', () => {
    const u = parseProcNetUnix([
      'Num       RefCount Protocol Flags    Type St Inode Path',
      '000000006b204027: 00000002 00000000 00010000 0001 01   378 /run/pmi-unix.sock',
      '00000000ce8c3e43: 00000003 00000000 00000000 0001 02     0 /run/pmi-unix.sock',
      '000000004791b12b: 00000003 00000000 00000000 0005 03   384',
      '00000000525c1508: 00000003 00000000 00000000 0002 03   382 @pmi-unix-dgram',
      '0000000000000000: 00000002 00000000 00000000 0002 01 123456 /tmp/a b',
    ]);
    expect(u.map((e) => [e.inode, e.socket_type, e.state, e.path])).toEqual([
      [378, 'stream', 'LISTEN', '/run/pmi-unix.sock'],
      [0, 'stream', 'CONNECTING', '/run/pmi-unix.sock'],
      [384, 'seqpacket', 'CONNECTED', ''],
      [382, 'dgram', 'CONNECTED', '@pmi-unix-dgram'],
      [123456, 'dgram', 'UNCONNECTED', '/tmp/a b'],
    ]);
    expect(u[0]).toMatchObject({ refcount: 2, flags: 0x10000, type: 1, st: 1 });
  });

  it('network namespace links and the other-namespace listing', () => {
    expect(parseNsLink('net:[4026531840]\n')).toBe(4026531840);
    expect(parseNsLink('')).toBeNull();
    const n = parseNetnsListing([
      'N 152 net:[4026532114]',
      '4   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode',
      '4    0: 00000000:1F92 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 403 1 0 100 0 0 10 0',
      '6   sl  local_address                         remote_address                        st',
      'U Num       RefCount Protocol Flags    Type St Inode Path',
      'U 00000000ac869671: 00000002 00000000 00010000 0001 01   399 @pmi-unix',
      `u4 ${UDP_HEAD}`,
      'u4  9651: 00000000:14EB 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 120647 2 00000000f406229c 0',
      `u6 ${UDP6_HEAD}`,
      'N 99 garbage',
      'u4  9651: 00000000:14EC 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 00000000f406229c 0',
      'U 00000000ac869671: 00000002 00000000 00010000 0001 01   1 @ignored',
      'N 12 net:[4026532200]',
    ]);
    expect(
      n.map((e) => [
        e.pid,
        e.inum,
        e.net_tcp.map((t) => t.local_port),
        e.net_tcp6.length,
        e.net_udp.map((u) => [u.local_port, u.state, u.inode]),
        e.net_udp6.length,
        e.net_unix.length,
      ]),
    ).toEqual([
      [12, 4026532200, [], 0, [], 0, 0],
      [152, 4026532114, [8082], 0, [[5355, 'CLOSE', 120647]], 0, 1],
    ]);
    expect(n[1].net_unix[0]).toMatchObject({ inode: 399, state: 'LISTEN', path: '@pmi-unix' });
  });

  it('iomem nesting', () => {
    expect(parseIomem(['00100000-0ffdffff : System RAM', '  07e00000-08dfffff : Kernel code'])).toEqual([
      { start: '0x100000', end: '0xffdffff', name: 'System RAM', depth: 0 },
      { start: '0x7e00000', end: '0x8dfffff', name: 'Kernel code', depth: 1 },
    ]);
  });

  it('panic detection regex', () => {
    expect(PANIC_RE.test('[   12.3] Kernel panic - not syncing: sysrq triggered crash')).toBe(true);
    expect(PANIC_RE.test(fixture('serial-612-p5.log'))).toBe(false);
  });
});

describe('threads and the BTF hash, recorded on 5.10 with two vCPUs (pmi-threads workload)', () => {
  const t = parseTruth(fixture('truth-510-p4-smp2.txt'), timing);
  const WORKERS = ['pmi-worker-1', 'pmi-worker-2', 'pmi-worker-3'];

  it('truth.threads: the pmi-threads process with exactly its four named threads', () => {
    const main = t.threads.filter((x) => x.comm === 'pmi-threads');
    expect(main).toHaveLength(1);
    expect(main[0].tid).toBe(main[0].pid);
    const mine = t.threads.filter((x) => x.pid === main[0].pid);
    expect(mine.map((x) => x.comm)).toEqual(['pmi-threads', ...WORKERS]);
    expect(new Set(mine.map((x) => x.tid)).size).toBe(4);
    expect(mine).toEqual([
      { pid: 102, tid: 102, comm: 'pmi-threads' },
      { pid: 102, tid: 103, comm: 'pmi-worker-1' },
      { pid: 102, tid: 104, comm: 'pmi-worker-2' },
      { pid: 102, tid: 105, comm: 'pmi-worker-3' },
    ]);
    expect(t.ps.find((p) => p.pid === 102)).toMatchObject({ comm: 'pmi-threads', args: '/pmi/bin/pmi-threads' });
  });

  it('truth.threads: kernel threads with /proc comm (kworkers with their workqueue), every process, no collector', () => {
    expect(t.threads.find((x) => x.pid === 2)).toEqual({ pid: 2, tid: 2, comm: 'kthreadd' });
    expect(t.threads.find((x) => x.pid === 5)).toEqual({ pid: 5, tid: 5, comm: 'kworker/0:0-events' });
    expect(t.threads.some((x) => x.comm === 'kworker/u4:2-events_unbound')).toBe(true);
    // one leader row per process of ps, and nothing of the collector (pid 299 in this recording)
    expect(t.collector_pid).toBe(299);
    const leaders = t.threads.filter((x) => x.tid === x.pid).map((x) => x.pid);
    expect(leaders).toEqual(t.ps.map((p) => p.pid));
    expect(t.threads.some((x) => x.pid === 299)).toBe(false);
    // only pmi-threads has more than one thread here
    expect(t.threads.filter((x) => x.tid !== x.pid).map((x) => x.pid)).toEqual([102, 102, 102]);
    const sorted = [...t.threads].sort((a, b) => a.pid - b.pid || a.tid - b.tid);
    expect(t.threads).toEqual(sorted);
  });

  it('btf_vmlinux_sha256', () => {
    expect(t.btf_vmlinux_sha256).toBe('28295addc16eaf065da6c8a83603b2da2bee224c47097cd7ea3ed48bd252161b');
    expect(parseSha256('')).toBe('');
    expect(parseSha256('sha256sum: /sys/kernel/btf/vmlinux: No such file or directory')).toBe('');
    expect(parseSha256('ABCDEF' + '0'.repeat(58) + '  -')).toBe('abcdef' + '0'.repeat(58));
    expect(parseTruth('@@PMI-SECTION btf_vmlinux_sha256@@\n', timing).btf_vmlinux_sha256).toBe('');
  });

  it('the thread listing alone (THREADS_SCRIPT, run under the guest timeout): collector and timeout watcher dropped', () => {
    const text = fixture('threads-510-p4-smp2.txt');
    const threads = parseThreadsOutput(text);
    // the raw listing has the collector (451) and the busybox timeout watcher (453) of this very command
    const raw = parseThreadListing(splitSections(text).get('threads') ?? []);
    expect(raw.filter((x) => x.pid === 451 || x.pid === 453).map((x) => x.comm)).toEqual(['sh', 'timeout']);
    expect(threads.some((x) => x.pid === 451 || x.pid === 453)).toBe(false);
    expect(raw.length - threads.length).toBe(2);
    expect(threads.filter((x) => x.pid === 102).map((x) => x.comm)).toEqual(['pmi-threads', ...WORKERS]);
  });

  it('parseThreadListing and withoutLabThreads units', () => {
    const th = parseThreadListing([
      'TH 20 21 a b ',
      'garbage',
      'TH 3 3 kworker/0:1-events',
      'TH 20 20 ',
      'P 3',
      'TH 7 7 sh',
      'TH 8 8 cat',
      'TH 9 9 timeout',
    ]);
    expect(th).toEqual([
      { pid: 3, tid: 3, comm: 'kworker/0:1-events' },
      { pid: 7, tid: 7, comm: 'sh' },
      { pid: 8, tid: 8, comm: 'cat' },
      { pid: 9, tid: 9, comm: 'timeout' },
      { pid: 20, tid: 20, comm: '' },
      { pid: 20, tid: 21, comm: 'a b ' },
    ]);
    const ps = parsePsListing([
      'P 3',
      'S 3 (kworker/0:1-events) I 2 0 0',
      'P 7',
      'S 7 (sh) S 1 7 7',
      'C sh /tmp/pmi-cmd.x/cmd.sh',
      'P 8',
      'S 8 (cat) R 7 7 7',
      'C cat',
      'P 9',
      'S 9 (timeout) S 1 9 9',
      'C timeout -s KILL 10 sh /tmp/pmi-cmd.x/cmd.sh',
    ]);
    expect(withoutLabThreads(th, ps, 7).map((x) => x.tid)).toEqual([3, 20, 21]);
  });

  it('the scripts run under busybox sh: the host /proc through THREADS_SCRIPT has this very process and its threads', () => {
    execFileSync('/bin/busybox', ['sh', '-n', '-c', TRUTH_SCRIPT]);
    expect(TRUTH_SCRIPT).toContain(THREADS_SCRIPT.slice(THREADS_SCRIPT.indexOf('sec ps')));
    const out = execFileSync('/bin/busybox', ['sh', '-c', THREADS_SCRIPT], { encoding: 'utf8', maxBuffer: 64 << 20 });
    const threads = parseThreadsOutput(out);
    const mine = threads.filter((x) => x.pid === process.pid);
    const tids = readdirSync(`/proc/${process.pid}/task`).map(Number);
    // threads may come and go (libuv pool), but the main thread and its comm are stable
    expect(mine.find((x) => x.tid === process.pid)?.comm).toBe(
      readFileSync(`/proc/${process.pid}/comm`, 'utf8').replace(/\n$/, ''),
    );
    expect(mine.length).toBeGreaterThan(1);
    expect(mine.filter((x) => tids.includes(x.tid)).length).toBeGreaterThan(1);
    // the collector (a busybox sh, child of this process) is not in the listing
    const collector = Number(splitSections(out).get('collector_pid')?.[0]);
    expect(collector).toBeGreaterThan(0);
    expect(threads.some((x) => x.pid === collector)).toBe(false);
  });
});
