/*
 * pidstat_linux: the Linux system calls that pidstat's commands need and
 * Node does not offer, in one Node-API addon for the whole suite. It is
 * named for that, not for any one of its uses: it reads and writes UDP in
 * batches, sends to Unix datagram sockets, watches processes end through
 * pidfds, signals through them and computes HMACs. The source is linux.c, as the calls are Linux's
 * (recvmmsg, sendmmsg, pidfd_open); the built file is pidstat_linux.node, a
 * name that says whose it is where it shows among a process's libraries or
 * in an error message. scripts/build-native.mjs builds it; src/sys/native.ts
 * loads it and types what it exports.
 *
 * Its sections, in this order, each saying what it offers:
 *   UDP batches             recvmmsg(2) and sendmmsg(2), for the daemon and
 *                           the client;
 *   Unix datagram sockets   one datagram to syslog's or systemd's socket;
 *   pidfd exit watches      a process's end, polled by the event loop;
 *   pidfd signals           a signal to the very process a pidfd names;
 *   HMAC                    HMAC-SHA256 with the OpenSSL Node carries.
 * This file only moves bytes and makes calls. Every decision (what to send,
 * to whom, what a datagram, an error or an end means) stays in TypeScript,
 * in the modules each section names, and every command works where the
 * addon cannot load (README.md; pidstatd(8), FILES, says what the daemon
 * then does without).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <node_api.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>

/* ==== Shared: arguments, errors, calls into JavaScript ====================
 *
 * What every section below uses to read its arguments, throw Node's kind of
 * Error and call back into JavaScript.
 */
#define CHECK(call)                                                            \
  do {                                                                         \
    if ((call) != napi_ok) {                                                   \
      napi_throw_error(env, NULL, "pidstat_linux: " #call " failed");          \
      return NULL;                                                             \
    }                                                                          \
  } while (0)

/* Throws an Error like Node's: "bind EADDRINUSE 0.0.0.0:1752", with code,
 * errno and syscall. */
static napi_value throw_errno(napi_env env, int err, const char *syscall, const char *where) {
  char text[512];
  const char *code = uv_err_name(-err);
  if (where != NULL) snprintf(text, sizeof text, "%s %s %s", syscall, code, where);
  else snprintf(text, sizeof text, "%s %s", syscall, code);
  napi_value message, error, value;
  napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &message);
  napi_create_error(env, NULL, message, &error);
  napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &value);
  napi_set_named_property(env, error, "code", value);
  napi_create_int32(env, -err, &value);
  napi_set_named_property(env, error, "errno", value);
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &value);
  napi_set_named_property(env, error, "syscall", value);
  napi_throw(env, error);
  return NULL;
}

static int get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < want) {
    napi_throw_type_error(env, NULL, "pidstat_linux: too few arguments");
    return 0;
  }
  return 1;
}

/* Calls the function `ref` holds with argc int32 arguments, in its own
 * scope; an exception it throws is reported as uncaught, as from any other
 * event. */
static void call_back(napi_env env, napi_async_context context, napi_ref ref, int argc, const int *args) {
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value callback, receiver, argv[3], result;
  napi_get_reference_value(env, ref, &callback);
  napi_get_global(env, &receiver);
  for (int i = 0; i < argc && i < 3; i++) napi_create_int32(env, args[i], &argv[i]);
  if (napi_make_callback(env, context, receiver, callback, (size_t)argc, argv, &result) == napi_pending_exception) {
    napi_value error;
    napi_get_and_clear_last_exception(env, &error);
    napi_fatal_exception(env, error);
  }
  napi_close_handle_scope(env, scope);
}

/* ==== UDP batches =========================================================
 *
 * open, connect, send, address, setRecvBufferSize, setSendBufferSize, start,
 * stop, ref: UDP sockets read and answered in batches. Node's dgram costs,
 * per datagram, an epoll_wait, a recvmsg, a second recvmsg that finds the
 * queue empty, a call into JavaScript and a sendmsg. Here one wake-up reads
 * batches of up to BATCH datagrams with one recvmmsg(2) each, hands each
 * batch to JavaScript in one call, and sends its replies with one
 * sendmmsg(2). The daemon's logic
 * (allow list, rate limit, decoding, probing, encoding) stays in TypeScript
 * (src/daemon/server.ts); this section only moves bytes. The client
 * (src/net/sockets.ts) reads its replies the same way, and sends with send(); it
 * then never loads dgram, whose first bind loads Node's cluster module, a
 * twentieth of a pidstat run.
 *
 * Shared memory with JavaScript, one slot per datagram of a batch:
 *   input   BATCH x IN_SLOT bytes: the datagram (truncated to IN_SLOT);
 *   meta    Int32Array of BATCH x META: [length (untruncated), source port,
 *           length of the source address text, reply length (set by JS; 0 =
 *           no reply), then the kernel's facts about the destination, where
 *           start() was asked for them (else 0, 0, 0): 4, the IPv4 header's
 *           destination and ipi_spec_dst (IP_PKTINFO, in host order); or 6
 *           and the IPv6 destination's first byte (IPV6_PKTINFO); then, for
 *           6, the whole IPv6 destination, 16 bytes in 4 slots]. What they
 *           mean (broadcast? multicast? which address was asked?) is for
 *           JavaScript to judge. A reply goes out from the very address its
 *           request was sent to (IP_PKTINFO / IPV6_PKTINFO on send), so a
 *           client's socket connected to that address hears it;
 *   address BATCH x ADDRESS_SLOT bytes: the source address as text;
 *   output  BATCH x OUT_SLOT bytes: the reply, written by JS.
 * The callback is called as callback(count, errno, unsent): count datagrams
 * are in the slots; or count is 0 and errno is a receive error (negative, as
 * libuv's); or count is 0 and unsent replies of the last batch could not be
 * sent, errno being the last one's reason.
 */
