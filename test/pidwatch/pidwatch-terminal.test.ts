import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, test, type TestContext } from 'node:test';
import { BIN, binEnv, isRunning, startSleeper, waitFor } from '../support/helpers.js';
import { commandRuns, descendants, killAll, watcherReady, watchersOf } from '../support/jobs.js';

/**
 * pidwatch in a terminal (pidwatch(1)): run from an interactive shell
 * in a pseudo-terminal of the test's own (a tmux server on a socket of its
 * own), the command is the shell's job as if pidwatch were not there: it
 * reads the terminal and /dev/tty, Ctrl-Z stops it, fg resumes it, Ctrl-C
 * ends it with status 130, and a watched death still ends it.
 */

function tmuxUnavailable(): string | undefined {
  const result = spawnSync('tmux', ['-V'], { encoding: 'utf8' });
  if (result.error) return `tmux: ${result.error.message}`;
  return undefined;
}

let sockets = 0;

interface Terminal {
  /** Types `keys` (tmux key names: Enter, C-z, C-c, or text). */
  send(...keys: string[]): void;
  screen(): string;
  /** Waits until the screen matches `pattern`; fails the test after `timeoutMs`. */
  expect(pattern: RegExp, timeoutMs?: number): Promise<void>;
  /** The pid of the interactive shell in the terminal. */
  shell: number;
}

/** A tmux server running `sh` in a 120x40 terminal, stopped after the test by its pid, with all its shell started. */
function terminal(t: TestContext): Terminal {
  const socket = `pidwatch-test-${process.pid}-${++sockets}`;
  const tmux = (...args: string[]) => {
    const result = spawnSync('tmux', ['-L', socket, ...args], { encoding: 'utf8', env: binEnv({ PS1: '$ ', ENV: '' }), timeout: 10_000 });
    assert.equal(result.status, 0, `tmux ${args.join(' ')}: ${result.stderr}`);
    return result.stdout;
  };
  tmux('-f', '/dev/null', 'new-session', '-d', '-x', '120', '-y', '40', 'sh');
  const [server, shell] = tmux('display-message', '-p', '#{pid} #{pane_pid}').trim().split(' ').map(Number) as [number, number];
  t.after(async () => {
    const all = descendants(shell);
    for (const pid of [shell, ...all]) all.push(...watchersOf(pid));
    await killAll([...all, shell]);
    await killAll([server]);
  });
  const screen = () => tmux('capture-pane', '-p');
  return {
    shell,
    send: (...keys) => void tmux('send-keys', ...keys),
    screen,
    async expect(pattern, timeoutMs = 20_000) {
      const ok = await waitFor(() => pattern.test(screen()), timeoutMs);
      assert.ok(ok, `the terminal shows no ${pattern} within ${timeoutMs} ms:\n${screen()}`);
    },
  };
}

/** The pidwatch the shell runs now, once it has exec'd its command. */
async function runningJob(term: Terminal): Promise<number> {
  let job: number | undefined;
  const ok = await waitFor(() => (job = descendants(term.shell).find(commandRuns)) !== undefined, 20_000);
  assert.ok(ok, `pidwatch ran no command:\n${term.screen()}`);
  return job!;
}

function stateOf(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    return stat[stat.lastIndexOf(')') + 2];
  } catch {
    return undefined;
  }
}

describe('pidwatch in a terminal: the command is the shell\'s job', () => {
  const unavailable = tmuxUnavailable();
  if (unavailable) process.stdout.write(`pidwatch: terminal tests skipped: ${unavailable}\n`);

  test('the command reads what is typed, from /dev/tty', { skip: unavailable ?? false }, async (t) => {
    const sleeper = startSleeper();
    t.after(() => sleeper.stop());
    const term = terminal(t);
    term.send(`${BIN.pidwatch} --pid ${sleeper.pid} 'read x </dev/tty; echo got:$x'`, 'Enter');
    await runningJob(term);
    term.send('hello', 'Enter');
    await term.expect(/^got:hello$/m);
  });

  test('Ctrl-Z stops it (the shell says Stopped), fg resumes it, Ctrl-C ends it with status 130', { skip: unavailable ?? false }, async (t) => {
    const sleeper = startSleeper();
    t.after(() => sleeper.stop());
    const term = terminal(t);
    term.send(`${BIN.pidwatch} --pid ${sleeper.pid} sleep 30`, 'Enter');
    const job = await runningJob(term);
    term.send('C-z');
    await term.expect(/Stopped/);
    assert.ok(await waitFor(() => stateOf(job) === 'T', 10_000), `the job is not stopped: state ${stateOf(job)}`);
    term.send('fg', 'Enter');
    assert.ok(await waitFor(() => stateOf(job) === 'S' || stateOf(job) === 'R', 10_000), `the job did not resume: state ${stateOf(job)}`);
    term.send('C-c');
    assert.ok(await waitFor(() => !isRunning(job), 10_000), 'Ctrl-C did not end the job');
    term.send('echo status:$?', 'Enter');
    await term.expect(/^status:130$/m);
    assert.ok(isRunning(sleeper.pid), 'the watched pid was touched');
  });

  test('a watched death ends the job in the terminal: status 129 at the prompt', { skip: unavailable ?? false }, async (t) => {
    const sleeper = startSleeper();
    t.after(() => sleeper.stop());
    const term = terminal(t);
    term.send(`${BIN.pidwatch} --interval 200ms --pid ${sleeper.pid} sleep 30; echo status:$?`, 'Enter');
    const job = await runningJob(term);
    await watcherReady(job);
    await sleeper.stop();
    // Liveness bounds, from the death.
    await term.expect(/^status:129$/m, 10_000);
    assert.ok(!isRunning(job));
    // The notice follows the signal (pidwatch(1)): it may reach the screen after the prompt's status line.
    await term.expect(/pidwatch: pid \d+ on localhost is dead: sending SIGHUP to the command/, 10_000);
  });
});
