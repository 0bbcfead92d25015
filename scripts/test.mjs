// The test run of `npm test`: the test files five at a time, since much of
// their time is spent waiting on real processes and sockets; then, one by
// one, the files named *.alone.test.js: the flood, which keeps a core busy
// and answers forged sources all over loopback, and the forgery tests, which
// spray every ephemeral UDP port of the machine and would bury other tests'
// replies. Each file runs as node:test runs one (`node FILE`, its own
// process), and its report is printed whole once it ends, with node:test's
// counts; the last lines are the whole run's totals and a word that says
// whether it passed, so that the end of the log tells the truth about all
// of it. This script, not `node --test`, picks the order: node --test sorts
// the files by name whatever order they are given in.
import { spawn } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join, relative } from 'node:path';

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
const LONGEST = ['features/package', 'pidwatch/pidwatch', 'pidstat/wait', 'pidstat/cli', 'features/silence', 'features/keys', 'attacks/robust',
  'networks/push-network', 'pidwatch/pidwatch-silence', 'features/push', 'networks/lossy', 'features/startup', 'pidwatch/pidwatch-job',
  'attacks/push-abuse', 'attacks/hidepid', 'pidstatd/allow', 'pidwatch/pidwatch-handoff'];
const rank = (file) => {
  const at = LONGEST.findIndex((name) => file.endsWith(`${join('test', ...name.split('/'))}.test.js`));
  return at < 0 ? LONGEST.length : at;
};
const pooled = files.filter((file) => !alone.includes(file)).sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
const reporter = `--test-reporter=${process.stdout.isTTY ? 'spec' : 'tap'}`;
const COUNTS = ['tests', 'pass', 'fail', 'cancelled', 'skipped', 'todo'];
const began = performance.now();

/** Runs one test file; resolves with its exit status, its report and node:test's closing counts. */
function runFile(file) {
  return new Promise((resolve) => {
    const started = performance.now();
    const child = spawn(process.execPath, [reporter, file], { stdio: ['ignore', 'pipe', 'pipe'], cwd: root });
    const out = [];
    child.stdout.on('data', (chunk) => out.push(chunk));
    child.stderr.on('data', (chunk) => out.push(chunk));
    child.on('close', (status, signal) => {
      const report = Buffer.concat(out).toString('utf8');
      // The spec reporter colours its lines on a terminal.
      const plain = report.replace(/\x1b\[[0-9;]*m/g, '');
      const counts = {};
      for (const name of COUNTS) {
        // The last occurrence: the run's own closing lines (TAP's `# pass 3`, spec's `ℹ pass 3`).
        const found = [...plain.matchAll(new RegExp(`^(?:#|\u2139) ${name} (\\d+)$`, 'gm'))].pop();
        counts[name] = found === undefined ? undefined : Number(found[1]);
      }
      const seconds = (ms) => (ms / 1000).toFixed(1);
      const how = signal === null ? `exit ${status}` : `killed by ${signal}`;
      const when = `${seconds(performance.now() - started)} s, from ${seconds(started - began)} s into the run`;
      resolve({ report: `# ${relative(root, file)}: ${how} after ${when}\n${report}`, status: signal === null ? status : 1, counts });
    });
  });
}

/** Runs `group`, `concurrency` files at a time, each file's report printed whole as it ends; resolves with the totals. */
async function runGroup(concurrency, group) {
  const total = Object.fromEntries(COUNTS.map((name) => [name, 0]));
  let failed = false;
  const queue = [...group];
  const worker = async () => {
    for (let file = queue.shift(); file !== undefined; file = queue.shift()) {
      const { report, status, counts } = await runFile(file);
      process.stdout.write(report.endsWith('\n') ? report : `${report}\n`);
      if (status !== 0 || counts.tests === undefined) failed = true;
      for (const name of COUNTS) total[name] += counts[name] ?? 0;
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, group.length) }, worker));
  return { total, failed };
}

const total = Object.fromEntries(COUNTS.map((name) => [name, 0]));
let failed = false;
for (const [concurrency, group] of [[5, pooled], [1, alone]]) {
  const run = await runGroup(concurrency, group);
  failed ||= run.failed;
  for (const name of COUNTS) total[name] += run.total[name];
}
// A run that found no test passes nothing.
if (total.tests === 0 || total.fail > 0 || total.cancelled > 0) failed = true;
process.stdout.write(`\n# the whole run (${files.length} files): ${total.tests} tests, ${total.pass} passed, ${total.fail} failed, ${total.cancelled} cancelled, ${total.skipped} skipped\n`);
process.stdout.write(`${failed ? 'FAIL' : 'PASS'}: ${total.pass} passed, ${total.fail + total.cancelled} failed, ${total.skipped} skipped\n`);
process.exitCode = failed ? 1 : 0;