#define BATCH 64
#define IN_SLOT 1040
#define OUT_SLOT 1100
#define ADDRESS_SLOT 64
/* An address as text, with a zone: INET6_ADDRSTRLEN, '%' and IF_NAMESIZE. */
#define ADDRESS_TEXT (INET6_ADDRSTRLEN + 1 + IF_NAMESIZE)
#define META 11
/* Room for an IP_PKTINFO and an IPV6_PKTINFO message: an IPv4 datagram on a
 * dual-stack socket brings both. */
#define CONTROL_SIZE (CMSG_SPACE(sizeof(struct in_pktinfo)) + CMSG_SPACE(sizeof(struct in6_pktinfo)))
/* Datagrams read in one wake-up before the event loop gets its turn: a
 * batch is begun while fewer than this were read. */
#define PER_WAKE (8 * BATCH)

typedef struct {
  uv_poll_t poll;
  napi_env env;
  int fd;
  int closing;
  /* Whether each datagram's destination is read (IP_PKTINFO). */
  int destinations;
  napi_ref callback;
  napi_ref closed;
  napi_ref buffers[4];
  napi_async_context context;
  char *input;
  int32_t *meta;
  char *address;
  char *output;
  struct mmsghdr in[BATCH];
  struct iovec in_iov[BATCH];
  struct sockaddr_storage from[BATCH];
  union {
    char bytes[CONTROL_SIZE];
    struct cmsghdr align;
  } control[BATCH];
  struct mmsghdr out[BATCH];
  struct iovec out_iov[BATCH];
  /* Each reply's source: the address its request was sent to. */
  union {
    char bytes[CMSG_SPACE(sizeof(struct in6_pktinfo))];
    struct cmsghdr align;
  } out_control[BATCH];
  /* The interface an IPv6 request came in on, for a link-local reply. */
  unsigned dst_ifindex[BATCH];
} batch_t;

/* Reads an IP address and port into storage; 0 if address is not one. */
static socklen_t socket_address(const char *address, int port, struct sockaddr_storage *storage) {
  memset(storage, 0, sizeof *storage);
  struct sockaddr_in *v4 = (struct sockaddr_in *)storage;
  struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)storage;
  if (inet_pton(AF_INET, address, &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons((uint16_t)port);
    return sizeof *v4;
  }
  /* An IPv6 address may name its zone: fe80::1%eth0, or fe80::1%2. */
  char base[ADDRESS_TEXT];
  const char *percent = strchr(address, '%');
  size_t length = percent != NULL ? (size_t)(percent - address) : strlen(address);
  if (length >= sizeof base) return 0;
  memcpy(base, address, length);
  base[length] = 0;
  if (inet_pton(AF_INET6, base, &v6->sin6_addr) != 1) return 0;
  if (percent != NULL) {
    unsigned scope = if_nametoindex(percent + 1);
    if (scope == 0) {
      char *end;
      unsigned long number = strtoul(percent + 1, &end, 10);
      if (end == percent + 1 || *end != 0 || number == 0 || number > 0xffffffffUL) return 0;
      scope = (unsigned)number;
    }
    v6->sin6_scope_id = scope;
  }
  v6->sin6_family = AF_INET6;
  v6->sin6_port = htons((uint16_t)port);
  return sizeof *v6;
}

/* The address and port arguments at argv[0] and argv[1]; 0 (with a
 * TypeError thrown) if they are not an IP address and a port. */
static socklen_t address_args(napi_env env, napi_value *argv, struct sockaddr_storage *storage, char *where, size_t where_size) {
  char address[ADDRESS_TEXT];
  size_t length;
  int32_t port;
  if (napi_get_value_string_utf8(env, argv[0], address, sizeof address, &length) != napi_ok ||
      napi_get_value_int32(env, argv[1], &port) != napi_ok) {
    napi_throw_type_error(env, NULL, "pidstat_linux: expected an address and a port");
    return 0;
  }
  /* A longer text was cut to fit: it is no address. */
  socklen_t size = length + 1 < sizeof address ? socket_address(address, port, storage) : 0;
  if (size == 0) napi_throw_type_error(env, NULL, "pidstat_linux: not an IP address");
  snprintf(where, where_size, "%s:%d", address, port);
  return size;
}

/* open(address, port, ipv6Only[, reuseAddr]): a bound, non-blocking UDP
 * socket's fd. */
static napi_value js_open(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  size_t argc = 4;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 3) {
    napi_throw_type_error(env, NULL, "pidstat_linux: too few arguments");
    return NULL;
  }
  struct sockaddr_storage storage;
  char where[ADDRESS_TEXT + 16];
  socklen_t size = address_args(env, argv, &storage, where, sizeof where);
  if (size == 0) return NULL;
  bool v6only, reuse = false;
  CHECK(napi_get_value_bool(env, argv[2], &v6only));
  if (argc > 3) CHECK(napi_get_value_bool(env, argv[3], &reuse));

  int fd = socket(storage.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, errno, "socket", where);
  int on = 1;
  int v6 = v6only ? 1 : 0;
  if ((storage.ss_family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6, sizeof v6) < 0) ||
      (reuse && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) < 0)) {
    int err = errno;
    close(fd);
    return throw_errno(env, err, "setsockopt", where);
  }
  if (bind(fd, (struct sockaddr *)&storage, size) < 0) {
    int err = errno;
    close(fd);
    return throw_errno(env, err, "bind", where);
  }
  napi_value result;
  CHECK(napi_create_int32(env, fd, &result));
  return result;
}

/* connect(fd, address, port): datagrams go to, and come only from, there;
 * the host's ICMP reports about them come back as socket errors. */
