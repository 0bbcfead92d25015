import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { kernelDrops, ownHostOf, readToken, stopCounters } from '../support/fuzzer.js';
import { askUntil, client, deadPid, sleep, startDaemon, startSleeper, type Daemon } from '../support/helpers.js';

/**
 * Abuse of pidstatd (doc/protocol.md, pidstatd(8)): a flooding source must not
 * starve another (--rate, a token bucket per source address), --rate 0 is no
 * limit, and replies give a forger no amplification. Real bins, loopback only
 * (127.0.0.1-3), ephemeral ports; every process is stopped by its pid.
 */

// ---------------------------------------------------------------------------
// Helpers

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
    const last = await client('127.0.0.1');
    try {
      for (let i = 0; i < requests.length; i += 100) {
        const group = requests.slice(i, i + 100);
        const clients = await Promise.all(group.map(() => client('127.0.0.1')));
        try {
          await Promise.all(group.map((req, j) => clients[j]!.send(req, daemon.port, '127.0.0.1')));
          // All in: one more request behind them, answered last (the daemon
          // reads its socket in order), then a moment for a second reply.
          const tag = `last${i}`;
          const answered = last.next((reply) => reply === `EXIS 1 1 ${tag}`, 10_000);
          await last.send(`PIDR 1 ${tag} 3`, daemon.port, '127.0.0.1');
          assert.ok((await answered) !== undefined, `the request sent after group ${i / 100} was not answered within 10 s`);
          await sleep(100);
          out.push(...clients.map((c) => [...c.replies]));
        } finally {
          await Promise.all(clients.map((c) => c.close()));
        }
      }
    } finally {
      await last.close();
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
