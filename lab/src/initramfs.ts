import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { buildCpio, type CpioEntry } from './cpio.js';
import { buildUnixHelper, UNIX_HELPER } from './guest-helper.js';
import { buildThreadHelper, THREAD_HELPER } from './thread-helper.js';
import { kernelModules, type FetchedKernel } from './kernels.js';
import { cacheRoot, execChecked, exists, labError, randomTag, rmQuiet } from './util.js';

/** Bumped whenever the guest scripts or layout change, so cached images are rebuilt. */
const LAYOUT_VERSION = 6;

/** The distinctive workload the guest runs; tests look these up in ground truth and memory. */
export const WORKLOAD = {
  sleeper: { comm: 'pmi-sleeper', args: 'pmi-sleeper --marker alpha', uid: 0 },
  userSleeper: { comm: 'pmi-usersleeper', args: 'pmi-usersleeper --marker beta', uid: 1000, user: 'pmi' },
  holder: { comm: 'pmi-holder', file: '/etc/pmi-marker.txt' },
  /** busybox httpd: `-p 8080` listens on tcp6, `-p 0.0.0.0:8081` on tcp (IPv4). */
  tcp6Port: 8080,
  tcpPort: 8081,
  /**
   * `pmi-unix` (lab/src/guest-helper.ts): unix sockets in init_net (a stream listener on a path with
   * an accepted and a never-accepted connection, an abstract dgram pair, a socket only in flight)
   * and UDP sockets (v4 on 0.0.0.0:udpPort, v4 from 127.0.0.1 connected to it, v6 on [::]:udp6Port);
   * `pmi-netns`: the same helper started by `unshare -n`, an abstract stream listener, a TCP
   * listener with one connection not accepted and a UDP v4 socket on netnsUdpPort, in a network
   * namespace of its own (with its own TCP ehash and, 6.2+, its own UDP hash table).
   */
  unix: UNIX_HELPER,
  /**
   * `pmi-threads` (lab/src/thread-helper.ts): a process whose main thread has that comm and three
   * more threads named `threadNames` (prctl PR_SET_NAME), all sleeping; /init continues only once
   * all four exist with their names.
   */
  threads: THREAD_HELPER,
  markerText: 'pmi-lab marker file: the quick brown fox 0x5eed\n',
  /** Console line printed once the command loop is listening on ttyS1. */
  readyLine: 'PMI-LAB-READY',
} as const;

const SLEEPER = `#!/bin/sh
# $0 --marker NAME: a process with a distinctive comm and command line
echo -n "\${0##*/}" > /proc/$$/comm
while true; do sleep 7; done
`;

const HOLDER = `#!/bin/sh
# Holds a file open on fd 3 (a known path for open-file checks).
echo -n pmi-holder > /proc/$$/comm
exec 3<"\${1:-/etc/pmi-marker.txt}"
while true; do sleep 5; done
`;

/**
 * The command loop on ttyS1. The host sends one line per command:
 *   PMICMD <id> <guest-timeout-s|0> <base64 of the shell script>
 * and receives, between markers unique to the call, base64(gzip(stdout)) and base64(gzip(stderr))
 * and the exit status. Kernel console output stays on ttyS0, so nothing interleaves.
 */
const CMDLOOP = `#!/bin/sh
tty=\${1:-/dev/ttyS1}
exec <"$tty" >"$tty" 2>/dev/null
stty raw -echo
set -f
echo "${WORKLOAD.readyLine} $(uname -r)" > /dev/console
while true; do
  if ! IFS= read -r line; then sleep 1; continue; fi
  case "$line" in
    PMICMD\\ *) ;;
    *) continue ;;
  esac
  set -- $line
  id=$2; tmo=$3; b64=$4
  d=/tmp/pmi-cmd.$id
  mkdir -p "$d"
  echo "$b64" | base64 -d > "$d/cmd.sh"
  if [ "$tmo" -gt 0 ] 2>/dev/null; then
    timeout -s KILL "$tmo" sh "$d/cmd.sh" </dev/null >"$d/out" 2>"$d/err"
  else
    sh "$d/cmd.sh" </dev/null >"$d/out" 2>"$d/err"
  fi
  rc=$?
  printf '\\n@@PMI-BEGIN %s@@\\n' "$id"
  gzip -c "$d/out" | base64
  printf '@@PMI-STDERR %s@@\\n' "$id"
  gzip -c "$d/err" | base64
  printf '@@PMI-END %s %s@@\\n' "$id" "$rc"
  rm -rf "$d"
done
`;

