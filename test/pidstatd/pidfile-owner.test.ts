import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, lstatSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test, type TestContext } from 'node:test';
import { childrenOf, freePort, IS_ROOT, isRunning, run, runBin, startDaemon, waitFor } from '../support/helpers.js';
import { descendantsOf, pidIn, python, stopPids } from '../support/detached.js';

/**
 * A pidfile in a directory every user may write (pidstatd(8), --pidfile):
 * only a file of the daemon's user (or root) naming a pidstatd that runs as
 * that user holds a start back. Here root starts the daemon, and `nobody`
 * plays the local user who got there first, with a process of its own whose
 * command line says pidstatd, so the name check alone would refuse.
 */

const NOBODY = 65534;
const AS_NOBODY = ['setpriv', `--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', '--'];

// Sticky and world-writable, as /tmp: nobody may write here, and root may replace nobody's files.
const sticky = mkdtempSync(join(tmpdir(), 'pidstatd-owner-'));
chmodSync(sticky, 0o1777);
after(() => rmSync(sticky, { recursive: true, force: true }));
let count = 0;

/**
 * A script named `pidstatd`, as the original daemon's is: its interpreter's
 * command line says `python3 .../pidstatd`, which the name check takes for a
 * pidstatd. It prints its real and effective user ids once it runs (after
 * making itself non-dumpable if asked, which makes root the owner of the
 * files in its /proc/PID, proc(5)), then sleeps until stopped.
 */
function fakeScript(): string {
  const file = join(sticky, 'pidstatd');
  try {
    statSync(file);
  } catch {
    writeFileSync(file, [
      'import ctypes, os, sys, time',
      'if "nodump" in sys.argv[1:]:',
      '    ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0',
      'print(os.getuid(), os.geteuid(), flush=True)',
      'time.sleep(600)',
      '',
    ].join('\n'), { mode: 0o644 });
  }
  return file;
}

/** Starts the fake pidstatd as `uid` (root or nobody); stopped after the test, by its pid. */
async function startFake(t: TestContext, py: string, uid: number, nodump = false): Promise<number> {
  const args = [fakeScript(), ...(nodump ? ['nodump'] : [])];
  const [command, ...rest] = uid === 0 ? [py, ...args] : [...AS_NOBODY, py, ...args];
  const child = spawn(command!, rest, { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  t.after(async () => {
    child.kill('SIGKILL');
    await exited;
  });
  let said = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (said += chunk));
  assert.ok(await waitFor(() => said.endsWith('\n'), 5000), `the fake pidstatd runs (it said ${JSON.stringify(said)})`);
  assert.equal(said, `${uid} ${uid}\n`, 'it runs as the user meant');
  const cmdline = readFileSync(`/proc/${child.pid!}/cmdline`, 'latin1').split('\0');
  assert.match(cmdline[1] ?? '', /\/pidstatd$/, `its command line says pidstatd: ${cmdline.join(' ')}`);
  if (nodump) assert.equal(statSync(`/proc/${child.pid!}/status`).uid, 0, 'non-dumpable: the files of its /proc entry are root\'s');
  return child.pid!;
}

/** A pidfile naming `pid`, written by `uid` (nobody through setpriv) in the sticky directory. */
function plantPidfile(uid: number, pid: number): string {
  const file = join(sticky, `${++count}-pidstatd.pid`);
  if (uid === 0) writeFileSync(file, `${pid}\n`, { mode: 0o644 });
  else {
    const made = spawnSync(AS_NOBODY[0]!, [...AS_NOBODY.slice(1), 'sh', '-c', 'echo "$1" > "$2"', 'sh', String(pid), file], { encoding: 'utf8' });
    assert.equal(made.status, 0, `nobody writes the pidfile: ${made.stderr}`);
  }
  assert.equal(lstatSync(file).uid, uid, 'the pidfile is owned by the user meant');
  assert.equal(pidIn(file), pid);
  return file;
}

/** Root's pidstatd with --pidfile `file`: it starts, and the file is its own now. */
async function startsAndTakesOver(t: TestContext, file: string, fake: number): Promise<void> {
  const daemon = await startDaemon(['--bind', '127.0.0.1', '--pidfile', file]);
  t.after(() => daemon.stop());
  assert.ok(await waitFor(() => pidIn(file) === daemon.pid, 2000), `the pidfile holds the new daemon's pid ${daemon.pid}, not ${pidIn(file)}; its log: ${daemon.log()}`);
  const stat = lstatSync(file);
  assert.ok(stat.isFile(), 'a regular file of its own');
  assert.equal(stat.uid, 0, 'created anew by root');
  assert.ok(isRunning(fake), 'the process the old file named is left alone');
}

function skipUnlessRoot(t: TestContext): string | undefined {
  if (!IS_ROOT) {
    t.skip('needs root (to be the daemon, and to act as nobody)');
    return undefined;
  }
  const py = python();
  if (py === undefined) t.skip('no python3 for the fake pidstatd');
  return py;
}

