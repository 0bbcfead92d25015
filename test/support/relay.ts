import { spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { isIPv6 } from 'node:net';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

/**
 * A lossy UDP relay, for tests that need loss and delay for real: this
 * machine's kernel has no netem qdisc, so both are made in user space.
 *
 * Run as a process of its own (`node dist/test/support/relay.js --listen ADDR
 * --target ADDR:PORT ...`), for instance inside a network namespace with
 * `ip netns exec`, it listens on ADDR (an ephemeral port), forwards each
 * datagram it receives, unchanged, to the target from a socket of its own per
 * client, and relays the target's replies, unchanged, back to that client
 * from the listening socket. Each datagram is dropped with the probability of
 * its direction (request: client to target; reply: target to client), else
 * delayed by `--delay` ms.
 *
 * Reproducible: a datagram's fate is a hash of the seed, its direction, its
 * pid and host fields and how many datagrams with those fields went that way
 * before, so it does not depend on how requests and replies interleave. The
 * stdin line `label PID...` names those pids by their place in the list
 * instead (host ignored), so that runs whose pids and addresses differ lose
 * the same datagrams.
 *
 * Talks JSON lines on stdout: `{"type":"listening","port":P}` first, then one
 * `{"type":"dgram",...}` per datagram with its fate, and `{"type":"loss",...}`
 * after each change of the loss rates, which stdin lines `loss REQ [REP]`
 * (probabilities from 0 to 1) make at run time. Stops on SIGTERM or at the end
 * of stdin.
 */

export interface RelayEntry {
  type: 'dgram';
  /** Order of arrival at the relay, from 0. */
  seq: number;
  /** ms since the relay started. */
  t: number;
  dir: 'req' | 'rep';
  /** The client's address and port, `a.b.c.d:port`. */
  client: string;
  /** PIDR, EXIS, UNKN, ... (the first word). */
  kind: string;
  pid: number | undefined;
  host: string | undefined;
  /** How many datagrams of this direction with these pid and host fields came before. */
  n: number;
  dropped: boolean;
  text: string;
}

/** 32-bit FNV-1a of a string. */
function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** mulberry32's output function: a well-mixed 32-bit value from a 32-bit state. */
function mix(state: number): number {
  let t = (state + 0x6d2b79f5) >>> 0;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}

/** A uniform number in [0, 1) fixed by the seed and the datagram's identity (`who`: its pid and host, or the label of its pid). */
export function fate(seed: number, dir: string, who: string, n: number): number {
  return mix(fnv1a(`${seed >>> 0}|${dir}|${who}|${n}`) ^ Math.imul(seed >>> 0, 0x9e3779b1));
}

/**
 * The pid and host fields of a request (`PIDR pid host ...`) or reply (`EXIS pid 1 host`, `UNKN pid na host`);
 * the host as the user wrote it, without the cookie the client adds (`host/<16 hex digits>`), which differs per run.
 */
export function fieldsOf(text: string): { kind: string; pid: number | undefined; host: string | undefined } {
  const words = text.split('\n')[0]!.trim().split(/\s+/);
  const kind = words[0] ?? '';
  const pid = /^[0-9]+$/.test(words[1] ?? '') ? Number(words[1]) : undefined;
  const host = (kind === 'PIDR' ? words[2] : words[3])?.replace(/\/[0-9a-f]{16}$/, '');
  return { kind, pid, host };
}

function addressPort(address: string, port: number): string {
  return isIPv6(address) ? `[${address}]:${port}` : `${address}:${port}`;
}

/** The relay process itself. */
function relayMain(argv: string[]): void {
  const opt = (name: string, fallback?: string): string => {
    const i = argv.indexOf(`--${name}`);
    const value = i >= 0 ? argv[i + 1] : fallback;
    if (value === undefined) throw new Error(`relay: --${name} is required`);
    return value;
  };
  const listen = opt('listen');
  const target = opt('target');
  const targetMatch = /^\[?([^\]]+?)\]?:(\d+)$/.exec(target);
  if (!targetMatch) throw new Error(`relay: --target ${target} is not ADDR:PORT`);
  const targetAddress = targetMatch[1]!;
  const targetPort = Number(targetMatch[2]);
  const loss = { req: Number(opt('loss', '0')), rep: Number(opt('loss-back', opt('loss', '0'))) };
  const delayMs = Number(opt('delay', '0'));
  const seed = Number(opt('seed', '1'));
  const type = isIPv6(listen) ? 'udp6' : 'udp4';
  const began = performance.now();
  const counts = new Map<string, number>();
  /** pid -> its place in the last `label` list. */
  const labels = new Map<number, string>();
  let seq = 0;
  const out = (value: unknown): void => void process.stdout.write(JSON.stringify(value) + '\n');

  /** Logs the datagram, and returns whether it goes through. */
  const decide = (dir: 'req' | 'rep', client: string, msg: Buffer): boolean => {
    const text = msg.toString('latin1');
    const { kind, pid, host } = fieldsOf(text);
    const key = `${dir} ${pid} ${host}`;
    const n = counts.get(key) ?? 0;
    counts.set(key, n + 1);
    const rate = loss[dir];
    const label = pid === undefined ? undefined : labels.get(pid);
    const who = label ?? `${pid ?? '-'}|${host ?? '-'}`;
    const dropped = rate >= 1 || (rate > 0 && fate(seed, dir, who, n) < rate);
    const entry: RelayEntry = { type: 'dgram', seq: seq++, t: Math.round((performance.now() - began) * 10) / 10, dir, client, kind, pid, host, n, dropped, text };
    out(entry);
    return !dropped;
  };

  const later = (fn: () => void): void => {
    if (delayMs > 0) setTimeout(fn, delayMs);
    else fn();
  };

  const front = dgram.createSocket(type);
  /** One socket towards the target per client, so replies find their way back. */
  const upstream = new Map<string, dgram.Socket>();
  const upstreamFor = (address: string, port: number): dgram.Socket => {
    const client = addressPort(address, port);
    let socket = upstream.get(client);
    if (socket === undefined) {
      if (upstream.size >= 4096) throw new Error('relay: too many clients');
      socket = dgram.createSocket(isIPv6(targetAddress) ? 'udp6' : 'udp4');
      socket.on('error', (err) => out({ type: 'error', where: 'upstream', message: err.message }));
      socket.on('message', (msg) => {
        if (decide('rep', client, msg)) later(() => front.send(msg, port, address));
      });
      socket.bind(0);
      upstream.set(client, socket);
    }
    return socket;
  };
  front.on('error', (err) => out({ type: 'error', where: 'front', message: err.message }));
  front.on('message', (msg, rinfo) => {
    const client = addressPort(rinfo.address, rinfo.port);
    const socket = upstreamFor(rinfo.address, rinfo.port);
    if (decide('req', client, msg)) later(() => socket.send(msg, targetPort, targetAddress));
  });
  front.bind({ address: listen, port: Number(opt('port', '0')) }, () => {
    out({ type: 'listening', port: front.address().port, seed, loss, delayMs });
  });

  const stop = (): void => {
    front.close();
    for (const socket of upstream.values()) socket.close();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  const lines = createInterface({ input: process.stdin });
  lines.on('line', (line) => {
    const words = line.trim().split(/\s+/);
    if (words[0] === 'loss' && words[1] !== undefined) {
      const req = Number(words[1]);
      const rep = Number(words[2] ?? words[1]);
      if (req >= 0 && req <= 1 && rep >= 0 && rep <= 1) {
        loss.req = req;
        loss.rep = rep;
      }
      out({ type: 'loss', req: loss.req, rep: loss.rep, seq });
    } else if (words[0] === 'label') {
      labels.clear();
      words.slice(1).forEach((word, i) => labels.set(Number(word), `#${i}`));
      out({ type: 'labels', count: labels.size });
    }
  });
  lines.on('close', stop);
}

export interface Relay {
  child: ChildProcess;
  pid: number;
  port: number;
  /** Every datagram decision so far, in order of arrival. */
  entries: RelayEntry[];
  /** Sets the loss rates and resolves once the relay says so, with the seq from which they apply. */
  setLoss(req: number, rep?: number): Promise<number>;
  /** Names these pids by their place in the list for the relay's dice: see the top of this file. */
  setLabels(pids: readonly number[]): Promise<void>;
  /** Everything the relay wrote to stderr. */
  stderr(): string;
  /** SIGTERM, then SIGKILL after 3 s; waits for the exit. */
  stop(): Promise<void>;
}

export const RELAY_SCRIPT = fileURLToPath(import.meta.url);

/**
 * Starts the relay as a child process, run by `wrap(command, args)` (for
 * instance inNetns(host, ...)), listening on `listen` and forwarding to
 * `target` (`ADDR:PORT`).
 */
export async function startRelay(opts: {
  listen: string;
  target: string;
  loss: number;
  lossBack?: number;
  delayMs: number;
  seed: number;
  wrap?: (command: string, args: string[]) => [string, string[]];
}): Promise<Relay> {
  const args = [
    RELAY_SCRIPT, '--listen', opts.listen, '--target', opts.target,
    '--loss', String(opts.loss), '--loss-back', String(opts.lossBack ?? opts.loss),
    '--delay', String(opts.delayMs), '--seed', String(opts.seed),
  ];
  const [command, full] = opts.wrap ? opts.wrap(process.execPath, args) : [process.execPath, args];
  const child = spawn(command, full, { stdio: ['pipe', 'pipe', 'pipe'] });
  const entries: RelayEntry[] = [];
  const waiters: ((value: Record<string, unknown>) => boolean)[] = [];
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  // A relay that died makes writes to its stdin fail: say so in its stderr, not as an uncaught error.
  child.stdin!.on('error', (err) => (stderr += `stdin: ${err.message}\n`));
  createInterface({ input: child.stdout! }).on('line', (line) => {
    let value: Record<string, unknown>;
    try {
      value = JSON.parse(line) as Record<string, unknown>;
    } catch {
      stderr += `unparsable relay line: ${line}\n`;
      return;
    }
    if (value['type'] === 'dgram') entries.push(value as unknown as RelayEntry);
    for (let i = 0; i < waiters.length; i++) if (waiters[i]!(value)) waiters.splice(i--, 1);
  });
  const exited = new Promise<void>((resolve) => child.on('close', () => resolve()));
  const next = (type: string, timeoutMs: number): Promise<Record<string, unknown>> =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the relay said no '${type}' within ${timeoutMs} ms; stderr: ${stderr}`)), timeoutMs);
      waiters.push((value) => {
        if (value['type'] !== type) return false;
        clearTimeout(timer);
        resolve(value);
        return true;
      });
      child.once('close', () => reject(new Error(`the relay exited before '${type}'; stderr: ${stderr}`)));
    });
  let port: number;
  try {
    port = Number((await next('listening', 10_000))['port']);
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
  return {
    child,
    pid: child.pid!,
    port,
    entries,
    async setLoss(req, rep = req) {
      const said = next('loss', 5000);
      child.stdin!.write(`loss ${req} ${rep}\n`);
      const value = await said;
      if (value['req'] !== req || value['rep'] !== rep) throw new Error(`the relay took loss ${JSON.stringify(value)}, not ${req} ${rep}`);
      return Number(value['seq']);
    },
    async setLabels(pids) {
      const said = next('labels', 5000);
      child.stdin!.write(`label ${pids.join(' ')}\n`);
      const value = await said;
      if (value['count'] !== new Set(pids).size) throw new Error(`the relay took ${JSON.stringify(value)} labels, not ${pids.length}`);
    },
    stderr: () => stderr,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
      await exited;
      clearTimeout(timer);
    },
  };
}

// Run as a relay only when started as one: `node --test` on the folder loads this file too.
if (process.argv[1] === RELAY_SCRIPT && process.argv.includes('--listen')) relayMain(process.argv.slice(2));
