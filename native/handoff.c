/*
 * SERVICE_SCHEDULING=leastconn's connection handoff (lib/supervisor/handoff-native.ts, the
 * primary; lib/worker/handoff.ts, a worker). Why native: node:cluster's IPC carries one
 * descriptor per message, with a JSON message, Node's own acknowledgement and a net.Socket around
 * each connection in the primary; that costs the primary ~200 us per connection, half the
 * throughput of `none` with a new connection per request. Here the primary accepts in batches
 * and sends each worker its share of a batch in one sendmsg(SCM_RIGHTS) on a socketpair of its
 * own; the worker acknowledges a batch in one message. Linux only (accept4, SOCK_SEQPACKET); the
 * IPC handoff is used where this is not built.
 *
 * Every function returns a negative errno instead of throwing: the caller decides, and nothing
 * here can throw out of a callback in the primary.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <node_api.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

/* Descriptors in one message; the kernel's limit is SCM_MAX_FD (253). */
#define MAX_FDS 64
/* Int32 words in one message's payload. */
#define MAX_WORDS 1024

static napi_value num(napi_env env, int v) {
  napi_value r;
  napi_create_int32(env, v, &r);
  return r;
}

static int int_arg(napi_env env, napi_value v, int fallback) {
  int32_t r;
  return napi_get_value_int32(env, v, &r) == napi_ok ? r : fallback;
}

static size_t args(napi_env env, napi_callback_info info, napi_value *argv, size_t n) {
  size_t argc = n;
  for (size_t i = 0; i < n; i++) napi_get_undefined(env, &argv[i]);
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  return argc;
}

/*
 * listen(family 4|6, address, port, backlog): a listening, non-blocking TCP socket's fd. An IPv6
 * address may name its zone (an interface) as Node's listen takes it, "fe80::1%eth0": the scope a
 * link-local address needs.
 */
static napi_value js_listen(napi_env env, napi_callback_info info) {
  napi_value a[4];
  args(env, info, a, 4);
  int family = int_arg(env, a[0], 4) == 6 ? AF_INET6 : AF_INET;
  char host[INET6_ADDRSTRLEN + IF_NAMESIZE + 2];
  size_t len = 0;
  if (napi_get_value_string_utf8(env, a[1], host, sizeof host, &len) != napi_ok) return num(env, -EINVAL);
  if (len >= sizeof host - 1) return num(env, -EINVAL);
  int port = int_arg(env, a[2], -1), backlog = int_arg(env, a[3], 511);
  if (port < 0 || port > 65535) return num(env, -EINVAL);
  struct sockaddr_storage ss;
  socklen_t sslen;
  memset(&ss, 0, sizeof ss);
  if (family == AF_INET) {
    struct sockaddr_in *sa = (struct sockaddr_in *)&ss;
    sa->sin_family = AF_INET;
    sa->sin_port = htons(port);
    if (inet_pton(AF_INET, host, &sa->sin_addr) != 1) return num(env, -EINVAL);
    sslen = sizeof *sa;
  } else {
    struct sockaddr_in6 *sa = (struct sockaddr_in6 *)&ss;
    sa->sin6_family = AF_INET6;
    sa->sin6_port = htons(port);
    char *zone = strchr(host, '%');
    if (zone != NULL) {
      *zone++ = '\0';
      if (*zone == '\0') return num(env, -EINVAL);
      /* An unknown interface is scope 0, as libuv has it: bind then refuses a link-local address. */
      sa->sin6_scope_id = if_nametoindex(zone);
    }
    if (inet_pton(AF_INET6, host, &sa->sin6_addr) != 1) return num(env, -EINVAL);
    sslen = sizeof *sa;
  }
  int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return num(env, -errno);
  /* As libuv does for a TCP server; and `::` takes IPv4 too, as Node's listen does. */
  int on = 1, off = 0;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  if (family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off);
  if (bind(fd, (struct sockaddr *)&ss, sslen) < 0 || listen(fd, backlog) < 0) {
    int e = errno;
    close(fd);
    return num(env, -e);
  }
  return num(env, fd);
}

/*
 * accept(fd, max): up to max accepted connections' fds (non-blocking, close-on-exec), [] when
 * none waits; a negative errno when the first accept fails (EMFILE...). A connection reset
 * while it waited is skipped.
 */
