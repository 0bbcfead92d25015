import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import dgram from 'node:dgram';
import { after, before, describe, test } from 'node:test';
import { kernelDrops, ownHostOf, readToken, stopCounters } from '../support/fuzzer.js';
import { deadPid, hasIPv6Loopback, sleep, startDaemon, startSleeper, waitFor, type Daemon } from '../support/helpers.js';

/**
 * Abuse of pidstatd (doc/protocol.md, pidstatd(8)): a flooding source must not
 * starve another (--rate, a token bucket per source address), --rate 0 is no
 * limit, replies give a forger no amplification, and --allow picks clients by
 * address family and prefix on a dual-stack socket. Real bins, loopback only
 * (127.0.0.1-3 and ::1), ephemeral ports; every process is stopped by its pid.
 */

// ---------------------------------------------------------------------------
// Helpers

interface Client {
  socket: dgram.Socket;
  /** Replies received, in order, as text. */
  replies: string[];
  /** Resolves with the first reply after `since` replies that satisfies `match`, or undefined after waitMs. */
  next(match: (reply: string) => boolean, waitMs: number): Promise<string | undefined>;
  send(payload: string | Buffer, port: number, address: string): Promise<void>;
  close(): Promise<void>;
}

async function client(bindAddress: string): Promise<Client> {
  const socket = dgram.createSocket(bindAddress.includes(':') ? 'udp6' : 'udp4');
  const replies: string[] = [];
  const waiters = new Set<(reply: string) => void>();
  socket.on('error', () => {});
  socket.on('message', (msg) => {
    const text = msg.toString('latin1');
    replies.push(text);
    for (const waiter of waiters) waiter(text);
  });
  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.bind(0, bindAddress, () => {
      socket.off('error', reject);
      resolve();
    });
  });
  try {
    socket.setRecvBufferSize(4 * 1024 * 1024);
  } catch {
    // the default queue
  }
  return {
    socket,
    replies,
    next(match, waitMs) {
      return new Promise((resolve) => {
        const waiter = (reply: string) => {
          if (!match(reply)) return;
          clearTimeout(timer);
          waiters.delete(waiter);
          resolve(reply);
        };
        const timer = setTimeout(() => {
          waiters.delete(waiter);
          resolve(undefined);
        }, waitMs);
        waiters.add(waiter);
      });
    },
    send(payload, port, address) {
      return new Promise((resolve, reject) =>
        socket.send(typeof payload === 'string' ? Buffer.from(payload, 'latin1') : payload, port, address, (err) => (err ? reject(err) : resolve())),
      );
    },
    close: () => new Promise<void>((resolve) => socket.close(() => resolve())),
  };
}

/** Sends until the reply whose host field is `host` comes; returns it and the tries it took. */
async function askUntil(c: Client, payload: string, host: string, port: number, address: string, tries: number, waitMs: number) {
  for (let i = 1; i <= tries; i++) {
    const reply = c.next((r) => r.split(' ')[3] === host, waitMs);
    await c.send(payload, port, address);
    const got = await reply;
    if (got !== undefined) return { reply: got, tries: i };
  }
  return { reply: undefined, tries };
}

/**
 * A flooding process bound to `from`: sends `payload` to the daemon as fast as
 * it can until told to stop (or `max` datagrams, or `maxMs`), then reports
 * what it sent and got. Its own process, so that the flood does not slow the
 * polite client's timers in this one.
 */
const FLOODER = `
const dgram = require('node:dgram');
const [port, max, maxMs, from, size] = process.argv.slice(1);
const payload = Number(size) > 0 ? Buffer.alloc(Number(size), 0x58) : Buffer.from('PIDR 1 flood 3\\n');
const s = dgram.createSocket('udp4');
let sent = 0, replies = 0, lastReply = 0, stop = false;
s.on('error', () => {});
s.on('message', () => { replies++; lastReply = performance.now(); });
process.on('message', (m) => { if (m === 'stop') stop = true; });
s.bind(0, from, async () => {
  try { s.setRecvBufferSize(4 << 20); } catch {}
  process.send('ready');
  const first = performance.now();
  let lastSend = first;
  while (!stop && sent < Number(max) && performance.now() - first < Number(maxMs)) {
    for (let i = 0; i < 100 && sent < Number(max); i++, sent++) s.send(payload, Number(port), '127.0.0.1');
    lastSend = performance.now();
    await new Promise((r) => setImmediate(r));
  }
  await new Promise((r) => setTimeout(r, 500)); // what the daemon still has queued is answered or dropped
  process.send({ sent, replies, floodMs: lastSend - first, lastReplyMs: replies ? lastReply - first : 0 });
  s.close();
  process.disconnect();
});
`;

