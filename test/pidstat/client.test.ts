import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { PidStatClient, type Result } from '../../src/client/client.js';
import { readStartToken } from '../../src/sys/probe.js';
import { FLAG_DEAD, FLAG_EXISTS, FLAG_START } from '../../src/wire/protocol.js';
import { startServer, type Server } from '../../src/daemon/server.js';
import { deadPid, freePort, run, sleep, startDaemon, startSleeper, type Daemon } from '../support/helpers.js';

/**
 * The client of pidstat(1) against real sockets on loopback: a real
 * server, a port with nothing behind it, a port that never answers, a relay
 * that loses datagrams and a responder that answers late and out of order.
 */

function udpSocket(address = '127.0.0.1'): Promise<dgram.Socket> {
  const socket = dgram.createSocket('udp4');
  return new Promise((resolve) => socket.bind(0, address, () => resolve(socket)));
}

const states = (results: Result[]) => results.map((r) => `${r.host}:${r.pid} ${r.state}`);

describe('client against a real server', () => {
  let server: Server;
  let sleeper: ReturnType<typeof startSleeper>;
  let dead: number;
  before(async () => {
    server = await startServer({ port: 0, hostname: 'me' });
    sleeper = startSleeper();
    dead = await deadPid();
  });
  after(async () => {
    await sleeper?.stop();
    await server?.close();
  });

  test('queryMany answers every target, in the order given, with the start token', async () => {
    const client = new PidStatClient({ port: server.address().port, local: false });
    try {
      const results = await client.queryMany([
        { host: '127.0.0.1', pid: sleeper.pid },
        { host: '127.0.0.1', pid: dead },
        { host: 'localhost', pid: sleeper.pid },
        { host: '127.0.0.1', pid: 1 },
      ]);
      assert.deepEqual(states(results), [
        `127.0.0.1:${sleeper.pid} exists`, `127.0.0.1:${dead} dead`, `localhost:${sleeper.pid} exists`, '127.0.0.1:1 exists',
      ]);
      assert.equal(results[0]!.start, readStartToken(sleeper.pid));
      assert.equal(results[1]!.start, undefined);
      assert.ok(results.every((r) => r.tries === 1 && r.ms >= 0 && r.ms < 1000));
    } finally {
      await client.close();
    }
  });

  test('a query with the start token of another process gets dead (pid reused)', async () => {
    const client = new PidStatClient({ port: server.address().port, local: false });
    const token = readStartToken(sleeper.pid)!;
    try {
      const same = await client.query({ host: '127.0.0.1', pid: sleeper.pid, start: token });
      const other = await client.query({ host: '127.0.0.1', pid: sleeper.pid, start: String(BigInt(token) + 7n) });
      assert.equal(same.state, 'exists');
      assert.equal(other.state, 'dead');
    } finally {
      await client.close();
    }
  });

  test('the local probe answers this host without any daemon, and judges start tokens too', async () => {
    const client = new PidStatClient({ port: await freePort() });
    const token = readStartToken(sleeper.pid)!;
    try {
      const results = await client.queryMany([
        { host: 'localhost', pid: sleeper.pid },
        { host: '127.0.0.1', pid: dead },
        { host: '::1', pid: sleeper.pid, start: token },
        { host: 'localhost', pid: sleeper.pid, start: `${token}1` },
      ]);
      assert.deepEqual(results.map((r) => [r.state, r.tries]), [['exists', 0], ['dead', 0], ['exists', 0], ['dead', 0]]);
      assert.equal(results[0]!.start, token);
    } finally {
      await client.close();
    }
  });

  test('a daemon on a wildcard address that answers from another address still counts', async () => {
    // Asked at 127.1.2.3, a wildcard socket answers from 127.0.0.1 unless it
    // answers from the address asked, as our daemon does with the addon.
    // The client's connected socket hears only 127.1.2.3; after a try with
    // no reply, that address is asked from the unconnected socket, which
    // hears every address, and the reply is matched by pid and host.
    const client = new PidStatClient({ port: server.address().port, local: false, tries: 2, timeoutMs: 500 });
    const responder = await udpSocket('0.0.0.0');
    responder.on('message', (msg, rinfo) => {
      const [, pid, host] = msg.toString('latin1').trim().split(' ');
      // From 127.0.0.1, whatever was asked: as a daemon bound to a wildcard address without IP_PKTINFO.
      responder.send(`EXIS ${pid} 1 ${host}`, rinfo.port, '127.0.0.1');
    });
    const other = new PidStatClient({ port: responder.address().port, local: false, tries: 2, timeoutMs: 500 });
    try {
      const ours = await client.query({ host: '127.1.2.3', pid: sleeper.pid });
      assert.equal(ours.state, 'exists');
      assert.equal(ours.tries, server.io === 'batch' ? 1 : 2, 'our daemon with the addon answers from the address asked');
      const theirs = await other.query({ host: '127.1.2.3', pid: sleeper.pid });
      assert.equal(theirs.state, 'exists', 'an answer from another address was lost');
      assert.equal(theirs.tries, 2);
      // The address moved to the unconnected socket for good: the next question is answered at once.
      const again = await other.query({ host: '127.1.2.3', pid: sleeper.pid, flags: 11 });
      assert.deepEqual([again.state, again.tries], ['exists', 1]);
    } finally {
      await client.close();
      await other.close();
      responder.close();
    }
  });

  test('the same pid asked twice at once, with other flags or another start token, gets each its own answer', async () => {
    const client = new PidStatClient({ port: server.address().port, local: false, tries: 2, timeoutMs: 300 });
    const token = readStartToken(sleeper.pid)!;
    const reused = String(BigInt(token) + 7n);
    try {
      const results = await Promise.all([
        client.query({ host: '127.0.0.1', pid: sleeper.pid, start: token }),
        client.query({ host: '127.0.0.1', pid: sleeper.pid, start: reused }),
        client.query({ host: '127.0.0.1', pid: sleeper.pid }),
        client.query({ host: '127.0.0.1', pid: sleeper.pid, flags: 2, start: reused }),
        client.query({ host: '127.0.0.1', pid: dead, flags: 15 }),
        client.query({ host: '127.0.0.1', pid: dead, flags: 1 }),
      ]);
      assert.deepEqual(results.map((r) => r.state), ['exists', 'dead', 'exists', 'dead', 'dead', 'no_reply']);
      assert.equal(results[2]!.start, token, 'the plain question got the answer of another');
      // Flags 1: "answer only if it exists": a dead pid gets no reply at all, never the dead of flags 15.
      assert.equal(results[5]!.state, 'no_reply', 'the question with flags 1 got the answer of the one with flags 15');
    } finally {
      await client.close();
    }
  });

  test('bad input is refused before anything is sent', async () => {
    const client = new PidStatClient({ port: server.address().port });
    try {
      await assert.rejects(client.query({ host: 'h', pid: 0 }), RangeError);
      await assert.rejects(client.query({ host: 'a b', pid: 1 }), RangeError);
      await assert.rejects(client.query({ host: 'h'.repeat(256), pid: 1 }), RangeError);
      assert.throws(() => new PidStatClient({ port: 0 }), RangeError);
      assert.throws(() => new PidStatClient({ tries: 0 }), RangeError);
    } finally {
      await client.close();
    }
  });
});