static napi_value js_connect(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  if (!get_args(env, info, 3, argv)) return NULL;
  int32_t fd;
  CHECK(napi_get_value_int32(env, argv[0], &fd));
  struct sockaddr_storage storage;
  char where[ADDRESS_TEXT + 16];
  socklen_t size = address_args(env, argv + 1, &storage, where, sizeof where);
  if (size == 0) return NULL;
  if (connect(fd, (struct sockaddr *)&storage, size) < 0) return throw_errno(env, errno, "connect", where);
  return NULL;
}

/* send(fd, buffer, address, port): 0, or the negative errno of a datagram
 * not sent (ECONNREFUSED: an ICMP report about an earlier one). address
 * null sends to the connected peer. */
static napi_value js_send(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  if (!get_args(env, info, 4, argv)) return NULL;
  int32_t fd;
  void *data;
  size_t length;
  napi_valuetype type;
  CHECK(napi_get_value_int32(env, argv[0], &fd));
  CHECK(napi_get_buffer_info(env, argv[1], &data, &length));
  CHECK(napi_typeof(env, argv[2], &type));
  ssize_t sent;
  if (type == napi_null || type == napi_undefined) {
    sent = send(fd, data, length, MSG_DONTWAIT);
  } else {
    struct sockaddr_storage storage;
    char where[ADDRESS_TEXT + 16];
    socklen_t size = address_args(env, argv + 2, &storage, where, sizeof where);
    if (size == 0) return NULL;
    sent = sendto(fd, data, length, MSG_DONTWAIT, (struct sockaddr *)&storage, size);
  }
  napi_value result;
  CHECK(napi_create_int32(env, sent < 0 ? -errno : 0, &result));
  return result;
}

/* Writes addr as text (with %scope for a link-local IPv6 address) into out;
 * returns its length and sets *port. */
static int address_text(const struct sockaddr_storage *addr, char *out, int *port) {
  if (addr->ss_family == AF_INET) {
    const struct sockaddr_in *v4 = (const struct sockaddr_in *)addr;
    *port = ntohs(v4->sin_port);
    if (inet_ntop(AF_INET, &v4->sin_addr, out, ADDRESS_SLOT) == NULL) return 0;
    return (int)strlen(out);
  }
  if (addr->ss_family == AF_INET6) {
    const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)addr;
    *port = ntohs(v6->sin6_port);
    if (inet_ntop(AF_INET6, &v6->sin6_addr, out, ADDRESS_SLOT) == NULL) return 0;
    int length = (int)strlen(out);
    if (v6->sin6_scope_id != 0) {
      char name[IF_NAMESIZE];
      if (if_indextoname(v6->sin6_scope_id, name) != NULL) {
        length += snprintf(out + length, ADDRESS_SLOT - length, "%%%s", name);
      } else {
        length += snprintf(out + length, ADDRESS_SLOT - length, "%%%u", v6->sin6_scope_id);
      }
      if (length >= ADDRESS_SLOT) length = ADDRESS_SLOT - 1;
    }
    return length;
  }
  *port = 0;
  return 0;
}

/* address(fd): [address, family (4 or 6), port] of the socket. */
static napi_value js_address(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  int32_t fd;
  CHECK(napi_get_value_int32(env, argv[0], &fd));
  struct sockaddr_storage addr;
  socklen_t size = sizeof addr;
  if (getsockname(fd, (struct sockaddr *)&addr, &size) < 0) return throw_errno(env, errno, "getsockname", NULL);
  int type = 0;
  socklen_t type_size = sizeof type;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &type_size) < 0) return throw_errno(env, errno, "getsockopt", NULL);
  if (type != SOCK_DGRAM || (addr.ss_family != AF_INET && addr.ss_family != AF_INET6)) {
    return throw_errno(env, EPROTOTYPE, "getsockname", NULL);
  }
  char text[ADDRESS_SLOT];
  int port;
  int length = address_text(&addr, text, &port);
  napi_value result, value;
  CHECK(napi_create_array_with_length(env, 3, &result));
  CHECK(napi_create_string_latin1(env, text, length, &value));
  CHECK(napi_set_element(env, result, 0, value));
  CHECK(napi_create_int32(env, addr.ss_family == AF_INET ? 4 : 6, &value));
  CHECK(napi_set_element(env, result, 1, value));
  CHECK(napi_create_int32(env, port, &value));
  CHECK(napi_set_element(env, result, 2, value));
  return result;
}

static napi_value set_buffer(napi_env env, napi_callback_info info, int option) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  int32_t fd, bytes;
  CHECK(napi_get_value_int32(env, argv[0], &fd));
  CHECK(napi_get_value_int32(env, argv[1], &bytes));
  setsockopt(fd, SOL_SOCKET, option, &bytes, sizeof bytes);
  return NULL;
}

/* setRecvBufferSize(fd, bytes), setSendBufferSize(fd, bytes): best effort,
 * as the kernel caps them. */
static napi_value js_set_recv_buffer(napi_env env, napi_callback_info info) {
  return set_buffer(env, info, SO_RCVBUF);
}

static napi_value js_set_send_buffer(napi_env env, napi_callback_info info) {
  return set_buffer(env, info, SO_SNDBUF);
}

/* Calls callback(count, err, unsent). */
static void call_js(batch_t *b, int count, int err, int unsent) {
  const int args[3] = {count, err, unsent};
  call_back(b->env, b->context, b->callback, 3, args);
}

/* Makes the reply to datagram i go out from the address that datagram was
 * sent to (meta[4..10]), as the `slot`th message of a batch: a daemon bound
 * to a wildcard address otherwise answers from whichever address routing
 * picks, which a client's connected socket does not hear. The interface is
 * left to routing, but for a link-local IPv6 address, which needs it. */
