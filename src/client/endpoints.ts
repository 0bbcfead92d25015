/**
 * The client's ways to its daemons: each daemon address an endpoint, with
 * the socket it is asked from and its own send pace, and the names and
 * sockets behind them. A host name is looked up once per client, until a
 * look-up fails: a failure is not kept, so a long-lived client (a wait, a
 * library's) tries again at its next question.
 *
 * Sockets: one socket per daemon address, on a port of its own and connected
 * to the daemon, plus one unconnected socket per address family. No socket
 * shares its port (no SO_REUSEADDR, no SO_REUSEPORT): another local user
 * could otherwise bind the same port and read every reply, cookie included
 * (pidstat(1), Asking). Only a connected socket hears the host's ICMP
 * "port unreachable", which ends a try at once; it also hears only the
 * address it asked. A daemon bound to a wildcard address may answer from
 * another address than the one asked, which the kernel then drops: so a try
 * that a connected socket heard nothing for moves that address to the
 * unconnected socket for good (useShared), where a reply from anywhere is
 * matched like any other. Past the descriptor budget, addresses share the
 * unconnected socket from the start and simply wait for their timeouts.
 */
import { readdirSync } from 'node:fs';
import type { Failure } from './failures.js';
import { ipFamily, joinHostPort, mappedIPv4 } from '../wire/address.js';
import { dnsModule } from '../net/host.js';
import { fileLimit } from '../sys/filelimit.js';
import type { SocketIo } from '../sys/native.js';
import { addressPace, type TokenBucket } from '../net/pacing.js';
import { printable } from '../wire/printable.js';
import { socketOpener, type ClientSocket, type OpenSocket, type SocketEvents } from '../net/sockets.js';

/**
 * A deeper receive queue, so replies that arrive while the event loop is busy
 * (thousands of targets) wait instead of being dropped; the kernel caps it at
 * net.core.rmem_max.
 */
const RECEIVE_QUEUE_BYTES = 1024 * 1024;
/** Descriptors left free for everything else the process opens. */
const RESERVED_FDS = 64;
/** Addresses that get connected sockets before the descriptor limit is read. */
const SMALL_RUN = 64;

/** One daemon address; `Waiting` is what the client keeps there of the tries sent to it. */
export interface Endpoint<Waiting> {
  readonly address: string;
  /** Where its datagrams go from: its connected socket, or the shared one. */
  socket: ClientSocket;
  connected: boolean;
  /** The address family's unconnected socket, where a connected endpoint moves when it hears nothing. */
  readonly shared: ClientSocket;
  /** Called for a datagram not sent; one per endpoint rather than one per datagram. */
  readonly onSent: (err: NodeJS.ErrnoException) => void;
  /** Tries whose current try went to this address and is unanswered. */
  readonly waiting: Set<Waiting>;
  /** This address's send pace (pacing.ts). */
  readonly pace: TokenBucket;
}

export interface PoolEvents<Waiting> {
  /** A datagram, from any socket of the pool. */
  message(msg: Buffer, address: string, port: number): void;
  /** The host of `endpoint` said nothing listens on the port (ICMP port unreachable). */
  refused(endpoint: Endpoint<Waiting>): void;
  /** For --debug: what happened to sockets and sends. */
  debug: ((line: string) => void) | undefined;
}

/** The descriptors left for sockets: the soft limit (sys/filelimit.ts; Node has no getrlimit), less those open and a reserve. */
function descriptorBudget(): number {
  const soft = fileLimit()?.soft;
  try {
    const open = readdirSync('/proc/self/fd').length;
    const max = soft === undefined || soft === Infinity ? 65536 : soft;
    return Math.max(0, max - open - RESERVED_FDS);
  } catch {
    return 1024 - RESERVED_FDS;
  }
}