static napi_value js_accept(napi_env env, napi_callback_info info) {
  napi_value a[2];
  args(env, info, a, 2);
  int fd = int_arg(env, a[0], -1), max = int_arg(env, a[1], 1);
  napi_value out;
  napi_create_array(env, &out);
  int n = 0;
  while (n < max) {
    int c = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (c >= 0) {
      napi_set_element(env, out, n++, num(env, c));
      continue;
    }
    if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK || n > 0) break;
    return num(env, -errno);
  }
  return out;
}

/* cloexec(fd): a descriptor that the process's children must not inherit (a stdio one). */
static napi_value js_cloexec(napi_env env, napi_callback_info info) {
  napi_value a[1];
  args(env, info, a, 1);
  int fd = int_arg(env, a[0], -1);
  int flags = fcntl(fd, F_GETFD);
  if (flags < 0 || fcntl(fd, F_SETFD, flags | FD_CLOEXEC) < 0) return num(env, -errno);
  return num(env, 0);
}

/* socketpair(): [a, b], a message-preserving, non-blocking, close-on-exec pair. */
static napi_value js_socketpair(napi_env env, napi_callback_info info) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0) return num(env, -errno);
  napi_value out;
  napi_create_array_with_length(env, 2, &out);
  napi_set_element(env, out, 0, num(env, sv[0]));
  napi_set_element(env, out, 1, num(env, sv[1]));
  return out;
}

/* Room for a message's descriptors, aligned for a cmsghdr. */
typedef union {
  char buf[CMSG_SPACE(sizeof(int) * MAX_FDS)];
  struct cmsghdr align;
} control_t;

/* One buffer of data; `control_len` bytes of `control` for descriptors (0: none). */
static void msg_init(struct msghdr *m, struct iovec *iov, control_t *control, size_t control_len) {
  memset(m, 0, sizeof *m);
  m->msg_iov = iov;
  m->msg_iovlen = 1;
  if (control_len > 0) {
    m->msg_control = control->buf;
    m->msg_controllen = control_len;
  }
}

/* send(fd, words: Int32Array, fds: number[]): bytes sent, or a negative errno (EAGAIN too). */
static napi_value js_send(napi_env env, napi_callback_info info) {
  napi_value a[3];
  args(env, info, a, 3);
  int fd = int_arg(env, a[0], -1);
  napi_typedarray_type type;
  size_t words;
  void *data;
  if (napi_get_typedarray_info(env, a[1], &type, &words, &data, NULL, NULL) != napi_ok ||
      type != napi_int32_array || words == 0 || words > MAX_WORDS)
    return num(env, -EINVAL);
  uint32_t nfds = 0;
  bool is_array = false;
  napi_is_array(env, a[2], &is_array);
  if (is_array) napi_get_array_length(env, a[2], &nfds);
  if (nfds > MAX_FDS) return num(env, -EINVAL);
  int fds[MAX_FDS];
  for (uint32_t i = 0; i < nfds; i++) {
    napi_value v;
    napi_get_element(env, a[2], i, &v);
    fds[i] = int_arg(env, v, -1);
  }
  struct iovec iov = {data, words * sizeof(int32_t)};
  control_t control;
  struct msghdr m;
  msg_init(&m, &iov, &control, nfds > 0 ? CMSG_SPACE(sizeof(int) * nfds) : 0);
  if (nfds > 0) {
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
  }
  ssize_t r;
  do r = sendmsg(fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
  while (r < 0 && errno == EINTR);
  return num(env, r < 0 ? -errno : (int)r);
}

/*
 * recv(fd): one message as [words: Int32Array, fds: number[]]; null when none waits, 0 at the
 * peer's end, a negative errno on an error. The descriptors arrive close-on-exec.
 */
static napi_value js_recv(napi_env env, napi_callback_info info) {
  napi_value a[1];
  args(env, info, a, 1);
  int fd = int_arg(env, a[0], -1);
  int32_t words[MAX_WORDS];
  struct iovec iov = {words, sizeof words};
  control_t control;
  struct msghdr m;
  msg_init(&m, &iov, &control, sizeof control.buf);
  ssize_t r;
  do r = recvmsg(fd, &m, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
  while (r < 0 && errno == EINTR);
  if (r < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      napi_value nul;
      napi_get_null(env, &nul);
      return nul;
    }
    return num(env, -errno);
  }
  if (r == 0 && m.msg_controllen == 0) return num(env, 0);
  napi_value fds;
  napi_create_array(env, &fds);
  uint32_t n = 0;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    int got[MAX_FDS];
    memcpy(got, CMSG_DATA(c), k * sizeof(int));
    for (size_t i = 0; i < k; i++) napi_set_element(env, fds, n++, num(env, got[i]));
  }
  /*
   * MSG_CTRUNC: this process ran out of descriptors (EMFILE) and the kernel closed those it could
   * not install; the caller sees fewer descriptors than ids (the primary still has its copies).
   * MSG_TRUNC never happens with our sizes; whole words are kept.
   */
  if (m.msg_flags & MSG_TRUNC) r = r & ~3;
  void *mem;
  napi_value ab, ints, out;
  napi_create_arraybuffer(env, (size_t)r, &mem, &ab);
  if (r > 0) memcpy(mem, words, (size_t)r);
  napi_create_typedarray(env, napi_int32_array, (size_t)r / sizeof(int32_t), ab, 0, &ints);
  napi_create_array_with_length(env, 2, &out);
  napi_set_element(env, out, 0, ints);
  napi_set_element(env, out, 1, fds);
  return out;
}