static void reply_from(batch_t *b, int i, struct msghdr *header, int slot) {
  const int32_t *meta = b->meta + i * META;
  struct cmsghdr *c = (struct cmsghdr *)b->out_control[slot].bytes;
  memset(b->out_control[slot].bytes, 0, sizeof b->out_control[slot].bytes);
  if (meta[4] == 4) {
    struct in_pktinfo info;
    memset(&info, 0, sizeof info);
    info.ipi_spec_dst.s_addr = htonl((uint32_t)meta[5]);
    c->cmsg_level = IPPROTO_IP;
    c->cmsg_type = IP_PKTINFO;
    c->cmsg_len = CMSG_LEN(sizeof info);
    memcpy(CMSG_DATA(c), &info, sizeof info);
    header->msg_controllen = CMSG_SPACE(sizeof info);
  } else if (meta[4] == 6) {
    struct in6_pktinfo info;
    memset(&info, 0, sizeof info);
    memcpy(&info.ipi6_addr, meta + 7, 16);
    if (IN6_IS_ADDR_LINKLOCAL(&info.ipi6_addr)) info.ipi6_ifindex = b->dst_ifindex[i];
    c->cmsg_level = IPPROTO_IPV6;
    c->cmsg_type = IPV6_PKTINFO;
    c->cmsg_len = CMSG_LEN(sizeof info);
    memcpy(CMSG_DATA(c), &info, sizeof info);
    header->msg_controllen = CMSG_SPACE(sizeof info);
  } else {
    return;
  }
  header->msg_control = b->out_control[slot].bytes;
}

/* Sends the replies JS wrote for the first count datagrams. A reply the
 * kernel refuses is skipped, and JS hears once per batch how many were. */
static void send_replies(batch_t *b, int count) {
  int pending = 0;
  for (int i = 0; i < count; i++) {
    int length = b->meta[i * META + 3];
    if (length <= 0 || length > OUT_SLOT) continue;
    b->out_iov[pending].iov_base = b->output + (size_t)i * OUT_SLOT;
    b->out_iov[pending].iov_len = (size_t)length;
    memset(&b->out[pending].msg_hdr, 0, sizeof b->out[pending].msg_hdr);
    b->out[pending].msg_hdr.msg_name = &b->from[i];
    b->out[pending].msg_hdr.msg_namelen = b->in[i].msg_hdr.msg_namelen;
    b->out[pending].msg_hdr.msg_iov = &b->out_iov[pending];
    b->out[pending].msg_hdr.msg_iovlen = 1;
    if (b->destinations) reply_from(b, i, &b->out[pending].msg_hdr, pending);
    pending++;
  }
  int sent = 0, unsent = 0, last = 0;
  while (sent < pending) {
    /* sendmmsg stops at the first reply that fails, and says so only when
     * that is the first of the call: then that one is skipped. */
    int n = sendmmsg(b->fd, b->out + sent, (unsigned)(pending - sent), MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      /* This reply cannot go (EAGAIN: the send queue is full; EHOSTUNREACH,
       * EPERM, ...): count it, and send the others. */
      last = errno;
      unsent++;
      sent++;
      continue;
    }
    sent += n;
  }
  if (unsent > 0 && !b->closing) call_js(b, 0, -last, unsent);
}

/* meta[4..10]: the facts the kernel gives about where a datagram was sent. */
static void destination_facts(struct msghdr *header, int32_t *meta, unsigned *ifindex) {
  meta[4] = meta[5] = meta[6] = 0;
  memset(meta + 7, 0, 16);
  *ifindex = 0;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(header); c != NULL; c = CMSG_NXTHDR(header, c)) {
    if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
      struct in_pktinfo info;
      memcpy(&info, CMSG_DATA(c), sizeof info);
      meta[4] = 4;
      meta[5] = (int32_t)ntohl(info.ipi_addr.s_addr);
      meta[6] = (int32_t)ntohl(info.ipi_spec_dst.s_addr);
      /* An IPv4 datagram: its IPV6_PKTINFO would only say ::ffff:... */
      return;
    }
    if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO) {
      struct in6_pktinfo info;
      memcpy(&info, CMSG_DATA(c), sizeof info);
      meta[4] = 6;
      meta[5] = info.ipi6_addr.s6_addr[0];
      memcpy(meta + 7, &info.ipi6_addr, 16);
      *ifindex = info.ipi6_ifindex;
    }
  }
}

