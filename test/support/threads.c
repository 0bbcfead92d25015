/* threads N: a process of N idle threads besides its own (as a busy JVM
 * has), for the tests and the bench that aim the daemon at a target whose
 * /proc/PID/stat costs what its thread count costs (test/support/threads.ts).
 * Prints how many it made, then waits for a signal. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static void *idle(void *unused) {
  (void)unused;
  for (;;) pause();
  return NULL;
}

int main(int argc, char **argv) {
  int want = argc > 1 ? atoi(argv[1]) : 1000, made = 0;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 16384);
  for (; made < want; made++) {
    pthread_t thread;
    if (pthread_create(&thread, &attr, idle, NULL) != 0) break;
  }
  printf("%d\n", made);
  fflush(stdout);
  for (;;) pause();
}
