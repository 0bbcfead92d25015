import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import dgram from 'node:dgram';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { IS_ROOT, sleep, startDaemon } from './helpers.js';

/**
 * A flood from a million forged source addresses (pidstatd(8),
 * --rate): the daemon's memory stays bounded whatever the number of sources,
 * and a polite client is still answered at once. The flood is crafted on a
 * raw socket (root only) by a small C program compiled here. Every flood
 * request passes the rate limiter, a new source each, but asks for no reply
 * (flags 2 about pid 1, which lives), and the flood is paced at about half
 * of what the daemon reads on a 2-core machine: what is measured is what
 * each new source costs the daemon, not a full socket queue.
 */

const FLOODER = String.raw`
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
`;

const scratch = mkdtempSync(join(tmpdir(), 'pidstat-flood-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

/** The flooder's path, or why it cannot be had. */
function buildFlooder(): { path: string } | { why: string } {
  const source = join(scratch, 'flood.c');
  const path = join(scratch, 'flood');
  writeFileSync(source, FLOODER);
  const cc = spawnSync('cc', ['-O2', '-o', path, source], { encoding: 'utf8' });
  if (cc.error) return { why: `no C compiler: ${cc.error.message}` };
  if (cc.status !== 0) return { why: `cc failed: ${cc.stderr.trim()}` };
  return { path };
}

function rssKb(pid: number): number | undefined {
  try {
    const match = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'latin1'));
    return match ? Number(match[1]) : undefined;
  } catch {
    return undefined;
  }
}

const SOURCES = 1_000_000;
/** Well below what the daemon reads on a 2-core machine, so its queue stays short. */
const FLOOD_RATE = 100_000;
const FLOOD_SECONDS = 10;
const RSS_BOUND_KB = 80 * 1024;
const POLITE_EVERY_MS = 10;
const POLITE_WITHIN_MS = 50;

test(`a flood from ${SOURCES} forged sources: VmRSS stays under ${RSS_BOUND_KB / 1024} MB, a polite client is answered within ${POLITE_WITHIN_MS} ms`, { timeout: 40_000 }, async (t) => {
  if (!IS_ROOT) return t.skip(`forging source addresses needs a raw socket: not root (uid ${process.getuid?.()})`);
  const flooder = buildFlooder();
  if ('why' in flooder) return t.skip(flooder.why);
  const daemon = await startDaemon([]);
  const polite = dgram.createSocket('udp4');
  t.after(async () => {
    polite.close();
    await daemon.stop();
  });
  await new Promise<void>((resolve) => polite.bind(0, '127.0.0.1', resolve));
  const asked = new Map<number, number>();
  const latencies: number[] = [];
  polite.on('message', (msg) => {
    const m = /^EXIS 1 1 polite(\d+)$/.exec(msg.toString('latin1'));
    const at = m ? asked.get(Number(m[1])) : undefined;
    if (at !== undefined) latencies.push(performance.now() - at);
  });
  const rssBefore = rssKb(daemon.pid)!;

  const flood = spawn(flooder.path, [String(daemon.port), String(SOURCES), String(FLOOD_RATE), String(FLOOD_SECONDS)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  flood.stdout.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
  flood.stderr.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
  const flooded = new Promise<number | null>((resolve) => flood.on('exit', (code) => resolve(code)));
  t.after(() => {
    if (flood.exitCode === null && flood.signalCode === null) flood.kill('SIGKILL');
  });
  let running = true;
  void flooded.then(() => (running = false));

  let rssMax = rssBefore;
  let sent = 0;
  await sleep(200); // the flood is on
  while (running) {
    asked.set(sent, performance.now());
    polite.send(`PIDR 1 polite${sent} 3\n`, daemon.port, '127.0.0.1');
    sent++;
    rssMax = Math.max(rssMax, rssKb(daemon.pid) ?? 0);
    await sleep(POLITE_EVERY_MS);
  }
  await sleep(POLITE_WITHIN_MS * 2);
  assert.equal(await flooded, 0, `the flooder: ${out}`);
  const [floodSent, floodSeconds] = out.trim().split(' ').map(Number) as [number, number];
  rssMax = Math.max(rssMax, rssKb(daemon.pid) ?? 0);

  const fast = latencies.filter((ms) => ms <= POLITE_WITHIN_MS).length;
  const sorted = [...latencies].sort((a, b) => a - b);
  t.diagnostic(`flood: ${floodSent} datagrams from as many sources in ${floodSeconds} s`);
  t.diagnostic(`daemon VmRSS ${rssBefore} kB before, at most ${rssMax} kB during the flood`);
  t.diagnostic(`polite: ${sent} asked, ${latencies.length} answered, ${fast} within ${POLITE_WITHIN_MS} ms; ` +
    `median ${sorted[sorted.length >> 1]?.toFixed(2)} ms, max ${sorted.at(-1)?.toFixed(1)} ms`);
  assert.ok(floodSent >= SOURCES * 0.9, `a real flood: ${floodSent} sources`);
  assert.ok(rssMax < RSS_BOUND_KB, `VmRSS reached ${rssMax} kB`);
  assert.ok(fast >= sent * 0.95, `${fast} of ${sent} polite requests answered within ${POLITE_WITHIN_MS} ms`);
});
