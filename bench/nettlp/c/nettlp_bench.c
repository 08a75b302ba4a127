/*
 * nettlp_bench: a minimal LibTLP-style NetTLP DMA read client, for benchmarking only (not product).
 *
 * One UDP socket per tag, bound to LOCAL:PORTBASE+tag and connected to HOST:PORTBASE+tag (as LibTLP).
 * MRd encoded by hand from the wire facts (shared/specs/nettlp-wire.md); CplD reassembly by the
 * correct rule: offset = requested - ByteCount, valid = min(Length*4 - (LowerAddress & 3), ByteCount).
 *
 *   nettlp_bench latency    --host IP --port-base P [--local IP] [--n N] [--size S] [--addr A] [--span B]
 *   nettlp_bench throughput --host IP --port-base P [--local IP] --tags T --mrrs R --bytes B [--span B]
 *   nettlp_bench serve      --listen IP --port-base P --file F [--tags T] [--mps M] [--spin US] [--gso 0|1] [--seconds S]
 *
 * latency: N single reads of S bytes (default 4) at addresses stepping through [0, span), one
 * outstanding, tag 0; prints median/p99 in microseconds. throughput: T tags, one outstanding MRd
 * (MRRS bytes, sequential addresses wrapping in [0, span)) per tag, epoll over the tag sockets,
 * until B bytes have been read. serve: a minimal completer — the best case for the far side: the file
 * mmapped, per-tag sockets in one epoll set, recvmmsg, each MRd answered with CplDs cut at MPS-aligned
 * boundaries and sent with one UDP GSO send (--gso 1, default) or one sendmmsg, stamped with a monotonic timestamp; UR outside the file. With
 * --spin it busy-waits that many µs for the next request before sleeping. It prints "listening" when
 * ready and, at SIGTERM or after --seconds, one JSON line with its counters and CPU. Output: one JSON
 * line on stdout. Build: gcc -O2 -o nettlp_bench nettlp_bench.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HDR 6
#define MAXTAGS 256
#define TIMEOUT_MS 500

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int open_tag(const char *local, const char *host, int port) {
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  if (fd < 0) { perror("socket"); exit(2); }
  int rcv = 4 << 20;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  inet_pton(AF_INET, local, &a.sin_addr);
  if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) { fprintf(stderr, "bind %s:%d: %s\n", local, port, strerror(errno)); exit(2); }
  inet_pton(AF_INET, host, &a.sin_addr);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) { perror("connect"); exit(2); }
  return fd;
}

/* MRd 3DW/4DW for count (1..4096) bytes at addr, requester 0, tag. Returns datagram length. */
static int encode_mrd(uint8_t *b, uint64_t addr, int count, int tag) {
  memset(b, 0, HDR);
  int off = addr & 3;
  int len = (off + count + 3) >> 2;
  int fbe, lbe;
  if (len == 1) { fbe = (((1 << count) - 1) << off) & 0xf; lbe = 0; }
  else {
    fbe = (0xf << off) & 0xf;
    int e = (addr + count) & 3;
    lbe = e == 0 ? 0xf : (1 << e) - 1;
  }
  int is64 = addr >= 0x100000000ULL;
  uint8_t *t = b + HDR;
  t[0] = is64 ? 0x20 : 0x00;
  t[1] = 0;
  t[2] = (len >> 8) & 3; /* 1024 DW -> 0, AT bits clear */
  t[3] = len & 0xff;
  t[4] = 0; t[5] = 0; /* requester 00:00 */
  t[6] = tag;
  t[7] = (lbe << 4) | fbe;
  int o = 8;
  if (is64) {
    uint32_t hi = addr >> 32;
    t[o++] = hi >> 24; t[o++] = hi >> 16; t[o++] = hi >> 8; t[o++] = hi;
  }
  uint32_t lo = (uint32_t)addr;
  t[o++] = lo >> 24; t[o++] = lo >> 16; t[o++] = lo >> 8; t[o++] = lo & 0xfc;
  return HDR + o;
}

struct req {
  uint64_t addr;
  int len, received, busy;
  double sent;
  uint8_t buf[4096];
};

