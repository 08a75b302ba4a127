/*
 * nettlp_io: optional batched UDP I/O for the NetTLP software adapter (Linux, Node-API).
 *
 * Owns N non-blocking UDP sockets bound to IP:portBase+i, registered in one epoll set whose fd
 * is watched by a libuv poll handle on Node's loop. When it becomes readable: epoll_wait(0), then
 * recvmmsg() on every ready socket into a shared receive area, and ONE call into JS for the whole
 * batch (instead of one 'message' event, one Buffer and one rinfo object per datagram). JS writes
 * the replies into a shared send area and calls flush(n): consecutive replies on the same socket go
 * out with one sendmmsg(). All buffers belong to JS (ArrayBuffers handed over at open()), so the
 * hot path allocates nothing on either side.
 *
 * The client (nettlp:// with io=native) uses the same handle with connected sockets (open's
 * optional 10th argument), a zero destination in tx metadata (= the connected peer), and poll() to
 * busy-wait a few microseconds for completions instead of sleeping in the event loop.
 *
 * Layout (Uint32 metadata, 4 words per datagram):
 *   rx: [socket index, length, IPv4 address (host order), port]      data at slot i * slotSize
 *   tx: [socket index, length, IPv4 address (host order), port]      data at slot i * slotSize
 */
#define _GNU_SOURCE
#define NAPI_VERSION 8
#include <errno.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <arpa/inet.h>
#include <node_api.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#define MAX_SOCKETS 256
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif
/* UDP GSO: at most this many equal datagrams per send (the kernel's limit is 64 or more), and bytes. */
#define GSO_MAX_SEGS 64
#define GSO_MAX_BYTES 60000
/* UDP GRO receive: coalesced buffers per recvmmsg and their size (a GSO send is at most ~64 KiB). */
#define GRO_MSGS 16
#define GRO_BUF 65536
/* Busy-waiting: this many empty waits in a row pause it for this long (µs). */
#define SPIN_MISS_LIMIT 4
#define SPIN_PAUSE_US 200e3

typedef struct {
  napi_env env;
  uv_poll_t poll;
  int epfd;
  int nfds;
  int fds[MAX_SOCKETS];
  napi_ref on_batch;
  napi_ref rx_ref, rx_meta_ref, tx_ref, tx_meta_ref;
  uint8_t *rx, *tx;
  uint32_t *rx_meta, *tx_meta;
  uint32_t rx_slots, tx_slots, slot_size;
  struct mmsghdr *rmsgs, *smsgs;
  struct iovec *riov, *siov;
  struct sockaddr_in *raddr, *saddr;
  int started, closing;
  /* gso: send runs of equal completions to one peer as one UDP_SEGMENT send (cleared if the kernel
   * refuses). gro: client sockets take coalesced receives, split here into rx slots. */
  int gso, gro;
  uint8_t *gro_buf;
  struct mmsghdr gro_msgs[GRO_MSGS];
  struct iovec gro_iov[GRO_MSGS];
  struct sockaddr_in gro_addr[GRO_MSGS];
  char gro_ctl[GRO_MSGS][CMSG_SPACE(sizeof(int))];
  double gso_sends, gro_segments;
  /* Busy-wait after a batch (µs; 0 = off), and its back-off when waits keep finding nothing. */
  double spin_us, spin_paused_until;
  int spin_misses;
  napi_ref close_cb;
  double rx_calls, tx_calls, send_errors, recv_errors;
} io_t;

#define CHECK(call)                                                      \
  do {                                                                   \
    if ((call) != napi_ok) {                                             \
      napi_throw_error(env, NULL, "nettlp_io: Node-API call failed");    \
      return NULL;                                                       \
    }                                                                    \
  } while (0)

static napi_value throw_errno(napi_env env, const char *what, int err) {
  napi_value msg, code, e;
  char buf[256];
  snprintf(buf, sizeof buf, "%s: %s", what, strerror(err));
  napi_create_string_utf8(env, buf, NAPI_AUTO_LENGTH, &msg);
  const char *name = err == EADDRINUSE ? "EADDRINUSE" : err == EADDRNOTAVAIL ? "EADDRNOTAVAIL" : err == EACCES ? "EACCES" : "EIO";
  napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &code);
  napi_create_error(env, code, msg, &e);
  napi_set_named_property(env, e, "code", code);
  napi_throw(env, e);
  return NULL;
}

