import assert from 'node:assert/strict';
import { closeSync, existsSync, openSync } from 'node:fs';
import { describe, test } from 'node:test';
import { ROOT, runBin, type BIN, type RunResult } from '../support/helpers.js';

/**
 * Output that cannot be written (pidstat(1)): with stdout on
 * /dev/full, where every write fails with ENOSPC, each command ends with one
 * line on stderr, no stack trace and no path of the tree it was built in,
 * and exit 74 (sysexits' EX_IOERR), which no answer of pidstat (0, 1, 2),
 * of ping (0 to 3) or usage error (64) can be mistaken for. A stderr that
 * cannot be written changes nothing: the answer is on stdout.
 */

const OUTPUT_FAILED = 74;
const NO_FULL = existsSync('/dev/full') ? undefined : 'no /dev/full on this host';
const BUILD_DIR = ROOT.replace(/\/$/, '');

/** Runs a bin with stdout (1) or stderr (2) opened on /dev/full. */
async function runFull(name: keyof typeof BIN, args: string[], fd: 1 | 2 = 1): Promise<RunResult> {
  const full = openSync('/dev/full', 'w');
  try {
    const stdio = fd === 1 ? ['pipe', full, 'pipe'] : ['pipe', 'pipe', full];
    return await runBin(name, args, { stdio: stdio as ('pipe' | number)[] });
  } finally {
    closeSync(full);
  }
}

function describeRun(r: RunResult): string {
  return `exit ${r.code}${r.signal ? ` (${r.signal})` : ''}\nstdout: ${JSON.stringify(r.stdout)}\nstderr: ${JSON.stringify(r.stderr)}`;
}

describe('stdout on a full disk: one line, no stack, exit 74', { skip: NO_FULL }, () => {
  const cases: [keyof typeof BIN, string[]][] = [
    ['pidstat', ['1']],
    ['pidstat', ['--json', '1']],
    ['pidstat', ['--version']],
    ['pidstat', ['--help']],
    // A plugin's UNKNOWN line cannot be written either: the failure is what it says.
    ['pidstat', ['ping', '-w', 'soon']],
    ['pidstatd', ['--help']],
    ['pidstatd', ['--version']],
    ['pidwatch', ['--help']],
    ['pidwatch', ['--version']],
  ];
  for (const [name, args] of cases) {
    test(`${name} ${args.join(' ')} > /dev/full`, async () => {
      const r = await runFull(name, args);
      assert.equal(r.stderr, `${name}: cannot write the output: no space left on device (ENOSPC)\n`, describeRun(r));
      assert.doesNotMatch(r.stderr, /^\s+at /m, 'no stack trace');
      assert.ok(!r.stderr.includes(BUILD_DIR), 'no path of the build tree');
      assert.equal(r.code, OUTPUT_FAILED, describeRun(r));
    });
  }
});

describe('stderr on a full disk changes nothing', { skip: NO_FULL }, () => {
  test('pidstat --debug 1 2> /dev/full: the answer on stdout, exit 0', async () => {
    const r = await runFull('pidstat', ['--debug', '1'], 2);
    assert.equal(r.stdout, 'localhost:1 exists\n', describeRun(r));
    assert.equal(r.code, 0, describeRun(r));
  });

  test('pidstat ping -w soon 2> /dev/full: UNKNOWN on stdout, exit 3', async () => {
    const r = await runFull('pidstat', ['ping', '-w', 'soon'], 2);
    assert.match(r.stdout, /^PIDSTATD UNKNOWN - --warning must be a duration/, describeRun(r));
    assert.equal(r.code, 3, describeRun(r));
  });
});
