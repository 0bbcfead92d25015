import dgram from 'node:dgram';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT, sleep } from './helpers.js';

/**
 * A flood from a million forged source addresses (test/support/forged-flood.c, on
 * a raw socket: root only), while a polite client asks: what each new
 * source costs the daemon (pidstatd(8), --rate). Every flood request passes
 * the rate limiter, a new source each, but asks for no reply (flags 2 about
 * pid 1, which lives). For test/attacks/flood.alone.test.ts (memory stays bounded,
 * every polite question answered) and the bench (how fast).
 */

export interface FloodOutcome {
  /** Datagrams the flooder sent, each from a source of its own, and in how long. */
  sent: number;
  seconds: number;
  rssBeforeKb: number;
  rssMaxKb: number;
  /** The polite client's questions, and the latency of each one answered, in ms, from its first send (a lost one is sent again). */
  asked: number;
  latencies: number[];
}

function rssKb(pid: number): number | undefined {
  try {
    const match = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'latin1'));
    return match ? Number(match[1]) : undefined;
  } catch {
    return undefined;
  }
}

const RETRY_MS = 250;
const RETRIES = 4;

/** Why a forged flood cannot be made here, or undefined. */
export function floodUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return `forging source addresses needs a raw socket: not root (uid ${process.getuid?.()})`;
  if (spawnSync('cc', ['--version'], { stdio: 'ignore' }).error) return 'no C compiler (cc) for test/support/forged-flood.c';
  return undefined;
}

/** Floods the daemon at 127.0.0.1:`port` (pid `daemonPid`) from `sources` forged sources, `rate` a second, asking politely every `politeEveryMs`. */
export async function forgedFlood(port: number, daemonPid: number, sources: number, rate: number, seconds: number, politeEveryMs = 10): Promise<FloodOutcome> {
  const scratch = mkdtempSync(join(tmpdir(), 'pidstat-flood-'));
  const polite = dgram.createSocket('udp4');
  try {
    const binary = join(scratch, 'flood');
    const cc = spawnSync('cc', ['-O2', '-o', binary, join(ROOT, 'test', 'support', 'forged-flood.c')], { encoding: 'utf8' });
    if (cc.status !== 0) throw new Error(`cc test/support/forged-flood.c failed: ${cc.stderr || String(cc.error)}`);
    await new Promise<void>((resolve) => polite.bind(0, '127.0.0.1', resolve));
    const asked = new Map<number, number>();
    const latencies: number[] = [];
    polite.on('message', (msg) => {
      const m = /^EXIS 1 1 polite(\d+)$/.exec(msg.toString('latin1'));
      const at = m ? asked.get(Number(m[1])) : undefined;
      if (at === undefined) return;
      // Once: a question sent again may be answered twice.
      latencies.push(performance.now() - at);
      asked.delete(Number(m![1]));
    });
    const rssBeforeKb = rssKb(daemonPid) ?? 0;
    const flood = spawn(binary, [String(port), String(sources), String(rate), String(seconds)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    flood.stdout.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
    flood.stderr.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
    const flooded = new Promise<number | null>((resolve) => flood.on('exit', (code) => resolve(code)));
    let running = true;
    void flooded.then(() => (running = false));
    let rssMaxKb = rssBeforeKb;
    let sent = 0;
    /** Questions not answered yet: when each was last sent, and how often. */
    const waiting = new Map<number, { at: number; tries: number }>();
    polite.on('message', (msg) => waiting.delete(Number(/^EXIS 1 1 polite(\d+)$/.exec(msg.toString('latin1'))?.[1])));
    const ask = (n: number) => polite.send(`PIDR 1 polite${n} 3\n`, port, '127.0.0.1');
    try {
      await sleep(200);
      while (running) {
        asked.set(sent, performance.now());
        waiting.set(sent, { at: performance.now(), tries: 1 });
        ask(sent);
        sent++;
        // As a client does (pidstat(1), --timeout, --tries): a question unanswered for RETRY_MS is sent again, RETRIES times in all.
        for (const [n, question] of waiting) {
          if (question.tries < RETRIES && performance.now() - question.at >= RETRY_MS) {
            question.at = performance.now();
            question.tries++;
            ask(n);
          }
        }
        rssMaxKb = Math.max(rssMaxKb, rssKb(daemonPid) ?? 0);
        await sleep(politeEveryMs);
      }
    } finally {
      if (flood.exitCode === null && flood.signalCode === null) flood.kill('SIGKILL');
    }
    // Late answers still count as answers: a second after the last question.
    await sleep(1000);
    if ((await flooded) !== 0) throw new Error(`the flooder: ${out}`);
    const [floodSent, floodSeconds] = out.trim().split(' ').map(Number) as [number, number];
    rssMaxKb = Math.max(rssMaxKb, rssKb(daemonPid) ?? 0);
    return { sent: floodSent, seconds: floodSeconds, rssBeforeKb, rssMaxKb, asked: sent, latencies };
  } finally {
    polite.close();
    rmSync(scratch, { recursive: true, force: true });
  }
}