static void *ab_data(napi_env env, napi_value v, size_t *len) {
  void *data = NULL;
  bool is_ab = false;
  napi_is_arraybuffer(env, v, &is_ab);
  if (!is_ab) return NULL;
  napi_get_arraybuffer_info(env, v, &data, len);
  return data;
}

static void close_fds(io_t *io) {
  for (int i = 0; i < io->nfds; i++)
    if (io->fds[i] >= 0) close(io->fds[i]);
  io->nfds = 0;
  if (io->epfd >= 0) close(io->epfd);
  io->epfd = -1;
}

/* The handle and the message arrays it owns (the data areas belong to JS). */
static void free_io(io_t *io) {
  free(io->rmsgs);
  free(io->smsgs);
  free(io->riov);
  free(io->siov);
  free(io->raddr);
  free(io->saddr);
  free(io->gro_buf);
  free(io);
}

static void finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  io_t *io = data;
  if (!io->started) {
    close_fds(io);
    free_io(io);
  }
  /* else: a started handle is freed by its close callback (JS must call close()). */
}

static struct sockaddr_in inet_sockaddr(struct in_addr a, int port) {
  struct sockaddr_in sa = {0};
  sa.sin_family = AF_INET;
  sa.sin_addr = a;
  sa.sin_port = htons((uint16_t)port);
  return sa;
}

/* bind/connect failed: close what was opened, throw naming the address ("bind 127.0.0.1:12288: …"). */
static napi_value socket_failure(napi_env env, io_t *io, const char *verb, const char *ip, int port) {
  int e = errno;
  close_fds(io);
  char what[96];
  snprintf(what, sizeof what, "%s %s:%d", verb, ip, port);
  return throw_errno(env, what, e);
}

/* open(ip: string, portBase, count, rcvbuf, rx: ArrayBuffer, rxMeta: ArrayBuffer, tx, txMeta, slotSize
 *      [, connectIp: string]) — with connectIp, socket i is connected to connectIp:portBase+i. */
