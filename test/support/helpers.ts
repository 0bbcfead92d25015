import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import dgram from 'node:dgram';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DAEMON_HEAP_OPTION } from '../../src/daemon/heap.js';
import { INSPECT_PORT_OPTION } from '../../src/daemon/inspector.js';
import { loadLinuxCalls } from '../../src/sys/native.js';

/**
 * What the tests share: the built bins, a daemon started on an ephemeral port
 * and stopped by its pid, a command run to its end, and UDP helpers.
 */

export const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
export const BIN = {
  pidstat: `${ROOT}bin/pidstat.cjs`,
  pidstatd: `${ROOT}bin/pidstatd.cjs`,
  // A shell script (it execs the command in place): run directly, not by node.
  pidwatch: `${ROOT}bin/pidwatch`,
};
export const IS_ROOT = process.getuid?.() === 0;

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Runs a command to its end (killed after `timeoutMs`) and collects its output. */
export function run(
  command: string,
  args: readonly string[],
  options: SpawnOptions & { timeoutMs?: number; input?: string } = {},
): Promise<RunResult> {
  const started = performance.now();
  const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'], ...options });
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  // The child may exit before reading its input: that EPIPE is no failure.
  child.stdin?.on('error', () => {});
  child.stdin?.end(options.input ?? '');
  const killer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 20_000);
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(killer);
      resolve({ code, signal, stdout, stderr, ms: performance.now() - started });
    });
  });
}

/** The environment the bins run in: NO_COLOR, FORCE_COLOR and PIDSTAT_PORT cleared unless given, this Node first on PATH. */
export function binEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, NO_COLOR: '', FORCE_COLOR: undefined, PIDSTAT_PORT: undefined, ...extra };
  // The pidwatch script runs `node` from PATH: the Node running the tests.
  env['PATH'] = `${dirname(process.execPath)}:${env['PATH'] ?? '/usr/bin:/bin'}`;
  for (const key of Object.keys(env)) if (env[key] === undefined) delete env[key];
  return env;
}

/** The command line that runs a bin: node BIN for the Node bins, with the option their first lines give node; the pidwatch script itself. */
export function binCommand(name: keyof typeof BIN, args: readonly string[]): [string, string[]] {
  if (name === 'pidwatch') return [BIN.pidwatch, [...args]];
  return [process.execPath, [INSPECT_PORT_OPTION, ...(name === 'pidstatd' ? [DAEMON_HEAP_OPTION] : []), BIN[name], ...args]];
}

/** Runs one of the built bins, in binEnv(). */
export function runBin(
  name: keyof typeof BIN,
  args: readonly string[],
  options: SpawnOptions & { timeoutMs?: number; input?: string } = {},
): Promise<RunResult> {
  const [command, full] = binCommand(name, args);
  return run(command, full, { ...options, env: binEnv(options.env) });
}

export interface Daemon {
  child: ChildProcess;
  pid: number;
  port: number;
  /** Everything the daemon wrote to stderr so far. */
  log(): string;
  /** SIGTERM, then waits for the exit; SIGKILL after 5 s. Returns the exit code. */
  stop(): Promise<number | null>;
}

/**
 * Starts `pidstatd --foreground` on an ephemeral port (or the given args) and
 * waits for its "listening on" line, which names the port it got. `wrap`
 * runs it through another command (`ip netns exec NAME`, see netns.ts).
 */
