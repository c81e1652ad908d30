/*
 * The keyd client of the provider: one request kind, signHandshakeContent (docs/PROTOCOL.md,
 * opcode 0x05), over keyd's signing unix socket. Blocking, because an OpenSSL signature call
 * is synchronous: the calling thread waits for keyd's answer, bounded by the provider's
 * timeout (openssl.cnf `timeout_ms`, default 5000).
 *
 * Connections are reused across operations: an idle list per provider, taken and returned
 * under a mutex, so that a threaded server (haproxy) signs on several connections at once
 * and a single-threaded one (an nginx worker) keeps one. A connection is never shared with
 * a forked child: each remembers the process that opened it.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <openssl/crypto.h>
#include "delegator.h"

#define KEYD_VERSION 2
#define OP_SIGN_HANDSHAKE_CONTENT 0x05
#define OP_REPLY 0x80
#define OP_CHANGED 0x40 /* unsolicited, request id 0: skipped */
#define OP_ERROR 0xff
#define MAX_SIGNING_PAYLOAD 1024   /* keyd's request limit on a signing connection */
#define MAX_REPLY_PAYLOAD 1048576  /* keyd's reply limit */
#define MAX_IDLE 16

struct dlg_conn {
    int fd;
    pid_t pid;
    char *path;
    uint32_t next_id;
    struct dlg_conn *next;
};

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void conn_close(struct dlg_conn *c)
{
    if (c == NULL)
        return;
    if (c->fd >= 0)
        close(c->fd);
    free(c->path);
    free(c);
}

static struct dlg_conn *pool_take(DLG_PROV *prov, const char *path)
{
    struct dlg_conn **pp, *c, *found = NULL, *stale = NULL;
    pid_t self = getpid();

    pthread_mutex_lock(&prov->pool_lock);
    for (pp = &prov->idle; (c = *pp) != NULL;) {
        if (c->pid != self) { /* inherited over fork(): the parent's, not ours to use */
            *pp = c->next;
            c->next = stale, stale = c;
        } else if (found == NULL && strcmp(c->path, path) == 0) {
            *pp = c->next;
            found = c;
        } else {
            pp = &c->next;
        }
    }
    pthread_mutex_unlock(&prov->pool_lock);
    while (stale != NULL) {
        c = stale->next;
        conn_close(stale);
        stale = c;
    }
    return found;
}

static void pool_put(DLG_PROV *prov, struct dlg_conn *c)
{
    struct dlg_conn *it;
    int n = 0;

    pthread_mutex_lock(&prov->pool_lock);
    for (it = prov->idle; it != NULL; it = it->next)
        n++;
    if (n < MAX_IDLE) {
        c->next = prov->idle;
        prov->idle = c;
        c = NULL;
    }
    pthread_mutex_unlock(&prov->pool_lock);
    conn_close(c);
}

void dlg_keyd_pool_free(DLG_PROV *prov)
{
    struct dlg_conn *c = prov->idle, *next;
    for (; c != NULL; c = next) {
        next = c->next;
        conn_close(c);
    }
    prov->idle = NULL;
}

/* Waits until fd is ready for `events` or the deadline passes: 1 ready, 0 timed out, -1 error. */
static int wait_fd(int fd, short events, long long deadline)
{
    for (;;) {
        long long left = deadline - now_ms();
        struct pollfd pfd = { fd, events, 0 };
        int r;
        if (left <= 0)
            return 0;
        r = poll(&pfd, 1, (int)left);
        if (r > 0)
            return 1;
        if (r == 0)
            return 0;
        if (errno != EINTR)
            return -1;
    }
}

enum io_result { IO_OK, IO_TIMEOUT, IO_CLOSED, IO_ERROR };

static enum io_result write_all(int fd, const unsigned char *buf, size_t len, long long deadline)
{
    while (len > 0) {
        /* MSG_NOSIGNAL: a keyd that went away is an error to report, not a SIGPIPE. */
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n > 0) {
            buf += n, len -= (size_t)n;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int w = wait_fd(fd, POLLOUT, deadline);
            if (w <= 0)
                return w == 0 ? IO_TIMEOUT : IO_ERROR;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else {
            return errno == EPIPE || errno == ECONNRESET ? IO_CLOSED : IO_ERROR;
        }
    }
    return IO_OK;
}

