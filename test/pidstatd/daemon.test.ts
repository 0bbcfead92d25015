import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { after, before, describe, test } from 'node:test';
import { readStartToken } from '../../src/sys/probe.js';
import { startServer } from '../../src/daemon/server.js';
import { ask, deadPid, exchange, hasIPv6Loopback, IS_ROOT, run, sleep, startDaemon, startSleeper, waitFor, type Daemon } from '../support/helpers.js';

/**
 * The daemon's side of doc/protocol.md over real UDP: the built pidstatd
 * in the foreground on an ephemeral port, asked with raw datagrams.
 */

for (const address of ['127.0.0.1', '::1']) {
  describe(`pidstatd on ${address}`, async () => {
    const ipv6 = address.includes(':');
    const skip = ipv6 && !(await hasIPv6Loopback()) ? 'this host has no ::1' : false;
    let daemon: Daemon;
    let sleeper: ReturnType<typeof startSleeper>;
    let dead: number;
    before(async () => {
      if (skip) return;
      daemon = await startDaemon(['--bind', address]);
      sleeper = startSleeper();
      dead = await deadPid();
    });
    after(async () => {
      await sleeper?.stop();
      assert.equal(await daemon?.stop(), 0, 'SIGTERM ends the daemon with 0');
    });
    const q = (text: string, waitMs?: number) => ask(daemon.port, text, waitMs === undefined ? { address } : { address, waitMs });

    test('a live pid exists', { skip }, async () => {
      assert.equal(await q(`PIDR ${sleeper.pid} h1 3\n`), `EXIS ${sleeper.pid} 1 h1`);
    });
    test('a dead pid does not', { skip }, async () => {
      assert.equal(await q(`PIDR ${dead} h1 3\n`), `EXIS ${dead} 0 h1`);
    });
    test('a pid above pid_max does not exist', { skip }, async () => {
      assert.equal(await q('PIDR 2147483647 h1 3\n'), 'EXIS 2147483647 0 h1');
    });
    test('a request without flags is answered as flags 3, as old clients send it', { skip }, async () => {
      assert.equal(await q(`PIDR ${sleeper.pid} h1`), `EXIS ${sleeper.pid} 1 h1`);
      assert.equal(await q(`PIDR ${dead} h1`), `EXIS ${dead} 0 h1`);
    });
    test('a request without a host is answered with the daemon\'s own name', { skip }, async () => {
      const reply = await q(`PIDR ${sleeper.pid}\n`);
      assert.match(reply ?? '', new RegExp(`^EXIS ${sleeper.pid} 1 [\\x21-\\x7e]+$`));
    });
    test('the host is echoed unchanged', { skip }, async () => {
      assert.equal(await q(`PIDR 1 Some.Host.EXAMPLE 3`), 'EXIS 1 1 Some.Host.EXAMPLE');
    });
    test('flags suppress replies', { skip }, async () => {
      assert.equal(await q(`PIDR ${sleeper.pid} h 2`, 300), undefined, 'flags 2: no reply for a live pid');
      assert.equal(await q(`PIDR ${dead} h 1`, 300), undefined, 'flags 1: no reply for a dead pid');
      assert.equal(await q(`PIDR ${dead} h 2`), `EXIS ${dead} 0 h`);
      assert.equal(await q(`PIDR ${sleeper.pid} h 1`), `EXIS ${sleeper.pid} 1 h`);
    });
    test('flag 8 adds the start token of /proc/<pid>/stat', { skip }, async () => {
      const token = readStartToken(sleeper.pid);
      assert.match(token ?? '', /^[0-9]+$/);
      assert.equal(await q(`PIDR ${sleeper.pid} h 9`), `EXIS ${sleeper.pid} 1 h ${token}`);
      assert.equal(await q(`PIDR ${dead} h 11`), `EXIS ${dead} 0 h`, 'never for a dead pid');
    });
    test('a request with the right start token is answered as exists, a wrong one as dead', { skip }, async () => {
      const token = readStartToken(sleeper.pid)!;
      assert.equal(await q(`PIDR ${sleeper.pid} h 3 ${token}`), `EXIS ${sleeper.pid} 1 h`);
      assert.equal(await q(`PIDR ${sleeper.pid} h 3 ${BigInt(token) + 1n}`), `EXIS ${sleeper.pid} 0 h`);
      assert.equal(await q(`PIDR ${sleeper.pid} h 3 notanumber`), `EXIS ${sleeper.pid} 1 h`, 'a non-decimal token is ignored');
    });
    test('hostile datagrams get no reply, and the next valid request is answered', { skip }, async () => {
      const hostile = [
        'PIDR 0 h 3', 'PIDR -1 h 3', 'PIDR +5 h 3', 'PIDR 0x10 h 3', 'PIDR 99999999999 h 3', '', 'PIDR', 'hello world',
        `PIDR 1 ${'h'.repeat(300)} 3`, 'PIDR 1 h\u00e9 3', 'PIDR 1\u0000 h 3', 'PIDR 1 h\u0000 3', '\u0000'.repeat(64),
        `PIDR 1 h 3 ${'1'.repeat(2000)}`, 'EXIS 1 1 h',
      ];
      for (const text of hostile) {
        assert.deepEqual(await exchange(daemon.port, text, { address, waitMs: 20 }), [], JSON.stringify(text));
      }
      assert.deepEqual(await exchange(daemon.port, Buffer.alloc(9000, 0x41), { address, waitMs: 20 }), [], '9000 bytes');
      assert.equal(await q('PIDR 1 after 3'), 'EXIS 1 1 after');
    });
    test('a reply is never more than 16 bytes longer than a request naming a host', { skip }, async () => {
      for (const text of [`PIDR ${sleeper.pid} h 15`, `PIDR ${sleeper.pid} h`, `PIDR ${dead} h`, `PIDR 1 h 9`]) {
        const reply = await q(text);
        assert.ok(reply !== undefined && reply.length <= text.length + 16, `${text} -> ${reply}`);
      }
    });
  });
}

