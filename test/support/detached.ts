import assert from 'node:assert/strict';
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { accessSync, constants, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import { childrenOf, isRunning, sleep, waitFor } from './helpers.js';

/**
 * What the tests of a detached pidstatd share: its processes found by pid
 * (a supervisor from its pidfile, its server as the supervisor's child),
 * their listening TCP sockets, stopping them by pid, a process started with
 * its output collected as it comes, a receiver of Unix
 * datagrams (systemd's NOTIFY_SOCKET), and a syslog of the test's own: such
 * a receiver bound over /dev/log in a private mount namespace in which the
 * daemon is started.
 */

export function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // Already gone.
  }
}

/** PID's descendants, depth first. */
export function descendantsOf(pid: number): number[] {
  return childrenOf(pid).flatMap((kid) => [kid, ...descendantsOf(kid)]);
}

/** PID's running children. */
export function runningChildrenOf(pid: number): number[] {
  return childrenOf(pid).filter(isRunning);
}

/** The running pidstatd processes whose argv holds `needle` as consecutive words (a unique pidfile). */
export function pidsWithArgs(...needle: string[]): number[] {
  const found: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^[0-9]+$/.test(entry) || Number(entry) === process.pid) continue;
    let argv: string[];
    try {
      argv = readFileSync(`/proc/${entry}/cmdline`, 'latin1').split('\0');
    } catch {
      continue;
    }
    const at = argv.findIndex((_, i) => needle.every((word, j) => argv[i + j] === word));
    if (at >= 0 && argv.some((word) => word.endsWith('pidstatd.cjs')) && isRunning(Number(entry))) found.push(Number(entry));
  }
  return found;
}

/** SIGTERM to each pid given and to their descendants, SIGKILL to what is left after 3 s. */
export async function stopPids(pids: number[]): Promise<void> {
  const all = [...new Set(pids.flatMap((pid) => [pid, ...descendantsOf(pid)]))].filter((pid) => pid > 1 && isRunning(pid));
  for (const pid of all) signal(pid, 'SIGTERM');
  if (await waitFor(() => all.every((pid) => !isRunning(pid)), 3000)) return;
  for (const pid of all) if (isRunning(pid)) signal(pid, 'SIGKILL');
  await waitFor(() => all.every((pid) => !isRunning(pid)), 2000);
}

/** The pid a pidfile holds, or undefined. */
export function pidIn(file: string): number | undefined {
  try {
    const text = readFileSync(file, 'latin1');
    return /^[0-9]+\n$/.test(text) ? Number(text) : undefined;
  } catch {
    return undefined;
  }
}

/** The pid a pidfile holds, asserted to be all it holds. */
export function readPid(file: string): number {
  const text = readFileSync(file, 'latin1');
  assert.match(text, /^[0-9]+\n?$/, `the pidfile holds a pid: ${JSON.stringify(text)}`);
  return Number(text.trim());
}

/** The parent of PID when it is a supervisor (its title is pidstatd). */
function supervisorOf(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    const parent = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    return readFileSync(`/proc/${parent}/cmdline`, 'latin1').split('\0')[0] === 'pidstatd' ? parent : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Stops a detached daemon: the pids given, the supervisor its pidfile names,
 * any pidstatd started with that pidfile and the supervisor of each (found
 * even when the pidfile no longer names it).
 */
export async function stopDetached(pidfile: string, ...pids: number[]): Promise<void> {
  const named = pidIn(pidfile);
  const servers = pidsWithArgs('--pidfile', pidfile);
  const supervisors = servers.map(supervisorOf).filter((pid): pid is number => pid !== undefined);
  await stopPids([...pids, ...supervisors, ...servers, ...(named === undefined ? [] : [named])]);
}

/** A process whose output is collected as it comes. */
export interface Proc {
  child: ChildProcess;
  pid: number;
  stdout(): string;
  stderr(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  isDone(): boolean;
  /** Waits for `pattern` in stderr (or stdout); throws with the output if the process ends or time runs out. */
  waitFor(pattern: RegExp, stream?: 'stdout' | 'stderr', timeoutMs?: number): Promise<RegExpExecArray>;
  /** SIGTERM (or the signal given), then SIGKILL after 5 s; resolves with how it ended. */
  stop(sig?: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export function spawnProc(command: string, args: readonly string[], options: SpawnOptions = {}): Proc {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], ...options });
  let out = '';
  let err = '';
  let done = false;
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (err += chunk));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on('error', () => {
      done = true;
      resolve({ code: null, signal: null });
    });
    child.on('exit', (code, sig) => {
      done = true;
      resolve({ code, signal: sig });
    });
  });
  const proc: Proc = {
    child,
    pid: child.pid ?? -1,
    stdout: () => out,
    stderr: () => err,
    exited,
    isDone: () => done,
    async waitFor(pattern, stream = 'stderr', timeoutMs = 10_000) {
      const deadline = performance.now() + timeoutMs;
      for (;;) {
        const match = pattern.exec(stream === 'stderr' ? err : out);
        if (match) return match;
        if (done) {
          await sleep(50); // the last output may still be in the pipe
          const late = pattern.exec(stream === 'stderr' ? err : out);
          if (late) return late;
          throw new Error(`${command} ended before printing ${pattern}: stdout ${JSON.stringify(out)}, stderr ${JSON.stringify(err)}`);
        }
        if (performance.now() > deadline) throw new Error(`no ${pattern} from ${command} in ${timeoutMs} ms: stderr ${JSON.stringify(err)}`);
        await sleep(25);
      }
    },
    async stop(sig = 'SIGTERM') {
      if (!done && child.pid !== undefined) signal(child.pid, sig);
      const killer = setTimeout(() => child.pid !== undefined && signal(child.pid, 'SIGKILL'), 5000);
      const how = await exited;
      clearTimeout(killer);
      return how;
    },
  };
  return proc;
}

