import assert from 'node:assert/strict';
import type dgram from 'node:dgram';
import { after, before, test } from 'node:test';
import { BIN, binEnv, modulesLoadedBy, run, runBin, silentSocket } from '../support/helpers.js';

/**
 * The spinner (pidstat(1)): on a terminal's stderr while answers are
 * awaited for over ~200 ms, saying how many are missing and which try this
 * is; never in pipes or files. A silent port keeps pidstat waiting.
 */

let silent: dgram.Socket;
let port: number;
before(async () => {
  silent = await silentSocket();
  port = silent.address().port;
});
after(() => silent?.close());

const args = () => ['--no-local', '--port', String(port), '--try-timeout', '400ms', '--tries', '2', '127.0.0.1:1', '127.0.0.1:2'];

test('on a terminal, a spinner says how many answers are missing and which try this is', async (t) => {
  const probe = await run('script', ['-qec', 'true', '/dev/null'], { timeoutMs: 5000 }).catch(() => undefined);
  if (probe?.code !== 0) return t.skip('no pseudo-terminal here (util-linux script)');
  const command = [process.execPath, BIN.pidstat, ...args()].map((w) => `'${w}'`).join(' ');
  // A terminal of zero columns keeps the spinner off (ora would hang): give it a size.
  // Nor does it spin on TERM=dumb or under CI, as ora's own test says.
  const env = binEnv({ TERM: 'xterm-256color', CI: undefined });
  const r = await run('script', ['-qec', `stty cols 80 rows 24; ${command}`, '/dev/null'], { env, timeoutMs: 10_000 });
  assert.match(r.stdout, /waiting for 2 answers \(try [12] of 2\)/, r.stdout);
  assert.match(r.stdout, /127\.0\.0\.1:1 (\x1b\[[0-9;]*m)?no_reply/);
});

test('in a pipe, there is no spinner and no escape code on stderr or stdout', async () => {
  const r = await runBin('pidstat', args());
  assert.equal(r.code, 2);
  assert.doesNotMatch(r.stderr, /waiting for|\x1b/);
  assert.doesNotMatch(r.stdout, /\x1b/);
  assert.deepEqual(r.stdout.split('\n').filter(Boolean), ['127.0.0.1:1 no_reply', '127.0.0.1:2 no_reply']);
});

test('on a terminal with TERM=dumb, nothing but the results: no spinner lines', async (t) => {
  const probe = await run('script', ['-qec', 'true', '/dev/null'], { timeoutMs: 5000 }).catch(() => undefined);
  if (probe?.code !== 0) return t.skip('no pseudo-terminal here (util-linux script)');
  const command = [process.execPath, BIN.pidstat, ...args()].map((w) => `'${w}'`).join(' ');
  const r = await run('script', ['-qec', `stty cols 80 rows 24; ${command}`, '/dev/null'], { env: binEnv({ TERM: 'dumb', CI: undefined }), timeoutMs: 10_000 });
  assert.doesNotMatch(r.stdout, /waiting for/);
  assert.match(r.stdout, /127\.0\.0\.1:2 (\x1b\[[0-9;]*m)?no_reply/);
});

test('on /dev/null (a script\'s `>/dev/null 2>&1`), the exit status alone, and no terminal code loaded to find that out', async () => {
  // node:tty loads node:net and the streams: a tenth of a pidstat run.
  const { status, modules } = await modulesLoadedBy('pidstat', args(), { redirect: '>/dev/null 2>&1', env: { TERM: 'xterm-256color', CI: undefined } });
  assert.equal(status, 2, 'no_reply: exit 2');
  assert.deepEqual(modules.filter((m) => m === 'tty' || m === 'net'), []);
});