static void on_readable(uv_poll_t *handle, int status, int events) {
  batch_t *b = handle->data;
  (void)events;
  if (status < 0) {
    /* libuv stops a poll handle at POLLERR (a pending socket error, such as
     * an ICMP report on a connected socket) and says UV_EBADF: take the
     * error itself, report it, and poll again. */
    int err = 0;
    socklen_t size = sizeof err;
    if (getsockopt(b->fd, SOL_SOCKET, SO_ERROR, &err, &size) == 0 && err != 0) status = -err;
    if (b->closing) return;
    call_js(b, 0, status, 0);
    if (err != 0 && !b->closing) {
      int again = uv_poll_start(&b->poll, UV_READABLE, on_readable);
      if (again != 0) call_js(b, 0, again, 0);
    }
    return;
  }
  /* The batches of a wake-up grow from 1 to BATCH: the first reply goes out
   * as soon as the first request is answered, so a client waiting for it
   * sends its next request while the rest are read (with all of a batch's
   * replies sent at its end, a client with 8 requests in flight waited for
   * the 8th reply each time), and a queue that keeps filling is still read
   * BATCH at a time. */
  int want = 1;
  for (int handled = 0; handled < PER_WAKE && !b->closing; handled += want, want = want * 2 < BATCH ? want * 2 : BATCH) {
    for (int i = 0; i < want; i++) {
      b->in_iov[i].iov_base = b->input + (size_t)i * IN_SLOT;
      b->in_iov[i].iov_len = IN_SLOT;
      memset(&b->in[i].msg_hdr, 0, sizeof b->in[i].msg_hdr);
      b->in[i].msg_hdr.msg_name = &b->from[i];
      b->in[i].msg_hdr.msg_namelen = sizeof b->from[i];
      b->in[i].msg_hdr.msg_iov = &b->in_iov[i];
      b->in[i].msg_hdr.msg_iovlen = 1;
      if (b->destinations) {
        b->in[i].msg_hdr.msg_control = b->control[i].bytes;
        b->in[i].msg_hdr.msg_controllen = sizeof b->control[i].bytes;
      }
    }
    /* MSG_TRUNC: msg_len is the datagram's whole length, so an oversized
     * one is seen as such although only IN_SLOT bytes of it are read. */
    int count = recvmmsg(b->fd, b->in, (unsigned)want, MSG_DONTWAIT | MSG_TRUNC, NULL);
    if (count < 0) {
      int err = errno;
      if (err != EAGAIN && err != EWOULDBLOCK && err != EINTR) call_js(b, 0, -err, 0);
      return;
    }
    if (count == 0) return;
    for (int i = 0; i < count; i++) {
      int32_t *meta = b->meta + i * META;
      int port;
      meta[0] = (int32_t)b->in[i].msg_len;
      meta[2] = address_text(&b->from[i], b->address + (size_t)i * ADDRESS_SLOT, &port);
      meta[1] = port;
      meta[3] = 0;
      if (b->destinations) {
        destination_facts(&b->in[i].msg_hdr, meta, &b->dst_ifindex[i]);
      } else {
        meta[4] = meta[5] = meta[6] = 0;
        memset(meta + 7, 0, 16);
      }
    }
    call_js(b, count, 0, 0);
    send_replies(b, count);
    /* A short batch emptied the queue: epoll tells when more comes, which
     * spares the read that would only find it empty. */
    if (count < want) return;
  }
}

static void on_closed(uv_handle_t *handle) {
  batch_t *b = handle->data;
  napi_env env = b->env;
  close(b->fd);
  if (b->closed != NULL) {
    call_back(env, b->context, b->closed, 0, NULL);
    napi_delete_reference(env, b->closed);
  }
  napi_delete_reference(env, b->callback);
  for (int i = 0; i < 4; i++) napi_delete_reference(env, b->buffers[i]);
  napi_async_destroy(env, b->context);
  free(b);
}

static void *buffer_data(napi_env env, napi_value value, size_t want) {
  void *data = NULL;
  size_t length = 0;
  bool is_typed;
  napi_is_typedarray(env, value, &is_typed);
  if (is_typed) {
    napi_typedarray_type type;
    napi_value arraybuffer;
    size_t offset;
    if (napi_get_typedarray_info(env, value, &type, &length, &data, &arraybuffer, &offset) != napi_ok) return NULL;
    if (type == napi_int32_array) length *= 4;
  }
  return is_typed && length >= want ? data : NULL;
}

/* start(fd, callback, input, meta, address, output[, destinations]): an
 * external handle; the socket is read until stop(handle), which also closes
 * fd. With destinations true, each datagram's destination facts are read
 * too (meta[4..10]), and each reply goes out from its request's destination. */
static napi_value js_start(napi_env env, napi_callback_info info) {
  napi_value argv[7];
  size_t argc = 7;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 6) {
    napi_throw_type_error(env, NULL, "pidstat_linux: too few arguments");
    return NULL;
  }
  int32_t fd;
  bool destinations = false;
  CHECK(napi_get_value_int32(env, argv[0], &fd));
  if (argc > 6) CHECK(napi_get_value_bool(env, argv[6], &destinations));
  batch_t *b = calloc(1, sizeof *b);
  if (b == NULL) {
    napi_throw_error(env, NULL, "pidstat_linux: out of memory");
    return NULL;
  }
  b->env = env;
  b->fd = fd;
  if (destinations) {
    /* IP_PKTINFO on an IPv6 socket too: the IPv4 datagrams of a dual-stack
     * socket then carry it. Where an option is refused (an IPv4 socket has
     * no IPV6_RECVPKTINFO), its datagrams simply come without it. */
    int on = 1;
    int v4 = setsockopt(fd, IPPROTO_IP, IP_PKTINFO, &on, sizeof on);
    int v6 = setsockopt(fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, &on, sizeof on);
    b->destinations = v4 == 0 || v6 == 0;
  }
  b->input = buffer_data(env, argv[2], (size_t)BATCH * IN_SLOT);
  b->meta = buffer_data(env, argv[3], (size_t)BATCH * META * 4);
  b->address = buffer_data(env, argv[4], (size_t)BATCH * ADDRESS_SLOT);
  b->output = buffer_data(env, argv[5], (size_t)BATCH * OUT_SLOT);
  if (b->input == NULL || b->meta == NULL || b->address == NULL || b->output == NULL) {
    free(b);
    napi_throw_type_error(env, NULL, "pidstat_linux: a buffer is missing or too small");
    return NULL;
  }
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
    int err = errno;
    free(b);
    return throw_errno(env, err, "fcntl", NULL);
  }
  uv_loop_t *loop;
  napi_value name;
  CHECK(napi_get_uv_event_loop(env, &loop));
  int err = uv_poll_init(loop, &b->poll, fd);
  if (err != 0) {
    free(b);
    return throw_errno(env, -err, "uv_poll_init", NULL);
  }
  b->poll.data = b;
  CHECK(napi_create_reference(env, argv[1], 1, &b->callback));
  for (int i = 0; i < 4; i++) CHECK(napi_create_reference(env, argv[2 + i], 1, &b->buffers[i]));
  CHECK(napi_create_string_utf8(env, "pidstat.udp_batch", NAPI_AUTO_LENGTH, &name));
  CHECK(napi_async_init(env, NULL, name, &b->context));
  napi_value handle;
  CHECK(napi_create_external(env, b, NULL, NULL, &handle));
  err = uv_poll_start(&b->poll, UV_READABLE, on_readable);
  if (err != 0) {
    b->closing = 1;
    uv_close((uv_handle_t *)&b->poll, on_closed);
    return throw_errno(env, -err, "uv_poll_start", NULL);
  }
  return handle;
}

