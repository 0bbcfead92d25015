import assert from 'node:assert/strict';
import type dgram from 'node:dgram';
import { after, before, describe, test } from 'node:test';
import { runBin, silentSocket, startSleeper, type RunResult } from '../support/helpers.js';

/**
 * One name, one meaning, one unit (pidstat(1), DURATIONS): `-t`/`--timeout`
 * is the most a whole command takes, for a query, `wait` and `ping` alike; a
 * query's wait per try is `--try-timeout`; a bare number is seconds wherever
 * one is taken; the options that took bare ms before (--interval,
 * --dead-after, --kill-after) refuse a bare number with both spellings. The
 * bounds below are liveness bounds.
 */

let silent: dgram.Socket;
let port: number;

before(async () => {
  silent = await silentSocket();
  port = silent.address().port;
});
after(() => silent.close());

function describeRun(r: RunResult): string {
  return `exit ${r.code}\n--- stdout ---\n${r.stdout}--- stderr ---\n${r.stderr}`;
}

async function timed(args: string[]): Promise<RunResult & { ms: number }> {
  const started = performance.now();
  const result = await runBin('pidstat', args, { timeoutMs: 60_000 });
  return { ...result, ms: performance.now() - started };
}

describe('pidstat -t: the whole run', () => {
  test('-t 1.5 against a port that never answers ends the run after 1.5 s, tries left or not: no_reply, exit 2', async () => {
    const r = await timed(['--no-local', '--port', String(port), '--try-timeout', '300ms', '--tries', '1000', '-t', '1.5', '127.0.0.1:1']);
    assert.equal(r.code, 2, describeRun(r));
    assert.equal(r.stdout, '127.0.0.1:1 no_reply\n');
    assert.match(r.stderr, /^pidstat: 127\.0\.0\.1:1: no reply after [0-9]+ tries\n$/);
    assert.ok(r.ms >= 1400, `ended after ${Math.round(r.ms)} ms, before -t 1.5`);
    assert.ok(r.ms < 20_000, `ended after ${Math.round(r.ms)} ms: -t did not end it (1000 tries of 300 ms would take 300 s)`);
  });

  test('an old script\'s --timeout 3000 (ms per try before) still ends when its tries do: the limit is longer', async () => {
    const r = await timed(['--no-local', '--port', String(port), '--tries', '2', '--timeout', '3000', '127.0.0.1:1']);
    assert.equal(r.code, 2, describeRun(r));
    assert.match(r.stderr, /no reply after 2 tries/);
    assert.ok(r.ms < 30_000, `ended after ${Math.round(r.ms)} ms`);
  });

  test('--try-timeout takes seconds bare, as every duration: 0.2 is 200 ms a try', async () => {
    const r = await timed(['--no-local', '--port', String(port), '--tries', '3', '--try-timeout', '0.2', '127.0.0.1:1']);
    assert.equal(r.code, 2, describeRun(r));
    assert.match(r.stderr, /no reply after 3 tries/);
    assert.ok(r.ms >= 550 && r.ms < 20_000, `3 tries of 200 ms took ${Math.round(r.ms)} ms`);
  });

  test('ping -t 1 ends the check after 1 s whatever --try-timeout says: CRITICAL, exit 2', async () => {
    const r = await timed(['ping', '-H', '127.0.0.1', '-p', String(port), '-t', '1', '--try-timeout', '60s', '--tries', '1']);
    assert.equal(r.code, 2, describeRun(r));
    assert.match(r.stdout, /^PIDSTATD CRITICAL - No response from pidstatd on 127\.0\.0\.1:/);
    assert.ok(r.ms < 30_000, `ended after ${Math.round(r.ms)} ms: -t did not end it (one try of 60 s)`);
  });

  test('-t before wait is wait\'s -t: a live target outlasts it, exit 124', async (t) => {
    const sleeper = startSleeper();
    t.after(() => sleeper.stop());
    const r = await timed(['-t', '1', 'wait', '--interval', '200ms', String(sleeper.pid)]);
    assert.equal(r.code, 124, describeRun(r));
    assert.equal(r.stdout, '');
  });
});

describe('options that took bare ms before need a unit', () => {
  const live = String(process.pid);
  const cases: [string, string, string[]][] = [
    ['pidwatch', '--interval', ['--interval', '200', '--pid', live, 'echo ran']],
    ['pidwatch', '--dead-after', ['--dead-after', '90', '--pid', live, 'echo ran']],
    ['pidwatch', '--kill-after', ['--kill-after', '5', '--pid', live, 'echo ran']],
    ['pidstat', '--interval', ['wait', '--interval', '200', live]],
    ['pidstat', '--dead-after', ['wait', '--dead-after', '90', live]],
  ];
  for (const [bin, option, args] of cases) {
    test(`${bin} ${args.join(' ')}: exit 64, naming both spellings, nothing run`, async () => {
      const r = await runBin(bin as 'pidwatch' | 'pidstat', args, { timeoutMs: 30_000 });
      const value = args[args.indexOf(option) + 1]!;
      assert.equal(r.code, 64, describeRun(r));
      assert.equal(r.stdout, '', 'the command was not run');
      assert.ok(r.stderr.includes(`${option} ${value} needs a unit: ${value}ms or ${value}s`), describeRun(r));
      assert.equal(r.stderr.split('\n').length, 2, `one line\n${describeRun(r)}`);
    });
  }
});
