/**
 * `pmi-unix`: a small static C program for the guest that sets up sockets busybox cannot
 * (a stream listener with an accepted and a never-accepted connection, an abstract dgram pair, a
 * seqpacket end held only by an in-flight SCM_RIGHTS message; UDP: an unconnected v4 socket, a
 * connected v4 socket, an unconnected v6 socket) and, with `--netns`, sockets in the network
 * namespace it was started in (a unix listener on an abstract name, a TCP listener with one
 * connection over lo, not accepted, an unconnected UDP v4 socket). It daemonizes once every
 * socket exists, so /init continues only when the sockets are there. Built on the host with
 * `gcc -static` and cached.
 */
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { execChecked, exists, labError, randomTag, rmQuiet } from './util.js';

/** What the helper creates (tests look these up in ground truth and memory). */
export const UNIX_HELPER = {
  /** Comm of the init-netns instance, and its sockets. */
  comm: 'pmi-unix',
  streamPath: '/run/pmi-unix.sock',
  dgramName: '@pmi-unix-dgram',
  /** UDP v4 bound to 0.0.0.0:udpPort (unconnected), and one bound to 127.0.0.1 (ephemeral port)
   * connected to 127.0.0.1:udpPort; UDP v6 bound to [::]:udp6Port (unconnected). */
  udpPort: 5353,
  udp6Port: 5354,
  /**
   * Comm of the instance started by `unshare -n` (its own network namespace, created with its own
   * TCP established hash: `net.ipv4.tcp_child_ehash_entries`), and its sockets.
   */
  netnsComm: 'pmi-netns',
  netnsStreamName: '@pmi-unix',
  netnsTcpPort: 8082,
  /** UDP v4 bound to 0.0.0.0 (unconnected) in that namespace. */
  netnsUdpPort: 5355,
} as const;

const q = (s: string): string => JSON.stringify(s);

