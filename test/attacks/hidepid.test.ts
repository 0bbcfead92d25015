import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readlinkSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { descendantsOf, stopPids } from '../support/detached.js';
import { BIN, IS_ROOT, ROOT, ask, binCommand, binEnv, childrenOf, deadPid, run, sleep, startDaemon, startSleeper, waitFor, type Daemon, type RunResult } from '../support/helpers.js';
import { watchersOf } from '../support/jobs.js';

/**
 * EPERM means exists (doc/protocol.md), where /proc cannot tell: in a
 * mount namespace of the test's own whose /proc is mounted with hidepid=2,
 * nobody sees no /proc/<pid> of root's, and kill(pid, 0) says EPERM. A
 * daemon run there as nobody, pidstat's local probe and pidwatch, as nobody
 * there too, must all take a live root process for alive: a false "dead"
 * kills a job.
 */

const NOBODY = ['--reuid=65534', '--regid=65534', '--clear-groups'];
const INTERVAL_MS = 200;

function describeRun(r: RunResult): string {
  return `exit ${r.code} signal ${r.signal}\n--- stdout ---\n${r.stdout}--- stderr ---\n${r.stderr}`;
}

/** Why this test cannot run here, or undefined. */
async function whyNot(): Promise<string | undefined> {
  if (!IS_ROOT) return `not root (uid ${process.getuid?.()}): needs unshare, mount and setpriv`;
  const asNobody = await run('setpriv', [...NOBODY, process.execPath, BIN.pidstat, '--version'], { cwd: '/', env: binEnv(), timeoutMs: 10_000 })
    .catch((err: Error) => ({ code: -1, stderr: err.message }));
  if (asNobody.code !== 0) return `cannot run the built bins as nobody (no setpriv, or ${ROOT} unreadable by others): ${asNobody.stderr.trim()}`;
  const mounted = await run('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', 'mount -t proc -o hidepid=2 proc /proc'], { timeoutMs: 10_000 })
    .catch((err: Error) => ({ code: -1, stderr: err.message }));
  if (mounted.code !== 0) return `cannot mount a /proc with hidepid=2 in a mount namespace of our own: ${mounted.stderr.trim()}`;
  return undefined;
}

const why = await whyNot();

