import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { binCommand, binEnv, deadPid, ROOT, run, runBin, startDaemon, startSleeper, type Daemon } from '../support/helpers.js';

/**
 * The examples of the README and the manual pages against what the commands
 * really print: each `$ pidstat ...` example is run (its hosts and pids
 * mapped onto loopback) with stdout and stderr on one stream, as a terminal
 * shows them, and must read line for line as documented; each `pidstat ping`
 * line has the real performance data; and --help shows the options as they
 * are typed.
 */

const DOCS = ['README.md', 'man/pidstat.1', 'man/pidstatd.8'] as const;

/** A page's text as a reader sees it: roff's escapes for `-`, `'` and `\` undone. */
function text(doc: string): string {
  return readFileSync(`${ROOT}${doc}`, 'utf8').replaceAll('\\-', '-').replaceAll("\\(aq", "'").replaceAll('\\e', '\\');
}

interface Example {
  doc: string;
  /** The words after `$ pidstat`. */
  words: string[];
  /** The lines shown after it, up to a blank line or the end of the block. */
  output: string[];
}

/** Every `$ pidstat ...` example of the docs, with the lines it shows. */
function examples(): Example[] {
  const found: Example[] = [];
  for (const doc of DOCS) {
    const lines = text(doc).split('\n');
    lines.forEach((line, i) => {
      const command = /^\s*\$ pidstat (.*)$/.exec(line);
      if (command === null) return;
      const output: string[] = [];
      for (const next of lines.slice(i + 1)) {
        const shown = next.trim();
        if (shown === '' || shown.startsWith('$') || shown.startsWith('#') || shown.startsWith('.')) break;
        output.push(shown);
      }
      found.push({ doc, words: command[1]!.trim().split(/\s+/), output });
    });
  }
  return found;
}

/** A ping line with its numbers (times, which vary) and its HOST:PORT left out. */
function pingShape(line: string): string {
  return line
    .replace(/ on \S+:[0-9]+(?=\||$)/, ' on HOST:PORT')
    .replace(/ [0-9]+\.[0-9]{3} second/, ' N.NNN second')
    .replace(/\|time=[0-9]+\.[0-9]{6}s;/, '|time=N.NNNNNNs;');
}

const escapeRegExp = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

let daemon: Daemon;
let sleeper: ReturnType<typeof startSleeper>;
let dead: number;
before(async () => {
  daemon = await startDaemon(['--bind', '127.0.0.1']);
  sleeper = startSleeper();
  dead = await deadPid();
});
after(async () => {
  await daemon?.stop();
  await sleeper?.stop();
});

/**
 * The docs' hosts and pids on loopback: node17 and node18 are the daemon on
 * 127.0.0.1; node19 is 127.0.0.3, where nothing listens; 4711 and 99 live,
 * 4712 is dead.
 */
function onLoopback(word: string): string {
  const hosts: Record<string, string> = { node17: '127.0.0.1', node18: '127.0.0.1', node19: '127.0.0.3', localhost: '127.0.0.1' };
  const pids: Record<string, string> = { 4711: String(sleeper.pid), 4712: String(dead), 99: '1' };
  const [host, pid] = word.includes(':') ? word.split(':') : [word, undefined];
  const mapped = hosts[host!] ?? pids[host!] ?? host!;
  return pid === undefined ? mapped : `${mapped}:${pids[pid] ?? pid}`;
}

/** Runs a pidstat example with stdout and stderr on one pipe, in the order they were written. */
async function runMerged(words: string[]) {
  const [command, args] = binCommand('pidstat', ['--no-local', '--port', String(daemon.port), ...words]);
  return run('/bin/sh', ['-c', 'exec "$@" 2>&1', 'sh', command, ...args], { env: binEnv() });
}

describe('the examples show what a user sees', () => {
  test('the README and pidstat(1) have the examples this test runs', () => {
    const found = examples();
    for (const doc of ['README.md', 'man/pidstat.1']) {
      const shown = found.filter((e) => e.doc === doc && e.words[0] !== 'ping');
      assert.ok(shown.some((e) => e.words.length > 2 && e.output.some((line) => line.startsWith('pidstat:'))), `${doc} has an example with a line on stderr`);
    }
    for (const doc of DOCS) assert.ok(found.some((e) => e.doc === doc && e.words[0] === 'ping'), `${doc} has a ping example`);
  });

  for (const example of examples().filter((e) => e.words[0] !== 'ping')) {
    test(`${example.doc}: $ pidstat ${example.words.join(' ')}`, { timeout: 20_000 }, async () => {
      const targets = example.words.map(onLoopback);
      const r = await runMerged(targets);
      // The real lines, named back as the example names them.
      let real = r.stdout;
      example.words.forEach((word, i) => {
        if (!word.includes(':') && !/^[0-9]+$/.test(word)) return;
        const host = word.includes(':') ? word.split(':')[0]! : [...example.words.slice(0, i)].reverse().find((w) => !/^[0-9]+$/.test(w))!;
        const pid = word.includes(':') ? word.split(':')[1]! : word;
        const shown = `${onLoopback(host)}:${onLoopback(pid)}`;
        real = real.replace(new RegExp(`${escapeRegExp(shown)}(?![0-9])`, 'g'), `${host}:${pid}`);
      });
      assert.deepEqual(real.trimEnd().split('\n'), example.output, `as shown in ${example.doc} (stdout and stderr in the order written)`);
    });
  }

  for (const example of examples().filter((e) => e.words[0] === 'ping')) {
    test(`${example.doc}: $ pidstat ${example.words.join(' ')} prints the performance data`, { timeout: 20_000 }, async () => {
      const words = example.words.slice(1, -1);
      const r = await runBin('pidstat', ['--port', String(daemon.port), 'ping', ...words, '127.0.0.1']);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.equal(example.output.length, 1, `one line, as monitoring plugins print: ${example.output.join('\n')}`);
      assert.equal(pingShape(example.output[0]!), pingShape(r.stdout.trimEnd()), `the example reads as the real line ${JSON.stringify(r.stdout)}`);
    });
  }

  test('every PIDSTATD OK line of the docs carries performance data after a |', () => {
    for (const doc of DOCS) {
      for (const line of text(doc).split('\n').filter((l) => l.trim().startsWith('PIDSTATD OK'))) {
        assert.match(line.trim(), /^PIDSTATD OK - [0-9]+\.[0-9]{3} second response on \S+:\S+\|time=[0-9]+\.[0-9]{6}s;[0-9.]*;[0-9.]*;0\.000000$/, `${doc}: ${line}`);
      }
    }
  });
});

describe('--help shows the options as they are typed', () => {
  for (const command of ['pidstat', 'pidwatch'] as const) {
    test(`${command} --help lists --no-local with its description, not --local [default: true]`, async () => {
      const r = await runBin(command, ['--help'], { env: { COLUMNS: '100' } });
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /^ {6}--no-local +Ask the daemon even\b[^[]*\[boolean\]$/m, r.stdout);
      assert.doesNotMatch(r.stdout, /^ +--local\b/m, 'no --local entry');
      assert.doesNotMatch(r.stdout, /\[default: true\]/, 'no boolean shown as on by default');
    });
  }
});
