import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT } from './helpers.js';

/**
 * A process with many threads (test/support/threads.c, built with `cc`), run as
 * `nobody` where the tests run as root: the target a local user with no
 * privilege can start, to make each read of its /proc/PID/stat cost what
 * its thread count costs.
 */

/** nobody's uid and gid, for what a local user with no privilege does. */
export const NOBODY = 65534;

export interface ManyThreads {
  pid: number;
  /** Threads made besides the first. */
  threads: number;
  stop(): Promise<void>;
}

/** Starts a process of `count` threads (as nobody where we are root), or says why it cannot. */
export async function startManyThreads(count: number): Promise<ManyThreads | { reason: string }> {
  if (spawnSync('cc', ['--version'], { stdio: 'ignore' }).error) return { reason: '`cc` not found, to build test/support/threads.c' };
  const dir = mkdtempSync(join(tmpdir(), 'pidstat-threads-'));
  // mkdtemp makes it 0700: nobody must be able to run what is in it.
  chmodSync(dir, 0o755);
  const binary = join(dir, 'threads');
  const built = spawnSync('cc', ['-O2', '-pthread', '-o', binary, join(ROOT, 'test', 'support', 'threads.c')], { encoding: 'utf8' });
  if (built.status !== 0) {
    rmSync(dir, { recursive: true, force: true });
    return { reason: `cc test/support/threads.c failed: ${(built.stderr || String(built.error)).trim()}` };
  }
  const asNobody = process.getuid?.() === 0 ? { uid: NOBODY, gid: NOBODY } : {};
  const child = spawn(binary, [String(count)], { stdio: ['ignore', 'pipe', 'ignore'], ...asNobody });
  let failed = '';
  const exited = new Promise<void>((resolve) => {
    child.once('exit', () => resolve());
    child.once('error', (err) => {
      failed = err.message;
      resolve();
    });
  });
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null && failed === '') child.kill('SIGKILL');
    await exited;
    rmSync(dir, { recursive: true, force: true });
  };
  const first = await Promise.race([once(child.stdout!, 'data').then(([chunk]) => String(chunk)), exited.then(() => undefined)]);
  const threads = Number(first?.trim());
  if (first === undefined || !(threads > 0)) {
    await stop();
    return { reason: `test/support/threads.c made no thread (${failed || (first === undefined ? 'it exited' : first.trim())})` };
  }
  return { pid: child.pid!, threads, stop };
}