/* Apply one datagram to r. Returns 1 when the request is complete, 0 if more to come, -1 bad. */
static int on_cpl(struct req *r, const uint8_t *d, int n, int tag) {
  if (n < HDR + 12) return -1;
  const uint8_t *t = d + HDR;
  if (t[0] != 0x4a) return -1; /* CplD only (a Cpl would be UR/CA: an error for the bench) */
  int status = t[6] >> 5;
  if (status != 0 || t[10] != tag) return -1;
  int lenw = ((t[2] & 3) << 8) | t[3];
  if (lenw == 0) lenw = 1024;
  int bc = ((t[6] & 0xf) << 8) | t[7];
  if (bc == 0) bc = 4096;
  int la = t[11] & 0x7f;
  if (bc > r->len) return -1;
  int off = r->len - bc;
  if (((r->addr + off) & 0x7f) != (uint64_t)la) return -1;
  int valid = lenw * 4 - (la & 3);
  if (valid > bc) valid = bc;
  if (HDR + 12 + (la & 3) + valid > n) return -1;
  memcpy(r->buf + off, t + 12 + (la & 3), valid);
  r->received += valid;
  return r->received >= r->len;
}

static double cpu_s(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static const char *arg(int argc, char **argv, const char *k, const char *def) {
  for (int i = 2; i + 1 < argc; i++)
    if (!strcmp(argv[i], k)) return argv[i + 1];
  return def;
}


/* ------------------------------------------------------------------ serve: a minimal completer */
static volatile sig_atomic_t stop_serving;
static void on_term(int sig) { (void)sig; stop_serving = 1; }

static int encode_cpl(uint8_t *b, uint32_t ts, const uint8_t *t, int status, int bc, int la, const uint8_t *data, int n) {
  b[0] = 0; b[1] = 0;
  b[2] = ts >> 24; b[3] = ts >> 16; b[4] = ts >> 8; b[5] = ts;
  uint8_t *c = b + HDR;
  int lead = la & 3;
  int lenw = data ? (lead + n + 3) >> 2 : 0;
  c[0] = data ? 0x4a : 0x0a;
  c[1] = 0;
  c[2] = (lenw >> 8) & 3;
  c[3] = lenw & 0xff;
  c[4] = 0; c[5] = 0; /* completer 00:00 */
  c[6] = (status << 5) | ((bc >> 8) & 0xf);
  c[7] = bc & 0xff;
  c[8] = t[4]; c[9] = t[5]; /* requester */
  c[10] = t[6];             /* tag */
  c[11] = la & 0x7f;
  if (!data) return HDR + 12;
  memset(c + 12, 0, lenw * 4);
  memcpy(c + 12 + lead, data, n);
  return HDR + 12 + lenw * 4;
}

static int serve(int argc, char **argv) {
  const char *listen_ip = arg(argc, argv, "--listen", "127.0.0.2");
  int pb = atoi(arg(argc, argv, "--port-base", "12288"));
  int tags = atoi(arg(argc, argv, "--tags", "256"));
  int mps = atoi(arg(argc, argv, "--mps", "256"));
  double spin = atof(arg(argc, argv, "--spin", "0"));
  int gso = atoi(arg(argc, argv, "--gso", "1")); /* the completions of a request as one GSO send */
  double seconds = atof(arg(argc, argv, "--seconds", "0"));
  const char *file = arg(argc, argv, "--file", NULL);
  if (!file || tags < 1 || tags > MAXTAGS || mps < 128 || mps > 4096) { fprintf(stderr, "serve: --file, tags 1..256, mps 128..4096\n"); return 2; }
  int ffd = open(file, 0);
  struct stat st;
  if (ffd < 0 || fstat(ffd, &st) < 0) { perror(file); return 2; }
  uint64_t size = st.st_size;
  const uint8_t *mem = mmap(NULL, size, PROT_READ, MAP_SHARED, ffd, 0);
  if (mem == MAP_FAILED) { perror("mmap"); return 2; }
  int ep = epoll_create1(0), fds[MAXTAGS];
  for (int t = 0; t < tags; t++) {
    fds[t] = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    int rcv = 4 << 20;
    setsockopt(fds[t], SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons(pb + t);
    inet_pton(AF_INET, listen_ip, &a.sin_addr);
    if (bind(fds[t], (struct sockaddr *)&a, sizeof a) < 0) { fprintf(stderr, "bind %s:%d: %s\n", listen_ip, pb + t, strerror(errno)); return 2; }
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = t};
    epoll_ctl(ep, EPOLL_CTL_ADD, fds[t], &ev);
  }
  signal(SIGTERM, on_term);
  signal(SIGINT, on_term);
  printf("listening on %s ports %d-%d\n", listen_ip, pb, pb + tags - 1);
  fflush(stdout);
  enum { RX = 64, TXMAX = 64 };
  static uint8_t rxb[RX][64], txb[TXMAX][HDR + 16 + 4096];
  struct mmsghdr rm[RX], sm[TXMAX];
  struct iovec riov[RX], siov[TXMAX];
  struct sockaddr_in from[RX];
  long requests = 0, completions = 0, spins = 0;
  double start = now_us(), end = seconds > 0 ? start + seconds * 1e6 : 0;
  uint32_t ts = 1;
  struct epoll_event evs[MAXTAGS];
  while (!stop_serving && (end == 0 || now_us() < end)) {
    int k = epoll_wait(ep, evs, MAXTAGS, 0);
    if (k == 0 && spin > 0) {
      double until = now_us() + spin;
      while (k == 0 && now_us() < until) k = epoll_wait(ep, evs, MAXTAGS, 0);
      spins++;
    }
    if (k == 0) k = epoll_wait(ep, evs, MAXTAGS, 100);
    for (int i = 0; i < k; i++) {
      int t = evs[i].data.u32;
      for (int j = 0; j < RX; j++) {
        riov[j].iov_base = rxb[j]; riov[j].iov_len = sizeof rxb[j];
        memset(&rm[j].msg_hdr, 0, sizeof rm[j].msg_hdr);
        rm[j].msg_hdr.msg_iov = &riov[j]; rm[j].msg_hdr.msg_iovlen = 1;
        rm[j].msg_hdr.msg_name = &from[j]; rm[j].msg_hdr.msg_namelen = sizeof from[j];
      }
      int got = recvmmsg(fds[t], rm, RX, MSG_DONTWAIT, NULL);
      for (int j = 0; j < got; j++) {
        const uint8_t *q = rxb[j] + HDR;
        if (rm[j].msg_len < HDR + 12 || (q[0] & 0xdf) != 0x00) continue; /* MRd 3DW/4DW only */
        int lenw = ((q[2] & 3) << 8) | q[3];
        if (lenw == 0) lenw = 1024;
        int fbe = q[7] & 0xf, lbe = q[7] >> 4;
        uint64_t addr;
        if (q[0] & 0x20) addr = ((uint64_t)(((uint32_t)q[8] << 24) | (q[9] << 16) | (q[10] << 8) | q[11]) << 32) | (((uint32_t)q[12] << 24) | (q[13] << 16) | (q[14] << 8) | (q[15] & 0xfc));
        else addr = ((uint32_t)q[8] << 24) | (q[9] << 16) | (q[10] << 8) | (q[11] & 0xfc);
        int lead = fbe ? __builtin_ctz(fbe) : 0;
        int count = lenw == 1 ? (fbe ? 32 - __builtin_clz(fbe) - lead : 0) : lenw * 4 - lead - (lbe ? __builtin_clz(lbe) - 28 : 4);
        uint64_t a = addr + lead;
        requests++;
        int nd = 0;
        if (count <= 0 || a + count > size) {
          siov[0].iov_base = txb[0];
          siov[0].iov_len = encode_cpl(txb[0], ts++, q, 1, count > 0 ? count : 4, a, NULL, 0);
          nd = 1;
        } else {
          int left = count;
          uint64_t cur = a;
          while (left > 0 && nd < TXMAX) {
            uint64_t stop = ((cur & ~3ULL) / mps + 1) * mps; /* next MPS boundary from the DW-aligned start */
            int n = stop - cur < (uint64_t)left ? (int)(stop - cur) : left;
            siov[nd].iov_base = txb[nd];
            siov[nd].iov_len = encode_cpl(txb[nd], ts++, q, 0, left, cur, mem + cur, n);
            nd++;
            cur += n;
            left -= n;
          }
        }
        if (gso && nd >= 2) { /* equal CplDs (the last may be shorter): one UDP_SEGMENT send */
          int eq = 1;
          for (int d = 1; d < nd - 1; d++) eq &= siov[d].iov_len == siov[0].iov_len;
          eq &= siov[nd - 1].iov_len <= siov[0].iov_len && (nd == 2 || siov[1].iov_len == siov[0].iov_len);
          if (eq) {
            char ctl[CMSG_SPACE(sizeof(uint16_t))] = {0};
            struct msghdr h = {.msg_name = &from[j], .msg_namelen = sizeof from[j], .msg_iov = siov, .msg_iovlen = nd,
                               .msg_control = ctl, .msg_controllen = sizeof ctl};
            struct cmsghdr *c = CMSG_FIRSTHDR(&h);
            c->cmsg_level = IPPROTO_UDP;
            c->cmsg_type = 103; /* UDP_SEGMENT */
            c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
            uint16_t seg = siov[0].iov_len;
            memcpy(CMSG_DATA(c), &seg, sizeof seg);
            if (sendmsg(fds[t], &h, 0) >= 0) {
              completions += nd;
              continue;
            }
          }
        }
        for (int d = 0; d < nd; d++) {
          memset(&sm[d].msg_hdr, 0, sizeof sm[d].msg_hdr);
          sm[d].msg_hdr.msg_iov = &siov[d]; sm[d].msg_hdr.msg_iovlen = 1;
          sm[d].msg_hdr.msg_name = &from[j]; sm[d].msg_hdr.msg_namelen = sizeof from[j];
        }
        for (int sent = 0; sent < nd;) {
          int r = sendmmsg(fds[t], sm + sent, nd - sent, 0);
          if (r <= 0) break;
          sent += r;
        }
        completions += nd;
      }
    }
  }
  double s = (now_us() - start) / 1e6;
  printf("{\"mode\":\"serve\",\"seconds\":%.3f,\"requests\":%ld,\"completions\":%ld,\"cpu_s\":%.3f}\n", s, requests, completions, cpu_s());
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s latency|throughput|serve --host IP --port-base P [...]\n", argv[0]);
    return 2;
  }
  if (!strcmp(argv[1], "serve")) return serve(argc, argv);
  const char *host = arg(argc, argv, "--host", "127.0.0.2");
  const char *local = arg(argc, argv, "--local", "127.0.0.1");
  int pb = atoi(arg(argc, argv, "--port-base", "12288"));
  uint64_t span = strtoull(arg(argc, argv, "--span", "268435456"), 0, 0);
  uint8_t tx[64], rx[4200];

  if (!strcmp(argv[1], "latency")) {
    int n = atoi(arg(argc, argv, "--n", "20000"));
    int size = atoi(arg(argc, argv, "--size", "4"));
    uint64_t addr = strtoull(arg(argc, argv, "--addr", "0"), 0, 0);
    int fd = open_tag(local, host, pb);
    double *lat = malloc(sizeof(double) * n);
    static struct req r;
    int timeouts = 0;
    for (int i = -100; i < n; i++) { /* 100 warm-up reads */
      r.addr = addr;
      r.len = size;
      r.received = 0;
      int dl = encode_mrd(tx, r.addr, size, 0);
      double t0 = now_us();
      send(fd, tx, dl, 0);
      for (;;) {
        struct timeval tv = {0, TIMEOUT_MS * 1000};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        ssize_t k = recv(fd, rx, sizeof rx, 0);
        if (k < 0) { timeouts++; r.received = 0; send(fd, tx, dl, 0); continue; }
        if (on_cpl(&r, rx, (int)k, 0) == 1) break;
      }
      if (i >= 0) lat[i] = now_us() - t0;
      addr = (addr + 4096 * 7 + 64) % (span - 4096);
    }
    qsort(lat, n, sizeof(double), cmp_d);
    printf("{\"mode\":\"latency\",\"n\":%d,\"size\":%d,\"median_us\":%.2f,\"p99_us\":%.2f,\"min_us\":%.2f,\"timeouts\":%d,\"cpu_s\":%.3f}\n",
           n, size, lat[n / 2], lat[(int)(n * 0.99)], lat[0], timeouts, cpu_s());
    return 0;
  }

  if (!strcmp(argv[1], "throughput")) {
    int tags = atoi(arg(argc, argv, "--tags", "16"));
    int mrrs = atoi(arg(argc, argv, "--mrrs", "512"));
    uint64_t total = strtoull(arg(argc, argv, "--bytes", "268435456"), 0, 0);
    if (tags < 1 || tags > MAXTAGS || mrrs < 4 || mrrs > 4096) { fprintf(stderr, "bad tags/mrrs\n"); return 2; }
    int ep = epoll_create1(0);
    int fds[MAXTAGS];
    static struct req reqs[MAXTAGS];
    uint64_t next = 0, done = 0, issued = 0;
    long datagrams = 0, timeouts = 0, requests = 0;
    for (int t = 0; t < tags; t++) {
      fds[t] = open_tag(local, host, pb + t);
      struct epoll_event ev = {.events = EPOLLIN, .data.u32 = t};
      epoll_ctl(ep, EPOLL_CTL_ADD, fds[t], &ev);
    }
    double t0 = now_us();
    for (int t = 0; t < tags && issued < total; t++) {
      struct req *r = &reqs[t];
      r->addr = next; r->len = mrrs; r->received = 0; r->busy = 1; r->sent = now_us();
      next = (next + mrrs) % span; issued += mrrs;
      send(fds[t], tx, encode_mrd(tx, r->addr, mrrs, t), 0);
      requests++;
    }
    struct epoll_event evs[MAXTAGS];
    while (done < total) {
      int k = epoll_wait(ep, evs, MAXTAGS, 50);
      if (k <= 0) { /* resend anything overdue (loopback should not lose) */
        double now = now_us();
        for (int t = 0; t < tags; t++) {
          struct req *r = &reqs[t];
          if (r->busy && now - r->sent > TIMEOUT_MS * 1000.0) {
            timeouts++; r->received = 0; r->sent = now;
            send(fds[t], tx, encode_mrd(tx, r->addr, r->len, t), 0);
          }
        }
        continue;
      }
      for (int i = 0; i < k; i++) {
        int t = evs[i].data.u32;
        struct req *r = &reqs[t];
        for (;;) {
          ssize_t n = recv(fds[t], rx, sizeof rx, MSG_DONTWAIT);
          if (n < 0) break;
          datagrams++;
          if (!r->busy) continue;
          if (on_cpl(r, rx, (int)n, t) != 1) continue;
          done += r->len;
          r->busy = 0;
          if (issued < total) {
            r->addr = next; r->len = mrrs; r->received = 0; r->busy = 1; r->sent = now_us();
            next = (next + mrrs) % span; issued += mrrs;
            send(fds[t], tx, encode_mrd(tx, r->addr, mrrs, t), 0);
            requests++;
          }
        }
      }
    }
    double s = (now_us() - t0) / 1e6;
    printf("{\"mode\":\"throughput\",\"tags\":%d,\"mrrs\":%d,\"bytes\":%llu,\"seconds\":%.4f,\"mb_s\":%.1f,\"reads_s\":%.0f,"
           "\"datagrams_s\":%.0f,\"timeouts\":%ld,\"cpu_s\":%.3f}\n",
           tags, mrrs, (unsigned long long)done, s, done / 1e6 / s, requests / s, datagrams / s, timeouts, cpu_s());
    return 0;
  }
  fprintf(stderr, "unknown mode %s\n", argv[1]);
  return 2;
}
