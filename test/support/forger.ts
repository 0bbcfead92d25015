import { spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { endianness } from 'node:os';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

/**
 * A forger of pidstatd answers, for tests that prove a client cannot be fooled
 * by someone who cannot read its requests. It knows what such a sender knows:
 * the pid watched and the host word the user typed. It sends `EXIS <pid>
 * <state> <host>`, with and without a trailing newline, from an ordinary
 * (unprivileged, ephemeral) source port:
 *
 * - sweep mode: to every port of the local ephemeral range
 *   (/proc/sys/net/ipv4/ip_local_port_range) on 127.0.0.1, and ::1 with
 *   `--ipv6`, round after round (one ending per round, the other the
 *   next). It hits every socket of the network namespace it runs in: run it
 *   in a namespace of its own (netns.ts), or it disturbs whatever else
 *   listens on this host.
 * - target mode: to the UDP ports of one process only, found through its
 *   socket inodes (/proc/PID/fd) in /proc/PID/net/udp{,6}, as fast as it can,
 *   looking again every 100 ms; it ends when that process does.
 *
 * Run as a process of its own (`node dist/test/support/forger.js --mode sweep
 * --forge PID:STATE --host H ...`), so it takes a core of its own and can be
 * started inside a network namespace. Both modes stop by themselves after
 * `--duration` ms or `--max` datagrams, on SIGTERM, or at the end of stdin.
 * Talks JSON lines on stdout: `{"type":"ready","port":P}` once it can send,
 * `{"type":"ports","ports":[...]}` each time target mode finds another set of
 * ports, `{"type":"round","rounds":N}` each time a sweep has covered the
 * whole range, and `{"type":"done",...}` (a ForgerReport) last.
 */

export interface ForgerReport {
  type: 'done';
  /** Datagrams sent. */
  sent: number;
  /** Full rounds over every destination. */
  rounds: number;
  /** Why it stopped. */
  reason: 'time' | 'count' | 'gone' | 'stopped' | 'lost';
  /** For 'lost': how the process ended without telling (then the counts are -1). */
  lost?: string;
  /** Target mode: every port of the target that was sprayed. */
  ports: number[];
  /** Send errors (other than a full buffer), counted. */
  errors: number;
}

interface Destination {
  address: string;
  port: number;
}

/** One line of /proc/PID/net/udp{,6}: the socket's inode and its local address and port. */
export interface UdpSocketLine {
  inode: number;
  address: string;
  port: number;
  family: 4 | 6;
}

/** A /proc/net address in hex: 32-bit words, each printed in the host's byte order. */
function decodeProcAddress(hex: string): string {
  const bytes = Buffer.from(hex, 'hex');
  if (endianness() === 'LE') for (let i = 0; i < bytes.length; i += 4) bytes.subarray(i, i + 4).reverse();
  if (bytes.length === 4) return [...bytes].join('.');
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(bytes.readUInt16BE(i).toString(16));
  const text = groups.join(':');
  if (text === '0:0:0:0:0:0:0:0') return '::';
  if (text === '0:0:0:0:0:0:0:1') return '::1';
  if (text.startsWith('0:0:0:0:0:ffff:')) return `::ffff:${[...bytes.subarray(12)].join('.')}`;
  return text;
}

/** The UDP sockets listed in /proc/PID/net/udp and udp6 (the network namespace of PID). */
export function udpSocketsOf(pid: number | 'self'): UdpSocketLine[] {
  const found: UdpSocketLine[] = [];
  for (const [file, family] of [['udp', 4], ['udp6', 6]] as const) {
    let text = '';
    try {
      text = readFileSync(`/proc/${pid}/net/${file}`, 'latin1');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const fields = line.trim().split(/\s+/);
      const local = fields[1];
      const inode = Number(fields[9]);
      if (local === undefined || !Number.isInteger(inode)) continue;
      const [hexAddress, hexPort] = local.split(':');
      if (hexAddress === undefined || hexPort === undefined) continue;
      found.push({ inode, address: decodeProcAddress(hexAddress), port: parseInt(hexPort, 16), family });
    }
  }
  return found;
}

/** The socket inodes a process holds open, from /proc/PID/fd. */
export function socketInodesOf(pid: number): Set<number> {
  const inodes = new Set<number>();
  let fds: string[] = [];
  try {
    fds = readdirSync(`/proc/${pid}/fd`);
  } catch {
    return inodes;
  }
  for (const fd of fds) {
    try {
      const match = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (match) inodes.add(Number(match[1]));
    } catch {
      // Closed meanwhile.
    }
  }
  return inodes;
}

/** Where to send so that a process's UDP sockets receive it: loopback for a wildcard bind. */
export function destinationsOf(pid: number): Destination[] {
  const inodes = socketInodesOf(pid);
  const out = new Map<string, Destination>();
  const add = (address: string, port: number): void => void out.set(`${address} ${port}`, { address, port });
  for (const socket of udpSocketsOf(pid)) {
    if (!inodes.has(socket.inode) || socket.port === 0) continue;
    if (socket.address === '0.0.0.0') add('127.0.0.1', socket.port);
    else if (socket.address === '::') {
      // A dual-stack socket hears IPv4 too; which it is, /proc does not say.
      add('::1', socket.port);
      add('127.0.0.1', socket.port);
    } else if (socket.address.startsWith('::ffff:')) add(socket.address.slice(7), socket.port);
    else add(socket.address, socket.port);
  }
  return [...out.values()];
}

function localPortRange(): [number, number] {
  try {
    const [low, high] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'latin1').trim().split(/\s+/).map(Number);
    if (low !== undefined && high !== undefined && low > 0 && high >= low) return [low, high];
  } catch {
    // Not Linux: the kernel's usual range.
  }
  return [32768, 60999];
}

