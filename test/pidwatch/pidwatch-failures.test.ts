import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { BIN, IS_ROOT } from '../support/helpers.js';
import { commandStarted, exitWithin, sleeperFor, start, watcherReady, workDir } from '../support/jobs.js';

/**
 * pidwatch's failure paths (pidwatch(1), EXIT STATUS): a closed standard
 * output, a --killer that is empty or cannot run (refused before the
 * command is run), a --killer named with shell metacharacters run without a
 * shell, and --cd into a directory the user may not enter. Every process a
 * test starts is stopped by that test, by its pid.
 */

const work = workDir('pidwatch-failures-');


describe('pidwatch: failure paths', () => {
  test('standard output closed: the command runs with it closed, and its status is pidwatch\'s', async (t) => {
    const sleeper = sleeperFor(t);
    const script = start(t, ['-c', `${BIN.pidwatch} --pid ${sleeper.pid} 'echo err >&2; exit 5' >&-; echo status:$? >&2`], { command: '/bin/sh', cwd: work.path });
    const exit = await exitWithin(script, 20_000, 'a job that exits at once');
    assert.equal(exit.code, 0, script.describe());
    assert.equal(script.stderr(), 'err\nstatus:5\n');
  });

  test('--killer \'\': a usage error, exit 64, nothing run', async (t) => {
    const d = work.scratch('killer-empty');
    const job = start(t, ['--killer', '', '--pid', String(process.pid), `touch ${d}/ran`], { cwd: work.path });
    const exit = await exitWithin(job, 20_000, 'a usage error');
    assert.equal(exit.code, 64, job.describe());
    assert.equal(job.stderr().trimEnd().split('\n').length, 1, job.describe());
    assert.ok(!existsSync(join(d, 'ran')));
  });

  test('--killer PROG that cannot run is refused at start: exit 126, the reason in one line, nothing run', async (t) => {
    const d = work.scratch('killer-missing');
    const plain = join(d, 'plain');
    writeFileSync(plain, '#!/bin/sh\n');
    chmodSync(plain, 0o644);
    for (const [killer, why] of [[join(d, 'absent'), 'no such file'], ['pidstat-no-such-killer', 'not found in PATH'], [plain, `${plain} is not executable`], [d, `${d} is not a file`]] as const) {
      const job = start(t, ['--killer', killer, '--pid', String(process.pid), `touch ${d}/ran`], { cwd: work.path });
      const exit = await exitWithin(job, 20_000, 'a killer that cannot run');
      assert.equal(exit.code, 126, job.describe());
      assert.equal(job.stderr(), `pidwatch: --killer ${killer}: ${why}; the command was not run\n`, job.describe());
      assert.ok(!existsSync(join(d, 'ran')));
    }
  });

  test('--killer PROG is executed directly: a name with shell metacharacters runs no shell', async (t) => {
    const sleeper = sleeperFor(t);
    const d = work.scratch('killer');
    // Through a shell this would run `${d}/k` (missing) and `x` (missing): nothing would be logged.
    const killer = join(d, 'k;x $(true)');
    writeFileSync(killer, `#!/bin/sh\necho "$@" >> ${d}/log\nkill "$@"\n`);
    chmodSync(killer, 0o755);
    const job = start(t, ['--interval', '200ms', '--killer', killer, '--pid', String(sleeper.pid), 'sleep 30; true'], { cwd: work.path });
    await commandStarted(job);
    await watcherReady(job.pid);
    await sleeper.stop();
    // A liveness bound, from the death.
    const exit = await exitWithin(job, 10_000, 'after the watched pid died');
    assert.equal(readFileSync(join(d, 'log'), 'latin1'), `-HUP ${job.pid}\n`);
    assert.equal(exit.signal, 'SIGHUP', job.describe());
  });

  test('--cd into a directory the user may not enter (0700, as nobody): one line, exit 126, no hang', { skip: IS_ROOT ? false : 'not root: cannot run as nobody' }, async (t) => {
    const closed = join(work.path, 'closed');
    mkdirSync(closed, { mode: 0o700 });
    const d = work.scratch('cd');
    chmodSync(d, 0o777);
    const job = start(t, ['--reuid', 'nobody', '--regid', 'nogroup', '--clear-groups', BIN.pidwatch, '--cd', closed, '--pid', String(process.pid), `touch ${d}/ran`], { command: 'setpriv', cwd: '/' });
    const exit = await exitWithin(job, 20_000, '--cd into a closed directory');
    assert.equal(exit.code, 126, job.describe());
    const lines = job.stderr().trimEnd().split('\n');
    assert.equal(lines.length, 1, job.describe());
    assert.match(lines[0]!, /^pidwatch: --cd .*closed: permission denied/);
    assert.ok(!existsSync(join(d, 'ran')), 'the command ran');
  });
});