static enum io_result read_exact(int fd, unsigned char *buf, size_t len, long long deadline, size_t *got)
{
    while (len > 0) {
        ssize_t n = recv(fd, buf, len, 0);
        if (n > 0) {
            buf += n, len -= (size_t)n, *got += (size_t)n;
        } else if (n == 0) {
            return IO_CLOSED;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            int w = wait_fd(fd, POLLIN, deadline);
            if (w <= 0)
                return w == 0 ? IO_TIMEOUT : IO_ERROR;
        } else if (errno != EINTR) {
            return errno == ECONNRESET ? IO_CLOSED : IO_ERROR;
        }
    }
    return IO_OK;
}

/*
 * Connects the blocking socket fd to addr by the deadline, then makes it non-blocking: 1 done,
 * 0 timed out, -1 error (errno). A unix socket's connect never returns EINPROGRESS: a
 * non-blocking one fails with EAGAIN at once while keyd's accept queue is full (keyd busy),
 * where a blocking one waits for room, up to SO_SNDTIMEO (unix(7), Linux): the time left.
 */
static int connect_within(int fd, const struct sockaddr_un *addr, long long deadline)
{
    int flags;
    for (;;) {
        long long left = deadline - now_ms();
        struct timeval wait = { (time_t)(left / 1000), (suseconds_t)(left % 1000) * 1000 };
        if (left <= 0)
            return 0;
        if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &wait, sizeof(wait)) != 0)
            return -1;
        if (connect(fd, (const struct sockaddr *)addr, sizeof(*addr)) == 0)
            break;
        if (errno != EAGAIN && errno != EINTR) /* EAGAIN: still full after `wait`; the deadline decides */
            return -1;
    }
    if ((flags = fcntl(fd, F_GETFL)) == -1 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0)
        return -1;
    return 1;
}

static struct dlg_conn *conn_open(const DLG_KEY *key, long long deadline)
{
    struct sockaddr_un addr;
    struct dlg_conn *c;
    int fd, connected;

    if (strlen(key->socket_path) >= sizeof(addr.sun_path)) {
        dlg_error(key->prov, DLG_R_KEYD_UNAVAILABLE, "keyd socket path too long: %s", key->socket_path);
        return NULL;
    }
    memset(&addr, 0, sizeof(addr));
    addr.sun_family = AF_UNIX;
    strcpy(addr.sun_path, key->socket_path);
    if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0) {
        dlg_error(key->prov, DLG_R_KEYD_UNAVAILABLE, "socket: %s", strerror(errno));
        return NULL;
    }
    if ((connected = connect_within(fd, &addr, deadline)) <= 0) {
        if (connected == 0)
            dlg_error(key->prov, DLG_R_KEYD_TIMEOUT, "keyd at %s did not accept the connection within %d ms",
                      key->socket_path, key->prov->timeout_ms);
        else
            dlg_error(key->prov, DLG_R_KEYD_UNAVAILABLE, "keyd at %s: connect: %s", key->socket_path, strerror(errno));
        close(fd);
        return NULL;
    }
    if ((c = calloc(1, sizeof(*c))) == NULL || (c->path = strdup(key->socket_path)) == NULL) {
        dlg_error(key->prov, DLG_R_KEYD_UNAVAILABLE, "keyd connection: out of memory");
        free(c);
        close(fd);
        return NULL;
    }
    c->fd = fd;
    c->pid = getpid();
    c->next_id = 1;
    return c;
}

static void put_u16(unsigned char *p, unsigned v) { p[0] = (unsigned char)(v >> 8), p[1] = (unsigned char)v; }
static void put_u32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24), p[1] = (unsigned char)(v >> 16), p[2] = (unsigned char)(v >> 8), p[3] = (unsigned char)v;
}
static uint32_t get_u32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

enum outcome { SIGNED, REFUSED, FAILED, RETRY };

/*
 * keyd's bytes (an error frame's code or message) for the server's error log: printable
 * ASCII as is, any other byte as \xNN, so that a NUL cannot hide the rest and a newline
 * cannot start a forged log line; at most out_size - 1 characters, ending in "..." when cut.
 */
static const char *printable(const unsigned char *p, size_t n, char *out, size_t out_size)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0, i;
    for (i = 0; i < n; i++) {
        if (o + (p[i] >= 0x20 && p[i] < 0x7f ? 1 : 4) > out_size - 4) {
            memcpy(out + o, "...", 3), o += 3;
            break;
        }
        if (p[i] >= 0x20 && p[i] < 0x7f) {
            out[o++] = (char)p[i];
        } else {
            out[o++] = '\\', out[o++] = 'x', out[o++] = hex[p[i] >> 4], out[o++] = hex[p[i] & 15];
        }
    }
    out[o] = '\0';
    return out;
}