describe('the same pid asked twice at once, of a real pidstatd', () => {
  // A question is joined only by one that asks the very same (questions.ts):
  // one answered for another would bring a live pid's start token to a
  // question that asked for none, or "exists" to one that asked to hear only
  // of death.
  let daemon: Daemon;
  let sleeper: ReturnType<typeof startSleeper>;
  let dead: number;
  before(async () => {
    daemon = await startDaemon();
    sleeper = startSleeper();
    dead = await deadPid();
  });
  after(async () => {
    await sleeper?.stop();
    await daemon?.stop();
  });

  test('with different flags: each its own answer', async () => {
    const client = new PidStatClient({ port: daemon.port, local: false, tries: 2, timeoutMs: 300 });
    try {
      const live = { host: '127.0.0.1', pid: sleeper.pid };
      const gone = { host: '127.0.0.1', pid: dead };
      const [all, existsOnly, deathOnly, deadAll, deadExistsOnly] = await Promise.all([
        client.query(live),
        client.query({ ...live, flags: FLAG_EXISTS }),
        client.query({ ...live, flags: FLAG_DEAD }),
        client.query(gone),
        client.query({ ...gone, flags: FLAG_EXISTS | FLAG_START }),
      ]);
      assert.deepEqual([all!.state, all!.start, all!.tries], ['exists', readStartToken(sleeper.pid), 1]);
      assert.deepEqual([existsOnly!.state, existsOnly!.start, existsOnly!.tries], ['exists', undefined, 1], 'flags 1 asked for no start token');
      // Flags 2, of a live pid: the daemon keeps silent, try after try.
      assert.deepEqual([deathOnly!.state, deathOnly!.failure], ['no_reply', { kind: 'timeout', tries: 2 }]);
      assert.deepEqual([deadAll!.state, deadAll!.tries], ['dead', 1]);
      assert.deepEqual([deadExistsOnly!.state, deadExistsOnly!.failure], ['no_reply', { kind: 'timeout', tries: 2 }]);
    } finally {
      await client.close();
    }
  });

  test('with different start tokens: each its own answer', async () => {
    const client = new PidStatClient({ port: daemon.port, local: false, tries: 2, timeoutMs: 300 });
    const token = readStartToken(sleeper.pid)!;
    const other = String(BigInt(token) + 7n);
    try {
      const live = { host: '127.0.0.1', pid: sleeper.pid };
      const results = await Promise.all([
        client.query({ ...live, start: token }),
        client.query({ ...live, start: other }),
        client.query({ ...live, flags: FLAG_EXISTS | FLAG_DEAD | FLAG_START, start: other }),
        client.query({ ...live, flags: FLAG_EXISTS | FLAG_DEAD | FLAG_START, start: token }),
      ]);
      assert.deepEqual(results.map((r) => [r.state, r.tries]), [['exists', 1], ['dead', 1], ['dead', 1], ['exists', 1]]);
      assert.equal(results[0]!.start, token);
    } finally {
      await client.close();
    }
  });
});