export const UNIX_HELPER_C = `/* pmi-unix [--netns]: unix, udp (and, in a netns, tcp) sockets for the pmi lab; daemonizes when ready. */
#define _GNU_SOURCE
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static void die(const char *what) { perror(what); exit(1); }

/* "@name" is abstract (sun_path[0] = 0, no trailing NUL), anything else a filesystem path */
static socklen_t unaddr(struct sockaddr_un *a, const char *name) {
  size_t n = strlen(name);
  memset(a, 0, sizeof *a);
  a->sun_family = AF_UNIX;
  memcpy(a->sun_path, name, n);
  if (name[0] == '@') {
    a->sun_path[0] = 0;
    return offsetof(struct sockaddr_un, sun_path) + n;
  }
  return offsetof(struct sockaddr_un, sun_path) + n + 1;
}

/* a UDP v4 socket bound to addr:port (port 0: an ephemeral one), connected to addr:peer unless peer is 0 */
static int udp4(in_addr_t addr, int port, int peer) {
  struct sockaddr_in in;
  memset(&in, 0, sizeof in);
  in.sin_family = AF_INET;
  in.sin_addr.s_addr = htonl(addr);
  in.sin_port = htons(port);
  int s = socket(AF_INET, SOCK_DGRAM, 0);
  if (s < 0 || bind(s, (struct sockaddr *)&in, sizeof in) != 0) die("udp bind");
  in.sin_port = htons(peer);
  if (peer && connect(s, (struct sockaddr *)&in, sizeof in) != 0) die("udp connect");
  return s;
}

static int usock(int type) {
  int s = socket(AF_UNIX, type, 0);
  if (s < 0) die("socket");
  return s;
}

/* send fd over the connected socket s (SCM_RIGHTS) */
static void sendfd(int s, int fd) {
  char byte = 'x';
  struct iovec iov = { &byte, 1 };
  union { struct cmsghdr h; char buf[CMSG_SPACE(sizeof(int))]; } c;
  struct msghdr m = { 0 };
  memset(&c, 0, sizeof c);
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  m.msg_control = c.buf;
  m.msg_controllen = sizeof c.buf;
  struct cmsghdr *h = CMSG_FIRSTHDR(&m);
  h->cmsg_level = SOL_SOCKET;
  h->cmsg_type = SCM_RIGHTS;
  h->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(h), &fd, sizeof(int));
  if (sendmsg(s, &m, 0) != 1) die("sendmsg");
}

int main(int argc, char **argv) {
  int netns = argc > 1 && strcmp(argv[1], "--netns") == 0;
  struct sockaddr_un a, d;
  const char *stream = netns ? ${q(UNIX_HELPER.netnsStreamName)} : ${q(UNIX_HELPER.streamPath)};
  socklen_t alen = unaddr(&a, stream);
  if (stream[0] == '/') unlink(stream);
  /* a stream listener, one accepted connection (c1 <-> s1) and one never accepted (c2: its peer
     is an embryo sock in the listener's queue that no file descriptor holds) */
  int l = usock(SOCK_STREAM);
  if (bind(l, (struct sockaddr *)&a, alen) != 0 || listen(l, 8) != 0) die("listen");
  int c1 = usock(SOCK_STREAM);
  if (connect(c1, (struct sockaddr *)&a, alen) != 0) die("connect");
  int s1 = accept(l, NULL, NULL);
  if (s1 < 0) die("accept");
  int c2 = usock(SOCK_STREAM);
  if (connect(c2, (struct sockaddr *)&a, alen) != 0) die("connect");
  if (!netns) {
    /* an abstract dgram socket and a client connected to it */
    socklen_t dlen = unaddr(&d, ${q(UNIX_HELPER.dgramName)});
    int ds = usock(SOCK_DGRAM);
    if (bind(ds, (struct sockaddr *)&d, dlen) != 0) die("bind dgram");
    int dc = usock(SOCK_DGRAM);
    if (connect(dc, (struct sockaddr *)&d, dlen) != 0) die("connect dgram");
    /* a seqpacket pair whose second end lives only in a message queued on s1 */
    int sp[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sp) != 0) die("socketpair");
    sendfd(c1, sp[1]);
    close(sp[1]);
    /* UDP: unconnected on 0.0.0.0, connected from 127.0.0.1 (ephemeral port) to it, unconnected on [::] */
    udp4(INADDR_ANY, ${UNIX_HELPER.udpPort}, 0);
    udp4(INADDR_LOOPBACK, 0, ${UNIX_HELPER.udpPort});
    struct sockaddr_in6 in6;
    memset(&in6, 0, sizeof in6);
    in6.sin6_family = AF_INET6;
    in6.sin6_addr = in6addr_any;
    in6.sin6_port = htons(${UNIX_HELPER.udp6Port});
    int u6 = socket(AF_INET6, SOCK_DGRAM, 0);
    if (u6 < 0 || bind(u6, (struct sockaddr *)&in6, sizeof in6) != 0) die("udp6 bind");
  } else {
    struct sockaddr_in in;
    memset(&in, 0, sizeof in);
    in.sin_family = AF_INET;
    in.sin_port = htons(${UNIX_HELPER.netnsTcpPort});
    int t = socket(AF_INET, SOCK_STREAM, 0);
    if (t < 0 || bind(t, (struct sockaddr *)&in, sizeof in) != 0 || listen(t, 8) != 0) die("tcp listen");
    /* and one connection to it over this namespace's lo, never accepted: the server end is an
       established sock no fd holds, only in the namespace's own established hash (when
       tcp_child_ehash_entries was set as the namespace was created) */
    in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int tc = socket(AF_INET, SOCK_STREAM, 0);
    if (tc < 0 || connect(tc, (struct sockaddr *)&in, sizeof in) != 0) die("tcp connect");
    udp4(INADDR_ANY, ${UNIX_HELPER.netnsUdpPort}, 0);
    prctl(PR_SET_NAME, ${q(UNIX_HELPER.netnsComm)}, 0, 0, 0);
  }
  pid_t pid = fork();
  if (pid < 0) die("fork");
  if (pid > 0) _exit(0);
  setsid();
  for (;;) pause();
}
`;

/**
 * Build (or reuse from `<cacheDir>/helpers/<name>-<hash>`) a static program from C source with
 * `gcc -static -O2 -s` plus `flags` (the hash covers source and flags). Needs gcc and the C
 * library's static archive (Debian: gcc, libc6-dev).
 */
export async function buildStaticHelper(
  cacheDir: string,
  name: string,
  source: string,
  flags: readonly string[] = [],
): Promise<Buffer> {
  const h = createHash('sha256');
  if (flags.length > 0) h.update(`${flags.join(' ')}\0`);
  const key = h.update(source).digest('hex').slice(0, 16);
  const dir = join(cacheDir, 'helpers');
  const out = join(dir, `${name}-${key}`);
  if (!(await exists(out))) {
    await fsp.mkdir(dir, { recursive: true });
    const tag = `${process.pid}-${randomTag()}`;
    const src = join(dir, `${name}-${tag}.c`);
    const tmp = `${out}.tmp-${tag}`;
    try {
      await fsp.writeFile(src, source);
      await execChecked('gcc', ['-static', ...flags, '-O2', '-s', '-o', tmp, src], { timeoutMs: 120_000 }).catch(
        (e) => {
          throw labError(
            `cannot build the lab helper ${name} with \`gcc -static\`: install gcc and libc6-dev`,
            { source: src },
            e,
          );
        },
      );
      await fsp.rename(tmp, out);
    } finally {
      await rmQuiet(src);
      await rmQuiet(tmp);
    }
  }
  return fsp.readFile(out);
}

/** Build (or reuse from `<cacheDir>/helpers/`) the static `pmi-unix` binary. */
export function buildUnixHelper(cacheDir: string): Promise<Buffer> {
  return buildStaticHelper(cacheDir, UNIX_HELPER.comm, UNIX_HELPER_C);
}