function processGone(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'Z';
  } catch {
    return true;
  }
}

/** The forger process itself. */
async function forgerMain(argv: string[]): Promise<void> {
  const values = (name: string): string[] => argv.flatMap((word, i) => (word === `--${name}` && argv[i + 1] !== undefined ? [argv[i + 1]!] : []));
  const opt = (name: string, fallback: string): string => values(name)[0] ?? fallback;
  const mode = opt('mode', 'sweep');
  const targetPid = Number(opt('target-pid', '0'));
  const durationMs = Number(opt('duration', '3000'));
  const max = Number(opt('max', '10000000'));
  const ipv6 = argv.includes('--ipv6');
  const forged = values('forge').flatMap((spec) => spec.split(',')).map((spec) => spec.split(':') as [string, string]);
  const hosts = values('host');
  if (forged.length === 0 || hosts.length === 0) throw new Error('forger: --forge PID:STATE and --host HOST are required');
  if (mode === 'target' && !(targetPid > 0)) throw new Error('forger: target mode needs --target-pid');
  // An address literal as host word goes only where its family goes; a name goes everywhere.
  const messagesFor = (family: 4 | 6, ends: readonly string[]): Buffer[] =>
    forged.flatMap(([pid, state]) =>
      hosts
        .filter((host) => (family === 4 ? !host.includes(':') : !/^[0-9.]+$/.test(host)))
        .flatMap((host) => ends.map((end) => Buffer.from(`EXIS ${pid} ${state} ${host}${end}`, 'latin1'))),
    );
  const messages = { 4: messagesFor(4, ['', '\n']), 6: messagesFor(6, ['', '\n']) };
  // A sweep sends one ending per round, the other the next round: twice the rounds.
  const sweepMessages = [
    { 4: messagesFor(4, ['']), 6: messagesFor(6, ['']) },
    { 4: messagesFor(4, ['\n']), 6: messagesFor(6, ['\n']) },
  ] as const;
  const out = (value: unknown): void => void process.stdout.write(JSON.stringify(value) + '\n');

  let errors = 0;
  const open = async (type: 'udp4' | 'udp6', address: string): Promise<dgram.Socket | undefined> => {
    const socket = dgram.createSocket(type);
    socket.on('error', () => errors++);
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once('error', reject);
        socket.bind(0, address, () => {
          socket.off('error', reject);
          resolve();
        });
      });
      return socket;
    } catch {
      socket.close();
      return undefined;
    }
  };
  const v4 = await open('udp4', '127.0.0.1');
  const v6 = ipv6 || mode === 'target' ? await open('udp6', '::1') : undefined;
  if (v4 === undefined) throw new Error('forger: cannot bind a UDP socket on 127.0.0.1');
  out({ type: 'ready', port: v4.address().port });

  const began = performance.now();
  let sent = 0;
  let rounds = 0;
  let stopped = false;
  const stop = (): void => void (stopped = true);
  process.on('SIGTERM', stop);
  createInterface({ input: process.stdin }).on('close', stop);
  const yieldNow = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
  const sendTo = (destination: Destination, msg: Buffer): void => {
    const socket = destination.address.includes(':') ? v6 : v4;
    if (socket === undefined) return;
    socket.send(msg, destination.port, destination.address, (err) => {
      if (err && (err as NodeJS.ErrnoException).code !== 'ENOBUFS' && (err as NodeJS.ErrnoException).code !== 'EAGAIN') errors++;
    });
    sent++;
  };
  const over = (): ForgerReport['reason'] | undefined => {
    if (stopped) return 'stopped';
    if (sent >= max) return 'count';
    if (performance.now() - began >= durationMs) return 'time';
    return undefined;
  };

  let reason: ForgerReport['reason'] | undefined;
  const sprayed = new Set<number>();
  if (mode === 'sweep') {
    const [low, high] = localPortRange();
    const addresses = ['127.0.0.1', ...(ipv6 && v6 ? ['::1'] : [])];
    while ((reason = over()) === undefined) {
      const round = sweepMessages[rounds % 2]!;
      for (let port = low; port <= high && reason === undefined; port++) {
        for (const address of addresses) for (const msg of round[address.includes(':') ? 6 : 4]) sendTo({ address, port }, msg);
        if ((port & 127) === 0) {
          await yieldNow();
          reason = over();
        }
      }
      if (reason === undefined) out({ type: 'round', rounds: ++rounds });
    }
  } else {
    let destinations: Destination[] = [];
    let lookedAt = -Infinity;
    let shown = '';
    while ((reason = over()) === undefined) {
      if (performance.now() - lookedAt >= 100) {
        lookedAt = performance.now();
        if (processGone(targetPid)) {
          reason = 'gone';
          break;
        }
        destinations = destinationsOf(targetPid);
        const ports = [...new Set(destinations.map((d) => d.port))].sort((a, b) => a - b);
        for (const port of ports) sprayed.add(port);
        if (ports.join(',') !== shown) {
          shown = ports.join(',');
          out({ type: 'ports', ports });
        }
      }
      if (destinations.length === 0) {
        await new Promise((resolve) => setTimeout(resolve, 5));
        continue;
      }
      for (let i = 0; i < 64; i++) {
        for (const destination of destinations) for (const msg of messages[destination.address.includes(':') ? 6 : 4]) sendTo(destination, msg);
      }
      rounds++;
      await yieldNow();
    }
  }
  // Let the last sends leave before reporting.
  await new Promise((resolve) => setTimeout(resolve, 20));
  const report: ForgerReport = { type: 'done', sent, rounds, reason, ports: [...sprayed].sort((a, b) => a - b), errors };
  out(report);
  v4.close();
  v6?.close();
  process.exit(0);
}