/**
 * A client whose socket could not be opened (no descriptor left) answers
 * no_reply, and its next question, once descriptors are free again, opens
 * one: the failure is not kept for the client's life (src/client/endpoints.ts).
 */
const OUT_OF_DESCRIPTORS = `
import { closeSync, openSync } from 'node:fs';
const [clientModule, port, pid] = process.argv.slice(2);
const { PidStatClient } = await import(clientModule);
const client = new PidStatClient({ port: Number(port), local: false, timeoutMs: 1000, tries: 1, io: 'dgram' });
const target = { host: '127.0.0.1', pid: Number(pid) };
const held = [];
try {
  for (;;) held.push(openSync('/dev/null', 'r'));
} catch {}
const first = await client.query(target);
for (const fd of held.splice(0, 32)) closeSync(fd);
const second = await client.query(target);
console.log(JSON.stringify([first.state, first.failure, second.state]));
await client.close();
`;

test('a socket that could not be opened is opened by the next question', async (t) => {
  const daemon = await startDaemon();
  t.after(() => daemon.stop());
  const sleeper = startSleeper();
  t.after(() => sleeper.stop());
  const dir = mkdtempSync(join(tmpdir(), 'pidstat-fds-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const script = join(dir, 'out-of-descriptors.mjs');
  writeFileSync(script, OUT_OF_DESCRIPTORS);
  const clientModule = new URL('../../src/client/client.js', import.meta.url).href;
  // A low limit, set by the shell for the script it then runs: quick to reach.
  const r = await run('/bin/sh', ['-c', 'ulimit -n 256 && exec "$@"', 'sh', process.execPath, script, clientModule, String(daemon.port), String(sleeper.pid)]);
  assert.equal(r.code, 0, r.stderr);
  const [firstState, firstFailure, secondState] = JSON.parse(r.stdout) as [string, { kind: string; why?: string }, string];
  assert.equal(firstState, 'no_reply');
  assert.equal(firstFailure.kind, 'unreachable', JSON.stringify(firstFailure));
  assert.equal(firstFailure.why, 'EMFILE');
  assert.equal(secondState, 'exists');
});

test('a port with no daemon gives no_reply, "no daemon listening": each try ends at the refusal, not at its timeout', { timeout: 30_000 }, async () => {
  // Tries of 30 s each: five timeouts would take 150 s.
  const client = new PidStatClient({ port: await freePort(), local: false, timeoutMs: 30_000 });
  try {
    const started = performance.now();
    const [a, b] = await client.queryMany([{ host: '127.0.0.1', pid: 1 }, { host: '127.0.0.1', pid: 2 }]);
    const ms = performance.now() - started;
    for (const r of [a!, b!]) {
      assert.equal(r.state, 'no_reply');
      assert.deepEqual(r.failure, { kind: 'no-daemon' });
      assert.equal(r.tries, 5);
    }
    // Five tries, each refused at once and followed 200 ms later by the next:
    // 800 ms at least; the upper bound a liveness bound, far below one timeout.
    assert.ok(ms >= 750 && ms < 10_000, `${ms} ms`);
  } finally {
    await client.close();
  }
});

test('a silent port gives no_reply after tries x timeout', async () => {
  const silent = await udpSocket(); // bound, never answers: no ICMP error either
  const client = new PidStatClient({ port: silent.address().port, local: false, timeoutMs: 300, tries: 3 });
  let received = 0;
  silent.on('message', () => received++);
  try {
    const started = performance.now();
    const result = await client.query({ host: '127.0.0.1', pid: 1 });
    const ms = performance.now() - started;
    assert.equal(result.state, 'no_reply');
    assert.deepEqual(result.failure, { kind: 'timeout', tries: 3 });
    assert.equal(received, 3);
    // 3 x 300 ms at least; ten times that a liveness bound.
    assert.ok(ms >= 880 && ms < 10 * 3 * 300, `${ms} ms`);
  } finally {
    await client.close();
    silent.close();
  }
});

describe('retries through a lossy relay', () => {
  let server: Server;
  let relay: dgram.Socket;
  let upstream: dgram.Socket;
  let dropFirst = 0;
  let seen = 0;
  before(async () => {
    server = await startServer({ port: 0, bind: '127.0.0.1', hostname: 'me' });
    relay = await udpSocket();
    upstream = await udpSocket();
    let client: dgram.RemoteInfo | undefined;
    // client -> relay -> server, dropping the first `dropFirst` requests; replies go back.
    relay.on('message', (msg, rinfo) => {
      client = rinfo;
      if (seen++ < dropFirst) return;
      upstream.send(msg, server.address().port, '127.0.0.1');
    });
    upstream.on('message', (msg) => client && relay.send(msg, client.port, client.address));
  });
  after(async () => {
    relay?.close();
    upstream?.close();
    await server?.close();
  });

  test('the first two requests lost: answered on the third try', async () => {
    dropFirst = 2;
    seen = 0;
    const client = new PidStatClient({ port: relay.address().port, local: false, timeoutMs: 150, tries: 5 });
    try {
      const started = performance.now();
      const result = await client.query({ host: '127.0.0.1', pid: 1 });
      assert.equal(result.state, 'exists');
      assert.equal(result.tries, 3);
      assert.ok(performance.now() - started >= 290, 'two timeouts passed first');
    } finally {
      await client.close();
    }
  });

  test('more lost than tries: no_reply', async () => {
    dropFirst = 3;
    seen = 0;
    const client = new PidStatClient({ port: relay.address().port, local: false, timeoutMs: 100, tries: 3 });
    try {
      const result = await client.query({ host: '127.0.0.1', pid: 1 });
      assert.equal(result.state, 'no_reply');
      assert.equal(seen, 3);
    } finally {
      await client.close();
    }
  });
});

test('late replies to earlier requests never answer another question', async () => {
  // A responder whose truth depends on pid and host, so that one host name's
  // answer is wrong for another's. It ignores every first request, answers
  // the second ones late and in reverse order, and sprays replies to
  // questions nobody asked, so replies to old tries arrive during new ones.
  const truth = (pid: number, host: string) => ((pid + host.length) % 2 === 0 ? 1 : 0);
  // Bound to the wildcard, so 127.0.0.2 is answered from 127.0.0.1.
  const responder = await udpSocket('0.0.0.0');
  const firstSeen = new Set<string>();
  let batch: { text: string; rinfo: dgram.RemoteInfo }[] = [];
  let pending: NodeJS.Timeout | undefined;
  responder.on('message', (msg, rinfo) => {
    const [, pidText, host] = msg.toString().trim().split(' ');
    const pid = Number(pidText);
    const key = `${pid} ${host}`;
    // The truth is the host word's, without the cookie the client adds after a '/'.
    const word = host!.slice(0, host!.lastIndexOf('/'));
    responder.send(`EXIS ${pid + 1000} 1 ${host}`, rinfo.port, rinfo.address);
    responder.send(`EXIS ${pid} 1 not-${host}`, rinfo.port, rinfo.address);
    if (!firstSeen.has(key)) {
      firstSeen.add(key);
      return;
    }
    batch.push({ text: `EXIS ${pid} ${truth(pid, word)} ${host}`, rinfo });
    if (batch.length === 1) {
      pending = setTimeout(() => {
        const due = batch.reverse();
        batch = [];
        for (const { text, rinfo: to } of due) responder.send(text, to.port, to.address);
      }, 80);
    }
  });
  const targets = [];
  for (const host of ['127.0.0.1', 'localhost', '127.0.0.2']) {
    for (const pid of [100, 101, 102, 4000000]) targets.push({ host, pid });
  }
  const client = new PidStatClient({ port: responder.address().port, local: false, timeoutMs: 60, tries: 5 });
  try {
    const results = await client.queryMany(targets);
    assert.deepEqual(
      states(results),
      targets.map((t) => `${t.host}:${t.pid} ${truth(t.pid, t.host) ? 'exists' : 'dead'}`),
    );
    assert.ok(results.every((r) => r.tries >= 2), 'first tries were never answered');
  } finally {
    await client.close();
    // A batch still due would be sent through a closed socket, after the test.
    clearTimeout(pending);
    responder.close();
    await sleep(10);
  }
});