/* stop(handle, closed): no more datagrams; closed() is called once libuv
 * has let go of the socket and fd is closed. */
static napi_value js_stop(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  batch_t *b;
  CHECK(napi_get_value_external(env, argv[0], (void **)&b));
  if (b->closing) return NULL;
  CHECK(napi_create_reference(env, argv[1], 1, &b->closed));
  b->closing = 1;
  uv_poll_stop(&b->poll);
  uv_close((uv_handle_t *)&b->poll, on_closed);
  return NULL;
}

/* ref(handle, keep): whether reading keeps the event loop alive (as a
 * dgram socket's ref() and unref()). */
static napi_value js_ref(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  batch_t *b;
  bool keep;
  CHECK(napi_get_value_external(env, argv[0], (void **)&b));
  CHECK(napi_get_value_bool(env, argv[1], &keep));
  if (b->closing) return NULL;
  if (keep) uv_ref((uv_handle_t *)&b->poll);
  else uv_unref((uv_handle_t *)&b->poll);
  return NULL;
}

/* ==== Unix datagram sockets ===============================================
 *
 * unixSend(path, datagram): sends one datagram to an AF_UNIX SOCK_DGRAM
 * socket (a syslog socket such as /dev/log, or systemd's notify socket) from
 * a socket made for it and closed at once, which Node cannot do. A path
 * starting with '@' names an abstract socket. Returns 0 or a negative errno;
 * never blocks: a receiver whose queue is full gives -EAGAIN. What to send,
 * and what a failure means, is decided in TypeScript (src/daemon/syslog.ts,
 * src/daemon/notify.ts).
 */
static napi_value js_unix_send(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  struct sockaddr_un to;
  memset(&to, 0, sizeof to);
  to.sun_family = AF_UNIX;
  size_t length;
  CHECK(napi_get_value_string_utf8(env, argv[0], NULL, 0, &length));
  bool is_buffer;
  CHECK(napi_is_buffer(env, argv[1], &is_buffer));
  if (!is_buffer) {
    napi_throw_type_error(env, NULL, "pidstat_linux: unixSend needs a path and a Buffer");
    return NULL;
  }
  void *data;
  size_t size;
  CHECK(napi_get_buffer_info(env, argv[1], &data, &size));
  int result = 0;
  if (length == 0) {
    result = -EINVAL;
  } else if (length >= sizeof to.sun_path) {
    result = -ENAMETOOLONG;
  } else {
    CHECK(napi_get_value_string_utf8(env, argv[0], to.sun_path, sizeof to.sun_path, &length));
    socklen_t address_length = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + length + 1);
    if (to.sun_path[0] == '@') {
      to.sun_path[0] = 0;
      address_length--;
    }
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
      result = -errno;
    } else {
      if (sendto(fd, data, size, MSG_NOSIGNAL, (struct sockaddr *)&to, address_length) < 0) result = -errno;
      close(fd);
    }
  }
  napi_value value;
  CHECK(napi_create_int32(env, result, &value));
  return value;
}

/* ==== pidfd exit watches ==================================================
 *
 * watchExit(pid, onExit): a pidfd of the process (pidfd_open(2), Linux 5.3)
 * polled by the event loop; onExit() is called once, when the process has
 * ended (a zombie included), and the pidfd is closed. Returns a handle, or a
 * negative errno (-ENOSYS on an older kernel). unwatchExit(handle) stops
 * watching, onExit uncalled; it must not be called once onExit has been.
 * This is how pidwatch's detached watcher learns that the job's root ended,
 * and the daemon that a subscribed process died, without being its parent
 * and without waking up to look. Which process, and what its end means, is
 * decided in TypeScript (src/deaths/watch.ts, src/daemon/subscriptions.ts).
 */
typedef struct {
  uv_poll_t poll;
  napi_env env;
  napi_ref callback;
  napi_async_context context;
  int fd;
  int closing;
  int cancelled;
} exit_watch_t;

static void on_exit_closed(uv_handle_t *handle) {
  exit_watch_t *w = handle->data;
  napi_env env = w->env;
  close(w->fd);
  if (!w->cancelled) call_back(env, w->context, w->callback, 0, NULL);
  napi_delete_reference(env, w->callback);
  napi_async_destroy(env, w->context);
  free(w);
}

static void on_exit_readable(uv_poll_t *handle, int status, int events) {
  exit_watch_t *w = handle->data;
  (void)status;
  (void)events;
  if (w->closing) return;
  w->closing = 1;
  uv_poll_stop(handle);
  uv_close((uv_handle_t *)handle, on_exit_closed);
}

