import { spawn, spawnSync, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { BIN, binCommand, binEnv, childrenOf, run, sleep, type RunResult } from './helpers.js';

/**
 * Two "hosts" on one machine, for tests that need a real network between a
 * client and a daemon: network namespaces A and B joined by a veth pair, with
 * addresses that exist only inside them (10.254.X.1/24 and 10.254.X.2/24, and
 * fd00:254:X::1/64 and fd00:254:X::2/64 where IPv6 works), lo up in both.
 *
 *     const why = netnsUnavailable({ pidns: true });   // undefined, or why not
 *     const pair = await createHostPair();
 *     await runBinIn(pair.a, 'pidstat', ['--port', '4000', `${pair.b.ipv4}:1`]);
 *     const tree = spawnInPidNamespace(pair.b, 'sh', ['-c', '...']);
 *     ...
 *     await tree.stop();
 *     await pair.destroy();
 *
 * Namespace names are unique per process and per pair (`pst-a-<pid>-<n>`).
 * Namespaces still there when the process exits are deleted by an exit hook,
 * so a failing test leaves nothing behind (processes still inside one keep it
 * alive, nameless, until they end: stop them first).
 */

export interface NetnsHost {
  /** The namespace's name, for `ip netns exec NAME` and `ip -n NAME`. */
  name: string;
  /** The veth end inside this namespace. */
  ifname: string;
  ipv4: string;
  /** Undefined where IPv6 addresses could not be added. */
  ipv6: string | undefined;
}

export interface HostPair {
  a: NetnsHost;
  b: NetnsHost;
  /** Why IPv6 between the hosts is not available, or undefined if it is. */
  ipv6Missing: string | undefined;
  /** Deletes both namespaces (and with them the veth pair). Idempotent. */
  destroy(): Promise<void>;
}

const live = new Set<string>();
let counter = 0;
let hooked = false;

function hookExit(): void {
  if (hooked) return;
  hooked = true;
  process.on('exit', () => {
    for (const name of live) spawnSync('ip', ['netns', 'delete', name], { stdio: 'ignore' });
  });
}

function ip(args: readonly string[]): { ok: boolean; message: string } {
  const result = spawnSync('ip', args, { encoding: 'utf8', timeout: 10_000 });
  if (result.error) return { ok: false, message: `ip ${args.join(' ')}: ${result.error.message}` };
  if (result.status !== 0) return { ok: false, message: `ip ${args.join(' ')}: ${(result.stderr || `exit ${result.status}`).trim()}` };
  return { ok: true, message: '' };
}

function uniqueName(role: string): string {
  counter += 1;
  return `pst-${role}-${process.pid}-${counter}`;
}

/**
 * Why namespaces cannot be made here (not root, no `ip`, `ip netns add` or
 * veth refused, and with `pidns` also `unshare --pid` refused), or undefined
 * when they can. Synchronous, so a test file can decide to skip at load time.
 */
export function netnsUnavailable({ pidns = false }: { pidns?: boolean } = {}): string | undefined {
  const uid = process.getuid?.();
  if (uid !== 0) return `not root (uid ${uid}): network namespaces need root`;
  const a = uniqueName('probe-a');
  const b = uniqueName('probe-b');
  const made: string[] = [];
  try {
    for (const name of [a, b]) {
      const added = ip(['netns', 'add', name]);
      if (!added.ok) return `cannot make a network namespace: ${added.message}`;
      made.push(name);
      live.add(name);
      hookExit();
    }
    const veth = ip(['link', 'add', 'pst0', 'netns', a, 'type', 'veth', 'peer', 'name', 'pst1', 'netns', b]);
    if (!veth.ok) return `cannot make a veth pair: ${veth.message}`;
    if (pidns) {
      const result = spawnSync('ip', ['netns', 'exec', b, 'unshare', '--pid', '--fork', '--mount-proc', '--kill-child', 'true'], {
        encoding: 'utf8',
        timeout: 10_000,
      });
      if (result.error || result.status !== 0) {
        return `cannot make a PID namespace inside a network namespace: ${(result.error?.message ?? result.stderr ?? '').trim() || `exit ${result.status}`}`;
      }
    }
    return undefined;
  } finally {
    for (const name of made) {
      ip(['netns', 'delete', name]);
      live.delete(name);
    }
  }
}

/**
 * Makes namespaces A and B joined by veth. `subnet` is X in 10.254.X.0/24
 * (default derived from the pid; the addresses exist only inside the pair, so
 * two pairs with the same X do not collide). Throws with the failing command
 * if anything cannot be made, after deleting what was made.
 */
export async function createHostPair({ subnet = (process.pid % 250) + 1 }: { subnet?: number } = {}): Promise<HostPair> {
  const a: NetnsHost = { name: uniqueName('a'), ifname: 'pst-veth-a', ipv4: `10.254.${subnet}.1`, ipv6: `fd00:254:${subnet.toString(16)}::1` };
  const b: NetnsHost = { name: uniqueName('b'), ifname: 'pst-veth-b', ipv4: `10.254.${subnet}.2`, ipv6: `fd00:254:${subnet.toString(16)}::2` };
  let destroyed = false;
  const destroy = async (): Promise<void> => {
    if (destroyed) return;
    destroyed = true;
    for (const host of [a, b]) {
      if (!live.has(host.name)) continue;
      await run('ip', ['netns', 'delete', host.name], { timeoutMs: 10_000 });
      live.delete(host.name);
    }
  };
  const must = (args: readonly string[]): void => {
    const result = ip(args);
    if (!result.ok) throw new Error(result.message);
  };
  let ipv6Missing: string | undefined;
  try {
    hookExit();
    for (const host of [a, b]) {
      must(['netns', 'add', host.name]);
      live.add(host.name);
    }
    // Created directly inside the namespaces: the interface names never exist outside.
    must(['link', 'add', a.ifname, 'netns', a.name, 'type', 'veth', 'peer', 'name', b.ifname, 'netns', b.name]);
    for (const host of [a, b]) {
      must(['-n', host.name, 'link', 'set', 'lo', 'up']);
      must(['-n', host.name, 'addr', 'add', `${host.ipv4}/24`, 'dev', host.ifname]);
    }
    for (const host of [a, b]) {
      const added = ip(['-n', host.name, '-6', 'addr', 'add', `${host.ipv6}/64`, 'dev', host.ifname, 'nodad']);
      if (!added.ok) ipv6Missing ??= `no IPv6 on the veth pair: ${added.message}`;
    }
    if (ipv6Missing) {
      a.ipv6 = undefined;
      b.ipv6 = undefined;
    }
    for (const host of [a, b]) must(['-n', host.name, 'link', 'set', host.ifname, 'up']);
    // The carrier comes up once both ends are up; wait until both say so.
    for (let i = 0; i < 100; i++) {
      const states = [a, b].map((host) =>
        spawnSync('ip', ['-n', host.name, '-o', 'link', 'show', host.ifname], { encoding: 'utf8' }).stdout ?? '',
      );
      if (states.every((text) => /[<,]LOWER_UP[,>]/.test(text))) break;
      await sleep(20);
    }
  } catch (err) {
    await destroy();
    throw err;
  }
  return { a, b, ipv6Missing, destroy };
}

/** `[command, args]` that run `command args...` inside `host`'s network namespace. */
export function inNetns(host: NetnsHost | string, command: string, args: readonly string[] = []): [string, string[]] {
  return ['ip', ['netns', 'exec', typeof host === 'string' ? host : host.name, command, ...args]];
}

/**
 * `[command, args]` that run `command args...` inside `host`'s network
 * namespace and in a PID namespace of its own, with its own /proc: the
 * command is pid 1 there. `--kill-child` ends the whole PID namespace if
 * the unshare process dies.
 */
export function inPidNamespace(host: NetnsHost | string, command: string, args: readonly string[] = []): [string, string[]] {
  return inNetns(host, 'unshare', ['--pid', '--fork', '--mount-proc', '--kill-child', command, ...args]);
}

/** Runs a command to its end inside `host`'s network namespace. */
export function runIn(
  host: NetnsHost | string,
  command: string,
  args: readonly string[],
  options: SpawnOptions & { timeoutMs?: number; input?: string } = {},
): Promise<RunResult> {
  const [cmd, full] = inNetns(host, command, args);
  return run(cmd, full, options);
}

/** Runs one of the built bins inside `host`'s network namespace, with runBin's environment rules. */
export function runBinIn(
  host: NetnsHost | string,
  name: keyof typeof BIN,
  args: readonly string[],
  options: SpawnOptions & { timeoutMs?: number; input?: string } = {},
): Promise<RunResult> {
  return runIn(host, ...binCommand(name, args), { ...options, env: binEnv(options.env) });
}


/** `pid` and all its descendants, parents first. */
export function descendantsOf(pid: number): number[] {
  const all = [pid];
  for (let i = 0; i < all.length; i++) all.push(...childrenOf(all[i]!));
  return all;
}

/**
 * The NSpid line of /proc/PID/status: the pid in each PID namespace from
 * this one down to the process's own (the last is how the process sees
 * itself). Undefined once the process is gone. `tid` reads a thread instead.
 */
export function nsPids(pid: number, tid?: number): number[] | undefined {
  try {
    const status = readFileSync(tid === undefined ? `/proc/${pid}/status` : `/proc/${pid}/task/${tid}/status`, 'latin1');
    const line = /^NSpid:\s*(.*)$/m.exec(status);
    return line ? line[1]!.trim().split(/\s+/).map(Number) : undefined;
  } catch {
    return undefined;
  }
}

/** The pid a process (or thread) has inside its own PID namespace. */
export function innerPid(pid: number, tid?: number): number | undefined {
  return nsPids(pid, tid)?.at(-1);
}

export interface NsTree {
  child: ChildProcess;
  /** The unshare process, in this process's view. */
  pid: number;
  stdout(): string;
  stderr(): string;
  /** Resolves with the first match of `pattern` in stdout or stderr (as chosen), or rejects after `timeoutMs`. */
  waitFor(pattern: RegExp, { stream, timeoutMs }?: { stream?: 'stdout' | 'stderr'; timeoutMs?: number }): Promise<RegExpExecArray>;
  /** The namespace's pid 1 in this process's view, once it exists. */
  initPid(): number | undefined;
  /** Every process in the namespace: its pid here and its pid inside. */
  processes(): { pid: number; inner: number }[];
  /** Every pid in use inside the namespace, thread ids included (kill(TID, 0) succeeds too). */
  innerPidsInUse(): Set<number>;
  /** This process's pid for the namespace's `inner` pid, if it is still there. */
  outerPid(inner: number): number | undefined;
  /** Exit of the unshare process. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGKILL to the namespace's pid 1 (which ends every process in it), then to unshare; waits for the exit. */
  stop(): Promise<void>;
}

/**
 * Spawns `command args...` as pid 1 of a new PID namespace inside `host`'s
 * network namespace, with stdout and stderr piped and collected.
 */
export function spawnInPidNamespace(host: NetnsHost | string, command: string, args: readonly string[], options: SpawnOptions = {}): NsTree {
  const [cmd, full] = inPidNamespace(host, command, args);
  const child = spawn(cmd, full, { stdio: ['ignore', 'pipe', 'pipe'], ...options });
  const out = { stdout: '', stderr: '' };
  const listeners = new Set<() => void>();
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
    out.stdout += chunk;
    for (const listener of listeners) listener();
  });
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    out.stderr += chunk;
    for (const listener of listeners) listener();
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on('error', () => resolve({ code: null, signal: null }));
    child.on('close', (code, signal) => resolve({ code, signal }));
  });
  const pid = child.pid ?? -1;
  const initPid = (): number | undefined => childrenOf(pid).find((p) => innerPid(p) === 1);
  const processes = (): { pid: number; inner: number }[] => {
    const init = initPid();
    if (init === undefined) return [];
    return descendantsOf(init).flatMap((p) => {
      const inner = innerPid(p);
      return inner === undefined ? [] : [{ pid: p, inner }];
    });
  };
  return {
    child,
    pid,
    stdout: () => out.stdout,
    stderr: () => out.stderr,
    exited,
    initPid,
    processes,
    innerPidsInUse() {
      const used = new Set<number>();
      for (const { pid: p } of processes()) {
        let tids: string[] = [];
        try {
          tids = readdirSync(`/proc/${p}/task`);
        } catch {
          continue;
        }
        for (const tid of tids) {
          const inner = innerPid(p, Number(tid));
          if (inner !== undefined) used.add(inner);
        }
      }
      return used;
    },
    outerPid(inner: number) {
      return processes().find((p) => p.inner === inner)?.pid;
    },
    waitFor(pattern, { stream, timeoutMs = 10_000 } = {}) {
      return new Promise<RegExpExecArray>((resolve, reject) => {
        const check = (): boolean => {
          const text = stream ? out[stream] : `${out.stdout}\n${out.stderr}`;
          const match = pattern.exec(text);
          if (!match) return false;
          done();
          resolve(match);
          return true;
        };
        const timer = setTimeout(() => {
          done();
          reject(new Error(`no ${pattern} within ${timeoutMs} ms; stdout: ${out.stdout} stderr: ${out.stderr}`));
        }, timeoutMs);
        const onExit = (): void => {
          if (check()) return;
          done();
          reject(new Error(`the namespace's command ended before ${pattern}; stdout: ${out.stdout} stderr: ${out.stderr}`));
        };
        const done = (): void => {
          clearTimeout(timer);
          listeners.delete(listener);
          child.off('close', onExit);
        };
        const listener = (): void => void check();
        if (check()) return;
        listeners.add(listener);
        child.on('close', onExit);
      });
    },
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null || pid < 0) return;
      const init = initPid();
      if (init !== undefined) {
        try {
          process.kill(init, 'SIGKILL');
        } catch {
          // Already gone.
        }
      }
      const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** Whether a pid (or thread id) is in use in this process's PID namespace. */