export interface ForgerOptions {
  mode: 'sweep' | 'target';
  /** The forged answers: which pid, said to be in which state (0 dead, 1 exists). */
  forge: readonly { pid: number; state: 0 | 1 }[];
  /** The host words to forge for: the one the user typed (and its spelling on the wire). */
  hosts: readonly string[];
  /** Target mode: the process whose UDP ports are sprayed. */
  targetPid?: number;
  /** Sweep mode: ::1 as well as 127.0.0.1. */
  ipv6?: boolean;
  /** Bounds: it stops by itself after this long or this many datagrams. */
  durationMs: number;
  maxDatagrams?: number;
  /** Runs it through another command (inNetns, see netns.ts). */
  wrap?: (command: string, args: string[]) => [string, string[]];
}

export interface Forger {
  child: ChildProcess;
  pid: number;
  /** The ports target mode sprays now (empty until it found the target's sockets). */
  ports(): number[];
  /** Resolves once the target's sockets were found (target mode), or with [] if the forger ended first. */
  found(timeoutMs: number): Promise<number[]>;
  /** Resolves once a sweep has covered the whole range once (sweep mode): true, or false if the forger ended first. */
  swept(timeoutMs: number): Promise<boolean>;
  /** Its report, once it stopped by itself (reason 'lost' if it ended without one). */
  done: Promise<ForgerReport>;
  /** Stops it now (SIGTERM; SIGKILL after 3 s) and returns its report. */
  stop(): Promise<ForgerReport>;
}

export const FORGER_SCRIPT = fileURLToPath(import.meta.url);

