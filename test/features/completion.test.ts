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

test('completion is listed in --help', async () => {
  for (const name of ['pidstat', 'pidstatd', 'pidwatch'] as const) {
    const r = await runBin(name, ['--help']);
    assert.match(r.stdout, new RegExp(`${name} completion +Print a bash/zsh completion script`));
  }
});