export function pidInUse(pid: number): boolean {
  return existsSync(`/proc/${pid}`);
}

/**
 * pid 1 of B's PID namespace: picks the sleeper's pid (through ns_last_pid,
 * a pid that is free in A's view), starts the sleeper and the daemon, names
 * both pids as B sees them, and reaps the sleeper when it is killed (a zombie
 * would still count as existing). Its last word is the daemon's exit status.
 */
export const REMOTE_HOST_SCRIPT = `
echo "$1" > /proc/sys/kernel/ns_last_pid 2>/dev/null || echo "ns_last_pid not writable" >&2
sleep 600 &
echo "sleeper $!"
"$2" "$3" --foreground --port 0 &
d=$!
echo "daemon $d"
wait "$d"
echo "daemon-exit $?"
`;

/** `sh -c SCRIPT` run as pid 1 of a PID namespace of the test's own, talked to through stdin and stdout lines. */
export interface ScriptInPidNamespace {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** The namespace's pid 1 as this namespace sees it. */
  initPid(): number | undefined;
  /** The first match of `pattern` in the script's stdout, waited for; fails the test without one. */
  line(pattern: RegExp, timeoutMs: number): Promise<RegExpExecArray>;
  /** Writes a line to the script's stdin. */
  say(line: string): void;
}

