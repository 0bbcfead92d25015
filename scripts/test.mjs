// The test run of `npm test`: the test files four at a time, since most of
// their time is spent waiting on real processes and sockets; then, one by
// one, the files named *.alone.test.js: the flood, whose bound holds only on
// a machine it has to itself, and the forgery tests, which spray every
// ephemeral UDP port of the machine and would bury other tests' replies.
// Each run prints node:test's counts; the last lines are the whole run's
// totals and a word that says whether it passed, so that the end of the log
// tells the truth about all of it.
import { spawn } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

// The test files of test/'s folders (README, Development), as built: those
// whose source is still there, so a file moved or removed since an earlier
// build is not run from what dist/ kept of it. bench/ and soak/ are not
// tests, support/ is what the tests share.
const root = join(import.meta.dirname ?? new URL('.', import.meta.url).pathname, '..');
const files = readdirSync(join(root, 'test'), { recursive: true, withFileTypes: false })
  .filter((name) => name.endsWith('.test.ts') && !/^(bench|soak|support)\//.test(name))
  .map((name) => join(root, 'dist', 'test', name.replace(/\.ts$/, '.js')))
  .filter((file) => existsSync(file))
  .sort();
const alone = files.filter((file) => file.endsWith('.alone.test.js'));
// The files that take longest start first, so that none of them is the
// last one running while the others have finished: a list of names only,
// and one that is out of date changes the order, never what runs.
const LONGEST = ['attacks/robust', 'features/silence', 'pidstat/wait', 'pidwatch/pidwatch', 'features/keys', 'features/package',
  'pidwatch/pidwatch-silence', 'pidstatd/dgram-io', 'features/push', 'attacks/abuse', 'networks/lossy', 'pidwatch/pidwatch-job', 'pidstat/cli'];
const rank = (file) => {
  const at = LONGEST.findIndex((name) => file.endsWith(`${join('test', ...name.split('/'))}.test.js`));
  return at < 0 ? LONGEST.length : at;
};
const pooled = files.filter((file) => !alone.includes(file)).sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
const reporter = `--test-reporter=${process.stdout.isTTY ? 'spec' : 'tap'}`;
const COUNTS = ['tests', 'pass', 'fail', 'cancelled', 'skipped', 'todo'];

/** Runs one group, its output passed through; resolves with its exit status and node:test's closing counts. */
function runGroup(concurrency, group) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--test', `--test-concurrency=${concurrency}`, reporter, ...group], { stdio: ['ignore', 'pipe', 'inherit'] });
    let tail = '';
    child.stdout.on('data', (chunk) => {
      process.stdout.write(chunk);
      tail = (tail + chunk.toString('utf8')).slice(-4096);
    });
    child.on('close', (status, signal) => {
      // The spec reporter colours its lines on a terminal.
      const plain = tail.replace(/\x1b\[[0-9;]*m/g, '');
      const counts = {};
      for (const name of COUNTS) {
        // The last occurrence: the run's own closing lines (TAP's `# pass 3`, spec's `ℹ pass 3`).
        const found = [...plain.matchAll(new RegExp(`^(?:#|\u2139) ${name} (\\d+)$`, 'gm'))].pop();
        counts[name] = found === undefined ? undefined : Number(found[1]);
      }
      resolve({ status: signal === null ? status : 1, counts });
    });
  });
}

const total = Object.fromEntries(COUNTS.map((name) => [name, 0]));
let failed = false;
for (const [concurrency, group] of [[4, pooled], [1, alone]]) {
  if (group.length === 0) continue;
  const { status, counts } = await runGroup(concurrency, group);
  if (status !== 0 || counts.tests === undefined) failed = true;
  for (const name of COUNTS) total[name] += counts[name] ?? 0;
}
// A run that found no test passes nothing.
if (total.tests === 0 || total.fail > 0 || total.cancelled > 0) failed = true;
process.stdout.write(`\n# the whole run (both groups above): ${total.tests} tests, ${total.pass} passed, ${total.fail} failed, ${total.cancelled} cancelled, ${total.skipped} skipped\n`);
process.stdout.write(`${failed ? 'FAIL' : 'PASS'}: ${total.pass} passed, ${total.fail + total.cancelled} failed, ${total.skipped} skipped\n`);
process.exitCode = failed ? 1 : 0;
