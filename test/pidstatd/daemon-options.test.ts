import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { DAEMON_HEAP_OPTION } from '../../src/daemon/heap.js';
import { INSPECT_PORT_OPTION } from '../../src/daemon/inspector.js';
import { BIN, ROOT, binEnv, childrenOf, isRunning, waitFor } from '../support/helpers.js';

/**
 * The daemon always runs with its bin's node options, the inspector guard
 * and the heap option (pidstatd(8), Node options), however it is started:
 * `npm start`, and node given the bin as its script.
 */

const options = [INSPECT_PORT_OPTION, DAEMON_HEAP_OPTION];

function commandLine(pid: number): string[] {
  return readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0').slice(0, -1);
}

/** The first process under `pid` (itself included) whose command line runs the daemon's bin. */
function daemonUnder(pid: number): number | undefined {
  const queue = [pid];
  while (queue.length > 0) {
    const next = queue.shift()!;
    try {
      if (commandLine(next).some((word) => word.endsWith('pidstatd.cjs')) && commandLine(next)[0]?.endsWith('node')) return next;
    } catch {
      continue;
    }
    queue.push(...childrenOf(next));
  }
  return undefined;
}

/** Starts `command`, waits for the daemon's "listening on" line, and returns the daemon's pid with everything written to stderr; stops it all by pid. */
async function startAndInspect(command: string, args: string[]): Promise<{ daemon: number; argv: string[]; stderr: string }> {
  const child = spawn(command, args, { cwd: ROOT, env: binEnv({ npm_config_loglevel: 'silent' }), stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let daemon: number | undefined;
  try {
    assert.ok(await waitFor(() => /listening on /.test(stderr), 30_000), `the daemon did not start: ${stderr}`);
    daemon = daemonUnder(child.pid!);
    assert.ok(daemon !== undefined, 'the daemon process was found');
    return { daemon, argv: commandLine(daemon), stderr };
  } finally {
    if (daemon !== undefined) process.kill(daemon, 'SIGTERM');
    if (daemon !== undefined) await waitFor(() => !isRunning(daemon!), 10_000);
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    await exited;
  }
}

test('npm start runs the daemon through its bin, with the inspector guard and the heap option on its command line', async () => {
  const { argv } = await startAndInspect('npm', ['start', '--', '--port', '0', '--bind', '127.0.0.1']);
  for (const option of options) assert.ok(argv.includes(option), `${option} in ${JSON.stringify(argv)}`);
});

test('node given the bin as its script runs the daemon with its options, in place where Node can exec, else says it does not', async () => {
  const { argv, stderr } = await startAndInspect(process.execPath, [BIN.pidstatd, '--foreground', '--port', '0', '--bind', '127.0.0.1']);
  if ('execve' in process) {
    for (const option of options) assert.ok(argv.includes(option), `${option} in ${JSON.stringify(argv)}`);
    assert.doesNotMatch(stderr, /runs without/);
  } else {
    assert.match(stderr, /^pidstatd: node runs without --inspect-port=\[fe80::1\]:9229 --max-semi-space-size=4 \(this Node cannot exec in place\): start the daemon through its bin/m);
  }
});