/* An error frame's payload (docs/PROTOCOL.md): opaque code<1..255>; opaque message<0..2^16-1>. */
static int parse_error(const unsigned char *payload, size_t len, const unsigned char **code, size_t *code_len,
                       const unsigned char **msg, size_t *msg_len)
{
    *code_len = len >= 1 ? payload[0] : 0;
    *msg_len = len >= *code_len + 3 ? (size_t)payload[1 + *code_len] << 8 | payload[2 + *code_len] : 0;
    *code = payload + 1, *msg = payload + 3 + *code_len;
    return *code_len != 0 && len == *code_len + 3 + *msg_len;
}

/*
 * One request on one connection. RETRY: a reused connection turned out closed (keyd's idle
 * timeout) before any byte of an answer (push frames are not answers), so the request never
 * reached keyd: try a fresh one.
 */
static enum outcome exchange(const DLG_KEY *key, struct dlg_conn *c, int reused, const unsigned char *frame,
                             size_t frame_len, long long deadline, unsigned char *sig, size_t *siglen,
                             size_t sigsize, int *keep)
{
    uint32_t id = get_u32(frame + 4);
    unsigned char header[12], *payload = NULL;
    char code_text[64], msg_text[512]; /* keyd's code and message as printed (printable) */
    size_t got = 0;
    enum io_result io;
    enum outcome result = FAILED;

    *keep = 0;
    io = write_all(c->fd, frame, frame_len, deadline);
    for (; io == IO_OK;) {
        uint32_t len;
        io = read_exact(c->fd, header, sizeof(header), deadline, &got);
        if (io != IO_OK)
            break;
        len = get_u32(header + 8);
        if (header[0] != KEYD_VERSION || header[2] != 0 || header[3] != 0 || len > MAX_REPLY_PAYLOAD) {
            dlg_error(key->prov, DLG_R_KEYD_PROTOCOL, "bad frame header from keyd at %s", c->path);
            return FAILED;
        }
        if ((payload = OPENSSL_malloc(len ? len : 1)) == NULL) {
            dlg_error(key->prov, DLG_R_KEYD_PROTOCOL, "keyd's answer of %u bytes: out of memory", len);
            return FAILED;
        }
        io = read_exact(c->fd, payload, len, deadline, &got);
        if (io != IO_OK)
            break;
        if (header[1] == OP_CHANGED && get_u32(header + 4) == 0) {
            /* A key or chain changed: nothing cached here to drop (the reference file names the key).
             * keyd pushes it on its own, not in answer to our request: its bytes say nothing about
             * whether keyd read the request, so they do not count against the retry below (a push
             * that waited in an idle pooled connection, then keyd's idle close, is a closed
             * connection like any other). */
            OPENSSL_free(payload), payload = NULL;
            got = 0;
            continue;
        }
        if (header[1] == OP_ERROR && get_u32(header + 4) == 0) {
            /* keyd refuses a connection (KEYD_TOO_MANY_CONNECTIONS: the principal's
             * limits.maxConnectionsPerClient; KEYD_SOCKET_EXPOSED) with an error frame of
             * request id 0, then closes it (docs/PROTOCOL.md, "Error codes"). Said as such:
             * "answered request id 0" hid keyd's reason from the server's log. */
            const unsigned char *code, *msg;
            size_t code_len, msg_len;
            if (!parse_error(payload, len, &code, &code_len, &msg, &msg_len)) {
                dlg_error(key->prov, DLG_R_KEYD_PROTOCOL, "malformed error frame from keyd");
                break;
            }
            dlg_error(key->prov, DLG_R_KEYD_REFUSED, "keyd at %s refused the connection: %s: %s", c->path,
                      printable(code, code_len, code_text, sizeof(code_text)), printable(msg, msg_len, msg_text, sizeof(msg_text)));
            result = REFUSED;
            break;
        }
        if (get_u32(header + 4) != id) {
            dlg_error(key->prov, DLG_R_KEYD_PROTOCOL, "keyd at %s answered request id %u, expected %u", c->path,
                      get_u32(header + 4), id);
            break;
        }
        if (header[1] == (OP_REPLY | OP_SIGN_HANDSHAKE_CONTENT)) {
            /* opaque signature<1..2^16-1> */
            size_t n = len >= 2 ? (size_t)payload[0] << 8 | payload[1] : 0;
            if (len < 3 || n + 2 != len || n == 0) {
                dlg_error(key->prov, DLG_R_KEYD_PROTOCOL, "malformed signature reply from keyd");
                break;
            }
            if (n > sigsize) {
                dlg_error(key->prov, DLG_R_KEYD_PROTOCOL, "keyd's signature (%zu bytes) exceeds the buffer (%zu)", n, sigsize);
                *keep = 1;
                break;
            }
            memcpy(sig, payload + 2, n);
            *siglen = n;
            *keep = 1;
            result = SIGNED;
            break;
        }
        if (header[1] == OP_ERROR) {
            const unsigned char *code, *msg;
            size_t code_len, msg_len;
            if (!parse_error(payload, len, &code, &code_len, &msg, &msg_len)) {
                dlg_error(key->prov, DLG_R_KEYD_PROTOCOL, "malformed error frame from keyd");
                break;
            }
            dlg_error(key->prov, DLG_R_KEYD_REFUSED, "keyd refused %s for %s: %s: %s", key->key_ref, key->server_name,
                      printable(code, code_len, code_text, sizeof(code_text)), printable(msg, msg_len, msg_text, sizeof(msg_text)));
            /* A framing error is the one refusal of a request after which keyd closes the connection. */
            *keep = !(code_len == 14 && memcmp(code, "KEYD_BAD_FRAME", 14) == 0);
            result = REFUSED;
            break;
        }
        dlg_error(key->prov, DLG_R_KEYD_PROTOCOL, "unexpected opcode 0x%02x from keyd", header[1]);
        break;
    }
    OPENSSL_free(payload);
    if (io == IO_CLOSED && reused && got == 0)
        return RETRY;
    if (io == IO_TIMEOUT)
        dlg_error(key->prov, DLG_R_KEYD_TIMEOUT, "keyd at %s did not answer within %d ms", c->path, key->prov->timeout_ms);
    else if (io == IO_CLOSED)
        dlg_error(key->prov, DLG_R_KEYD_UNAVAILABLE, "keyd at %s closed the connection", c->path);
    else if (io == IO_ERROR)
        dlg_error(key->prov, DLG_R_KEYD_UNAVAILABLE, "keyd at %s: %s", c->path, strerror(errno));
    return result;
}