static napi_value js_close(napi_env env, napi_callback_info info) {
  napi_value a[1];
  args(env, info, a, 1);
  int fd = int_arg(env, a[0], -1);
  if (fd < 0) return num(env, -EBADF);
  /* Linux closes the descriptor even when close reports EINTR: never retry. */
  return num(env, close(fd) < 0 && errno != EINTR ? -errno : 0);
}

/*
 * watch(fd, callback): calls callback(status) when fd is readable (status < 0: a poll error),
 * as a Node callback (microtasks and nextTicks run after it). unwatch(w) stops it for good.
 */
typedef struct {
  uv_poll_t poll;
  napi_env env;
  napi_ref callback;
  napi_ref resource;
  napi_async_context context;
  int active, closing, owners;
} watch_t;

/*
 * Set when Node tears the environment down: a watch still open then is closed by its
 * finalizer, and its close callback runs after the environment is gone, when no Node-API call
 * may be made (the process is exiting: nothing to release).
 */
static int env_gone = 0;

static void on_env_cleanup(void *arg) { env_gone = 1; }

static void watch_release(watch_t *w) {
  if (--w->owners == 0) free(w);
}

/* After the handle is closed, never inside its own callback: unwatch may be called from there. */
static void on_closed(uv_handle_t *h) {
  watch_t *w = (watch_t *)h;
  if (!env_gone) {
    napi_async_destroy(w->env, w->context);
    napi_delete_reference(w->env, w->callback);
    napi_delete_reference(w->env, w->resource);
  }
  watch_release(w);
}

static void watch_stop(watch_t *w) {
  if (w->closing) return;
  w->closing = 1;
  uv_poll_stop(&w->poll);
  uv_close((uv_handle_t *)&w->poll, on_closed);
}

static void on_readable(uv_poll_t *h, int status, int events) {
  watch_t *w = (watch_t *)h;
  if (w->closing) return;
  /* libuv stopped polling after an error (POLLERR: UV_EBADF): resume() may start it again. */
  if (status < 0) w->active = 0;
  napi_env env = w->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value cb, resource, arg, result;
  napi_get_reference_value(env, w->callback, &cb);
  napi_get_reference_value(env, w->resource, &resource);
  arg = num(env, status);
  if (napi_make_callback(env, w->context, resource, cb, 1, &arg, &result) == napi_pending_exception) {
    napi_value err;
    napi_get_and_clear_last_exception(env, &err);
    napi_fatal_exception(env, err);
  }
  napi_close_handle_scope(env, scope);
}

static void free_on_close(uv_handle_t *h) { free(h); }

static void watch_finalize(napi_env env, void *data, void *hint) {
  watch_t *w = (watch_t *)data;
  watch_stop(w);
  watch_release(w);
}