/**
 * Runs `sh -c script sh args...` under `unshare --pid --fork --mount-proc
 * --kill-child`; after the test, SIGKILL to the namespace's pid 1 ends every
 * process in it (whatever the script started included), then unshare.
 */
export function runScriptInPidNamespace(
  t: { after(fn: () => Promise<void>): void },
  script: string,
  args: readonly string[],
  options: { env: NodeJS.ProcessEnv; cwd: string },
): ScriptInPidNamespace {
  const child = spawn('unshare', ['--pid', '--fork', '--mount-proc', '--kill-child', 'sh', '-c', script, 'sh', ...args], {
    stdio: ['pipe', 'pipe', 'pipe'],
    ...options,
  });
  const out = { stdout: '', stderr: '' };
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (out.stdout += chunk));
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (out.stderr += chunk));
  const exited = new Promise<void>((resolve) => child.on('close', () => resolve()));
  const initPid = (): number | undefined => descendantsOf(child.pid!).find((p) => p !== child.pid && innerPid(p) === 1);
  const kill = (pid: number) => {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Gone already.
    }
  };
  t.after(async () => {
    const init = initPid();
    if (init !== undefined) kill(init);
    const timer = setTimeout(() => kill(child.pid!), 3000);
    child.stdin!.destroy();
    await exited;
    clearTimeout(timer);
  });
  return {
    child,
    stdout: () => out.stdout,
    stderr: () => out.stderr,
    initPid,
    async line(pattern, timeoutMs) {
      let match: RegExpExecArray | null = null;
      const deadline = performance.now() + timeoutMs;
      while ((match = pattern.exec(out.stdout)) === null && performance.now() < deadline) await sleep(20);
      if (match === null) throw new Error(`no ${pattern} within ${timeoutMs} ms; stdout: ${JSON.stringify(out.stdout)} stderr: ${JSON.stringify(out.stderr)}`);
      return match;
    },
    say: (line) => void child.stdin!.write(`${line}\n`),
  };
}