static napi_value io_open(napi_env env, napi_callback_info info) {
  size_t argc = 10;
  napi_value argv[10];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 9) {
    napi_throw_type_error(env, NULL, "nettlp_io.open: 9 arguments expected");
    return NULL;
  }
  char ip[64];
  size_t iplen;
  CHECK(napi_get_value_string_utf8(env, argv[0], ip, sizeof ip, &iplen));
  int32_t port_base, count, rcvbuf, slot_size;
  CHECK(napi_get_value_int32(env, argv[1], &port_base));
  CHECK(napi_get_value_int32(env, argv[2], &count));
  CHECK(napi_get_value_int32(env, argv[3], &rcvbuf));
  CHECK(napi_get_value_int32(env, argv[8], &slot_size));
  struct in_addr addr, peer;
  int do_connect = 0;
  char peer_ip[64] = "";
  if (argc >= 10) {
    napi_valuetype t;
    CHECK(napi_typeof(env, argv[9], &t));
    if (t == napi_string) {
      size_t plen;
      CHECK(napi_get_value_string_utf8(env, argv[9], peer_ip, sizeof peer_ip, &plen));
      if (inet_pton(AF_INET, peer_ip, &peer) != 1) {
        napi_throw_type_error(env, NULL, "nettlp_io.open: bad connect address");
        return NULL;
      }
      do_connect = 1;
    }
  }
  if (inet_pton(AF_INET, ip, &addr) != 1 || count < 1 || count > MAX_SOCKETS || slot_size < 64) {
    napi_throw_type_error(env, NULL, "nettlp_io.open: bad arguments");
    return NULL;
  }
  size_t rxl, rxml, txl, txml;
  uint8_t *rx = ab_data(env, argv[4], &rxl), *tx = ab_data(env, argv[6], &txl);
  uint32_t *rxm = ab_data(env, argv[5], &rxml), *txm = ab_data(env, argv[7], &txml);
  if (!rx || !tx || !rxm || !txm) {
    napi_throw_type_error(env, NULL, "nettlp_io.open: ArrayBuffers expected");
    return NULL;
  }
  io_t *io = calloc(1, sizeof *io);
  io->env = env;
  io->epfd = -1;
  io->rx = rx;
  io->tx = tx;
  io->rx_meta = rxm;
  io->tx_meta = txm;
  io->slot_size = slot_size;
  io->rx_slots = rxl / slot_size;
  if (rxml / 16 < io->rx_slots) io->rx_slots = rxml / 16;
  io->tx_slots = txl / slot_size;
  if (txml / 16 < io->tx_slots) io->tx_slots = txml / 16;
  /* PMI_NETTLP_GSO=0: no GSO sends and no GRO receives (for comparisons). */
  const char *gso_env = getenv("PMI_NETTLP_GSO");
  int gso_ok = !(gso_env && gso_env[0] == '0');
  io->gso = gso_ok;
  io->rmsgs = calloc(io->rx_slots, sizeof(struct mmsghdr));
  io->riov = calloc(io->rx_slots, sizeof(struct iovec));
  io->raddr = calloc(io->rx_slots, sizeof(struct sockaddr_in));
  io->smsgs = calloc(io->tx_slots, sizeof(struct mmsghdr));
  io->siov = calloc(io->tx_slots, sizeof(struct iovec));
  io->saddr = calloc(io->tx_slots, sizeof(struct sockaddr_in));
  napi_create_reference(env, argv[4], 1, &io->rx_ref);
  napi_create_reference(env, argv[5], 1, &io->rx_meta_ref);
  napi_create_reference(env, argv[6], 1, &io->tx_ref);
  napi_create_reference(env, argv[7], 1, &io->tx_meta_ref);
  napi_value handle;
  CHECK(napi_create_object(env, &handle));
  CHECK(napi_wrap(env, handle, io, finalize, NULL, NULL));

  io->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (io->epfd < 0) return throw_errno(env, "epoll_create1", errno);
  for (int i = 0; i < count; i++) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      int e = errno;
      close_fds(io);
      return throw_errno(env, "socket", e);
    }
    io->fds[io->nfds++] = fd;
    if (rcvbuf > 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct sockaddr_in sa = inet_sockaddr(addr, port_base + i);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) return socket_failure(env, io, "bind", ip, port_base + i);
    if (do_connect) {
      struct sockaddr_in pa = inet_sockaddr(peer, port_base + i);
      if (connect(fd, (struct sockaddr *)&pa, sizeof pa) < 0)
        return socket_failure(env, io, "connect", peer_ip, port_base + i);
      /* Completions of one request sent as one GSO burst arrive as one buffer (split in receive_gro). */
      int one = 1;
      if (gso_ok && setsockopt(fd, IPPROTO_UDP, UDP_GRO, &one, sizeof one) == 0 && !io->gro_buf) {
        io->gro_buf = malloc((size_t)GRO_MSGS * GRO_BUF);
        io->gro = io->gro_buf != NULL;
      }
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
    if (epoll_ctl(io->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
      int e = errno;
      close_fds(io);
      return throw_errno(env, "epoll_ctl", e);
    }
  }
  return handle;
}

static io_t *unwrap(napi_env env, napi_value v) {
  io_t *io = NULL;
  if (napi_unwrap(env, v, (void **)&io) != napi_ok || !io) {
    napi_throw_type_error(env, NULL, "nettlp_io: not a handle");
    return NULL;
  }
  return io;
}

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

/* GRO sockets: receive coalesced buffers and split them into rx slots at the segment size the
 * kernel reports (each segment is one datagram as sent). Only takes as many buffers as the free
 * slots can hold in the worst case. Returns the slots filled. */
