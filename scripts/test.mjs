// The test run of `npm test`: the test files three at a time, since most of
// their time is spent waiting on real processes and sockets; then, one by
// one, the files named *.alone.test.js: the flood, whose bound (a polite
// client answered within 50 ms) holds only on a machine it has to itself,
// and the forgery tests, which spray every ephemeral UDP port of the machine
// and would bury other tests' replies. Each run prints node:test's counts.
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';

const dir = join(import.meta.dirname ?? new URL('.', import.meta.url).pathname, '..', 'dist', 'test');
const files = readdirSync(dir).filter((name) => name.endsWith('.test.js')).sort().map((name) => join(dir, name));
const alone = files.filter((file) => file.endsWith('.alone.test.js'));
const pooled = files.filter((file) => !alone.includes(file));
const reporter = `--test-reporter=${process.stdout.isTTY ? 'spec' : 'tap'}`;

let failed = false;
for (const [concurrency, group] of [[3, pooled], [1, alone]]) {
  if (group.length === 0) continue;
  const run = spawnSync(process.execPath, ['--test', `--test-concurrency=${concurrency}`, reporter, ...group], { stdio: 'inherit' });
  if (run.status !== 0) failed = true;
}
process.exitCode = failed ? 1 : 0;
