import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { NO_TICKET } from '../../src/wire/pushwire.js';

/**
 * A client of death notices for many subscriptions at once, on one socket
 * (doc/protocol.md, Death notices): it subscribes a window at a time,
 * echoing each ticket, and acknowledges every notice, unless told not to
 * (as an attacker would not). For the scale and abuse tests
 * (test/attacks/push-abuse.test.ts, the bench's mass deaths) and the bench's
 * memory and fan-out figures.
 */

export interface Subscription {
  pid: number;
  /** Its own host field: a cookie of its own. */
  host: string;
  start: string;
}

/** A subscription to process `pid` of start token `start`, with a fresh cookie. */
export function subscriptionTo(pid: number, start: string): Subscription {
  return { pid, host: `scale/${randomBytes(8).toString('hex')}`, start };
}

export interface MassSubscriber {
  /** Subscribes them all: how many were kept and refused, in how long. */
  subscribeAll(subs: readonly Subscription[], timeoutMs: number): Promise<{ subscribed: number; refused: number; seconds: number }>;
  /** `pid host` of each subscription told of its death. */
  readonly notified: ReadonlySet<string>;
  /** When the last first notice came (performance.now()). */
  readonly lastNoticeAt: number;
  /** Notices received, every copy counted. */
  readonly copies: number;
  close(): void;
}

/** Subscriptions in flight at once: a window that the socket buffers hold. */
const WINDOW = 2000;

export interface MassSubscriberOptions {
  /** The local address to send from (any of 127.0.0.0/8 on loopback). @default 127.0.0.1 */
  address?: string;
  /** Whether each notice is acknowledged. @default true */
  acknowledge?: boolean;
}

export async function massSubscriber(port: number, options: MassSubscriberOptions = {}): Promise<MassSubscriber> {
  const socket = dgram.createSocket('udp4');
  await new Promise<void>((resolve) => socket.bind(0, options.address ?? '127.0.0.1', resolve));
  socket.setRecvBufferSize(4 << 20);
  const send = (text: string) => socket.send(text, port, '127.0.0.1');
  const acknowledge = options.acknowledge ?? true;
  let copies = 0;
  const byKey = new Map<string, Subscription>();
  const subscribed = new Set<string>();
  const notified = new Set<string>();
  let lastNoticeAt = 0;
  let refused = 0;
  let wake: (() => void) | undefined;
  socket.on('message', (msg) => {
    const [kind, pid, host, third, fourth] = msg.toString('latin1').split(' ');
    const key = `${pid} ${host}`;
    const sub = byKey.get(key);
    if (sub === undefined) return;
    if (kind === 'SUBC') send(`SUBS ${pid} ${host} ${sub.start} ${third}\n`);
    else if (kind === 'SUBR' && third === '1') subscribed.add(key);
    else if (kind === 'SUBR') refused++;
    else if (kind === 'NOTE') {
      copies++;
      if (acknowledge) send(`ACKN ${pid} ${host} ${fourth}\n`);
      if (!notified.has(key)) lastNoticeAt = performance.now();
      notified.add(key);
    }
    wake?.();
  });

  async function subscribeAll(subs: readonly Subscription[], timeoutMs: number) {
    for (const sub of subs) byKey.set(`${sub.pid} ${sub.host}`, sub);
    const answered = () => subscribed.size + refused;
    const ask = (sub: Subscription) => send(`SUBS ${sub.pid} ${sub.host} ${sub.start} ${NO_TICKET}\n`);
    const began = performance.now();
    let next = 0;
    while (answered() < subs.length && performance.now() - began < timeoutMs) {
      while (next < subs.length && next - answered() < WINDOW) ask(subs[next++]!);
      const progress = answered();
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 200);
        wake = () => {
          if (answered() - progress < WINDOW / 4 && answered() !== subs.length) return;
          clearTimeout(timer);
          resolve();
        };
      });
      wake = undefined;
      // All sent, and nothing for 200 ms: those lost on loopback are asked again.
      if (next === subs.length && answered() === progress) {
        for (const sub of subs) if (!subscribed.has(`${sub.pid} ${sub.host}`)) ask(sub);
      }
    }
    return { subscribed: subscribed.size, refused, seconds: (performance.now() - began) / 1000 };
  }

  return {
    subscribeAll,
    notified,
    get lastNoticeAt() {
      return lastNoticeAt;
    },
    get copies() {
      return copies;
    },
    close: () => socket.close(),
  };
}
