import { spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { hostname } from 'node:os';
import { isIPv6 } from 'node:net';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

/**
 * A stand-in for IPC::Locker's original Perl pidstatd, as other hosts run it:
 * `PIDR <pid> [<host> [<flags>]]` (extra fields ignored) is answered with
 * `EXIS <pid> 1|0 <host>` or `UNKN <pid> na <host>`, no newline, the <host>
 * field echoed byte for byte (this host's name when missing), as the flags
 * allow (1 exists, 2 dead, 4 unknown; missing, 0 or not a number: 3). The
 * probe is kill(pid, 0). Anything else is ignored, and counted.
 *
 * Variations the forgery tests need:
 * - `--delay MS`: each answer waits that long, a window for a forger;
 * - `--silent`: it reads requests and never answers;
 * - `--forward-to ADDR:PORT`: it asks that daemon instead of probing (from a
 *   socket connected to it, one per client, so only that daemon is heard) and
 *   passes the answer back unchanged after the delay: a real pidstatd made slow;
 * - `--forge-for HOST`: a hostile daemon. Besides its own truthful answer, it
 *   tells the asking client at once, and again every 100 ms for 2 s, that the
 *   pid is dead on HOST: `EXIS <pid> 0 HOST`, and `EXIS <pid> 0 <host>` with
 *   its own name (`--own-name`, default the bound address) in the request's
 *   <host> replaced by HOST: all it can guess of the other host's request.
 *
 * Run as a process of its own (startPerlDaemon), so it can run inside a
 * network namespace and keeps answering while the test process is busy. Talks
 * JSON lines on stdout: `{"type":"listening","port":P}`, one
 * `{"type":"request",...}` per PIDR, and at SIGTERM (or the end of stdin)
 * `{"type":"stats",...}` (a PerlDaemonStats) before it exits.
 */

export interface PerlDaemonStats {
  type: 'stats';
  requests: number;
  answered: number;
  /** Datagrams that were not a PIDR (a sweeping forger's, for one). */
  ignored: number;
  /** Forged replies a hostile daemon sent. */
  forged: number;
}

function pidState(pid: number): '1' | '0' | 'na' {
  try {
    process.kill(pid, 0);
    return '1';
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EPERM') return '1';
    if (code === 'ESRCH') return '0';
    return 'na';
  }
}

/** The stand-in process itself. */
function perlDaemonMain(argv: string[]): void {
  const opt = (name: string, fallback?: string): string | undefined => {
    const i = argv.indexOf(`--${name}`);
    return i >= 0 ? argv[i + 1] : fallback;
  };
  const bind = opt('bind', '127.0.0.1')!;
  const port = Number(opt('port', '0'));
  const delayMs = Number(opt('delay', '0'));
  const silent = argv.includes('--silent');
  const forwardTo = opt('forward-to');
  const forgeFor = opt('forge-for');
  const ownName = opt('own-name', bind)!;
  const stats: PerlDaemonStats = { type: 'stats', requests: 0, answered: 0, ignored: 0, forged: 0 };
  const out = (value: unknown): void => void process.stdout.write(JSON.stringify(value) + '\n');
  const socket = dgram.createSocket(isIPv6(bind) ? 'udp6' : 'udp4');
  socket.on('error', (err) => out({ type: 'error', message: err.message }));
  const later = (fn: () => void): void => void (delayMs > 0 ? setTimeout(fn, delayMs) : fn());

  let forward: { address: string; port: number } | undefined;
  if (forwardTo !== undefined) {
    const match = /^\[?([^\]]+?)\]?:(\d+)$/.exec(forwardTo);
    if (!match) throw new Error(`perl-daemon: --forward-to ${forwardTo} is not ADDR:PORT`);
    forward = { address: match[1]!, port: Number(match[2]) };
  }
  const upstream = new Map<string, { socket: dgram.Socket; connected: Promise<void> }>();
  const upstreamFor = (client: dgram.RemoteInfo): { socket: dgram.Socket; connected: Promise<void> } => {
    const key = `${client.address} ${client.port}`;
    let up = upstream.get(key);
    if (up === undefined) {
      const target = forward!;
      const connected = dgram.createSocket(isIPv6(target.address) ? 'udp6' : 'udp4');
      connected.on('error', (err) => out({ type: 'error', where: 'upstream', message: err.message }));
      connected.on('message', (msg) =>
        later(() => {
          stats.answered++;
          socket.send(msg, client.port, client.address);
        }),
      );
      up = { socket: connected, connected: new Promise<void>((resolve) => connected.connect(target.port, target.address, () => resolve())) };
      upstream.set(key, up);
    }
    return up;
  };

  const forge = (pid: string, host: string, client: dgram.RemoteInfo): void => {
    const hosts = new Set([forgeFor!, host.split(ownName).join(forgeFor!)]);
    const burst = (): void => {
      for (const forged of hosts) {
        for (const end of ['', '\n']) {
          socket.send(Buffer.from(`EXIS ${pid} 0 ${forged}${end}`, 'latin1'), client.port, client.address);
          stats.forged++;
        }
      }
    };
    burst();
    const timer = setInterval(burst, 100);
    setTimeout(() => clearInterval(timer), 2000);
  };

  socket.on('message', (msg, rinfo) => {
    const text = msg.toString('latin1');
    const [command, pidText, hostField, flagsText] = text.split(/\s+/).filter((word) => word !== '');
    if (command !== 'PIDR' || pidText === undefined || !/^[0-9]+$/.test(pidText) || Number(pidText) < 1) {
      stats.ignored++;
      return;
    }
    stats.requests++;
    out({ type: 'request', from: `${rinfo.address}:${rinfo.port}`, text });
    if (silent) return;
    if (forward !== undefined) {
      const up = upstreamFor(rinfo);
      void up.connected.then(() => up.socket.send(msg));
      return;
    }
    const host = hostField ?? hostname();
    if (forgeFor !== undefined) forge(pidText, host, rinfo);
    const flags = Number(/^[0-9]+/.exec(flagsText ?? '')?.[0] ?? 0) || 3;
    const state = pidState(Number(pidText));
    const wanted = state === '1' ? flags & 1 : state === '0' ? flags & 2 : flags & 4;
    if (!wanted) return;
    const reply = state === 'na' ? `UNKN ${pidText} na ${host}` : `EXIS ${pidText} ${state} ${host}`;
    later(() => {
      stats.answered++;
      socket.send(Buffer.from(reply, 'latin1'), rinfo.port, rinfo.address);
    });
  });

  const stop = (): void => {
    out(stats);
    socket.close();
    for (const up of upstream.values()) up.socket.close();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  createInterface({ input: process.stdin }).on('close', stop);
  socket.bind(port, bind, () => out({ type: 'listening', port: socket.address().port }));
}

export interface PerlDaemonOptions {
  bind?: string;
  /** @default 0: any free port */
  port?: number;
  delayMs?: number;
  silent?: boolean;
  /** `ADDR:PORT` of a real daemon to ask instead of probing. */
  forwardTo?: string;
  /** A hostile daemon: forges "dead" answers for this host (see the top of this file). */
  forgeFor?: string;
  ownName?: string;
  /** Runs it through another command (inNetns, see netns.ts). */
  wrap?: (command: string, args: string[]) => [string, string[]];
}

export interface PerlDaemon {
  child: ChildProcess;
  pid: number;
  port: number;
  /** The text of every PIDR it got so far. */
  requests: string[];
  /** SIGTERM (SIGKILL after 3 s); resolves with its counters. */
  stop(): Promise<PerlDaemonStats>;
}

export const PERL_DAEMON_SCRIPT = fileURLToPath(import.meta.url);

/** Starts the stand-in and waits until it listens. */
export async function startPerlDaemon(opts: PerlDaemonOptions = {}): Promise<PerlDaemon> {
  const args = [
    PERL_DAEMON_SCRIPT, '--bind', opts.bind ?? '127.0.0.1', '--port', String(opts.port ?? 0),
    '--delay', String(opts.delayMs ?? 0),
    ...(opts.silent ? ['--silent'] : []),
    ...(opts.forwardTo !== undefined ? ['--forward-to', opts.forwardTo] : []),
    ...(opts.forgeFor !== undefined ? ['--forge-for', opts.forgeFor] : []),
    ...(opts.ownName !== undefined ? ['--own-name', opts.ownName] : []),
  ];
  const [command, full] = opts.wrap ? opts.wrap(process.execPath, args) : [process.execPath, args];
  const child = spawn(command, full, { stdio: ['pipe', 'pipe', 'pipe'] });
  child.stdin!.on('error', () => {});
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const requests: string[] = [];
  let onListening: (port: number) => void = () => {};
  let onStats: (stats: PerlDaemonStats) => void = () => {};
  const listening = new Promise<number>((resolve) => (onListening = resolve));
  const reported = new Promise<PerlDaemonStats>((resolve) => (onStats = resolve));
  createInterface({ input: child.stdout! }).on('line', (line) => {
    let value: Record<string, unknown>;
    try {
      value = JSON.parse(line) as Record<string, unknown>;
    } catch {
      return;
    }
    if (value['type'] === 'listening') onListening(Number(value['port']));
    else if (value['type'] === 'request') requests.push(String(value['text']));
    else if (value['type'] === 'stats') onStats(value as unknown as PerlDaemonStats);
  });
  const exited = new Promise<void>((resolve) => child.on('close', () => resolve()));
  let timer: NodeJS.Timeout | undefined;
  const port = await Promise.race([
    listening,
    exited.then(() => Promise.reject(new Error(`the Perl daemon stand-in exited: ${stderr}`))),
    new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`the Perl daemon stand-in did not listen: ${stderr}`)), 10_000))),
  ])
    .catch((err: unknown) => {
      child.kill('SIGKILL');
      throw err;
    })
    .finally(() => clearTimeout(timer));
  return {
    child,
    pid: child.pid!,
    port,
    requests,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
      await exited;
      clearTimeout(timer);
      // A stand-in killed by SIGKILL reports nothing: -1 everywhere.
      let late: NodeJS.Timeout | undefined;
      const none = new Promise<PerlDaemonStats>((resolve) => (late = setTimeout(() => resolve({ type: 'stats', requests: -1, answered: -1, ignored: -1, forged: -1 }), 100)));
      return Promise.race([reported, none]).finally(() => clearTimeout(late));
    },
  };
}

// Run as the stand-in only when started as one: `node --test` on the folder loads this file too.
if (process.argv[1] === PERL_DAEMON_SCRIPT && process.argv.includes('--bind')) perlDaemonMain(process.argv.slice(2));