static uint32_t receive_gro(io_t *io, uint32_t idx, uint32_t n) {
  uint32_t start = n;
  for (;;) {
    uint32_t room = io->rx_slots - n;
    uint32_t vlen = room / GSO_MAX_SEGS;
    if (vlen == 0) break;
    if (vlen > GRO_MSGS) vlen = GRO_MSGS;
    for (uint32_t j = 0; j < vlen; j++) {
      io->gro_iov[j].iov_base = io->gro_buf + (size_t)j * GRO_BUF;
      io->gro_iov[j].iov_len = GRO_BUF;
      struct msghdr *h = &io->gro_msgs[j].msg_hdr;
      memset(h, 0, sizeof *h);
      h->msg_iov = &io->gro_iov[j];
      h->msg_iovlen = 1;
      h->msg_name = &io->gro_addr[j];
      h->msg_namelen = sizeof(struct sockaddr_in);
      h->msg_control = io->gro_ctl[j];
      h->msg_controllen = sizeof io->gro_ctl[j];
    }
    int got = recvmmsg(io->fds[idx], io->gro_msgs, vlen, MSG_DONTWAIT, NULL);
    if (got <= 0) {
      if (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK) io->recv_errors++;
      break;
    }
    for (int j = 0; j < got; j++) {
      struct msghdr *h = &io->gro_msgs[j].msg_hdr;
      uint32_t len = io->gro_msgs[j].msg_len;
      uint32_t seg = len;
      for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c; c = CMSG_NXTHDR(h, c))
        if (c->cmsg_level == IPPROTO_UDP && c->cmsg_type == UDP_GRO) {
          int v;
          memcpy(&v, CMSG_DATA(c), sizeof v);
          if (v > 0) seg = (uint32_t)v;
        }
      const uint8_t *b = io->gro_buf + (size_t)j * GRO_BUF;
      for (uint32_t off = 0; off < len && n < io->rx_slots; off += seg) {
        uint32_t dl = len - off < seg ? len - off : seg;
        uint32_t *m = io->rx_meta + (size_t)n * 4;
        m[0] = idx;
        m[1] = dl <= io->slot_size ? dl : io->slot_size + 1; /* too long: JS drops it */
        m[2] = ntohl(io->gro_addr[j].sin_addr.s_addr);
        m[3] = ntohs(io->gro_addr[j].sin_port);
        memcpy(io->rx + (size_t)n * io->slot_size, b + off, dl <= io->slot_size ? dl : io->slot_size);
        n++;
        if (seg != len) io->gro_segments++;
      }
      if (h->msg_flags & MSG_TRUNC) io->recv_errors++;
    }
    if ((uint32_t)got < vlen) break;
  }
  return n - start;
}

/* Drain ready sockets into the rx area; returns the number of datagrams received. */
static uint32_t receive_batch(io_t *io) {
  struct epoll_event evs[MAX_SOCKETS];
  uint32_t n = 0;
  int k = epoll_wait(io->epfd, evs, MAX_SOCKETS, 0);
  for (int i = 0; i < k && n < io->rx_slots; i++) {
    uint32_t idx = evs[i].data.u32;
    if (io->gro) {
      n += receive_gro(io, idx, n);
      continue;
    }
    uint32_t room = io->rx_slots - n;
    for (uint32_t j = 0; j < room; j++) {
      io->riov[n + j].iov_base = io->rx + (size_t)(n + j) * io->slot_size;
      io->riov[n + j].iov_len = io->slot_size;
      struct msghdr *h = &io->rmsgs[n + j].msg_hdr;
      memset(h, 0, sizeof *h);
      h->msg_iov = &io->riov[n + j];
      h->msg_iovlen = 1;
      h->msg_name = &io->raddr[n + j];
      h->msg_namelen = sizeof(struct sockaddr_in);
    }
    int got = recvmmsg(io->fds[idx], &io->rmsgs[n], room, MSG_DONTWAIT, NULL);
    if (got < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK) io->recv_errors++;
      continue;
    }
    for (int j = 0; j < got; j++) {
      uint32_t *m = io->rx_meta + (size_t)(n + j) * 4;
      m[0] = idx;
      m[1] = io->rmsgs[n + j].msg_len;
      m[2] = ntohl(io->raddr[n + j].sin_addr.s_addr);
      m[3] = ntohs(io->raddr[n + j].sin_port);
      if (io->rmsgs[n + j].msg_hdr.msg_flags & MSG_TRUNC) m[1] = io->slot_size + 1; /* JS drops it as too long */
    }
    n += got;
  }
  return n;
}

/* Busy-wait up to us µs for datagrams. Returns how many arrived, 0 when the wait found nothing, or
 * -1 without waiting while waits are paused: SPIN_MISS_LIMIT empty waits in a row (an idle peer, or a
 * peer in this process that cannot run while we spin) pause them for SPIN_PAUSE_US. One mechanism for
 * the adapter's wait after a batch (setSpin) and the client's wait after a burst (poll). */
static int spin_receive(io_t *io, double us) {
  double t = now_us();
  if (t < io->spin_paused_until) return -1;
  double until = t + us;
  uint32_t n;
  do n = receive_batch(io);
  while (n == 0 && now_us() < until);
  if (n > 0) {
    io->spin_misses = 0;
    return (int)n;
  }
  if (++io->spin_misses >= SPIN_MISS_LIMIT) {
    io->spin_misses = 0;
    io->spin_paused_until = now_us() + SPIN_PAUSE_US;
  }
  return 0;
}