describe('counters and the rate limit (library)', () => {
  test('answered and dropped datagrams are counted', async () => {
    const server = await startServer({ port: 0, bind: '127.0.0.1', hostname: 'me' });
    try {
      const { port } = server.address();
      await ask(port, 'PIDR 1 h 3');
      await exchange(port, 'PIDR 0 h 3', { waitMs: 50 });
      await exchange(port, `PIDR 1 h 2`, { waitMs: 50 });
      // Neither of the last two is answered: their counts are waited for.
      assert.ok(await waitFor(() => server.stats.received === 3 && server.stats.suppressed + server.stats.malformed === 2, 10_000), JSON.stringify(server.stats));
      assert.deepEqual(server.stats, {
        received: 3, answered: 1, suppressed: 1, malformed: 1, oversized: 0, denied: 0, limited: 0, reflected: 0, unauthenticated: 0, replyFailed: 0,
        subscribed: 0, subscribeRefused: 0, notified: 0, notifyUnacknowledged: 0, pollDeferred: 0, errors: 0,
      });
    } finally {
      await server.close();
      await server.close(); // close() is idempotent
    }
  });
  test('--rate N answers at most N requests in a burst from one source, and counts the rest', async () => {
    const server = await startServer({ port: 0, bind: '127.0.0.1', hostname: 'me', rate: 5 });
    const socket = dgram.createSocket('udp4');
    try {
      let replies = 0;
      socket.on('message', (_msg, from) => from.port === server.address().port && replies++);
      await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
      for (let i = 0; i < 20; i++) socket.send('PIDR 1 h 3', server.address().port, '127.0.0.1');
      // All 20 in, and every reply the server sent heard.
      assert.ok(await waitFor(() => server.stats.received === 20 && replies === server.stats.answered, 10_000), `${JSON.stringify(server.stats)}; ${replies} replies`);
      assert.equal(server.stats.received, 20);
      assert.ok(replies >= 5 && replies <= 6, `${replies} replies`);
      assert.equal(server.stats.limited, 20 - server.stats.answered);
    } finally {
      socket.close();
      await server.close();
    }
  });
});

