import assert from 'node:assert/strict';
import { existsSync, readlinkSync } from 'node:fs';
import { describe, test, type TestContext } from 'node:test';
import { HAND_OVER_AS_LISTEN_FD, pidsWithArgs, python, spawnProc, stopDetached, scratchFiles } from '../support/detached.js';
import { ask, binCommand, freePort, hasIPv6Loopback, runBin, startDaemon, waitFor, silentSocket } from '../support/helpers.js';

/**
 * pidstatd's socket (pidstatd(8)): a busy port refused in one line (in the
 * foreground and detached), and a socket handed over by socket activation.
 * What the socket layer says differs between the addon and Node's dgram:
 * these run again through dgram (dgram-io.test.ts). Real processes and real
 * UDP on loopback; every process started here is stopped here by its pid.
 */

/** A path in this file's scratch folder that nothing uses yet. */
const scratchFile = scratchFiles('pidstatd-sockets-');

/** The lines of a text, without the empty last one. */
function lines(text: string): string[] {
  return text.split('\n').filter((line, i, all) => line !== '' || i < all.length - 1);
}

/** A UDP socket bound to 127.0.0.1 on an ephemeral port, held by this test. */
async function holdPort(t: TestContext): Promise<number> {
  const socket = await silentSocket();
  socket.on('error', () => {});
  t.after(() => new Promise<void>((resolve) => socket.close(() => resolve())));
  return socket.address().port;
}

describe('a busy port', () => {
  for (const blocker of ['a socket', 'a running daemon'] as const) {
    for (const form of ['--foreground', 'detached'] as const) {
      test(`held by ${blocker}: ${form} exits 1 with one line naming address, port and reason, and leaves no process`, { timeout: 20_000 }, async (t) => {
        let port: number;
        if (blocker === 'a socket') {
          port = await holdPort(t);
        } else {
          const daemon = await startDaemon(['--bind', '127.0.0.1']);
          t.after(() => daemon.stop());
          port = daemon.port;
        }
        const pidfile = scratchFile('busy.pid');
        t.after(() => stopDetached(pidfile));
        const args = ['--port', String(port), '--bind', '127.0.0.1', '--pidfile', pidfile, ...(form === 'detached' ? [] : ['--foreground'])];
        const before = new Set(pidsWithArgs('--port', String(port)));
        const result = await runBin('pidstatd', args, { timeoutMs: 10_000 });
        assert.equal(result.code, 1, `exit status 1; stderr: ${result.stderr}`);
        assert.equal(result.stdout, '');
        const text = lines(result.stderr);
        assert.equal(text.length, 1, `one line on stderr: ${JSON.stringify(result.stderr)}`);
        assert.match(text[0]!, /127\.0\.0\.1/, 'names the address');
        assert.match(text[0]!, new RegExp(`\\b${port}\\b`), 'names the port');
        assert.match(text[0]!, /address already in use/, 'names the reason');
        assert.doesNotMatch(result.stderr, /^\s+at |Error:|internal error/m, 'no stack trace');
        assert.equal(existsSync(pidfile), false, 'no pidfile is left');
        const leftover = () => pidsWithArgs('--port', String(port)).filter((pid) => !before.has(pid));
        assert.ok(await waitFor(() => leftover().length === 0, 20_000), `no leftover process: ${leftover().join(' ')}`);
      });
    }
  }
});

describe('an inherited socket (systemd socket activation)', () => {
  // Binds a UDP socket, puts it on fd 3, says so in LISTEN_FDS/LISTEN_PID and
  // execs the daemon, which keeps the pid. Prints the port first.
  const WRAPPER = [
    'import os, socket, sys',
    'addr = sys.argv[1]',
    's = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_DGRAM)',
    's.bind((addr, 0))',
    'print(s.getsockname()[1], flush=True)',
    ...HAND_OVER_AS_LISTEN_FD,
  ].join('\n');

  for (const address of ['127.0.0.1', '::1']) {
    test(`pidstatd --foreground answers on an inherited ${address} socket`, { timeout: 20_000 }, async (t) => {
      const py = python();
      if (py === undefined) return t.skip('no python3 to hand over a socket');
      if (address === '::1' && !(await hasIPv6Loopback())) return t.skip('this host has no usable ::1');
      // Were the inherited socket ignored, the daemon would bind here instead (loopback, ephemeral).
      const fallback = await freePort(address);
      const env: NodeJS.ProcessEnv = { ...process.env, PIDSTAT_PORT: String(fallback) };
      delete env['LISTEN_FDS'];
      delete env['LISTEN_PID'];
      const [node, daemonArgs] = binCommand('pidstatd', ['--foreground', '--bind', address]);
      const daemon = spawnProc(py, ['-c', WRAPPER, address, node, ...daemonArgs], { env });
      t.after(() => daemon.stop());
      const port = Number((await daemon.waitFor(/^([0-9]+)$/m, 'stdout'))[1]);
      const listening = await daemon.waitFor(/listening on .*$/m);
      const shown = address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
      assert.ok(listening[0].includes(shown), `says it listens on the inherited ${shown}: ${listening[0]}`);
      assert.equal(readlinkSync(`/proc/${daemon.pid}/exe`), process.execPath, 'the daemon kept the pid the socket was meant for');
      assert.equal(await ask(port, 'PIDR 1 sa 3', { address }), 'EXIS 1 1 sa', `answers on the inherited port ${port}`);
      assert.equal(await ask(fallback, 'PIDR 1 sa 3', { address, waitMs: 200 }), undefined, 'binds nothing else');
      assert.deepEqual(await daemon.stop(), { code: 0, signal: null }, `SIGTERM ends it with 0; stderr: ${daemon.stderr()}`);
    });
  }
});
