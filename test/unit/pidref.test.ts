import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { INSPECT_PORT_OPTION } from '../../src/daemon/inspector.js';
import { loadLinuxCalls } from '../../src/sys/native.js';
import { isSameProcess, isSameStart, openPidRef, processExists, processRef, watchEnd } from '../../src/sys/pidref.js';
import { IS_ROOT, startSleeper, waitFor } from '../support/helpers.js';

const pinning = loadLinuxCalls().addon?.pidfdOpen !== undefined;
const exitWatches = loadLinuxCalls().addon?.watchExit !== undefined;

test('the pid-reuse check: the same start token is the same process; another token is another process; an unknown one tells nothing', async () => {
  const sleeper = startSleeper();
  try {
    const ref = processRef(sleeper.pid);
    assert.match(ref.start ?? '', /^[0-9]+$/, 'a start token is read for a live process');
    assert.equal(isSameProcess(ref), true);
    assert.equal(processExists(ref), true);
    const other = { pid: sleeper.pid, start: String(Number(ref.start) + 1) };
    assert.equal(isSameProcess(other), false, 'a process started at another tick is another process');
    assert.equal(processExists(other), false, 'a pid that is another process\'s counts as dead');
    assert.equal(isSameProcess({ pid: sleeper.pid }), undefined, 'no start token: nothing to tell by');
    assert.equal(processExists({ pid: sleeper.pid }), true, 'no start token: kill(pid, 0) alone');
    assert.equal(isSameStart(ref, undefined), undefined);
    assert.equal(isSameStart(ref, ref.start), true);
    await sleeper.stop();
    assert.equal(processExists(ref), false, 'ended and reaped');
    assert.equal(isSameProcess(ref), undefined, 'gone: no start token to read');
  } finally {
    await sleeper.stop();
  }
});

const noExitWatch = exitWatches ? false : `the addon has no exit watches here (${loadLinuxCalls().why ?? 'an older build'})`;

test('watchEnd tells a process\'s end once; a stopped watch tells nothing; a pid already another process\'s is told at once', { skip: noExitWatch }, async () => {
  const first = startSleeper();
  const second = startSleeper();
  try {
    let ended = 0;
    const stop = watchEnd(processRef(first.pid), () => ended++);
    assert.equal(typeof stop, 'function');
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(ended, 0, 'told while it runs');
    await first.stop();
    assert.ok(await waitFor(() => ended === 1, 10_000), 'its end was not told');
    (stop as () => void)();
    assert.equal(ended, 1);

    let stoppedTold = 0;
    const stopped = watchEnd(processRef(second.pid), () => stoppedTold++) as () => void;
    stopped();
    await second.stop();
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.equal(stoppedTold, 0, 'told after its watch was stopped');

    // The pid's process now is not the one named (its start token differs): the one named has ended.
    const third = startSleeper();
    try {
      const ref = processRef(third.pid);
      let reused = 0;
      const watching = watchEnd({ pid: third.pid, start: String(Number(ref.start) + 1) }, () => reused++);
      assert.equal(typeof watching, 'function');
      assert.equal(reused, 0, 'told synchronously, before the caller has its stop');
      await Promise.resolve();
      assert.equal(reused, 1, 'a pid that is another process\'s was not told as the end of the one named');
      let cancelled = 0;
      (watchEnd({ pid: third.pid, start: String(Number(ref.start) + 1) }, () => cancelled++) as () => void)();
      await Promise.resolve();
      assert.equal(cancelled, 0, 'stopped before its microtask, and told anyway');
    } finally {
      await third.stop();
    }
  } finally {
    await first.stop();
    await second.stop();
  }
});

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