/** The inodes of the listening TCP sockets (IPv4 and IPv6) that process PID holds. */
export function listeningTcp(pid: number): string[] {
  const listening = new Set<string>();
  for (const table of ['tcp', 'tcp6']) {
    let text = '';
    try {
      text = readFileSync(`/proc/${pid}/net/${table}`, 'latin1');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const fields = line.trim().split(/\s+/);
      // st 0A is TCP_LISTEN; field 10 is the inode.
      if (fields[3] === '0A' && fields[9] !== undefined) listening.add(fields[9]);
    }
  }
  const held: string[] = [];
  let fds: string[] = [];
  try {
    fds = readdirSync(`/proc/${pid}/fd`);
  } catch {
    return held;
  }
  for (const fd of fds) {
    try {
      const inode = /^socket:\[([0-9]+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`))?.[1];
      if (inode !== undefined && listening.has(inode)) held.push(inode);
    } catch {
      // Closed meanwhile.
    }
  }
  return held;
}

export function python(): string | undefined {
  for (const candidate of ['/usr/bin/python3', '/usr/local/bin/python3']) {
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // Try the next.
    }
  }
  return undefined;
}

/** A datagram a receiver got: when, from which process, and its text. */
export interface Datagram {
  /** Seconds, on the receiver's monotonic clock. */
  at: number;
  /** The sender's pid, as the kernel tells it (SO_PASSCRED). */
  sender: number;
  text: string;
}

export interface DatagramReceiver {
  path: string;
  datagrams(): Datagram[];
  /** With `askOnReady`: the reply to the request sent the moment READY=1 came ('' for none), once it is known. */
  readyAnswer(): string | undefined;
  waitFor(check: (datagrams: Datagram[]) => boolean, timeoutMs: number): Promise<boolean>;
  stop(): Promise<void>;
}

const RECEIVER = [
  'import json, socket, struct, sys, time',
  's = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)',
  's.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)',
  'path = sys.argv[1]',
  "s.bind('\\0' + path[1:] if path.startswith('@') else path)",
  'print("ready", flush=True)',
  'while True:',
  '    data, ancillary, _, _ = s.recvmsg(65536, socket.CMSG_SPACE(12))',
  '    pid = 0',
  '    for level, kind, value in ancillary:',
  '        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS: pid = struct.unpack("iII", value[:12])[0]',
  '    print(json.dumps([time.monotonic(), pid, data.decode("latin1")]), flush=True)',
  '    if len(sys.argv) > 2 and b"READY=1" in data.split(b"\\n"):',
  '        port, request = sys.argv[2:4]; sys.argv[2:] = []',
  '        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)',
  '        u.settimeout(3)',
  '        u.sendto(request.encode("latin1"), ("127.0.0.1", int(port)))',
  '        try: reply = u.recv(2048).decode("latin1")',
  '        except socket.timeout: reply = ""',
  '        print(json.dumps([time.monotonic(), -1, reply]), flush=True)',
].join('\n');

/**
 * A Unix datagram socket of the test's own at `path` ('@name': an abstract
 * one), whose datagrams are collected with their sender (Node has no Unix
 * datagram sockets: python3 receives). With `askOnReady`, the first
 * datagram holding READY=1 makes it send `request` to 127.0.0.1:`port` at
 * once, from the receiver itself, so that no delay of the test's own hides
 * a READY=1 sent before the daemon answers.
 */
export async function startDatagramReceiver(py: string, path: string, askOnReady?: { port: number; request: string }): Promise<DatagramReceiver> {
  const ask = askOnReady === undefined ? [] : [String(askOnReady.port), askOnReady.request];
  const child: ChildProcess = spawn(py, ['-c', RECEIVER, path, ...ask], { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  let out = '';
  let err = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (err += chunk));
  if (!(await waitFor(() => out.startsWith('ready\n') || child.exitCode !== null, 5000)) || child.exitCode !== null) {
    child.kill('SIGKILL');
    throw new Error(`the datagram receiver did not start: ${err}`);
  }
  const rows = () =>
    out.split('\n').slice(1, -1).map((row) => {
      const [at, sender, text] = JSON.parse(row) as [number, number, string];
      return { at, sender, text };
    });
  const datagrams = () => rows().filter((row) => row.sender !== -1);
  return {
    path,
    datagrams,
    readyAnswer: () => rows().find((row) => row.sender === -1)?.text,
    waitFor: (check, timeoutMs) => waitFor(() => check(datagrams()), timeoutMs),
    async stop() {
      child.kill('SIGKILL');
      await exited;
    },
  };
}

export interface SyslogLine {
  /** Seconds, on the receiver's monotonic clock. */
  at: number;
  pri: number;
  tag: string;
  pid: number;
  message: string;
}

export interface SyslogReceiver {
  path: string;
  lines(): SyslogLine[];
  /** Everything received that is no `<PRI>tag[pid]: message` line. */
  junk(): string[];
  waitFor(check: (lines: SyslogLine[]) => boolean, timeoutMs: number): Promise<boolean>;
  stop(): Promise<void>;
}

/** A syslog daemon of the test's own: a Unix datagram socket at `path` whose datagrams are collected. */
export async function startSyslogReceiver(py: string, path: string): Promise<SyslogReceiver> {
  const receiver = await startDatagramReceiver(py, path);
  const parse = () => {
    const lines: SyslogLine[] = [];
    const junk: string[] = [];
    for (const { at, text } of receiver.datagrams()) {
      const match = /^<([0-9]+)>([^[\]:]+)\[([0-9]+)\]: (.*)$/s.exec(text);
      if (match) lines.push({ at, pri: Number(match[1]), tag: match[2]!, pid: Number(match[3]), message: match[4]! });
      else junk.push(text);
    }
    return { lines, junk };
  };
  return {
    path,
    lines: () => parse().lines,
    junk: () => parse().junk,
    waitFor: (check, timeoutMs) => waitFor(() => check(parse().lines), timeoutMs),
    stop: () => receiver.stop(),
  };
}

/**
 * A command line that runs `command` in a private mount namespace where
 * /dev is a tmpfs holding the usual character devices and, as /dev/log, the
 * socket at `socket`. `scratch` is a folder of the test's (for the real
 * /dev, bound there while the new one is made).
 */
export function withDevLog(socket: string, scratch: string, command: string, args: readonly string[]): [string, string[]] {
  const script = [
    'set -e',
    'old=$1; socket=$2; shift 2',
    'mkdir -p "$old"',
    'mount --rbind /dev "$old"',
    'mount -t tmpfs -o mode=755 tmpfs /dev',
    'for name in null zero full random urandom tty; do touch /dev/$name; mount --bind "$old/$name" /dev/$name; done',
    'touch /dev/log',
    'mount --bind "$socket" /dev/log',
    'umount -l "$old"',
    'exec "$@"',
  ].join('\n');
  return ['unshare', ['--mount', '--propagation', 'private', '/bin/sh', '-c', script, 'sh', join(scratch, 'real-dev'), socket, command, ...args]];
}

/** Whether this host lets a test make a private mount namespace with its own /dev/log (root, unshare, mount). */
export async function devLogUnavailable(py: string | undefined): Promise<string | undefined> {
  if (process.getuid?.() !== 0) return 'needs root (a mount namespace of its own for /dev/log)';
  if (py === undefined) return 'no python3 to receive syslog datagrams';
  const probe = spawn('unshare', ['--mount', '--propagation', 'private', '/bin/sh', '-c', 'mount -t tmpfs tmpfs /mnt'], { stdio: 'ignore' });
  const code = await new Promise<number | null>((resolve) => {
    probe.on('error', () => resolve(null));
    probe.on('exit', (status) => resolve(status));
  });
  await sleep(0);
  return code === 0 ? undefined : 'unshare --mount or mount is not allowed here';
}

/**
 * The end of a python3 wrapper that made a socket `s`: it hands it to the
 * command in sys.argv[2:] as fd 3, the way systemd's socket activation does
 * (LISTEN_FDS=1, LISTEN_PID its own pid, which exec keeps).
 */
export const HAND_OVER_AS_LISTEN_FD = [
  'fd = s.detach()',
  'if fd != 3:',
  '    os.dup2(fd, 3, inheritable=True)',
  '    os.close(fd)',
  'else:',
  '    os.set_inheritable(3, True)',
  'os.environ["LISTEN_FDS"] = "1"',
  'os.environ["LISTEN_PID"] = str(os.getpid())',
  'os.execv(sys.argv[2], sys.argv[2:])',
];

/** A folder for a test file's files, removed after its tests, and a path in it that nothing uses yet, each call. */
export function scratchFiles(prefix: string): (name: string) => string {
  const folder = mkdtempSync(join(tmpdir(), prefix));
  after(() => rmSync(folder, { recursive: true, force: true }));
  let count = 0;
  return (name) => join(folder, `${++count}-${name}`);
}
