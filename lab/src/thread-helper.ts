/**
 * `pmi-threads`: a small static C program (pthreads) for the guest: a process whose main thread is
 * `pmi-threads` and three more threads named with `prctl(PR_SET_NAME)`, all sleeping forever. It
 * forks; the child names itself, creates the threads, waits on a barrier until every thread has
 * named itself, and only then tells the parent, which exits 0 (1 on failure, killed by SIGALRM
 * after 30 s). So /init continues only once all four threads exist with their names. Built on the
 * host with `gcc -static -pthread` and cached beside `pmi-unix`.
 */
import { buildStaticHelper } from './guest-helper.js';

/** What the helper creates (tests look these up in ground truth and memory). */
export const THREAD_HELPER = {
  /** Comm of the process (its main thread). */
  comm: 'pmi-threads',
  /** Comms of the threads it creates, in creation order. */
  threadNames: ['pmi-worker-1', 'pmi-worker-2', 'pmi-worker-3'],
} as const;

/** Seconds the parent waits for the child's threads before it gives up (exit by SIGALRM). */
const READY_TIMEOUT_S = 30;

const q = (s: string): string => JSON.stringify(s);

export const THREAD_HELPER_C = `/* pmi-threads: a process with named threads for the pmi lab; daemonizes when they are all named. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <unistd.h>

#define NWORKERS ${THREAD_HELPER.threadNames.length}
static const char *const names[NWORKERS] = { ${THREAD_HELPER.threadNames.map(q).join(', ')} };
static pthread_barrier_t named;

static void die(const char *what) { perror(what); exit(1); }

static void *worker(void *name) {
  if (prctl(PR_SET_NAME, (const char *)name, 0, 0, 0) != 0) die("prctl worker");
  pthread_barrier_wait(&named);
  for (;;) pause();
  return NULL;
}

int main(void) {
  int ready[2];
  if (pipe(ready) != 0) die("pipe");
  pid_t pid = fork();
  if (pid < 0) die("fork");
  if (pid > 0) {
    /* back to /init only once every thread exists and is named: the child writes 'R' after the
       barrier, or the pipe closes when it dies; SIGALRM bounds the wait */
    char b = 0;
    close(ready[1]);
    alarm(${READY_TIMEOUT_S});
    if (read(ready[0], &b, 1) != 1 || b != 'R') {
      fprintf(stderr, "pmi-threads: the threads did not come up\\n");
      _exit(1);
    }
    _exit(0);
  }
  close(ready[0]);
  setsid();
  if (prctl(PR_SET_NAME, ${q(THREAD_HELPER.comm)}, 0, 0, 0) != 0) die("prctl");
  if (pthread_barrier_init(&named, NULL, NWORKERS + 1) != 0) die("pthread_barrier_init");
  for (int i = 0; i < NWORKERS; i++) {
    pthread_t t;
    int e = pthread_create(&t, NULL, worker, (void *)names[i]);
    if (e != 0) {
      errno = e;
      die("pthread_create");
    }
  }
  pthread_barrier_wait(&named);
  if (write(ready[1], "R", 1) != 1) die("write");
  close(ready[1]);
  for (;;) pause();
}
`;

/** Build (or reuse from `<cacheDir>/helpers/`) the static `pmi-threads` binary (gcc, libc6-dev). */
export function buildThreadHelper(cacheDir: string): Promise<Buffer> {
  return buildStaticHelper(cacheDir, THREAD_HELPER.comm, THREAD_HELPER_C, ['-pthread']);
}