static void on_readable(uv_poll_t *p, int status, int events) {
  (void)events;
  io_t *io = p->data;
  if (io->closing || status < 0) return;
  napi_env env = io->env;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  napi_value cb, global, arg, result;
  napi_get_reference_value(env, io->on_batch, &cb);
  napi_get_global(env, &global);
  /* Rounds of receive + one JS call, then back to the loop (timers, other I/O). With spin_us set, an
   * empty round busy-waits that long for the next datagram instead of going back to sleep in
   * epoll: the peer's next request usually comes within microseconds, and sleeping costs a
   * context switch on each side (the dominant cost on loopback); see spin_receive. */
  int max_rounds = io->spin_us > 0 ? 64 : 8;
  for (int round = 0; round < max_rounds && !io->closing; round++) {
    uint32_t n = receive_batch(io);
    if (n == 0 && io->spin_us > 0) {
      int got = spin_receive(io, io->spin_us);
      n = got > 0 ? (uint32_t)got : 0;
    }
    if (n == 0) break;
    io->rx_calls++;
    napi_create_uint32(env, n, &arg);
    napi_status st = napi_make_callback(env, NULL, global, cb, 1, &arg, &result);
    if (st == napi_pending_exception) {
      napi_value exc;
      napi_get_and_clear_last_exception(env, &exc);
      napi_fatal_exception(env, exc);
      break;
    }
  }
  napi_close_handle_scope(env, scope);
}

/* start(handle, onBatch(n) [, unref]) — unref: the poll handle does not keep the process alive. */
static napi_value io_start(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  io_t *io = unwrap(env, argv[0]);
  if (!io) return NULL;
  if (io->started || io->epfd < 0) {
    napi_throw_error(env, NULL, "nettlp_io.start: already started or closed");
    return NULL;
  }
  uv_loop_t *loop;
  CHECK(napi_get_uv_event_loop(env, &loop));
  CHECK(napi_create_reference(env, argv[1], 1, &io->on_batch));
  if (uv_poll_init(loop, &io->poll, io->epfd) != 0) {
    napi_throw_error(env, NULL, "nettlp_io.start: uv_poll_init failed");
    return NULL;
  }
  io->poll.data = io;
  io->started = 1;
  uv_poll_start(&io->poll, UV_READABLE, on_readable);
  bool unref = false;
  if (argc >= 3) napi_get_value_bool(env, argv[2], &unref);
  if (unref) uv_unref((uv_handle_t *)&io->poll);
  return NULL;
}

/* poll(handle, spinUs): receive into the rx area without the event loop, busy-waiting up to spinUs
 * microseconds for the first datagram (spin_receive; spinUs 0 = just look). Returns the number
 * received, 0 = none yet, -1 = busy-waiting is paused (nothing was tried). The caller must have
 * consumed the previous batch: this reuses the rx area. */
static napi_value io_poll(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  io_t *io = unwrap(env, argv[0]);
  if (!io) return NULL;
  double spin;
  CHECK(napi_get_value_double(env, argv[1], &spin));
  int n = 0;
  if (io->epfd >= 0 && !io->closing) {
    n = spin > 0 ? spin_receive(io, spin) : (int)receive_batch(io);
    if (n > 0) io->rx_calls++;
  }
  napi_value r;
  CHECK(napi_create_int32(env, n, &r));
  return r;
}

/* End (exclusive) of the GSO group starting at k in [k, j): same peer, equal lengths (the last may be
 * shorter), bounded count and bytes. A group of 1 means "send it plainly". */
static uint32_t gso_group_end(io_t *io, uint32_t k, uint32_t j) {
  const uint32_t *mk = io->tx_meta + (size_t)k * 4;
  uint32_t len = mk[1], total = mk[1], g = k + 1;
  while (g < j && g - k < GSO_MAX_SEGS) {
    const uint32_t *mg = io->tx_meta + (size_t)g * 4;
    if (mg[2] != mk[2] || mg[3] != mk[3] || mg[1] > len || total + mg[1] > GSO_MAX_BYTES) break;
    total += mg[1];
    g++;
    if (mg[1] < len) break; /* a shorter datagram can only end a group */
  }
  return g;
}

