import assert from 'node:assert/strict';
import { test } from 'node:test';
import { runBin } from '../support/helpers.js';

/** Shell completion: each command prints yargs's script, and answers the script's questions. */

for (const name of ['pidstat', 'pidstatd', 'pidwatch'] as const) {
  test(`${name} completion prints a bash completion script`, async () => {
    const r = await runBin(name, ['completion'], { env: { SHELL: '/bin/bash' } });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`complete -o bashdefault -o default -F _${name}_yargs_completions ${name}`));
    assert.match(r.stdout, new RegExp(`${name} --get-yargs-completions`));
  });

  test(`${name} completion prints a zsh script under zsh`, async () => {
    const r = await runBin(name, ['completion'], { env: { SHELL: '/bin/zsh' } });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`^#compdef ${name}`));
  });
}

test('the script\'s question lists the options of the command', async () => {
  const asked = await runBin('pidstat', ['--get-yargs-completions', 'pidstat', '--t']);
  assert.equal(asked.code, 0, asked.stderr);
  const words = asked.stdout.split('\n');
  for (const option of ['--timeout', '--tries', '--json', '--local']) assert.ok(words.includes(option), `${option} in ${words}`);
  const daemon = await runBin('pidstatd', ['--get-yargs-completions', 'pidstatd', '--']);
  assert.ok(daemon.stdout.split('\n').includes('--allow'));
  const watch = await runBin('pidwatch', ['--get-yargs-completions', 'pidwatch', '--']);
  assert.ok(watch.stdout.split('\n').includes('--killer'));
});

test('completion follows the subcommand typed, from its own table, and offers the subcommands and the negated forms', async () => {
  const offered = async (name: 'pidstat' | 'pidstatd', ...words: string[]) => (await runBin(name, ['--get-yargs-completions', name, ...words])).stdout.split('\n').filter(Boolean);
  const plain = await offered('pidstat', '--');
  for (const alias of ['--h', '--s', '--w', '--c']) assert.ok(!plain.includes(alias), `${alias} offered: ${plain}`);
  const wait = await offered('pidstat', 'wait', '--');
  for (const option of ['--any', '--dead-after', '--interval', '--timeout']) assert.ok(wait.includes(option), `${option} in ${wait}`);
  for (const option of ['--tries', '--warning', '--critical']) assert.ok(!wait.includes(option), `${option} is not wait's: ${wait}`);
  const ping = await offered('pidstat', 'ping', '-');
  for (const option of ['-H', '-p', '-t', '--pid']) assert.ok(ping.includes(option), `${option} in ${ping}`);
  assert.ok((await offered('pidstat', 'w')).includes('wait'));
  assert.ok((await offered('pidstat', '')).includes('ping'));
  assert.ok(!(await offered('pidstat', '127.0.0.1', '')).includes('ping'), 'a subcommand only first');
  assert.ok((await offered('pidstatd', '--no')).includes('--no-fork'));
});

test('completion is listed in --help', async () => {
  for (const name of ['pidstat', 'pidstatd', 'pidwatch'] as const) {
    const r = await runBin(name, ['--help']);
    assert.match(r.stdout, new RegExp(`${name} completion +Print a bash/zsh completion script`));
  }
});
