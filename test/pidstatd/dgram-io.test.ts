import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { loadLinuxCalls } from '../../src/sys/native.js';
import { ROOT, run, runBin, startDaemon, startSleeper } from '../support/helpers.js';

/**
 * The commands read their sockets through the addon native/linux.c where
 * it was built, and through Node's dgram where not. The other test files run
 * the first way (here, where cc is); this one runs the daemon's and the
 * client's tests again the second way, with PIDSTAT_IO=dgram, and checks
 * that the variable reaches each command.
 */

/**
 * What dgram changes: the daemon's answers, its socket's errors and an
 * inherited socket's family (daemon-sockets), and the client's sockets and
 * their errors. The daemon's life as a process (daemon-lifecycle.test.ts:
 * signals, pidfiles, the command line) and the detached daemon's
 * (detached.test.ts) do not depend on how the socket is read, and run once;
 * so do the robustness tests (many targets, a churning process table),
 * which ask the same of the socket at scale, through the addon.
 */
const AGAIN = ['pidstatd/daemon', 'pidstatd/daemon-sockets', 'pidstat/client'];

test('PIDSTAT_IO picks how pidstatd and pidstat read their sockets', async (t) => {
  const io: Record<string, RegExp> = { dgram: /reading (datagrams|sockets) through Node's dgram/ };
  const { why } = loadLinuxCalls();
  if (why === undefined) io['batch'] = /reading (datagrams|sockets) in batches/;
  else t.diagnostic(`PIDSTAT_IO=batch not tried: ${why} (test/features/startup.test.ts checks the error it gives)`);
  const sleeper = startSleeper();
  try {
    for (const [name, said] of Object.entries(io)) {
      const daemon = await startDaemon(['--bind', '127.0.0.1', '--debug'], { PIDSTAT_IO: name });
      try {
        const asked = await runBin('pidstat', ['--debug', '--no-local', '--port', String(daemon.port), '127.0.0.1', String(sleeper.pid)], { env: { PIDSTAT_IO: name } });
        assert.equal(asked.stdout, `127.0.0.1:${sleeper.pid} exists\n`, asked.stderr);
        assert.match(asked.stderr, said);
        assert.match(daemon.log(), said);
      } finally {
        await daemon.stop();
      }
    }
    const wrong = await runBin('pidstat', ['--no-local', '127.0.0.1', '1'], { env: { PIDSTAT_IO: 'fast' } });
    assert.equal(wrong.code, 64);
    assert.match(wrong.stderr, /PIDSTAT_IO must be auto, batch or dgram, not 'fast'/);
  } finally {
    await sleeper.stop();
  }
});

test(`the tests of ${AGAIN.join(', ')} pass again through Node's dgram`, { timeout: 170_000 }, async (t) => {
  const env: NodeJS.ProcessEnv = { ...process.env, PIDSTAT_IO: 'dgram' };
  // Else the inner runner takes itself for a child of this one.
  delete env['NODE_TEST_CONTEXT'];
  const files = AGAIN.map((name) => join(ROOT, 'dist', 'test', ...name.split('/')) + '.test.js');
  const result = await run(process.execPath, ['--test', '--test-concurrency=3', '--test-reporter=tap', ...files], { env, timeoutMs: 160_000 });
  const count = (what: string) => Number(new RegExp(`^# ${what} (\\d+)$`, 'm').exec(result.stdout)?.[1]);
  t.diagnostic(`through dgram: # pass ${count('pass')}, # fail ${count('fail')}, # skipped ${count('skipped')}`);
  // Each failure with the lines that tell why (its YAML block), so a failure seen once can be diagnosed.
  const lines = result.stdout.split('\n');
  const failures = lines.flatMap((line, i) => (/^\s*not ok /.test(line) ? lines.slice(i, i + 30) : []));
  assert.equal(result.code, 0, `${failures.join('\n')}\n${result.stderr}`);
  assert.equal(count('fail'), 0);
  // The three files hold some fifty tests: far fewer passed means they did not run.
  assert.ok(count('pass') >= 40, `only ${count('pass')} tests passed`);
});