describe('a pidfile in a shared directory, started by root', () => {
  test('control: a root file naming root\'s fake pidstatd is refused, so the fake passes for a pidstatd by name', { timeout: 20_000 }, async (t) => {
    const py = skipUnlessRoot(t);
    if (py === undefined) return;
    const fake = await startFake(t, py, 0);
    const file = plantPidfile(0, fake);
    const port = await freePort();
    const result = await runBin('pidstatd', ['--foreground', '--port', String(port), '--bind', '127.0.0.1', '--pidfile', file], { timeoutMs: 5000 });
    // Were it started after all, runBin's timeout ends it (SIGKILL, by its pid): no daemon is left.
    assert.equal(result.code, 1, `refused; stderr: ${result.stderr}`);
    assert.match(result.stderr, new RegExp(`names pidstatd pid ${fake}\\b`));
    assert.equal(pidIn(file), fake, 'the file is left as it was');
  });

  test('nobody\'s file naming nobody\'s process called pidstatd is stale: root starts and replaces it', { timeout: 20_000 }, async (t) => {
    const py = skipUnlessRoot(t);
    if (py === undefined) return;
    const fake = await startFake(t, py, NOBODY);
    await startsAndTakesOver(t, plantPidfile(NOBODY, fake), fake);
  });

  test('root\'s own file naming nobody\'s process called pidstatd is stale (the process owner counts)', { timeout: 20_000 }, async (t) => {
    const py = skipUnlessRoot(t);
    if (py === undefined) return;
    const fake = await startFake(t, py, NOBODY);
    await startsAndTakesOver(t, plantPidfile(0, fake), fake);
  });

  test('...also when that process is non-dumpable, which makes the files of its /proc entry root\'s (its user ids count, not their owner)', { timeout: 20_000 }, async (t) => {
    const py = skipUnlessRoot(t);
    if (py === undefined) return;
    const fake = await startFake(t, py, NOBODY, true);
    await startsAndTakesOver(t, plantPidfile(0, fake), fake);
  });

  test('nobody\'s file naming root\'s pidstatd is stale (the file owner counts): anyone may write a pid there', { timeout: 20_000 }, async (t) => {
    const py = skipUnlessRoot(t);
    if (py === undefined) return;
    const fake = await startFake(t, py, 0);
    await startsAndTakesOver(t, plantPidfile(NOBODY, fake), fake);
  });
});

describe('a pidfile in a shared directory, started by nobody under hidepid=2', () => {
  test('nobody\'s file naming root\'s pidstatd, whose /proc entry nobody cannot read, is stale: kill()\'s EPERM says it is another user\'s', { timeout: 30_000 }, async (t) => {
    const py = skipUnlessRoot(t);
    if (py === undefined) return;
    const mounted = await run('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', 'mount -t proc -o hidepid=2 proc /proc'], { timeoutMs: 10_000 })
      .catch((err: Error) => ({ code: -1, stderr: err.message }));
    if (mounted.code !== 0) return t.skip(`cannot mount a /proc with hidepid=2 in a mount namespace of our own: ${mounted.stderr.trim()}`);
    const fake = await startFake(t, py, 0);
    const file = plantPidfile(NOBODY, fake);
    // The daemon as nobody, in a mount namespace whose /proc hides root's processes from it.
    const daemon = await startDaemon(['--bind', '127.0.0.1', '--pidfile', file], {}, (command, args) => [
      'unshare',
      ['--mount', '--propagation', 'private', '--fork', '--kill-child', 'sh', '-c',
        'mount -t proc -o hidepid=2 proc /proc && exec setpriv "$@"', 'sh', ...AS_NOBODY.slice(1, -1), command, ...args],
    ]);
    t.after(async () => {
      // setpriv's change of user clears the parent-death signal of --kill-child: the daemon is stopped by its own pid.
      await stopPids(descendantsOf(daemon.pid));
      await daemon.stop();
    });
    const inner = childrenOf(daemon.pid)[0];
    assert.ok(inner !== undefined && await waitFor(() => pidIn(file) === inner, 2000), `the pidfile holds nobody's daemon ${inner}, not ${pidIn(file)}; its log: ${daemon.log()}`);
    assert.ok(isRunning(fake), 'root\'s process is left alone');
    const hidden = await run('nsenter', ['-t', String(inner), '-m', ...AS_NOBODY, 'sh', '-c', 'test -e "/proc/$1" && echo visible; kill -0 "$1" 2>&1', 'sh', String(fake)], { timeoutMs: 10_000 });
    assert.doesNotMatch(hidden.stdout, /visible/, `/proc/${fake} must be hidden from nobody there, else nothing is tested`);
    assert.match(hidden.stdout, /not permitted/i, 'and kill -0 says EPERM');
  });
});