static int wait_writable(int fd, int *stalls) {
  if ((errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOBUFS) || *stalls >= 4) return 0;
  struct pollfd pf = {.fd = fd, .events = POLLOUT};
  poll(&pf, 1, 1); /* send queue full: wait a moment, as a blocking send would */
  (*stalls)++;
  return 1;
}

/* One UDP_SEGMENT send of tx slots [k, g). 0 = sent, -1 = the kernel does not support it (nothing
 * sent), 1 = another error (nothing sent). */
static int send_gso(io_t *io, int fd, uint32_t k, uint32_t g) {
  char ctl[CMSG_SPACE(sizeof(uint16_t))];
  memset(ctl, 0, sizeof ctl);
  struct msghdr h;
  memset(&h, 0, sizeof h);
  h.msg_iov = &io->siov[k];
  h.msg_iovlen = g - k;
  h.msg_name = io->smsgs[k].msg_hdr.msg_name;
  h.msg_namelen = io->smsgs[k].msg_hdr.msg_namelen;
  h.msg_control = ctl;
  h.msg_controllen = sizeof ctl;
  struct cmsghdr *c = CMSG_FIRSTHDR(&h);
  c->cmsg_level = IPPROTO_UDP; /* = SOL_UDP */
  c->cmsg_type = UDP_SEGMENT;
  c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
  uint16_t seg = (uint16_t)io->siov[k].iov_len;
  memcpy(CMSG_DATA(c), &seg, sizeof seg);
  int stalls = 0;
  for (;;) {
    ssize_t r = sendmsg(fd, &h, MSG_DONTWAIT);
    io->tx_calls++;
    if (r >= 0) {
      io->gso_sends++;
      return 0;
    }
    if (errno == EINVAL || errno == EIO || errno == ENOPROTOOPT || errno == EOPNOTSUPP) return -1;
    if (!wait_writable(fd, &stalls)) return 1;
  }
}

/* sendmmsg of tx slots [i, e); returns how many the kernel refused. */
static uint32_t send_plain(io_t *io, int fd, uint32_t i, uint32_t e) {
  uint32_t failed = 0;
  int stalls = 0;
  while (i < e) {
    int sent = sendmmsg(fd, &io->smsgs[i], e - i, MSG_DONTWAIT);
    io->tx_calls++;
    if (sent < 0) {
      if (wait_writable(fd, &stalls)) continue;
      /* e.g. ECONNREFUSED from an ICMP error queued by an earlier datagram: skip this one */
      failed++;
      io->send_errors++;
      i++;
      continue;
    }
    i += sent;
  }
  return failed;
}

/* flush(handle, n): send tx slots 0..n-1; returns the number the kernel refused. */
static napi_value io_flush(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  io_t *io = unwrap(env, argv[0]);
  if (!io) return NULL;
  uint32_t n;
  CHECK(napi_get_value_uint32(env, argv[1], &n));
  if (n > io->tx_slots) n = io->tx_slots;
  uint32_t failed = 0;
  if (io->epfd >= 0) {
    for (uint32_t i = 0; i < n; i++) {
      uint32_t *m = io->tx_meta + (size_t)i * 4;
      io->siov[i].iov_base = io->tx + (size_t)i * io->slot_size;
      io->siov[i].iov_len = m[1] <= io->slot_size ? m[1] : io->slot_size;
      io->saddr[i].sin_family = AF_INET;
      io->saddr[i].sin_addr.s_addr = htonl(m[2]);
      io->saddr[i].sin_port = htons((uint16_t)m[3]);
      struct msghdr *h = &io->smsgs[i].msg_hdr;
      memset(h, 0, sizeof *h);
      h->msg_iov = &io->siov[i];
      h->msg_iovlen = 1;
      if (m[2] != 0 || m[3] != 0) { /* else: the connected peer */
        h->msg_name = &io->saddr[i];
        h->msg_namelen = sizeof(struct sockaddr_in);
      }
    }
    uint32_t i = 0;
    while (i < n) {
      uint32_t idx = io->tx_meta[(size_t)i * 4];
      uint32_t j = i + 1;
      while (j < n && io->tx_meta[(size_t)j * 4] == idx) j++;
      if (idx >= (uint32_t)io->nfds) {
        failed += j - i;
        i = j;
        continue;
      }
      /* Within the socket's run: groups of equal-length datagrams to one peer go out as one GSO
       * send (the kernel cuts them into the same datagrams), the rest with sendmmsg. */
      uint32_t k = i;
      while (k < j) {
        uint32_t g = io->gso ? gso_group_end(io, k, j) : k + 1;
        if (g - k >= 2) {
          int r = send_gso(io, io->fds[idx], k, g);
          if (r == 0) {
            k = g;
            continue;
          }
          if (r < 0) { /* the kernel cannot do it: plain sends from now on */
            io->gso = 0;
            g = k + 1;
          } else { /* a real send error: count it, go on */
            failed += g - k;
            io->send_errors++;
            k = g;
            continue;
          }
        }
        uint32_t e = k + 1;
        while (e < j && (!io->gso || gso_group_end(io, e, j) - e < 2)) e++;
        failed += send_plain(io, io->fds[idx], k, e);
        k = e;
      }
      i = j;
    }
  }
  napi_value r;
  CHECK(napi_create_uint32(env, failed, &r));
  return r;
}

