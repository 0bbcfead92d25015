#include <arpa/inet.h>
#include <netinet/ip.h>
#include <netinet/udp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

/* flood PORT COUNT RATE SECONDS: COUNT requests to 127.0.0.1:PORT, the i-th
 * from the forged source 127.16.0.0 + i (port 1024 and up), RATE a second,
 * for at most SECONDS; prints "SENT ELAPSED". The kernel fills in the IP
 * checksum; a UDP checksum of 0 means none over IPv4. */
static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  if (argc != 5) return 2;
  int port = atoi(argv[1]);
  long count = atol(argv[2]);
  double rate = atof(argv[3]), seconds = atof(argv[4]);
  int s = socket(AF_INET, SOCK_RAW, IPPROTO_RAW);
  if (s < 0) {
    perror("socket");
    return 1;
  }
  static const char payload[] = "PIDR 1 flood 2\n";
  struct {
    struct iphdr ip;
    struct udphdr udp;
    char data[sizeof payload - 1];
  } __attribute__((packed)) p;
  memset(&p, 0, sizeof p);
  p.ip.version = 4;
  p.ip.ihl = 5;
  p.ip.ttl = 64;
  p.ip.protocol = IPPROTO_UDP;
  p.ip.tot_len = htons(sizeof p);
  p.ip.daddr = htonl(0x7f000001);
  p.udp.dest = htons((unsigned short)port);
  p.udp.len = htons(sizeof p - sizeof p.ip);
  memcpy(p.data, payload, sizeof p.data);
  struct sockaddr_in to = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001) };
  double start = now();
  long sent = 0;
  for (long i = 0; i < count && i < (1L << 20); i++) {
    if ((i & 255) == 0) {
      double elapsed = now() - start;
      if (elapsed > seconds) break;
      double ahead = i / rate - elapsed;
      if (ahead > 0) {
        struct timespec t = { (time_t)ahead, (long)((ahead - (time_t)ahead) * 1e9) };
        nanosleep(&t, NULL);
      }
    }
    p.ip.saddr = htonl(0x7f100000u + (unsigned)i);
    p.udp.source = htons((unsigned short)(1024 + i % 64000));
    if (sendto(s, &p, sizeof p, 0, (struct sockaddr *)&to, sizeof to) == (ssize_t)sizeof p) sent++;
  }
  printf("%ld %.3f\n", sent, now() - start);
  return 0;
}