static napi_value js_watch_exit(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  int32_t pid;
  CHECK(napi_get_value_int32(env, argv[0], &pid));
  napi_value result;
#ifdef SYS_pidfd_open
  int fd = pid > 0 ? (int)syscall(SYS_pidfd_open, (pid_t)pid, 0) : (errno = EINVAL, -1);
#else
  int fd = (errno = ENOSYS, -1);
#endif
  if (fd < 0) {
    CHECK(napi_create_int32(env, -errno, &result));
    return result;
  }
  fcntl(fd, F_SETFD, FD_CLOEXEC);
  exit_watch_t *w = calloc(1, sizeof *w);
  if (w == NULL) {
    close(fd);
    CHECK(napi_create_int32(env, -ENOMEM, &result));
    return result;
  }
  w->env = env;
  w->fd = fd;
  w->poll.data = w;
  uv_loop_t *loop;
  napi_value name;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || uv_poll_init(loop, &w->poll, fd) != 0) {
    close(fd);
    free(w);
    CHECK(napi_create_int32(env, -EINVAL, &result));
    return result;
  }
  CHECK(napi_create_string_utf8(env, "pidstat.exitwatch", NAPI_AUTO_LENGTH, &name));
  CHECK(napi_async_init(env, NULL, name, &w->context));
  CHECK(napi_create_reference(env, argv[1], 1, &w->callback));
  int err = uv_poll_start(&w->poll, UV_READABLE, on_exit_readable);
  if (err != 0) {
    w->cancelled = 1;
    w->closing = 1;
    uv_close((uv_handle_t *)&w->poll, on_exit_closed);
    CHECK(napi_create_int32(env, err, &result));
    return result;
  }
  CHECK(napi_create_external(env, w, NULL, NULL, &result));
  return result;
}

static napi_value js_unwatch_exit(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  exit_watch_t *w;
  CHECK(napi_get_value_external(env, argv[0], (void **)&w));
  w->cancelled = 1;
  if (w->closing) return NULL;
  w->closing = 1;
  uv_poll_stop(&w->poll);
  uv_close((uv_handle_t *)&w->poll, on_exit_closed);
  return NULL;
}

/* ==== pidfd signals ========================================================
 *
 * pidfdOpen(pid): a pidfd of the process (pidfd_open(2), Linux 5.3),
 * close-on-exec, or a negative errno (-ENOSYS on an older kernel, -EINVAL
 * for a thread that leads no thread group, -ESRCH for no such process).
 * pidfdSignal(fd, signal): pidfd_send_signal(2) (Linux 5.1), 0 or a negative
 * errno (-ESRCH once that process has ended, whoever has its pid now).
 * pidfdClose(fd) closes it. The pidfd names the process that had the pid
 * when it was opened, never a later one: the job tree (src/sys/pidref.ts)
 * opens it before it checks the start token, so the check and the signal
 * name the same process, as systemd's PidRef does.
 */
static napi_value js_pidfd_open(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  int32_t pid;
  CHECK(napi_get_value_int32(env, argv[0], &pid));
#ifdef SYS_pidfd_open
  int fd = pid > 0 ? (int)syscall(SYS_pidfd_open, (pid_t)pid, 0) : (errno = EINVAL, -1);
#else
  int fd = (errno = ENOSYS, -1);
#endif
  if (fd >= 0) fcntl(fd, F_SETFD, FD_CLOEXEC);
  napi_value result;
  CHECK(napi_create_int32(env, fd >= 0 ? fd : -errno, &result));
  return result;
}

static napi_value js_pidfd_signal(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  int32_t fd, sig;
  CHECK(napi_get_value_int32(env, argv[0], &fd));
  CHECK(napi_get_value_int32(env, argv[1], &sig));
#ifdef SYS_pidfd_send_signal
  int rc = (int)syscall(SYS_pidfd_send_signal, fd, sig, NULL, 0);
#else
  int rc = (errno = ENOSYS, -1);
#endif
  napi_value result;
  CHECK(napi_create_int32(env, rc == 0 ? 0 : -errno, &result));
  return result;
}

static napi_value js_pidfd_close(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  int32_t fd;
  CHECK(napi_get_value_int32(env, argv[0], &fd));
  if (fd >= 0) close(fd);
  return NULL;
}

/* ==== HMAC ================================================================
 *
 * hmacKey(key) and hmacSha256(context, data, length, out): HMAC-SHA256
 * keyed with the bytes of `key`, over the first `length` bytes of `data`,
 * written to the first 32 bytes of `out`. They call the HMAC of the OpenSSL
 * that Node itself carries, found with dlsym (nothing is linked at build
 * time); both properties are absent where the process has none, and
 * src/wire/keys.ts then uses node:crypto. hmacKey prepares a context once per key
 * (OpenSSL keeps the padded key's hash states in it), so each MAC then costs
 * two short hashes: a keyed daemon computes two per request, where a
 * node:crypto Hmac object would cost more than the rest of the request.
 * Which key, which bytes, and what a digest proves stay in TypeScript.
 */
typedef struct hmac_ctx_st hmac_ctx;
static struct {
  const void *(*sha256)(void);
  hmac_ctx *(*ctx_new)(void);
  void (*ctx_free)(hmac_ctx *);
  int (*init)(hmac_ctx *, const void *key, int key_length, const void *md, void *engine);
  int (*update)(hmac_ctx *, const unsigned char *data, size_t length);
  int (*final)(hmac_ctx *, unsigned char *out, unsigned int *out_length);
} ssl;

static bool find_hmac(void) {
  if (ssl.final != NULL) return true;
  const char *names[] = {"EVP_sha256", "HMAC_CTX_new", "HMAC_CTX_free", "HMAC_Init_ex", "HMAC_Update", "HMAC_Final"};
  void *found[6];
  for (int i = 0; i < 6; i++) {
    found[i] = dlsym(RTLD_DEFAULT, names[i]);
    if (found[i] == NULL) return false;
  }
  memcpy(&ssl.sha256, &found[0], sizeof found[0]);
  memcpy(&ssl.ctx_new, &found[1], sizeof found[1]);
  memcpy(&ssl.ctx_free, &found[2], sizeof found[2]);
  memcpy(&ssl.init, &found[3], sizeof found[3]);
  memcpy(&ssl.update, &found[4], sizeof found[4]);
  memcpy(&ssl.final, &found[5], sizeof found[5]);
  return true;
}