int dlg_keyd_sign(const DLG_KEY *key, uint16_t scheme, const unsigned char *content, size_t content_len,
                  unsigned char *sig, size_t *siglen, size_t sigsize)
{
    size_t ref_len = strlen(key->key_ref), name_len = strlen(key->server_name);
    size_t payload_len = 1 + ref_len + 1 + name_len + 2 + 2 + content_len;
    unsigned char frame[12 + MAX_SIGNING_PAYLOAD], *p;
    long long deadline = now_ms() + key->prov->timeout_ms;
    int attempt;

    if (key->key_ref == NULL || key->socket_path == NULL) {
        dlg_error(key->prov, DLG_R_NO_PRIVATE_PART, "a public key cannot sign");
        return 0;
    }
    if (key->prov->config_error[0] != '\0') { /* provider.c: refused here, where the server logs it */
        dlg_error(key->prov, DLG_R_BAD_CONFIG, "%s", key->prov->config_error);
        return 0;
    }
    if (content_len == 0 || payload_len > MAX_SIGNING_PAYLOAD) {
        /* No TLS handshake content is this long (docs/PROTOCOL.md, signHandshakeContent). */
        dlg_error(key->prov, DLG_R_NOT_WHOLE_MESSAGE, "%zu bytes to sign: not a TLS handshake signature content", content_len);
        return 0;
    }
    /* docs/PROTOCOL.md: key_ref<1..255> server_name<1..255> scheme content<1..2^16-1> */
    p = frame + 12;
    *p++ = (unsigned char)ref_len, memcpy(p, key->key_ref, ref_len), p += ref_len;
    *p++ = (unsigned char)name_len, memcpy(p, key->server_name, name_len), p += name_len;
    put_u16(p, scheme), p += 2;
    put_u16(p, (unsigned)content_len), p += 2;
    memcpy(p, content, content_len);

    for (attempt = 0; attempt < 2; attempt++) {
        struct dlg_conn *c = attempt == 0 ? pool_take(key->prov, key->socket_path) : NULL;
        int reused = c != NULL, keep = 0;
        enum outcome outcome;

        if (c == NULL && (c = conn_open(key, deadline)) == NULL)
            return 0;
        frame[0] = KEYD_VERSION, frame[1] = OP_SIGN_HANDSHAKE_CONTENT, frame[2] = frame[3] = 0;
        if (c->next_id == 0) /* id 0 is keyd's push frames' */
            c->next_id = 1;
        put_u32(frame + 4, c->next_id++);
        put_u32(frame + 8, (uint32_t)payload_len);
        outcome = exchange(key, c, reused, frame, 12 + payload_len, deadline, sig, siglen, sigsize, &keep);
        if (keep)
            pool_put(key->prov, c);
        else
            conn_close(c);
        if (outcome != RETRY)
            return outcome == SIGNED;
    }
    return 0;
}