static napi_value js_watch(napi_env env, napi_callback_info info) {
  napi_value a[2];
  args(env, info, a, 2);
  int fd = int_arg(env, a[0], -1);
  napi_valuetype t;
  napi_typeof(env, a[1], &t);
  if (fd < 0 || t != napi_function) {
    napi_throw_type_error(env, NULL, "watch(fd, callback)");
    return NULL;
  }
  uv_loop_t *loop;
  napi_get_uv_event_loop(env, &loop);
  watch_t *w = calloc(1, sizeof *w);
  if (!w) {
    napi_throw_error(env, "ENOMEM", "out of memory");
    return NULL;
  }
  int e = uv_poll_init(loop, &w->poll, fd);
  if (e != 0) {
    /* Nothing registered with the loop yet. */
    free(w);
    napi_throw_error(env, uv_err_name(e), uv_strerror(e));
    return NULL;
  }
  e = uv_poll_start(&w->poll, UV_READABLE, on_readable);
  if (e != 0) {
    /* The handle is the loop's now: it is freed once closed. */
    uv_close((uv_handle_t *)&w->poll, free_on_close);
    napi_throw_error(env, uv_err_name(e), uv_strerror(e));
    return NULL;
  }
  w->env = env;
  w->active = 1;
  w->owners = 2; /* the uv handle and the JS object */
  napi_value resource, name, out;
  napi_create_object(env, &resource);
  napi_create_string_utf8(env, "astron-agent:handoff", NAPI_AUTO_LENGTH, &name);
  napi_create_reference(env, a[1], 1, &w->callback);
  napi_create_reference(env, resource, 1, &w->resource);
  napi_async_init(env, resource, name, &w->context);
  napi_create_external(env, w, watch_finalize, NULL, &out);
  return out;
}

static watch_t *watch_arg(napi_env env, napi_value v) {
  void *p = NULL;
  if (napi_get_value_external(env, v, &p) != napi_ok) return NULL;
  return (watch_t *)p;
}

static napi_value js_unwatch(napi_env env, napi_callback_info info) {
  napi_value a[1];
  args(env, info, a, 1);
  watch_t *w = watch_arg(env, a[0]);
  if (w) watch_stop(w);
  return NULL;
}

/* pause(w) / resume(w): stop and start the readiness callbacks (a retry after EMFILE). */
static napi_value js_pause(napi_env env, napi_callback_info info) {
  napi_value a[1];
  args(env, info, a, 1);
  watch_t *w = watch_arg(env, a[0]);
  if (w && !w->closing && w->active) {
    uv_poll_stop(&w->poll);
    w->active = 0;
  }
  return NULL;
}

static napi_value js_resume(napi_env env, napi_callback_info info) {
  napi_value a[1];
  args(env, info, a, 1);
  watch_t *w = watch_arg(env, a[0]);
  if (w && !w->closing && !w->active && uv_poll_start(&w->poll, UV_READABLE, on_readable) == 0) w->active = 1;
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor d[] = {
      {"listen", 0, js_listen, 0, 0, 0, napi_enumerable, 0},
      {"accept", 0, js_accept, 0, 0, 0, napi_enumerable, 0},
      {"socketpair", 0, js_socketpair, 0, 0, 0, napi_enumerable, 0},
      {"cloexec", 0, js_cloexec, 0, 0, 0, napi_enumerable, 0},
      {"send", 0, js_send, 0, 0, 0, napi_enumerable, 0},
      {"recv", 0, js_recv, 0, 0, 0, napi_enumerable, 0},
      {"close", 0, js_close, 0, 0, 0, napi_enumerable, 0},
      {"watch", 0, js_watch, 0, 0, 0, napi_enumerable, 0},
      {"unwatch", 0, js_unwatch, 0, 0, 0, napi_enumerable, 0},
      {"pause", 0, js_pause, 0, 0, 0, napi_enumerable, 0},
      {"resume", 0, js_resume, 0, 0, 0, napi_enumerable, 0},
  };
  napi_define_properties(env, exports, sizeof d / sizeof d[0], d);
  napi_add_env_cleanup_hook(env, on_env_cleanup, NULL);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