static bool get_bytes(napi_env env, napi_value value, void **data, size_t *size) {
  napi_typedarray_type type;
  napi_value buffer;
  size_t offset;
  bool is_typed;
  if (napi_is_typedarray(env, value, &is_typed) != napi_ok || !is_typed) return false;
  if (napi_get_typedarray_info(env, value, &type, size, data, &buffer, &offset) != napi_ok) return false;
  return type == napi_uint8_array;
}

static void free_hmac(napi_env env, void *data, void *hint) {
  ssl.ctx_free((hmac_ctx *)data);
}

static napi_value js_hmac_key(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  void *key;
  size_t key_size;
  if (!get_bytes(env, argv[0], &key, &key_size) || key_size > 1024) {
    napi_throw_type_error(env, NULL, "pidstat_linux: hmacKey needs the key's bytes");
    return NULL;
  }
  hmac_ctx *ctx = ssl.ctx_new();
  if (ctx == NULL || !ssl.init(ctx, key, (int)key_size, ssl.sha256(), NULL)) {
    if (ctx != NULL) ssl.ctx_free(ctx);
    napi_throw_error(env, NULL, "pidstat_linux: HMAC_Init_ex failed");
    return NULL;
  }
  napi_value context;
  if (napi_create_external(env, ctx, free_hmac, NULL, &context) != napi_ok) {
    ssl.ctx_free(ctx);
    napi_throw_error(env, NULL, "pidstat_linux: napi_create_external failed");
    return NULL;
  }
  return context;
}

static napi_value js_hmac_sha256(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  if (!get_args(env, info, 4, argv)) return NULL;
  hmac_ctx *ctx;
  void *data, *out;
  size_t data_size, out_size;
  uint32_t length;
  if (napi_get_value_external(env, argv[0], (void **)&ctx) != napi_ok || !get_bytes(env, argv[1], &data, &data_size) ||
      napi_get_value_uint32(env, argv[2], &length) != napi_ok || !get_bytes(env, argv[3], &out, &out_size) ||
      length > data_size || out_size < 32) {
    napi_throw_type_error(env, NULL, "pidstat_linux: hmacSha256 needs a context, bytes, a length within them and 32 bytes out");
    return NULL;
  }
  unsigned int out_length = 0;
  /* A NULL key starts again from the key the context was made with. */
  if (!ssl.init(ctx, NULL, 0, NULL, NULL) || !ssl.update(ctx, data, length) || !ssl.final(ctx, out, &out_length) ||
      out_length != 32) {
    napi_throw_error(env, NULL, "pidstat_linux: HMAC failed");
    return NULL;
  }
  return NULL;
}

/* ==== The module ==========================================================
 *
 * What each section offers, as properties of the exports; the HMAC's only
 * where the process has an OpenSSL to call.
 */
static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    /* UDP batches */
    {"open", NULL, js_open, NULL, NULL, NULL, napi_default, NULL},
    {"connect", NULL, js_connect, NULL, NULL, NULL, napi_default, NULL},
    {"send", NULL, js_send, NULL, NULL, NULL, napi_default, NULL},
    {"setSendBufferSize", NULL, js_set_send_buffer, NULL, NULL, NULL, napi_default, NULL},
    {"ref", NULL, js_ref, NULL, NULL, NULL, napi_default, NULL},
    {"address", NULL, js_address, NULL, NULL, NULL, napi_default, NULL},
    {"setRecvBufferSize", NULL, js_set_recv_buffer, NULL, NULL, NULL, napi_default, NULL},
    {"start", NULL, js_start, NULL, NULL, NULL, napi_default, NULL},
    {"stop", NULL, js_stop, NULL, NULL, NULL, napi_default, NULL},
    /* Unix datagram sockets */
    {"unixSend", NULL, js_unix_send, NULL, NULL, NULL, napi_default, NULL},
    /* pidfd exit watches */
    {"watchExit", NULL, js_watch_exit, NULL, NULL, NULL, napi_default, NULL},
    {"unwatchExit", NULL, js_unwatch_exit, NULL, NULL, NULL, napi_default, NULL},
    /* pidfd signals */
    {"pidfdOpen", NULL, js_pidfd_open, NULL, NULL, NULL, napi_default, NULL},
    {"pidfdSignal", NULL, js_pidfd_signal, NULL, NULL, NULL, napi_default, NULL},
    {"pidfdClose", NULL, js_pidfd_close, NULL, NULL, NULL, napi_default, NULL},
  };
  CHECK(napi_define_properties(env, exports, sizeof props / sizeof props[0], props));
  /* HMAC */
  if (find_hmac()) {
    napi_property_descriptor hmac[] = {
      {"hmacKey", NULL, js_hmac_key, NULL, NULL, NULL, napi_default, NULL},
      {"hmacSha256", NULL, js_hmac_sha256, NULL, NULL, NULL, napi_default, NULL},
    };
    CHECK(napi_define_properties(env, exports, 2, hmac));
  }
  /* The sizes of a UDP batch's slots. */
  const char *names[] = {"BATCH", "IN_SLOT", "OUT_SLOT", "ADDRESS_SLOT", "META"};
  const int values[] = {BATCH, IN_SLOT, OUT_SLOT, ADDRESS_SLOT, META};
  for (int i = 0; i < 5; i++) {
    napi_value value;
    CHECK(napi_create_int32(env, values[i], &value));
    CHECK(napi_set_named_property(env, exports, names[i], value));
  }
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
