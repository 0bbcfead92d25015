import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { INSPECT_PORT_OPTION } from '../../src/daemon/inspector.js';
import { loadLinuxCalls } from '../../src/sys/native.js';
import { openPidRef } from '../../src/sys/pidref.js';
import { IS_ROOT, startSleeper } from '../support/helpers.js';

const pinning = loadLinuxCalls().addon?.pidfdOpen !== undefined;

test('a pidref signals the process it names while it runs, and nothing once it has ended', async () => {
  const sleeper = startSleeper();
  try {
    const ref = openPidRef(sleeper.pid);
    assert.equal(ref.pinned, pinning, 'pinned by a pidfd exactly where the addon offers one');
    assert.equal(ref.signal('SIGCONT'), true);
    await sleeper.stop();
    assert.equal(ref.signal('SIGTERM'), false, 'ended and reaped: nothing to signal');
    ref.close();
    ref.close();
  } finally {
    await sleeper.stop();
  }
});

const unshareSkip = !IS_ROOT
  ? 'needs root, to make a PID namespace whose next pid it picks'
  : !pinning
    ? `the addon has no pidfd signals here (${loadLinuxCalls().why ?? 'an older build'}): signals go by pid`
    : spawnSync('unshare', ['--pid', '--fork', '--mount-proc', 'true']).status !== 0
      ? 'unshare --pid --fork --mount-proc cannot run here'
      : false;

test('the job tree never signals a process that got the pid between its start-token check and its signal', { skip: unshareSkip }, (t) => {
  const script = fileURLToPath(new URL('../support/pidreuse.js', import.meta.url));
  const child = spawnSync('unshare', ['--pid', '--fork', '--mount-proc', process.execPath, INSPECT_PORT_OPTION, script], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(child.status, 0, child.stderr);
  const outcome = JSON.parse(child.stdout) as { earlier: number; later: number; sent: boolean; later_was: string | null };
  if (outcome.later !== outcome.earlier) {
    // The kernel handed out another pid: nothing was reused, so nothing was shown.
    t.skip(`could not make pid ${outcome.earlier} be reused (got ${outcome.later})`);
    return;
  }
  assert.equal(outcome.later_was, 'alive', `the process that got pid ${outcome.earlier} was signalled: ${child.stdout}`);
  assert.equal(outcome.sent, false);
});