/** Starts a forger process and waits until it can send. */
export async function startForger(opts: ForgerOptions): Promise<Forger> {
  const args = [
    FORGER_SCRIPT, '--mode', opts.mode, '--duration', String(opts.durationMs),
    ...(opts.maxDatagrams !== undefined ? ['--max', String(opts.maxDatagrams)] : []),
    ...opts.forge.flatMap(({ pid, state }) => ['--forge', `${pid}:${state}`]),
    ...opts.hosts.flatMap((host) => ['--host', host]),
    ...(opts.targetPid !== undefined ? ['--target-pid', String(opts.targetPid)] : []),
    ...(opts.ipv6 ? ['--ipv6'] : []),
  ];
  const [command, full] = opts.wrap ? opts.wrap(process.execPath, args) : [process.execPath, args];
  const child = spawn(command, full, { stdio: ['pipe', 'pipe', 'pipe'] });
  child.stdin!.on('error', () => {});
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  let ports: number[] = [];
  const portWaiters: ((ports: number[]) => void)[] = [];
  let rounds = 0;
  const roundWaiters: ((swept: boolean) => void)[] = [];
  let onReady: (port: number) => void = () => {};
  let onDone: (report: ForgerReport) => void = () => {};
  const ready = new Promise<number>((resolve) => (onReady = resolve));
  const reported = new Promise<ForgerReport>((resolve) => (onDone = resolve));
  createInterface({ input: child.stdout! }).on('line', (line) => {
    let value: Record<string, unknown>;
    try {
      value = JSON.parse(line) as Record<string, unknown>;
    } catch {
      stderr += `unparsable forger line: ${line}\n`;
      return;
    }
    if (value['type'] === 'ready') onReady(Number(value['port']));
    else if (value['type'] === 'ports') {
      ports = value['ports'] as number[];
      if (ports.length > 0) for (const waiter of portWaiters.splice(0)) waiter(ports);
    } else if (value['type'] === 'round') {
      rounds = Number(value['rounds']);
      for (const waiter of roundWaiters.splice(0)) waiter(true);
    } else if (value['type'] === 'done') {
      onDone(value as unknown as ForgerReport);
      // Ended without finding the target's ports (it was gone): waiting longer is vain.
      for (const waiter of portWaiters.splice(0)) waiter(ports);
      for (const waiter of roundWaiters.splice(0)) waiter(rounds > 0);
    }
  });
  let ending = '';
  const exited = new Promise<void>((resolve) =>
    child.on('close', (code, signal) => {
      ending = signal ? `killed by ${signal}` : `exit ${code}`;
      resolve();
    }),
  );
  const done = Promise.race([
    reported,
    exited.then(async () => {
      // The report line may still be on its way when the process is gone.
      await new Promise((resolve) => setTimeout(resolve, 500));
      const lost: ForgerReport = { type: 'done', sent: -1, rounds: -1, reason: 'lost', ports, errors: -1, lost: `ended (${ending}) without a report; stderr: ${stderr}` };
      return Promise.race([reported, lost]);
    }),
  ]);
  let timer: NodeJS.Timeout | undefined;
  const started = await Promise.race([
    ready.then(() => true),
    exited.then(() => false),
    new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), 10_000))),
  ]);
  clearTimeout(timer);
  if (!started) {
    child.kill('SIGKILL');
    throw new Error(`the forger did not start; stderr: ${stderr}`);
  }
  return {
    child,
    pid: child.pid!,
    ports: () => ports,
    found: (timeoutMs) =>
      ports.length > 0
        ? Promise.resolve(ports)
        : new Promise((resolve, reject) => {
            const timer = setTimeout(() => reject(new Error(`the forger found no UDP port of pid ${opts.targetPid} within ${timeoutMs} ms`)), timeoutMs);
            portWaiters.push((found) => {
              clearTimeout(timer);
              resolve(found);
            });
          }),
    swept: (timeoutMs) =>
      rounds > 0
        ? Promise.resolve(true)
        : new Promise((resolve, reject) => {
            const timer = setTimeout(() => reject(new Error(`the sweep did not cover the range once within ${timeoutMs} ms`)), timeoutMs);
            roundWaiters.push((swept) => {
              clearTimeout(timer);
              resolve(swept);
            });
          }),
    done,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
      await exited;
      clearTimeout(timer);
      return done;
    },
  };
}

// Run as a forger only when started as one: `node --test` on the folder loads this file too.
if (process.argv[1] === FORGER_SCRIPT && process.argv.includes('--mode')) {
  forgerMain(process.argv.slice(2)).catch((err: Error) => {
    process.stderr.write(`${err.message}\n`);
    process.exit(1);
  });
}