export async function startDaemon(
  args: readonly string[] = ['--bind', '127.0.0.1'],
  env: NodeJS.ProcessEnv = {},
  wrap: (command: string, args: string[]) => [string, string[]] = (command, rest) => [command, rest],
): Promise<Daemon> {
  const full = ['--foreground', ...(args.includes('--port') ? [] : ['--port', '0']), ...args];
  const [command, commandArgs] = wrap(...binCommand('pidstatd', full));
  const child = spawn(command, commandArgs, {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, ...env },
  });
  let log = '';
  child.stderr!.setEncoding('utf8');
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`pidstatd did not start: ${log}`)), 10_000);
    let found = false;
    child.stderr!.on('data', (chunk: string) => {
      log += chunk;
      if (found) return;
      const match = /listening on .*:(\d+)$/m.exec(log);
      if (match) {
        found = true;
        clearTimeout(timer);
        resolve(Number(match[1]));
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`pidstatd exited with ${code}: ${log}`));
    });
  });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return {
    child,
    pid: child.pid!,
    port,
    log: () => log,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      const killer = setTimeout(() => child.kill('SIGKILL'), 5000);
      const code = await exited;
      clearTimeout(killer);
      return code;
    },
  };
}

/** A process that stays alive until stopped: its pid is a live pid. */
export function startSleeper(): { pid: number; stop(): Promise<void> } {
  const child = spawn('sleep', ['600'], { stdio: 'ignore' });
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  return {
    pid: child.pid!,
    async stop() {
      child.kill('SIGKILL');
      await exited;
    },
  };
}

/** A pid that was alive a moment ago and is now dead (and reaped). */
export async function deadPid(): Promise<number> {
  const sleeper = startSleeper();
  await sleeper.stop();
  return sleeper.pid;
}

/**
 * Sends one datagram and waits `waitMs` for replies; returns them as text.
 * With `firstWithinMs`, waits up to that long for the first reply, and then
 * `waitMs` more for any further one: a reply that must come is waited for
 * as long as a busy machine needs. Only datagrams from the port asked
 * count: tests run side by side, and a client of another test may ask a
 * port of its own that this socket now has.
 */
export async function exchange(
  port: number,
  payload: string | Buffer,
  { address = '127.0.0.1', waitMs = 300, firstWithinMs }: { address?: string; waitMs?: number; firstWithinMs?: number } = {},
): Promise<string[]> {
  const socket = dgram.createSocket(address.includes(':') ? 'udp6' : 'udp4');
  const replies: string[] = [];
  socket.on('message', (msg, from) => from.port === port && replies.push(msg.toString('latin1')));
  await new Promise<void>((resolve) => socket.bind(0, resolve));
  await new Promise<void>((resolve, reject) =>
    socket.send(typeof payload === 'string' ? Buffer.from(payload, 'latin1') : payload, port, address, (err) => (err ? reject(err) : resolve())),
  );
  if (firstWithinMs !== undefined) await waitFor(() => replies.length > 0, firstWithinMs);
  await sleep(waitMs);
  socket.close();
  return replies;
}

/** Sends one datagram and resolves with the first reply from that port, or undefined after `waitMs`. */
export async function ask(port: number, payload: string, options: { address?: string; waitMs?: number } = {}): Promise<string | undefined> {
  const socket = dgram.createSocket((options.address ?? '127.0.0.1').includes(':') ? 'udp6' : 'udp4');
  await new Promise<void>((resolve) => socket.bind(0, resolve));
  try {
    return await new Promise<string | undefined>((resolve, reject) => {
      const timer = setTimeout(() => resolve(undefined), options.waitMs ?? 1000);
      socket.on('message', (msg, from) => {
        if (from.port !== port) return; // another test's client, asking a port it thought free
        clearTimeout(timer);
        resolve(msg.toString('latin1'));
      });
      socket.send(Buffer.from(payload, 'latin1'), port, options.address ?? '127.0.0.1', (err) => err && reject(err));
    });
  } finally {
    socket.close();
  }
}

/** A UDP socket bound to an ephemeral port of `address` that reads nothing: a daemon that never answers. */
export async function silentSocket(address = '127.0.0.1'): Promise<dgram.Socket> {
  const socket = dgram.createSocket(address.includes(':') ? 'udp6' : 'udp4');
  await new Promise<void>((resolve) => socket.bind(0, address, resolve));
  return socket;
}

