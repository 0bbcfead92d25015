import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { describe, test } from 'node:test';
import { exchange, hasIPv6Loopback, runBin, startDaemon, startSleeper, waitFor } from '../support/helpers.js';

/**
 * What --debug shows cannot drive the user's terminal: every byte of a
 * datagram outside printable ASCII is written \xNN (pidstat(1)). Also
 * the host words the cookie and `ping` must read right: `ping '[::1]'`, and a
 * host too long to carry a cookie refused as a usage error.
 */

/** Control bytes a terminal acts on: C0 (ESC, BEL...) and C1 (0x80-0x9f, also as UTF-8 c2 80-9f). */
const CONTROL = /[\x00-\x08\x0b-\x1f\x7f-\x9f]/;

describe('--debug escapes datagram bytes', () => {
  test('pidstatd --debug writes a forged datagram\'s ESC, BEL and C1 bytes as \\xNN', async (t) => {
    const daemon = await startDaemon(['--bind', '127.0.0.1', '--debug']);
    t.after(() => daemon.stop());
    await exchange(daemon.port, Buffer.from('PIDR 1 h\x1b]0;owned\x07\x9b31m 3\n', 'latin1'), { waitMs: 200 });
    assert.ok(await waitFor(() => daemon.log().includes('\\x1b]0;owned\\x07\\x9b31m'), 2000), daemon.log());
    assert.doesNotMatch(daemon.log(), CONTROL, 'no raw control byte reached the log');
  });

  test('pidstat --debug writes a reply\'s control bytes as \\xNN', async (t) => {
    // A stand-in daemon whose reply carries escape sequences after the host it echoes.
    const socket = dgram.createSocket('udp4');
    await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
    t.after(() => socket.close());
    socket.on('message', (msg, rinfo) => {
      const [, pid, host] = msg.toString('latin1').split(/\s+/);
      socket.send(Buffer.from(`EXIS ${pid} 1 ${host}\x1b[2J\x9b\n`, 'latin1'), rinfo.port, rinfo.address);
      socket.send(Buffer.from(`\x1b]0;forged\x07`, 'latin1'), rinfo.port, rinfo.address);
    });
    const sleeper = startSleeper();
    t.after(() => sleeper.stop());
    const r = await runBin('pidstat', ['--no-local', '--debug', '--tries', '1', '--timeout', '500', '--port', String(socket.address().port), '127.0.0.1', String(sleeper.pid)]);
    assert.match(r.stderr, /\\x1b\[2J\\x9b/, r.stderr);
    assert.match(r.stderr, /\\x1b\]0;forged\\x07/, r.stderr);
    assert.doesNotMatch(r.stderr, CONTROL, 'no raw control byte reached stderr');
  });
});

describe('host words', () => {
  test("pidstat ping '[::1]' asks [::1], shown once in brackets", async (t) => {
    if (!(await hasIPv6Loopback())) return t.skip('no ::1 on this host');
    const daemon = await startDaemon(['--bind', '::1']);
    t.after(() => daemon.stop());
    const r = await runBin('pidstat', ['--port', String(daemon.port), 'ping', '[::1]']);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, new RegExp(`^PIDSTATD OK - [0-9.]+ second response on \\[::1\\]:${daemon.port}`));
  });

  test('a host too long to carry the cookie (239 bytes) is a usage error, no stack', async () => {
    const r = await runBin('pidstat', ['--no-local', `${'a'.repeat(239)}:1`]);
    assert.equal(r.code, 64, r.stderr);
    assert.match(r.stderr, /over 238 bytes/);
    assert.doesNotMatch(r.stderr, /\n\s+at /);
  });
});