describe('forged datagrams', () => {
  test('a request from source port 0 is dropped, and the daemon goes on serving', async (t) => {
    if (!IS_ROOT) return t.skip('a datagram from port 0 needs a raw socket: not root');
    const daemon = await startDaemon(['--bind', '127.0.0.1', '--debug']);
    try {
      // A raw UDP datagram with source port 0 and no checksum, as a forger sends it.
      const forge = `import socket, struct
p = b'PIDR 1 forged 3\\n'
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
s.sendto(struct.pack('!HHHH', 0, ${daemon.port}, 8 + len(p), 0) + p, ('127.0.0.1', 0))`;
      const sent = await run('python3', ['-c', forge]);
      if (sent.code !== 0) return t.skip(`no raw socket here: ${sent.stderr.trim()}`);
      assert.ok(await waitFor(() => /source port 0/.test(daemon.log()), 2000), daemon.log());
      assert.equal(await ask(daemon.port, 'PIDR 1 after 3'), 'EXIS 1 1 after');
      assert.equal(daemon.child.exitCode, null, 'still running');
    } finally {
      assert.equal(await daemon.stop(), 0);
    }
  });
});

describe('many datagrams at once: batches, many sources', () => {
  test('20 sockets ask at once, wave after wave: each hears exactly the answers to its own questions', async () => {
    const daemon = await startDaemon(['--bind', '127.0.0.1', '--rate', '0']);
    const sleeper = startSleeper();
    const sockets = await Promise.all(
      Array.from({ length: 20 }, async () => {
        const socket = dgram.createSocket('udp4');
        await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
        return socket;
      }),
    );
    try {
      const dead = await deadPid();
      const heard = sockets.map(() => [] as string[]);
      sockets.forEach((socket, i) => socket.on('message', (msg, from) => from.port === daemon.port && heard[i]!.push(msg.toString('latin1'))));
      const expected = sockets.map(() => [] as string[]);
      // 100 datagrams a wave, nearly at once: the daemon reads them in batches.
      for (let wave = 0; wave < 20; wave++) {
        sockets.forEach((socket, i) => {
          for (let j = 0; j < 5; j++) {
            const live = (i + j) % 2 === 0;
            const tag = `s${i}.w${wave}.q${j}`;
            socket.send(`PIDR ${live ? sleeper.pid : dead} ${tag} 3\n`, daemon.port, '127.0.0.1');
            expected[i]!.push(`EXIS ${live ? sleeper.pid : dead} ${live ? 1 : 0} ${tag}`);
          }
        });
        const all = () => heard.every((replies, i) => replies.length >= expected[i]!.length);
        assert.ok(await waitFor(all, 30_000), `wave ${wave}: ${heard.map((r) => r.length).join(' ')} replies of ${(wave + 1) * 5} each`);
      }
      await sleep(100);
      heard.forEach((replies, i) => assert.deepEqual([...replies].sort(), [...expected[i]!].sort(), `socket ${i}`));
    } finally {
      for (const socket of sockets) socket.close();
      await sleeper.stop();
      assert.equal(await daemon.stop(), 0);
    }
  });

  test('a datagram over 1024 bytes is dropped, --debug says how long it was, and the next one is answered', async () => {
    const daemon = await startDaemon(['--bind', '127.0.0.1', '--debug']);
    try {
      assert.equal(await ask(daemon.port, `PIDR 1 ${'h'.repeat(1991)} 3`, { waitMs: 300 }), undefined);
      assert.ok(await waitFor(() => /datagram of 2000 bytes is over 1024/.test(daemon.log()), 2000), daemon.log());
      assert.equal(await ask(daemon.port, 'PIDR 1 after 3'), 'EXIS 1 1 after');
    } finally {
      assert.equal(await daemon.stop(), 0);
    }
  });
});
