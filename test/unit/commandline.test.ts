import assert from 'node:assert/strict';
import { test } from 'node:test';
import { readCommandLine, type CommandSpec, type OptionTable } from '../../src/cli/args.js';
import { CommandError } from '../../src/cli/errors.js';
import { SPEC as PIDSTAT } from '../../src/cli/pidstat.js';
import { SPEC as PIDSTATD } from '../../src/cli/pidstatd.js';
import { SPEC as PIDWATCH } from '../../src/cli/pidwatch.js';

/**
 * The one reader of the suite's command lines (readCommandLine(),
 * src/cli/args.ts), form by form, as pidstat(1), pidwatch(1) and
 * pidstatd(8) describe them; the Getopt::Long spellings of IPC::Locker's
 * tools are in test/features/getopt.test.ts.
 */

type Spec = CommandSpec<OptionTable>;

function read(spec: unknown, ...argv: string[]): Record<string, unknown> {
  const line = readCommandLine(spec as Spec, argv, { usageExitCode: 64 });
  return { ...line.values, words: line.words };
}

/** The usage error `argv` is, with its words. */
function refused(spec: unknown, argv: string[], message: string): void {
  assert.throws(() => readCommandLine(spec as Spec, argv, { usageExitCode: 64 }), (err) => {
    assert.ok(err instanceof CommandError, String(err));
    assert.equal(err.exitCode, 64);
    assert.equal(err.message, message);
    return true;
  }, JSON.stringify(argv));
}

test('words, values in both forms, booleans and their negations, the defaults', () => {
  assert.deepEqual(read(PIDSTAT, '--no-local', '--port', '41000', '127.0.0.1', '77'), { local: false, port: '41000', words: ['127.0.0.1', '77'] });
  assert.deepEqual(read(PIDSTAT, '-s', '--timeout=2s', 'host:5'), { local: true, silent: true, timeout: '2s', words: ['host:5'] });
  assert.deepEqual(read(PIDSTAT, '--json=false', '--color=true', '1'), { local: true, json: false, color: true, words: ['1'] });
  assert.deepEqual(read(PIDSTAT, '--', '--json', '-'), { local: true, words: ['--json', '-'] });
  assert.deepEqual(read(PIDSTAT, '-', '-5', 'x=y'), { local: true, words: ['-', '-5', 'x=y'] });
});

test('a word after a boolean is a word, never its value', () => {
  assert.deepEqual(read(PIDSTAT, '--silent', 'false', '1'), { local: true, silent: true, words: ['false', '1'] });
  assert.deepEqual(read(PIDWATCH, '--pid', '5', '--debug', 'true').words, ['true'], 'pidwatch runs `true`');
});

test('one-letter options alone, with two dashes, and in groups whose last may take a value', () => {
  assert.deepEqual(read(PIDSTAT, '--s', '-t', '3', '1'), { local: true, silent: true, timeout: '3', words: ['1'] });
  assert.deepEqual(read(PIDSTAT, '-st', '3', '1'), { local: true, silent: true, timeout: '3', words: ['1'] });
  assert.deepEqual(read(PIDSTAT, '-st=3', '1'), { local: true, silent: true, timeout: '3', words: ['1'] });
  refused(PIDSTAT, ['-ts', '3'], "'-ts': -t takes a value, so it comes last in a group");
  refused(PIDSTAT, ['-sx'], "unknown option '-sx'");
  refused(PIDSTAT, ['-t5'], "unknown option '-t5'");
});

test('an empty value is a value: the option says what it needs (pidstat(1), OPTIONS)', () => {
  assert.deepEqual(read(PIDSTAT, '--port=', '--host', '', '1'), { local: true, port: '', host: '', words: ['1'] });
});

test('an option given twice: an array keeps every value in order, any other the last', () => {
  assert.deepEqual(read(PIDSTATD, '--allow', '10.0.0.0/8', '--port', '1', '--allow=fd00::/8', '--port', '2'), { push: true, allow: ['10.0.0.0/8', 'fd00::/8'], port: '2', words: [] });
});

test('what is refused, at the first word that is wrong, in the suite\'s words', () => {
  refused(PIDSTAT, ['--bogus', '1', '--also-bogus'], "unknown option '--bogus'");
  refused(PIDSTAT, ['--port'], '--port needs a value');
  refused(PIDSTAT, ['--port', '--json'], '--port needs a value');
  refused(PIDSTAT, ['--no-port', '1'], "unknown option '--no-port'");
  refused(PIDSTAT, ['--json=1'], "'--json=1': --json takes no value (but =true or =false)");
  refused(PIDSTAT, ['--no-json=true'], "'--no-json=true': --no-json takes no value");
  refused(PIDSTATD, ['--fo'], "option '--fo' is ambiguous: --foreground, --fork");
  refused(PIDSTAT, ['---x'], "unknown option '---x'");
  refused(PIDSTAT, ['-='], "unknown option '-='");
});

test('where each value was on the line, for the bytes behind it (pidwatch --cd)', () => {
  const line = readCommandLine(PIDWATCH as Spec, ['--pid', '5', '--cd=/a', '-cd', '/b', 'true']);
  assert.deepEqual(line.valueAt, { pid: { index: 1, inline: false }, cd: { index: 4, inline: false } });
  assert.deepEqual(readCommandLine(PIDWATCH as Spec, ['--cd=/a', 'true']).valueAt, { cd: { index: 0, inline: true } });
});

test('leniently: what can be read is, the rest skipped, nothing thrown (the first word of pidstat\'s line)', () => {
  assert.deepEqual(readCommandLine(PIDSTAT as Spec, ['-t', '5', '--bogus', '-p', 'wait', 'x'], { lenient: true }).words, ['wait', 'x']);
  assert.deepEqual(readCommandLine(PIDSTAT as Spec, ['--port'], { lenient: true }).words, []);
  assert.deepEqual(readCommandLine(PIDSTAT as Spec, ['-st', '5', 'wait', 'x'], { lenient: true }).words, ['wait', 'x'], 'a group is read leniently too');
});
