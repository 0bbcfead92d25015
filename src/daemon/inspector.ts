/**
 * The Node option every pidstat process starts with, so that it can never
 * open Node's inspector (see pidstatd(8), SIGNALS).
 *
 * Node answers SIGUSR1 by opening its inspector on 127.0.0.1:9229, and its
 * own handler for it is in place before the first line of JavaScript runs:
 * no listener of ours can close that window, and Node resets an ignored or
 * blocked SIGUSR1 it inherits. In a daemon run by root an open inspector is a
 * way in for every local user. With the inspector's address set to fe80::1,
 * a link-local address with no interface named, every attempt fails: bind(2)
 * of a link-local IPv6 address needs an interface (sin6_scope_id, ipv6(7)),
 * and answers EINVAL without one, whatever the host's settings; where IPv6 is
 * off the socket cannot even be made. So a SIGUSR1 that comes before our
 * listener only makes Node print "Starting inspector on fe80::1:9229 failed"
 * on stderr. Unlike --disable-sigusr1 (Node 22.14+), which leaves SIGUSR1
 * blocked so that our own listener never hears it, this keeps SIGUSR1 ours.
 *
 * The bins (bin/*.cjs, bin/pidwatch) pass the same option to node in their
 * first lines; every Node process the suite spawns gets it here.
 */
export const INSPECT_PORT_OPTION = '--inspect-port=[fe80::1]:9229';