/** A UDP port nobody listens on right now (bound, read, released). */
export async function freePort(address = '127.0.0.1'): Promise<number> {
  const socket = dgram.createSocket(address.includes(':') ? 'udp6' : 'udp4');
  await new Promise<void>((resolve) => socket.bind(0, address, resolve));
  const { port } = socket.address();
  await new Promise<void>((resolve) => socket.close(resolve));
  return port;
}

/** A UDP client socket that keeps every reply it hears (abuse.test.ts, allow.test.ts). */
export interface Client {
  socket: dgram.Socket;
  /** Replies received, in order, as text. */
  replies: string[];
  /** Resolves with the first reply after `since` replies that satisfies `match`, or undefined after waitMs. */
  next(match: (reply: string) => boolean, waitMs: number): Promise<string | undefined>;
  send(payload: string | Buffer, port: number, address: string): Promise<void>;
  close(): Promise<void>;
}

/** A Client bound to bindAddress on an ephemeral port, with a 4 MiB receive buffer where the kernel allows it. */
export async function client(bindAddress: string): Promise<Client> {
  const socket = dgram.createSocket(bindAddress.includes(':') ? 'udp6' : 'udp4');
  const replies: string[] = [];
  const waiters = new Set<(reply: string) => void>();
  socket.on('error', () => {});
  socket.on('message', (msg) => {
    const text = msg.toString('latin1');
    replies.push(text);
    for (const waiter of waiters) waiter(text);
  });
  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.bind(0, bindAddress, () => {
      socket.off('error', reject);
      resolve();
    });
  });
  try {
    socket.setRecvBufferSize(4 * 1024 * 1024);
  } catch {
    // the default queue
  }
  return {
    socket,
    replies,
    next(match, waitMs) {
      return new Promise((resolve) => {
        const waiter = (reply: string) => {
          if (!match(reply)) return;
          clearTimeout(timer);
          waiters.delete(waiter);
          resolve(reply);
        };
        const timer = setTimeout(() => {
          waiters.delete(waiter);
          resolve(undefined);
        }, waitMs);
        waiters.add(waiter);
      });
    },
    send(payload, port, address) {
      return new Promise((resolve, reject) =>
        socket.send(typeof payload === 'string' ? Buffer.from(payload, 'latin1') : payload, port, address, (err) => (err ? reject(err) : resolve())),
      );
    },
    close: () => new Promise<void>((resolve) => socket.close(() => resolve())),
  };
}

/** Sends until the reply whose host field is `host` comes; returns it and the tries it took. */
export async function askUntil(c: Client, payload: string, host: string, port: number, address: string, tries: number, waitMs: number) {
  for (let i = 1; i <= tries; i++) {
    const reply = c.next((r) => r.split(' ')[3] === host, waitMs);
    await c.send(payload, port, address);
    const got = await reply;
    if (got !== undefined) return { reply: got, tries: i };
  }
  return { reply: undefined, tries };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Whether a pid is alive and not a zombie (a zombie's parent may never reap it here). */
export function isRunning(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** Whether process PID has a handler for signal number SIG (SigCgt in /proc/PID/status); false once it is gone. */
export function catches(pid: number, sig: number): boolean {
  try {
    const mask = /^SigCgt:\s*([0-9a-f]+)$/m.exec(readFileSync(`/proc/${pid}/status`, 'latin1'))?.[1];
    return mask !== undefined && ((BigInt(`0x${mask}`) >> BigInt(sig - 1)) & 1n) === 1n;
  } catch {
    return false;
  }
}

/**
 * Waits until the log of a daemon started with --debug shows the watch of
 * `pid` set up: a subscription kept (`answered SUBR PID HOST 1 30`), or,
 * with `push` false (a --no-push daemon), a question answered with the
 * process's start token (`answered EXIS PID 1 ...`). Fails the test after
 * `timeoutMs`, a liveness bound.
 */
export async function watchSetUp(daemon: { log(): string }, pid: number, push = true, timeoutMs = 20_000): Promise<void> {
  const pattern = push ? new RegExp(`answered SUBR ${pid} \\S+ 1 30`) : new RegExp(`PIDR ${pid} .*answered EXIS ${pid} 1 `);
  if (!(await waitFor(() => pattern.test(daemon.log()), timeoutMs))) throw new Error(`the watch of pid ${pid} was not set up within ${timeoutMs} ms: ${daemon.log().slice(-3000)}`);
}

/** Polls `check` every 50 ms until it holds or `timeoutMs` passes; returns whether it held. */
export async function waitFor(check: () => boolean | Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    if (await check()) return true;
    await sleep(50);
  }
  return check();
}

/** The daemon's two datagram transports (PIDSTAT_IO): the addon's batches, and Node's dgram. */
export const TRANSPORTS = ['batch', 'dgram'] as const;
export type Io = (typeof TRANSPORTS)[number];

/** Why this transport cannot be tested here (the addon is not built), or false. */
export function ioSkip(io: Io): string | false {
  const addonMissing = loadLinuxCalls().why;
  return io === 'batch' && addonMissing !== undefined ? `the addon is not built: ${addonMissing}` : false;
}

/** Whether this host has a usable ::1 (a udp6 socket can bind it). */
export async function hasIPv6Loopback(): Promise<boolean> {
  const socket = dgram.createSocket('udp6');
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(0, '::1', resolve);
    });
    return true;
  } catch {
    return false;
  } finally {
    socket.close();
  }
}