describe('under hidepid=2, as nobody, a live root process exists (kill() says EPERM)', { skip: why ?? false }, () => {
  let root: ReturnType<typeof startSleeper>;
  /** unshare, whose child mounted the /proc and became the daemon. */
  let daemon: Daemon;
  /** The daemon itself (nobody), in the namespace the other commands enter. */
  let inner: number;

  before(async () => {
    root = startSleeper();
    daemon = await startDaemon(['--bind', '127.0.0.1'], {}, (command, args) => [
      'unshare',
      ['--mount', '--propagation', 'private', '--fork', '--kill-child', 'sh', '-c', 'mount -t proc -o hidepid=2 proc /proc && exec setpriv "$@"', 'sh', ...NOBODY, command, ...args],
    ]);
    inner = childrenOf(daemon.pid)[0]!;
  });

  after(async () => {
    // setpriv's change of user clears the parent-death signal of --kill-child: the daemon is stopped by its own pid.
    await stopPids(descendantsOf(daemon.pid));
    await daemon.stop();
    await root.stop();
  });

  /** argv run as nobody in the daemon's mount namespace. */
  function inside(argv: readonly string[]): [string, string[]] {
    return ['nsenter', ['-t', String(inner), '-m', 'setpriv', ...NOBODY, ...argv]];
  }

  function runInside(name: keyof typeof BIN, args: readonly string[]): Promise<RunResult> {
    const [command, argv] = inside(binCommand(name, args).flat());
    return run(command, argv, { cwd: '/', env: binEnv(), timeoutMs: 15_000 });
  }

  test('the set-up: the daemon is nobody\'s, in the namespace, which hides the root process from nobody', async () => {
    assert.ok(inner > 1, 'the daemon runs');
    assert.notEqual(readlinkSync(`/proc/${inner}/ns/mnt`), readlinkSync('/proc/self/ns/mnt'), 'in a mount namespace of its own');
    const [command, argv] = inside(['sh', '-c', 'test -e "/proc/$1" && echo visible; kill -0 "$1" 2>&1; echo "uid $(id -u)"', 'sh', String(root.pid)]);
    const r = await run(command, argv, { cwd: '/', timeoutMs: 10_000 });
    assert.doesNotMatch(r.stdout, /visible/, `/proc/${root.pid} must be hidden from nobody, else nothing is tested: ${describeRun(r)}`);
    assert.match(r.stdout, /not permitted/i, `kill -0 says EPERM: ${describeRun(r)}`);
    assert.match(r.stdout, /^uid 65534$/m);
  });

  test('nobody\'s daemon answers exists about it, through pidstat --no-local and asked directly', async () => {
    const r = await runInside('pidstat', ['--no-local', '--port', String(daemon.port), `127.0.0.1:${root.pid}`]);
    assert.equal(r.code, 0, describeRun(r));
    assert.equal(r.stdout, `127.0.0.1:${root.pid} exists\n`);
    // Flags 15: its start token is unreadable, so none comes; flags 2 (dead only): no reply at all.
    assert.equal(await ask(daemon.port, `PIDR ${root.pid} h 15\n`), `EXIS ${root.pid} 1 h`);
    assert.equal(await ask(daemon.port, `PIDR ${root.pid} h 2\n`, { waitMs: 500 }), undefined);
    const dead = await deadPid();
    assert.equal(await ask(daemon.port, `PIDR ${dead} h 7\n`), `EXIS ${dead} 0 h`, 'a dead pid is still dead');
  });

  test('pidstat\'s local probe, as nobody there: exists', async () => {
    const r = await runInside('pidstat', [String(root.pid)]);
    assert.equal(r.code, 0, describeRun(r));
    assert.equal(r.stdout, `localhost:${root.pid} exists\n`);
  });

  for (const [how, args] of [['locally', []], ['through nobody\'s daemon (--no-local)', ['--no-local', '--host', '127.0.0.1']]] as const) {
    test(`pidwatch as nobody there, watching it ${how}, leaves its job running for many intervals; a dead pid ends it`, async (t) => {
      const start = (pid: number) => {
        const [command, argv] = inside(binCommand('pidwatch', [...args, '--port', String(daemon.port), '--interval', `${INTERVAL_MS}ms`, '--pid', String(pid), 'sleep', '30']).flat());
        const child = spawn(command, argv, { cwd: '/', env: binEnv(), stdio: ['ignore', 'ignore', 'pipe'] });
        let stderr = '';
        child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
        const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
        t.after(async () => {
          // The job (pidwatch's own process, exec'd in place) first, then its watcher and whatever is left, by pid.
          const family = [...descendantsOf(child.pid!), ...watchersOf(child.pid!)];
          child.kill('SIGTERM');
          await Promise.race([exited, sleep(5000)]);
          await stopPids([child.pid!, ...family]);
          await exited;
        });
        return { child, stderr: () => stderr };
      };
      const watching = start(root.pid);
      await sleep(12 * INTERVAL_MS + 500);
      assert.deepEqual({ code: watching.child.exitCode, signal: watching.child.signalCode }, { code: null, signal: null }, `the job was ended: ${watching.stderr()}`);
      assert.equal(readlinkSync(`/proc/${watching.child.pid}/ns/mnt`), readlinkSync(`/proc/${inner}/ns/mnt`), 'pidwatch runs in the namespace');
      assert.doesNotMatch(watching.stderr(), /dead/, 'no death reported');
      // The same set-up with a dead pid ends the job: the watcher does watch.
      const control = start(await deadPid());
      assert.ok(await waitFor(() => control.child.exitCode !== null || control.child.signalCode !== null, 10_000), `a dead pid did not end the job: ${control.stderr()}`);
      assert.deepEqual({ code: watching.child.exitCode, signal: watching.child.signalCode }, { code: null, signal: null }, 'the first job still runs');
    });
  }
});