static void on_poll_closed(uv_handle_t *h) {
  io_t *io = h->data;
  napi_env env = io->env;
  close_fds(io);
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  if (io->close_cb) {
    napi_value cb, global, result;
    napi_get_reference_value(env, io->close_cb, &cb);
    napi_get_global(env, &global);
    napi_make_callback(env, NULL, global, cb, 0, NULL, &result);
    napi_delete_reference(env, io->close_cb);
  }
  if (io->on_batch) napi_delete_reference(env, io->on_batch);
  napi_delete_reference(env, io->rx_ref);
  napi_delete_reference(env, io->rx_meta_ref);
  napi_delete_reference(env, io->tx_ref);
  napi_delete_reference(env, io->tx_meta_ref);
  napi_close_handle_scope(env, scope);
  free_io(io);
}

/* close(handle, cb): stop polling, close the sockets, then cb(). Idempotent from JS's side. */
static napi_value io_close(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  io_t *io = NULL;
  if (napi_remove_wrap(env, argv[0], (void **)&io) != napi_ok || !io) return NULL; /* already closed */
  io->closing = 1;
  if (!io->started) {
    close_fds(io);
    napi_value global, result;
    napi_get_global(env, &global);
    napi_delete_reference(env, io->rx_ref);
    napi_delete_reference(env, io->rx_meta_ref);
    napi_delete_reference(env, io->tx_ref);
    napi_delete_reference(env, io->tx_meta_ref);
    free_io(io);
    napi_call_function(env, global, argv[1], 0, NULL, &result);
    return NULL;
  }
  napi_create_reference(env, argv[1], 1, &io->close_cb);
  uv_poll_stop(&io->poll);
  uv_close((uv_handle_t *)&io->poll, on_poll_closed);
  return NULL;
}

/* setSpin(handle, us): busy-wait up to us µs after each batch before sleeping (0 = never). */
static napi_value io_set_spin(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  io_t *io = unwrap(env, argv[0]);
  if (!io) return NULL;
  double us;
  CHECK(napi_get_value_double(env, argv[1], &us));
  io->spin_us = us > 0 ? (us < 10000 ? us : 10000) : 0;
  return NULL;
}

/* stats(handle) -> [rxCalls, txCalls, sendErrors, recvErrors, gsoSends, groSegments] */
static napi_value io_stats(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  io_t *io = NULL;
  napi_value arr, v;
  CHECK(napi_create_array_with_length(env, 6, &arr));
  if (napi_unwrap(env, argv[0], (void **)&io) != napi_ok || !io) return arr;
  double vals[6] = {io->rx_calls, io->tx_calls, io->send_errors, io->recv_errors, io->gso_sends, io->gro_segments};
  for (uint32_t i = 0; i < 6; i++) {
    napi_create_double(env, vals[i], &v);
    napi_set_element(env, arr, i, v);
  }
  return arr;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"open", NULL, io_open, NULL, NULL, NULL, napi_default, NULL},
      {"start", NULL, io_start, NULL, NULL, NULL, napi_default, NULL},
      {"flush", NULL, io_flush, NULL, NULL, NULL, napi_default, NULL},
      {"poll", NULL, io_poll, NULL, NULL, NULL, napi_default, NULL},
      {"setSpin", NULL, io_set_spin, NULL, NULL, NULL, napi_default, NULL},
      {"close", NULL, io_close, NULL, NULL, NULL, napi_default, NULL},
      {"stats", NULL, io_stats, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