/** Why no endpoint of `host` could be had: its name did not resolve, or no socket could be opened toward it. */
function hostFailure(host: string, err: NodeJS.ErrnoException): Failure {
  const why = err.code ?? err.message;
  return err.syscall === 'getaddrinfo' ? { kind: 'unresolvable', host, why } : { kind: 'unreachable', host, why };
}

/** The endpoints of the daemons at `port`, their sockets, and the look-ups of their hosts. */
export class EndpointPool<Waiting> {
  private chosen: { open: OpenSocket; io: 'batch' | 'dgram' } | undefined;
  private readonly addresses = new Map<string, Promise<string[]>>();
  private readonly hostEndpoints = new Map<string, Promise<Endpoint<Waiting>[] | Failure>>();
  private readonly endpoints = new Map<string, Promise<Endpoint<Waiting>>>();
  private readonly shared = new Map<4 | 6, Promise<ClientSocket>>();
  private readonly sockets: ClientSocket[] = [];
  private readonly socketEvents: SocketEvents;
  private budget: number | undefined;

  constructor(
    private readonly port: number,
    private readonly ioOption: SocketIo,
    private readonly events: PoolEvents<Waiting>,
  ) {
    // Asked for by name, the addon must be there; else it loads (a dlopen)
    // only when a first socket is opened, not for targets answered locally.
    if (ioOption === 'batch') this.opener();
    this.socketEvents = {
      message: events.message,
      error: (err) => events.debug?.(`socket error: ${err.message}`),
    };
  }

  /** How its sockets are read (ClientOptions.io), 'auto' resolved. */
  get io(): 'batch' | 'dgram' {
    return this.opener().io;
  }

  /** The endpoints of a host's addresses, once per host; an address this host cannot reach (IPv6 where it has none) is left out. */
  endpointsFor(host: string): Promise<Endpoint<Waiting>[] | Failure> {
    let endpoints = this.hostEndpoints.get(host);
    if (endpoints === undefined) {
      endpoints = this.openHost(host).catch((err: NodeJS.ErrnoException) => {
        // Questions asked meanwhile share this failure; the next ones look again.
        this.hostEndpoints.delete(host);
        this.addresses.delete(host);
        return hostFailure(host, err);
      });
      this.hostEndpoints.set(host, endpoints);
    }
    return endpoints;
  }

  /** Sends `wire` to the daemon at `endpoint`, from the socket it is asked from now. */
  send(endpoint: Endpoint<Waiting>, wire: Buffer): void {
    this.events.debug?.(`> ${joinHostPort(endpoint.address, this.port)} ${printable(wire.toString('latin1').trimEnd())}`);
    endpoint.socket.send(wire, endpoint.connected ? undefined : endpoint.address, this.port, endpoint.onSent);
  }

  /**
   * A try sent on `endpoint`'s connected socket timed out: its daemon may
   * answer from another address, which only the unconnected socket hears.
   * The connected socket stays open (a reply to an earlier try may still
   * come), but later tries go from the unconnected one.
   */
  useShared(endpoint: Endpoint<Waiting>): void {
    if (!endpoint.connected) return;
    endpoint.connected = false;
    endpoint.socket = endpoint.shared;
    this.events.debug?.(`no reply from ${joinHostPort(endpoint.address, this.port)} on its connected socket: asking it from the unconnected one from now on`);
  }

  /** Closes every socket, once those being opened are open. */
  async close(): Promise<void> {
    await Promise.allSettled([...this.endpoints.values(), ...this.shared.values()]);
    await Promise.all(this.sockets.map((socket) => socket.close()));
  }

  /** The way sockets are opened, chosen at the first need. */
  private opener(): { open: OpenSocket; io: 'batch' | 'dgram' } {
    return (this.chosen ??= socketOpener(this.ioOption));
  }