/** The pids of a process's children, from /proc/PID/task/TID/children (every thread's). */
export function childrenOf(pid: number): number[] {
  const found: number[] = [];
  let tasks: string[] = [];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return found;
  }
  for (const tid of tasks) {
    try {
      const text = readFileSync(`/proc/${pid}/task/${tid}/children`, 'latin1').trim();
      if (text) found.push(...text.split(/\s+/).map(Number));
    } catch {
      // The task ended meanwhile.
    }
  }
  return found;
}

/** The exit status the contract gives pidstat for these states. */
export function expectedExit(states: readonly string[]): number {
  if (states.some((s) => s === 'no_reply' || s === 'unknown')) return 2;
  if (states.some((s) => s === 'dead')) return 1;
  return 0;
}

/** `word` as one word of sh(1) code, whatever it holds: in single quotes, each ' written '\''. */
export function shellQuote(word: string): string {
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

/**
 * Runs `node --require PRELOAD BIN ARGS` through `sh -c`, its stdout and
 * stderr sent as `redirect` says; the preload writes process.moduleLoadList
 * as the process exits. Resolves with the exit status and the Node modules
 * the run loaded, Node's internal ones aside (`tty`, `net`, `crypto`...):
 * what a start paid for.
 */
export async function modulesLoadedBy(
  name: keyof typeof BIN,
  args: readonly string[],
  { redirect = '', env = {} }: { redirect?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<{ status: number; modules: string[] }> {
  const dir = mkdtempSync(join(tmpdir(), 'pidstat-modules-'));
  try {
    const preload = join(dir, 'modules.cjs');
    const list = join(dir, 'modules.txt');
    writeFileSync(preload, `process.on('exit', () => require('node:fs').writeFileSync(${JSON.stringify(list)}, process.moduleLoadList.join('\\n')));\n`);
    const command = [process.execPath, '--require', preload, BIN[name], ...args].map(shellQuote).join(' ');
    const result = await run('sh', ['-c', `${command} ${redirect}; echo $?`], { env: binEnv(env) });
    const loaded = readFileSync(list, 'utf8').split('\n');
    if (!loaded.includes('NativeModule fs')) throw new Error(`the preload wrote no module list: ${result.stderr}`);
    return { status: Number(result.stdout.trim().split('\n').at(-1)), modules: loaded.flatMap((line) => /^NativeModule ([a-z_/]+)$/.exec(line)?.[1] ?? []).filter((m) => !m.startsWith('internal/')) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
