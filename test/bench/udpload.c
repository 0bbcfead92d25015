/* udpload: closed-loop UDP load generator for the pidstatd wire protocol.
 * usage: udpload HOST PORT SECONDS WINDOW PID [SOCKETS]
 * Keeps WINDOW requests outstanding per socket; prints
 *   sent=N replies=N rate=R/s exis=N unkn=N other=N
 * Requests are "PIDR <pid> <host> 3\n" (return exist + doesnt).
 *
 * Copied from /work/shared/tools/udpload.c for the bench. One change: when
 * the environment variable UDPLOAD_MESSAGE is set, its bytes are the request
 * sent, exactly as given (a keyed request, say, which this program cannot
 * sign itself); PID is then unused. Replies are classified by their first
 * word as before, so a keyed "EXIS <pid> 1 <host> - <id>:<mac>" counts as
 * exis. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }

int main(int argc, char **argv) {
  if (argc < 6) { fprintf(stderr, "usage: udpload HOST PORT SECONDS WINDOW PID [SOCKETS]\n"); return 2; }
  const char *host = argv[1]; int port = atoi(argv[2]); double secs = atof(argv[3]);
  int window = atoi(argv[4]); const char *pid = argv[5]; int nsock = argc > 6 ? atoi(argv[6]) : 1;
  struct addrinfo hints = {0}, *ai; hints.ai_socktype = SOCK_DGRAM;
  char ps[16]; snprintf(ps, sizeof ps, "%d", port);
  if (getaddrinfo(host, ps, &hints, &ai)) { fprintf(stderr, "resolve failed\n"); return 2; }
  char msg[256]; int len = snprintf(msg, sizeof msg, "PIDR %s %s 3\n", pid, host);
  const char *given = getenv("UDPLOAD_MESSAGE");
  if (given != NULL) {
    size_t n = strlen(given);
    if (n == 0 || n >= sizeof msg) { fprintf(stderr, "UDPLOAD_MESSAGE must be 1 to %zu bytes\n", sizeof msg - 1); return 2; }
    memcpy(msg, given, n + 1); len = (int)n;
  }
  int *fd = calloc(nsock, sizeof(int)); struct pollfd *pf = calloc(nsock, sizeof *pf);
  for (int i = 0; i < nsock; i++) {
    fd[i] = socket(ai->ai_family, SOCK_DGRAM, 0);
    int big = 4 << 20; setsockopt(fd[i], SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    if (connect(fd[i], ai->ai_addr, ai->ai_addrlen)) { perror("connect"); return 2; }
    pf[i].fd = fd[i]; pf[i].events = POLLIN;
  }
  long sent = 0, replies = 0, exis = 0, unkn = 0, other = 0;
  double t0 = now(), end = t0 + secs, last = t0;
  for (int i = 0; i < nsock; i++) for (int w = 0; w < window; w++) if (send(fd[i], msg, len, 0) > 0) sent++;
  char buf[2048];
  while (now() < end) {
    int n = poll(pf, nsock, 20);
    if (n == 0 || now() - last > 0.02) { /* top up after loss */
      for (int i = 0; i < nsock; i++) for (int w = 0; w < window; w++) if (send(fd[i], msg, len, 0) > 0) sent++;
      last = now(); if (n == 0) continue;
    }
    for (int i = 0; i < nsock; i++) {
      if (!(pf[i].revents & POLLIN)) continue;
      for (;;) {
        ssize_t r = recv(fd[i], buf, sizeof buf - 1, MSG_DONTWAIT);
        if (r <= 0) break;
        buf[r] = 0; replies++; last = now();
        if (!strncmp(buf, "EXIS ", 5)) exis++; else if (!strncmp(buf, "UNKN ", 5)) unkn++; else other++;
        if (send(fd[i], msg, len, 0) > 0) sent++;
      }
    }
  }
  double el = now() - t0;
  printf("sent=%ld replies=%ld rate=%.0f/s exis=%ld unkn=%ld other=%ld\n", sent, replies, replies / el, exis, unkn, other);
  return 0;
}
