/*
 * pmiloop: the guest workload of bench/monitor/run.mjs. No libc (raw syscalls), so the static
 * binary is a few KB and goes into the guest through the lab's command channel.
 *
 *   pmiloop cpu N   N rounds of xorshift + read-modify-write in a 256 KiB buffer (ALU + memory: every
 *                   access goes through QEMU's softmmu TLB, where TCG watchpoints act)
 *   pmiloop sys N   N getppid() system calls (syscall 110: through x64_sys_call, the dispatcher)
 *
 * prints "MODE N RESULT NS": RESULT is the loop's checksum (cpu: the same on any machine — the host
 * runs this binary too; sys: N × ppid), NS the loop's time by clock_gettime(CLOCK_MONOTONIC), read
 * inside the guest around the loop only, after an untimed warm-up of N/8 rounds (page faults,
 * QEMU's translation of the loop).
 */
typedef unsigned long u64;

static long sys3(long n, long a, long b, long c) {
  long r;
  __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
  return r;
}

struct ts {
  long s, ns;
};

static u64 now_ns(void) {
  struct ts t;
  sys3(228, 1, (long)&t, 0); /* clock_gettime(CLOCK_MONOTONIC) */
  return (u64)t.s * 1000000000UL + (u64)t.ns;
}

#define BUF (1UL << 18)
static unsigned char buf[BUF];

static u64 parse(const char *s) {
  u64 v = 0;
  while (*s >= '0' && *s <= '9') v = v * 10 + (u64)(*s++ - '0');
  return v;
}

static char out[128];
static int olen;
static void puts_(const char *s) {
  while (*s) out[olen++] = *s++;
}
static void putn(u64 v) {
  char t[24];
  int n = 0;
  do t[n++] = (char)('0' + v % 10), v /= 10;
  while (v);
  while (n) out[olen++] = t[--n];
}

__attribute__((used)) void cmain(long *sp) {
  long argc = sp[0];
  char **argv = (char **)(sp + 1);
  if (argc < 3) {
    sys3(1, 2, (long)"usage: pmiloop cpu|sys N\n", 25);
    sys3(60, 2, 0, 0);
  }
  int sys = argv[1][0] == 's';
  u64 n = parse(argv[2]);
  u64 acc = 0, t0 = 0, t1;
  for (int pass = 0; pass < 2; pass++) {
    u64 m = pass ? n : n / 8;
    acc = 0;
    if (sys) {
      for (u64 i = 0; i < m; i++) acc += (u64)sys3(110, 0, 0, 0);
    } else {
      u64 x = 88172645463325252UL;
      for (u64 i = 0; i < m; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        u64 j = x & (BUF - 1);
        buf[j] = (unsigned char)(buf[j] + (unsigned char)x);
        acc += buf[(j * 7 + 64) & (BUF - 1)];
      }
    }
    if (!pass) t0 = now_ns();
  }
  t1 = now_ns();
  puts_(sys ? "sys " : "cpu ");
  putn(n);
  puts_(" ");
  putn(acc);
  puts_(" ");
  putn(t1 - t0);
  puts_("\n");
  sys3(1, 1, (long)out, olen);
  sys3(60, 0, 0, 0);
}

__asm__(".global _start\n_start:\n  mov %rsp, %rdi\n  and $-16, %rsp\n  call cmain\n  hlt\n");