  private resolve(host: string): Promise<string[]> {
    let addresses = this.addresses.get(host);
    if (addresses === undefined) {
      // An IPv4-mapped address (::ffff:127.0.0.1) is asked over IPv4, as the IPv4 address it is.
      addresses = ipFamily(host) !== 0
        ? Promise.resolve([mappedIPv4(host) ?? host])
        : new Promise<string[]>((resolve, reject) =>
            // The callback form: dns/promises is one more module to load.
            dnsModule().lookup(host, { all: true, verbatim: true }, (err, found) => (err ? reject(err) : resolve([...new Set(found.map((a) => a.address))]))),
          );
      this.addresses.set(host, addresses);
    }
    return addresses;
  }

  private async openHost(host: string): Promise<Endpoint<Waiting>[]> {
    const addresses = await this.resolve(host);
    const opened = await Promise.allSettled(addresses.map((address) => this.endpoint(address)));
    const endpoints = opened.flatMap((o) => (o.status === 'fulfilled' ? [o.value] : []));
    if (endpoints.length === 0) throw (opened[0] as PromiseRejectedResult).reason;
    return endpoints;
  }

  private endpoint(address: string): Promise<Endpoint<Waiting>> {
    let endpoint = this.endpoints.get(address);
    if (endpoint === undefined) {
      endpoint = this.openEndpoint(address);
      // A socket that could not be opened (EMFILE...) is tried again next time.
      endpoint.catch(() => this.endpoints.delete(address));
      this.endpoints.set(address, endpoint);
    }
    return endpoint;
  }

  private sharedSocket(family: 4 | 6): Promise<ClientSocket> {
    let socket = this.shared.get(family);
    if (socket === undefined) {
      socket = this.opener().open({ family, port: 0, receiveQueueBytes: RECEIVE_QUEUE_BYTES }, this.socketEvents).then((opened) => {
        this.sockets.push(opened);
        return opened;
      });
      socket.catch(() => this.shared.delete(family));
      this.shared.set(family, socket);
    }
    return socket;
  }

  private makeEndpoint(address: string, shared: ClientSocket, connected: boolean): Endpoint<Waiting> {
    const endpoint: Endpoint<Waiting> = {
      address,
      socket: shared,
      connected,
      shared,
      waiting: new Set(),
      pace: addressPace(),
      onSent: (err) => {
        if (err.code === 'ECONNREFUSED') this.events.refused(endpoint);
        else this.events.debug?.(`send to ${address} failed: ${err.message}`);
      },
    };
    return endpoint;
  }

  private async openEndpoint(address: string): Promise<Endpoint<Waiting>> {
    // A looked-up address is a literal: a colon means IPv6.
    const family = address.includes(':') ? 6 : 4;
    const shared = await this.sharedSocket(family);
    const fallback = this.makeEndpoint(address, shared, false);
    // Reading the limit costs a look at /proc: only runs with many hosts need it.
    if (this.endpoints.size > SMALL_RUN) this.budget ??= descriptorBudget();
    if (this.budget !== undefined && this.budget-- <= 0) return fallback;
    const endpoint = this.makeEndpoint(address, shared, true);
    try {
      // A port of its own: never shared with another socket (see above).
      const spec = { family, port: 0, peer: { address, port: this.port }, receiveQueueBytes: RECEIVE_QUEUE_BYTES } as const;
      // Errors of a connected socket are ICMP reports about what it sent.
      endpoint.socket = await this.opener().open(spec, { ...this.socketEvents, error: (err) => this.onSocketError(endpoint, err) });
    } catch (err) {
      this.events.debug?.(`cannot connect a socket to ${joinHostPort(address, this.port)} (${(err as Error).message}); sharing one`);
      return fallback;
    }
    this.sockets.push(endpoint.socket);
    return endpoint;
  }

  private onSocketError(endpoint: Endpoint<Waiting>, err: NodeJS.ErrnoException): void {
    this.events.debug?.(`< ${joinHostPort(endpoint.address, this.port)} ${err.code ?? err.message}`);
    if (err.code === 'ECONNREFUSED') this.events.refused(endpoint);
  }
}