function initScript(release: string, modules: readonly string[], extraProcesses = 0): string {
  // `extraProcesses` idle `sleep` processes (scale tests: ps of thousands of processes); spawned
  // before the command loop starts, so the VM is ready only once they all exist.
  if (!Number.isSafeInteger(extraProcesses) || extraProcesses < 0 || extraProcesses > 100_000) {
    throw labError(`extraProcesses must be an integer in [0, 100000] (got ${extraProcesses})`, { extraProcesses });
  }
  const extra =
    extraProcesses > 0
      ? `i=0; while [ $i -lt ${extraProcesses} ]; do sleep 1000000 & i=$((i+1)); done\necho "PMI-LAB: ${extraProcesses} extra processes started"\n`
      : '';
  return `#!/bin/sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
exec </dev/console >/dev/console 2>&1
echo "PMI-LAB: init running on $(uname -r)"
hostname pmi-lab
ip link set lo up
for m in ${modules.join(' ')}; do
  insmod /lib/modules/${release}/pmi/$m.ko || echo "PMI-LAB: insmod $m failed"
done
/pmi/bin/pmi-sleeper --marker alpha &
su -s /bin/sh ${WORKLOAD.userSleeper.user} -c '/pmi/bin/pmi-usersleeper --marker beta' &
/pmi/bin/pmi-holder ${WORKLOAD.holder.file} &
httpd -p ${WORKLOAD.tcp6Port} -h /www
httpd -p 0.0.0.0:${WORKLOAD.tcpPort} -h /www
/pmi/bin/${UNIX_HELPER.comm} || echo "PMI-LAB: ${UNIX_HELPER.comm} failed"
# a network namespace with its own TCP established hash (6.1+) and UDP hash (6.2+), lo up, and the
# helper's twin in it
sysctl -w net.ipv4.tcp_child_ehash_entries=128 >/dev/null 2>&1
sysctl -w net.ipv4.udp_child_hash_entries=128 >/dev/null 2>&1
unshare -n sh -c 'ip link set lo up && exec /pmi/bin/${UNIX_HELPER.comm} --netns' || echo "PMI-LAB: ${UNIX_HELPER.comm} --netns failed"
sysctl -w net.ipv4.tcp_child_ehash_entries=0 >/dev/null 2>&1
sysctl -w net.ipv4.udp_child_hash_entries=0 >/dev/null 2>&1
# returns once the process and its named threads all exist (its own wait is bounded: 30 s)
/pmi/bin/${THREAD_HELPER.comm} || echo "PMI-LAB: ${THREAD_HELPER.comm} failed"
echo "PMI-LAB: workload started"
${extra}/pmi/cmdloop.sh /dev/ttyS1 &
while true; do sleep 3600; done
`;
}

export interface InitramfsOptions {
  cacheDir?: string;
  /** Static busybox to put in the image (default `$PMI_LAB_BUSYBOX` or /bin/busybox). */
  busybox?: string;
  /** Extra idle `sleep` processes started by /init before the command loop (default 0). */
  extraProcesses?: number;
}

/** True when an ELF file has no PT_INTERP program header (i.e. it is statically linked). */
export function isStaticElf(buf: Uint8Array): boolean {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  if (b.length < 64 || b.readUInt32BE(0) !== 0x7f454c46 || b[4] !== 2) return false;
  const phoff = Number(b.readBigUInt64LE(0x20));
  const phentsize = b.readUInt16LE(0x36);
  const phnum = b.readUInt16LE(0x38);
  for (let i = 0; i < phnum; i++) {
    const off = phoff + i * phentsize;
    if (off + 4 > b.length) return false;
    if (b.readUInt32LE(off) === 3) return false; // PT_INTERP
  }
  return true;
}

/**
 * Build (or reuse from the cache) the gzip'd newc initramfs for a kernel: static busybox with
 * its applet links, the workload scripts, the workload modules (decompressed) and /init.
 */
