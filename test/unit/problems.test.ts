import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { describeProblem, systemProblem, type Problem } from '../../src/sys/problems.js';

/**
 * The daemon's and the system's problems become words in one place
 * (src/sys/problems.ts): an errno a user meets is said in words, without
 * the syscall and path Node's message repeats; anything else keeps Node's
 * message; and a problem survives the trip between processes as JSON.
 */

function thrown(run: () => unknown): unknown {
  try {
    run();
  } catch (err) {
    return err;
  }
  assert.fail('nothing was thrown');
}

test('a failed call of the system: what was being done, then the errno in words', () => {
  const err = thrown(() => readFileSync('/nonexistent/pidstat-problems'));
  const problem = systemProblem(err, 'key file /nonexistent/pidstat-problems');
  assert.equal(problem.kind, 'system');
  assert.equal(describeProblem(problem), 'key file /nonexistent/pidstat-problems: no such file or directory');
});

test('an errno without words of its own keeps Node\'s message; a thrown non-error is said as it is', () => {
  const odd = Object.assign(new Error('EXDEV: cross-device link not permitted, rename'), { code: 'EXDEV' });
  assert.equal(describeProblem(systemProblem(odd, 'cannot write /x')), 'cannot write /x: EXDEV: cross-device link not permitted, rename');
  assert.equal(describeProblem(systemProblem('gone', 'cannot write /x')), 'cannot write /x: gone');
});

test('every kind in words, and the same words after a trip through JSON (the supervisor\'s IPC)', () => {
  const cases: [Problem, string][] = [
    [{ kind: 'cannot-listen', where: ':: port 1752', code: 'EADDRINUSE', message: 'bind EADDRINUSE :::1752' }, 'cannot listen on :: port 1752: address already in use'],
    [{ kind: 'cannot-listen', where: 'inherited descriptor 3', code: 'ENOTSOCK', message: 'not a socket' }, 'cannot listen on inherited descriptor 3: not a socket'],
    [{ kind: 'exited-at-start', how: 'SIGKILL' }, 'the daemon exited at start (SIGKILL)'],
    [{ kind: 'no-addon', why: 'no prebuilds/linux-x64/pidstat_linux.node' }, 'no prebuilds/linux-x64/pidstat_linux.node'],
    [{ kind: 'old-addon' }, 'the addon was built from an older source (reinstall to rebuild it)'],
    [{ kind: 'no-socket', path: '/dev/log' }, '/dev/log does not exist'],
    [{ kind: 'not-a-socket-name', variable: 'NOTIFY_SOCKET', value: 'x' }, 'NOTIFY_SOCKET=x is neither an absolute path nor an @abstract name'],
  ];
  for (const [problem, words] of cases) {
    assert.equal(describeProblem(problem), words);
    assert.equal(describeProblem(JSON.parse(JSON.stringify(problem)) as Problem), words);
  }
});