interface FloodResult {
  sent: number;
  replies: number;
  floodMs: number;
  lastReplyMs: number;
}

function startFlooder(port: number, from: string, { max, maxMs, size = 0 }: { max: number; maxMs: number; size?: number }) {
  const child = spawn(process.execPath, ['-e', FLOODER, String(port), String(max), String(maxMs), from, String(size)], { stdio: ['ignore', 'ignore', 'pipe', 'ipc'] });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  const ready = new Promise<void>((resolve, reject) => {
    child.once('message', () => resolve());
    child.once('exit', (code) => reject(new Error(`the flooder exited with ${code}: ${stderr}`)));
  });
  // Its report comes when told to stop, or when it reaches its own bounds first.
  const report = new Promise<FloodResult>((resolve, reject) => {
    child.on('message', (m) => typeof m === 'object' && resolve(m as FloodResult));
    child.once('exit', (code) => reject(new Error(`the flooder exited with ${code} before reporting: ${stderr}`)));
  });
  report.catch(() => {});
  return {
    pid: child.pid!,
    ready,
    /** Tells it to stop and waits for its report. */
    finish(): Promise<FloodResult> {
      if (child.connected) child.send('stop');
      return report;
    },
    async kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
}

// ---------------------------------------------------------------------------

describe('a flood from one source does not starve another (--rate 1000)', () => {
  const RATE = 1000;
  for (const flood of [
    { name: 'valid requests', size: 0 },
    { name: 'junk datagrams of 1200 bytes', size: 1200 },
  ]) {
    test(`127.0.0.2 floods with ${flood.name}; 127.0.0.3 asks 200 times, one every 5 ms`, { timeout: 30_000 }, async (t) => {
      const daemon = await startDaemon(['--rate', String(RATE), '--bind', '127.0.0.1']);
      const flooder = startFlooder(daemon.port, '127.0.0.2', { max: 3_000_000, maxMs: 12_000, size: flood.size });
      const polite = await client('127.0.0.3');
      t.after(async () => {
        await flooder.kill();
        await polite.close();
        await daemon.stop();
      });
      await flooder.ready;
      await sleep(50); // the flood is on
      const politeStarted = performance.now();
      let sends = 0;
      const results: { reply: string | undefined; tries: number; ms: number }[] = [];
      for (let i = 0; i < 200; i++) {
        const asked = performance.now();
        const r = await askUntil(polite, `PIDR 1 polite${i} 3\n`, `polite${i}`, daemon.port, '127.0.0.1', 5, 200);
        sends += r.tries;
        results.push({ ...r, ms: performance.now() - asked });
        await sleep(5);
      }
      const politeMs = performance.now() - politeStarted;
      const flood_ = await flooder.finish();
      await sleep(100);
      const drops = kernelDrops(daemon.port) ?? 0;
      assert.equal(await daemon.stop(), 0);
      const counters = stopCounters(daemon.log());

      const answered = results.filter((r) => r.reply !== undefined);
      const retried = results.filter((r) => r.tries > 1).length;
      const ms = results.map((r) => r.ms).sort((a, b) => a - b);
      t.diagnostic(`flooder: ${flood_.sent} sent in ${Math.round(flood_.floodMs)} ms (${Math.round(flood_.sent / (flood_.floodMs / 1000))}/s), ` +
        `${flood_.replies} replies, the last ${Math.round(flood_.lastReplyMs)} ms after its first send`);
      t.diagnostic(`polite: ${answered.length}/200 answered in ${Math.round(politeMs)} ms, ${retried} needed a resend, ` +
        `latency median ${ms[100]!.toFixed(2)} ms, max ${ms[199]!.toFixed(1)} ms`);
      t.diagnostic(`daemon: ${JSON.stringify(counters)}; kernel drops on its socket ${drops}`);

      assert.ok(flood_.sent >= 20_000, `a real flood: ${flood_.sent} datagrams`);
      assert.ok(flood_.floodMs >= politeMs * 0.9, 'the flood lasted as long as the polite client asked');
      assert.equal(answered.length, 200, 'every polite request is answered');
      for (const [i, r] of results.entries()) assert.equal(r.reply, `EXIS 1 1 polite${i}`);
      assert.ok(counters, `a stop line: ${daemon.log()}`);
      // Every datagram that reached the daemon was answered or counted as dropped.
      assert.equal(counters.received + drops, flood_.sent + sends, 'the daemon received (or the kernel dropped) every datagram sent');
      if (flood.size === 0) {
        // Tokens: a burst of RATE, then RATE a second, from the flooder's first datagram to its last reply.
        const bound = RATE + Math.ceil((RATE * flood_.lastReplyMs) / 1000) + 2;
        assert.ok(flood_.replies <= bound, `the flooder got ${flood_.replies} answers, more than ${bound}`);
        assert.ok(flood_.replies >= RATE / 2, `the flooder still gets answers at the rate: ${flood_.replies}`);
        assert.ok(counters.limited >= flood_.sent - drops - bound, `the rest of the flood is counted over the rate: ${counters.limited}`);
        assert.equal(counters.received, counters.answered + counters.limited, 'each datagram answered or counted over the rate');
        assert.equal(counters.answered, flood_.replies + polite.replies.length, 'answered: the flooder\'s replies and the polite ones');
      } else {
        assert.ok(counters.received - counters.answered >= flood_.sent - drops, 'the junk is counted as dropped');
        assert.equal(counters.answered, polite.replies.length, 'only the polite client is answered');
      }
    });
  }
});

test('--rate 0 is no limit: 30 000 requests from one source in closed-loop batches are all answered', { timeout: 30_000 }, async (t) => {
  const daemon = await startDaemon(['--rate', '0', '--bind', '127.0.0.1']);
  const c = await client('127.0.0.1');
  t.after(async () => {
    await c.close();
    await daemon.stop();
  });
  const TOTAL = 30_000;
  const BATCH = 2000;
  const got = new Uint8Array(TOTAL);
  let outstanding = 0;
  let batchDone: (() => void) | undefined;
  c.socket.on('message', (msg) => {
    const m = /^EXIS 1 1 r(\d+)$/.exec(msg.toString('latin1'));
    if (!m) return;
    if (got[Number(m[1])]!++ === 0 && --outstanding === 0) batchDone?.();
  });
  const started = performance.now();
  let resends = 0;
  for (let b = 0; b < TOTAL; b += BATCH) {
    for (let round = 0; round < 4; round++) {
      const todo: number[] = [];
      for (let i = b; i < b + BATCH; i++) if (got[i] === 0) todo.push(i);
      if (todo.length === 0) break;
      if (round > 0) resends += todo.length;
      outstanding = todo.length;
      let timer: NodeJS.Timeout | undefined;
      const done = new Promise<void>((resolve) => {
        batchDone = resolve;
        timer = setTimeout(resolve, 1000);
      });
      for (const i of todo) c.socket.send(`PIDR 1 r${i} 3\n`, daemon.port, '127.0.0.1');
      await done;
      clearTimeout(timer);
    }
  }
  const ms = performance.now() - started;
  await sleep(100);
  const drops = kernelDrops(daemon.port) ?? 0;
  assert.equal(await daemon.stop(), 0);
  const counters = stopCounters(daemon.log());
  t.diagnostic(`kernel drops on the daemon's socket: ${drops}`);
  t.diagnostic(`${TOTAL} requests in ${Math.round(ms)} ms (${Math.round(TOTAL / (ms / 1000))}/s), ${resends} resent; daemon ${JSON.stringify(counters)}`);
  // Faster than 2 s, the default --rate (10000 a second, burst 10000) would have dropped some.
  t.diagnostic(ms < 2000 ? 'faster than the default --rate allows: 0 is no limit, not the default' : 'too slow here to tell 0 from the default rate');
  const missing = [...got].filter((n) => n === 0).length;
  const twice = [...got].filter((n) => n > 1).length;
  assert.equal(missing, 0, `${missing} requests never answered`);
  assert.ok(twice <= resends, `${twice} requests answered twice, with ${resends} resends`);
  assert.ok(counters, daemon.log());
  assert.equal(counters.limited, 0, 'nothing counted over the rate');
  assert.equal(counters.received + drops, TOTAL + resends, 'every datagram sent reached the daemon or was dropped by the kernel');
  assert.equal(counters.answered, counters.received, 'every one that reached it is answered');
});

describe('no amplification: a reply is never much larger than its request', () => {
  let daemon: Daemon;
  let sleeper: ReturnType<typeof startSleeper>;
  let ownHost: string;
  let dead: number;
  before(async () => {
    daemon = await startDaemon(['--rate', '0', '--bind', '127.0.0.1']);
    sleeper = startSleeper();
    dead = await deadPid();
    ownHost = await ownHostOf(daemon.port);
  });
  after(async () => {
    await sleeper?.stop();
    await daemon?.stop();
  });

  /** Sends each request from its own socket; returns the replies each one got within the wait. */
  async function repliesTo(requests: string[]): Promise<string[][]> {
    const out: string[][] = [];
    for (let i = 0; i < requests.length; i += 100) {
      const group = requests.slice(i, i + 100);
      const clients = await Promise.all(group.map(() => client('127.0.0.1')));
      try {
        await Promise.all(group.map((req, j) => clients[j]!.send(req, daemon.port, '127.0.0.1')));
        // All in: one more request behind them, answered last, then a moment for a second reply.
        await waitFor(() => clients.every((c) => c.replies.length > 0), 300);
        await sleep(100);
        out.push(...clients.map((c) => [...c.replies]));
      } finally {
        await Promise.all(clients.map((c) => c.close()));
      }
    }
    return out;
  }

  test('requests without a host: reply <= request + own host name + 16 bytes, one reply each', async (t) => {
    const pids = [1, sleeper.pid, dead, 2147483647, process.pid, 9, 99, 999999];
    const requests = pids.flatMap((pid) => [`PIDR ${pid}`, `PIDR ${pid}\n`, `PIDR\t${pid}\r\n`, `PIDR ${pid} `]);
    const replies = await repliesTo(requests);
    let answered = 0;
    requests.forEach((req, i) => {
      const got = replies[i]!;
      assert.ok(got.length <= 1, `${JSON.stringify(req)} got ${got.length} replies: ${JSON.stringify(got)}`);
      for (const reply of got) {
        answered++;
        assert.ok(reply.length <= req.length + ownHost.length + 16, `${JSON.stringify(req)} (${req.length} bytes) -> ${JSON.stringify(reply)} (${reply.length})`);
      }
    });
    t.diagnostic(`${requests.length} requests, ${answered} answered; own host ${JSON.stringify(ownHost)}`);
    assert.ok(answered >= requests.length / 2, 'most are answered (flags 3)');
  });

  test('requests naming a host: reply <= request + 16 bytes, one reply each', async (t) => {
    const tokens = { live: readToken(sleeper.pid)!, one: readToken(1) ?? '1' };
    const requests: string[] = [];
    for (const len of [1, 2, 3, 8, 64, 254, 255]) {
      for (const pid of [1, sleeper.pid, dead, 2147483647]) {
        for (const flags of ['', ' 1', ' 3', ' 9', ' 11', ' 15', ' 0', ' x', ' 8']) {
          for (const start of ['', ` ${pid === 1 ? tokens.one : tokens.live}`, ' 1', ' x']) {
            if (flags === '' && start !== '') continue;
            const host = 'h'.repeat(len - 1) + (requests.length % 10);
            requests.push(`PIDR ${pid} ${host}${flags}${start}${requests.length % 2 ? '\n' : ''}`);
          }
        }
      }
    }
    const replies = await repliesTo(requests);
    let answered = 0;
    let worst = -Infinity;
    requests.forEach((req, i) => {
      const got = replies[i]!;
      assert.ok(got.length <= 1, `${JSON.stringify(req)} got ${got.length} replies: ${JSON.stringify(got)}`);
      for (const reply of got) {
        answered++;
        worst = Math.max(worst, reply.length - req.length);
        assert.ok(reply.length <= req.length + 16, `${JSON.stringify(req)} (${req.length} bytes) -> ${JSON.stringify(reply)} (${reply.length})`);
      }
    });
    t.diagnostic(`${requests.length} requests, ${answered} answered; the largest growth ${worst} bytes`);
    assert.ok(answered >= requests.length / 3);
  });
});

describe('--allow by address family and prefix', () => {
  interface Case {
    allow: string;
    bind?: string;
    /** Answered or not, for clients from 127.0.0.1, 127.0.0.2 and ::1. */
    v4one: boolean;
    v4two: boolean;
    v6: boolean;
  }
  const cases: Case[] = [
    { allow: '127.0.0.1/32', v4one: true, v4two: false, v6: false },
    { allow: '::1/128', v4one: false, v4two: false, v6: true },
    { allow: '::ffff:127.0.0.0/104', v4one: true, v4two: true, v6: false },
    { allow: '127.0.0.0/31', v4one: true, v4two: false, v6: false },
    { allow: '0.0.0.0/0', v4one: true, v4two: true, v6: false },
    // A range matches clients of its own family only: on a dual-stack socket an IPv4
    // client (which the kernel writes ::ffff:127.0.0.1) is no IPv6 client.
    { allow: '::/0', v4one: false, v4two: false, v6: true },
    { allow: '0.0.0.0/0,::/0', v4one: true, v4two: true, v6: true },
    { allow: '127.0.0.2,::1', v4one: false, v4two: true, v6: true },
    { allow: '::ffff:127.0.0.1', v4one: true, v4two: false, v6: false },
    { allow: '10.0.0.0/8,fd00::/8', v4one: false, v4two: false, v6: false },
    // The socket's family does not change who is let in.
    { allow: '::ffff:127.0.0.0/104', bind: '0.0.0.0', v4one: true, v4two: true, v6: false },
    { allow: '::/0', bind: '0.0.0.0', v4one: false, v4two: false, v6: false },
    { allow: '::1/128', bind: '0.0.0.0', v4one: false, v4two: false, v6: false },
  ];
  let ipv6 = false;
  before(async () => {
    ipv6 = await hasIPv6Loopback();
  });

  for (const c of cases) {
    const where = c.bind ?? ':: (dual-stack)';
    const expect = `127.0.0.1 ${c.v4one ? 'yes' : 'no'}, 127.0.0.2 ${c.v4two ? 'yes' : 'no'}, ::1 ${c.v6 ? 'yes' : 'no'}`;
    test(`--allow ${c.allow} on ${where}: ${expect}`, { timeout: 20_000 }, async (t) => {
      if (c.bind === undefined && !ipv6) return t.skip('this host has no ::1, so no dual-stack socket to test');
      const daemon = await startDaemon(['--allow', c.allow, ...(c.bind ? ['--bind', c.bind] : [])]);
      t.after(() => daemon.stop());
      assert.match(daemon.log(), c.bind ? new RegExp(`listening on ${c.bind.replace(/\./g, '\\.')}:`) : /listening on \[::\]:/);
      const probes: { name: string; bind: string; to: string; want: boolean }[] = [
        { name: '127.0.0.1', bind: '127.0.0.1', to: '127.0.0.1', want: c.v4one },
        { name: '127.0.0.2', bind: '127.0.0.2', to: '127.0.0.1', want: c.v4two },
      ];
      if (ipv6 && c.bind === undefined) probes.push({ name: '::1', bind: '::1', to: '::1', want: c.v6 });
      else if (!ipv6) t.diagnostic('no ::1 here: the IPv6 client is skipped');
      let refused = 0;
      const outcome = await Promise.all(
        probes.map(async (p) => {
          const sock = await client(p.bind);
          try {
            const host = `allow-${p.name.replace(/:/g, '_')}`;
            // A refused client sends once (the stop line must count it as denied, not lost);
            // an allowed one sends again if its datagram is lost.
            const r = await askUntil(sock, `PIDR 1 ${host} 3\n`, host, daemon.port, p.to, p.want ? 3 : 1, p.want ? 500 : 400);
            if (!p.want) refused += r.tries;
            return { ...p, got: r.reply };
          } finally {
            await sock.close();
          }
        }),
      );
      assert.equal(await daemon.stop(), 0);
      const counters = stopCounters(daemon.log());
      for (const o of outcome) {
        const host = `allow-${o.name.replace(/:/g, '_')}`;
        assert.equal(o.got, o.want ? `EXIS 1 1 ${host}` : undefined, `client ${o.name} -> ${o.want ? 'answered' : 'refused'}`);
      }
      assert.equal(counters?.denied, refused, `the refused datagrams are counted as denied: ${daemon.log()}`);
    });
  }
});
