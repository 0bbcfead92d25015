import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { fileLimit } from '../../src/sys/filelimit.js';
import { DAEMON_HEAP_OPTION } from '../../src/daemon/heap.js';
import { BIN, startDaemon } from '../support/helpers.js';

/**
 * What lets the daemon watch many processes: a descriptor each (a pidfd),
 * and a young generation that many subscriptions cannot grow. How many it
 * holds, and how fast it tells 10 000 deaths at once, is the bench's
 * 'mass deaths' figure (test/bench/deaths.ts).
 */

test('a daemon started with a soft limit of 1024 open files has the hard limit: a pidfd for each watched process', async (t) => {
  const hard = fileLimit()?.hard;
  if (hard === undefined || hard <= 1024) return t.skip(`the hard limit is ${hard ?? 'unknown'}`);
  const limited = await startDaemon(['--bind', '127.0.0.1'], {}, (command, args) => ['/bin/sh', ['-c', 'ulimit -S -n 1024 && exec "$0" "$@"', command, ...args]]);
  try {
    const line = readFileSync(`/proc/${limited.pid}/limits`, 'utf8').split('\n').find((text) => text.startsWith('Max open files'));
    assert.match(line ?? '', new RegExp(`^Max open files\\s+${hard}\\s+${hard}\\s`), `the daemon kept the soft limit: ${line}`);
  } finally {
    await limited.stop();
  }
});

test('the daemon\'s command line caps its young generation, as the tests run it', async () => {
  assert.ok(readFileSync(BIN.pidstatd, 'utf8').split('\n')[1]!.includes(` '${DAEMON_HEAP_OPTION}' `), 'bin/pidstatd.cjs does not give node the heap option');
  const daemon = await startDaemon(['--bind', '127.0.0.1']);
  try {
    assert.ok(readFileSync(`/proc/${daemon.pid}/cmdline`, 'latin1').split('\0').includes(DAEMON_HEAP_OPTION), 'the daemon under test runs without it');
  } finally {
    await daemon.stop();
  }
});