export async function buildInitramfs(kernel: FetchedKernel, opts: InitramfsOptions = {}): Promise<string> {
  const busyboxPath = opts.busybox ?? process.env.PMI_LAB_BUSYBOX ?? '/bin/busybox';
  const busybox = await fsp.readFile(busyboxPath).catch((e) => {
    throw labError(`cannot read ${busyboxPath}: install busybox-static`, { busybox: busyboxPath }, e);
  });
  if (!isStaticElf(busybox)) {
    throw labError(`${busyboxPath} is not a static x86-64 ELF: install busybox-static`, { busybox: busyboxPath });
  }
  const modules = await kernelModules(kernel, kernel.workloadModules);
  const moduleData = await Promise.all(modules.map((m) => fsp.readFile(m.path)));
  const cacheDir = opts.cacheDir ?? cacheRoot();
  const helper = await buildUnixHelper(cacheDir);
  const threadHelper = await buildThreadHelper(cacheDir);
  const init = initScript(
    kernel.release,
    modules.map((m) => m.name),
    opts.extraProcesses ?? 0,
  );
  const h = createHash('sha256');
  h.update(`v${LAYOUT_VERSION}\0${kernel.release}\0${init}\0${CMDLOOP}\0${SLEEPER}\0${HOLDER}\0`);
  h.update(busybox);
  h.update(helper);
  h.update(threadHelper);
  for (const d of moduleData) h.update(d);
  const key = h.digest('hex').slice(0, 16);
  const dir = join(cacheDir, 'initramfs');
  const out = join(dir, `${kernel.release}-${key}.cpio.gz`);
  if (await exists(out)) return out;

  const list = await execChecked(busyboxPath, ['--list-full'], { timeoutMs: 10_000 });
  const applets = list.stdout
    .split('\n')
    .map((s) => s.trim())
    .filter((s) => s.length > 0 && !s.endsWith('/busybox'));

  const entries: CpioEntry[] = [];
  const dirs = new Set<string>();
  const addDir = (p: string, mode = 0o755, uid = 0, gid = 0): void => {
    const parts = p.split('/').filter(Boolean);
    for (let i = 1; i <= parts.length; i++) {
      const sub = parts.slice(0, i).join('/');
      if (dirs.has(sub)) continue;
      dirs.add(sub);
      entries.push({
        kind: 'dir',
        path: sub,
        mode: i === parts.length ? mode : 0o755,
        uid: i === parts.length ? uid : 0,
        gid: i === parts.length ? gid : 0,
      });
    }
  };
  for (const d of [
    'bin',
    'sbin',
    'usr/bin',
    'usr/sbin',
    'proc',
    'sys',
    'dev',
    'etc',
    'root',
    'www',
    'pmi/bin',
    'run',
    'var/log',
  ])
    addDir(d);
  addDir('tmp', 0o1777);
  addDir(`home/${WORKLOAD.userSleeper.user}`, 0o755, 1000, 1000);
  entries.push({ kind: 'char', path: 'dev/console', major: 5, minor: 1, mode: 0o600 });
  entries.push({ kind: 'char', path: 'dev/null', major: 1, minor: 3, mode: 0o666 });
  entries.push({ kind: 'file', path: 'bin/busybox', data: busybox, mode: 0o755 });
  for (const a of applets) {
    const p = a.replace(/^\/+/, '');
    const slash = p.lastIndexOf('/');
    if (slash > 0) addDir(p.slice(0, slash));
    entries.push({ kind: 'symlink', path: p, target: '/bin/busybox' });
  }
  entries.push({
    kind: 'file',
    path: 'etc/passwd',
    data: `root:x:0:0:root:/root:/bin/sh\n${WORKLOAD.userSleeper.user}:x:1000:1000:pmi lab user:/home/${WORKLOAD.userSleeper.user}:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n`,
  });
  entries.push({
    kind: 'file',
    path: 'etc/group',
    data: `root:x:0:\n${WORKLOAD.userSleeper.user}:x:1000:\nnogroup:x:65534:\n`,
  });
  entries.push({ kind: 'file', path: 'etc/shadow', data: 'root::0::::::\npmi:*:0::::::\n', mode: 0o600 });
  entries.push({ kind: 'file', path: 'etc/shells', data: '/bin/sh\n' });
  entries.push({ kind: 'file', path: WORKLOAD.holder.file.slice(1), data: WORKLOAD.markerText });
  entries.push({ kind: 'file', path: 'www/index.html', data: '<html><body>pmi-lab</body></html>\n' });
  entries.push({ kind: 'file', path: 'init', data: init, mode: 0o755 });
  entries.push({ kind: 'file', path: 'pmi/cmdloop.sh', data: CMDLOOP, mode: 0o755 });
  entries.push({ kind: 'file', path: 'pmi/bin/pmi-sleeper', data: SLEEPER, mode: 0o755 });
  entries.push({ kind: 'file', path: 'pmi/bin/pmi-usersleeper', data: SLEEPER, mode: 0o755 });
  entries.push({ kind: 'file', path: 'pmi/bin/pmi-holder', data: HOLDER, mode: 0o755 });
  entries.push({ kind: 'file', path: `pmi/bin/${UNIX_HELPER.comm}`, data: helper, mode: 0o755 });
  entries.push({ kind: 'file', path: `pmi/bin/${THREAD_HELPER.comm}`, data: threadHelper, mode: 0o755 });
  addDir(`lib/modules/${kernel.release}/pmi`);
  modules.forEach((m, i) => {
    entries.push({
      kind: 'file',
      path: `lib/modules/${kernel.release}/pmi/${m.name}.ko`,
      data: moduleData[i],
      mode: 0o644,
    });
  });

  const image = gzipSync(buildCpio(entries), { level: 6 });
  await fsp.mkdir(dir, { recursive: true });
  const tmp = `${out}.tmp-${process.pid}-${randomTag()}`;
  try {
    await fsp.writeFile(tmp, image);
    await fsp.rename(tmp, out);
  } finally {
    await rmQuiet(tmp);
  }
  return out;
}
