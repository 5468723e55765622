/*
 * lwbench: a compiled client harness for Pusher-protocol (v7) servers.
 *
 * One process, one thread, epoll, non-blocking sockets. It opens N WebSocket connections to
 * ws://HOST:PORT/app/KEY?protocol=7, waits for pusher:connection_established, subscribes each one to
 * one public channel, then runs publish phases: events are triggered through the signed REST API
 * (POST /apps/ID/events over keep-alive HTTP/1.1 connections) at a fixed rate or as fast as the
 * server acknowledges, and every delivery is counted and timed. The event data carries the phase,
 * a sequence number and the CLOCK_MONOTONIC time the request was written, so publish-to-receive
 * latency needs no clock sharing. In --idle mode it only connects and reads the server's RSS.
 *
 * Self-contained (MD5 and HMAC-SHA256 included); build: gcc -O2 -o lwbench lwbench.c
 * Output: one JSON object on stdout. Progress and errors on stderr.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------ small helpers */

static int64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "lwbench: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(2);
}

static void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n);
    if (!q) die("out of memory");
    return q;
}

static double cpu_self_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

/* utime + stime from a /proc/.../stat file, seconds; -1 if unreadable */
static double cpu_stat_s(const char *path) {
    char buf[2048];
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')'); /* comm may contain spaces */
    if (!p) return -1;
    unsigned long long ut = 0, st = 0;
    /* after ')': state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime(14) stime(15) */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2) return -1;
    return (double)(ut + st) / sysconf(_SC_CLK_TCK);
}

/* a process, all its threads */
static double cpu_pid_s(int pid) {
    if (pid <= 0) return -1;
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    return cpu_stat_s(path);
}

/* its main thread only (Node's event loop; Python's only busy thread) */
static double cpu_main_thread_s(int pid) {
    if (pid <= 0) return -1;
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task/%d/stat", pid, pid);
    return cpu_stat_s(path);
}

/* VmRSS of a process in KiB; -1 if unreadable */
static long rss_kib(int pid) {
    if (pid <= 0) return -1;
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long kib = -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kib = strtol(line + 6, NULL, 10);
            break;
        }
    fclose(f);
    return kib;
}

/* ------------------------------------------------------------------ MD5 (RFC 1321) */

typedef struct {
    uint32_t h[4];
    uint64_t len;
    uint8_t buf[64];
    size_t n;
} md5_ctx;

static const uint32_t MD5_K[64] = {
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
    0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
    0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
    0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
    0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
    0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
    0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
    0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391};
static const uint8_t MD5_R[64] = {7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22,
                                  5, 9,  14, 20, 5, 9,  14, 20, 5, 9,  14, 20, 5, 9,  14, 20,
                                  4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23,
                                  6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21};

static void md5_block(md5_ctx *c, const uint8_t *p) {
    uint32_t w[16], a = c->h[0], b = c->h[1], cc = c->h[2], d = c->h[3];
    for (int i = 0; i < 16; i++)
        w[i] = p[i * 4] | (uint32_t)p[i * 4 + 1] << 8 | (uint32_t)p[i * 4 + 2] << 16 | (uint32_t)p[i * 4 + 3] << 24;
    for (int i = 0; i < 64; i++) {
        uint32_t f;
        int g;
        if (i < 16) f = (b & cc) | (~b & d), g = i;
        else if (i < 32) f = (d & b) | (~d & cc), g = (5 * i + 1) & 15;
        else if (i < 48) f = b ^ cc ^ d, g = (3 * i + 5) & 15;
        else f = cc ^ (b | ~d), g = (7 * i) & 15;
        uint32_t t = d;
        d = cc;
        cc = b;
        uint32_t x = a + f + MD5_K[i] + w[g];
        b = b + ((x << MD5_R[i]) | (x >> (32 - MD5_R[i])));
        a = t;
    }
    c->h[0] += a, c->h[1] += b, c->h[2] += cc, c->h[3] += d;
}

static void md5_hex(const void *data, size_t len, char out[33]) {
    md5_ctx c = {{0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476}, 0, {0}, 0};
    const uint8_t *p = data;
    c.len = len;
    while (len >= 64) md5_block(&c, p), p += 64, len -= 64;
    uint8_t tail[128] = {0};
    memcpy(tail, p, len);
    tail[len] = 0x80;
    size_t tl = len + 1 + 8 <= 64 ? 64 : 128;
    uint64_t bits = c.len * 8;
    for (int i = 0; i < 8; i++) tail[tl - 8 + i] = (uint8_t)(bits >> (8 * i));
    md5_block(&c, tail);
    if (tl == 128) md5_block(&c, tail + 64);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) sprintf(out + i * 8 + j * 2, "%02x", (c.h[i] >> (8 * j)) & 0xff);
}

/* ------------------------------------------------------------------ SHA-256 (FIPS 180-4) + HMAC */

typedef struct {
    uint32_t h[8];
    uint64_t len;
    uint8_t buf[64];
    size_t n;
} sha_ctx;

static const uint32_t SHA_K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha_block(sha_ctx *c, const uint8_t *p) {
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[i * 4] << 24 | (uint32_t)p[i * 4 + 1] << 16 | (uint32_t)p[i * 4 + 2] << 8 | p[i * 4 + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = c->h[0], b = c->h[1], cc = c->h[2], d = c->h[3], e = c->h[4], f = c->h[5], g = c->h[6],
             h = c->h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = h + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + SHA_K[i] + w[i];
        uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & cc) ^ (b & cc));
        h = g, g = f, f = e, e = d + t1, d = cc, cc = b, b = a, a = t1 + t2;
    }
    c->h[0] += a, c->h[1] += b, c->h[2] += cc, c->h[3] += d;
    c->h[4] += e, c->h[5] += f, c->h[6] += g, c->h[7] += h;
}

static void sha_init(sha_ctx *c) {
    static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(c->h, iv, sizeof iv);
    c->len = 0;
    c->n = 0;
}

static void sha_update(sha_ctx *c, const void *data, size_t len) {
    const uint8_t *p = data;
    c->len += len;
    while (len) {
        size_t k = 64 - c->n < len ? 64 - c->n : len;
        memcpy(c->buf + c->n, p, k);
        c->n += k, p += k, len -= k;
        if (c->n == 64) sha_block(c, c->buf), c->n = 0;
    }
}

static void sha_final(sha_ctx *c, uint8_t out[32]) {
    uint64_t bits = c->len * 8;
    uint8_t pad = 0x80, zero = 0;
    sha_update(c, &pad, 1);
    while (c->n != 56) sha_update(c, &zero, 1);
    uint8_t lb[8];
    for (int i = 0; i < 8; i++) lb[i] = (uint8_t)(bits >> (56 - 8 * i));
    sha_update(c, lb, 8);
    for (int i = 0; i < 8; i++)
        out[i * 4] = c->h[i] >> 24, out[i * 4 + 1] = c->h[i] >> 16, out[i * 4 + 2] = c->h[i] >> 8,
                out[i * 4 + 3] = c->h[i];
}

static void hmac_sha256_hex(const char *key, const void *msg, size_t len, char out[65]) {
    uint8_t k[64] = {0}, ipad[64], opad[64], inner[32], mac[32];
    size_t kl = strlen(key);
    sha_ctx c;
    if (kl > 64) {
        sha_init(&c);
        sha_update(&c, key, kl);
        sha_final(&c, k);
    } else
        memcpy(k, key, kl);
    for (int i = 0; i < 64; i++) ipad[i] = k[i] ^ 0x36, opad[i] = k[i] ^ 0x5c;
    sha_init(&c);
    sha_update(&c, ipad, 64);
    sha_update(&c, msg, len);
    sha_final(&c, inner);
    sha_init(&c);
    sha_update(&c, opad, 64);
    sha_update(&c, inner, 32);
    sha_final(&c, mac);
    for (int i = 0; i < 32; i++) sprintf(out + 2 * i, "%02x", mac[i]);
}

/* ------------------------------------------------------------------ latency histogram (microseconds) */

/* 1 us steps to 10 ms, 100 us steps to 1 s, 10 ms steps to 60 s */
#define H1 10000
#define H2 (H1 + 9900)
#define HN (H2 + 5900 + 1)

typedef struct {
    uint64_t b[HN];
    uint64_t n, max_us;
    double sum_us;
} hist_t;

static void hist_add(hist_t *h, int64_t us) {
    if (us < 0) us = 0;
    size_t i;
    if (us < 10000) i = (size_t)us;
    else if (us < 1000000) i = H1 + (size_t)(us - 10000) / 100;
    else if (us < 60000000) i = H2 + (size_t)(us - 1000000) / 10000;
    else i = HN - 1;
    h->b[i]++;
    h->n++;
    h->sum_us += (double)us;
    if ((uint64_t)us > h->max_us) h->max_us = (uint64_t)us;
}

static double hist_bucket_us(size_t i) {
    if (i < H1) return (double)i;
    if (i < H2) return 10000.0 + (double)(i - H1) * 100 + 50;
    if (i < HN - 1) return 1000000.0 + (double)(i - H2) * 10000 + 5000;
    return 60000000.0;
}

static double hist_pct(const hist_t *h, double p) {
    if (!h->n) return -1;
    uint64_t rank = (uint64_t)(p / 100.0 * (double)h->n + 0.5);
    if (rank < 1) rank = 1;
    uint64_t acc = 0;
    for (size_t i = 0; i < HN; i++) {
        acc += h->b[i];
        if (acc >= rank) return hist_bucket_us(i);
    }
    return (double)h->max_us;
}

/* ------------------------------------------------------------------ configuration */

typedef struct {
    char name[32];
    double rate; /* publishes per second; 0 = as fast as acknowledged */
    long count;  /* publishes in the phase */
    double max_s;
    int per_publish; /* channels per trigger (default 1) */
} phase_cfg;

static struct {
    const char *host;
    int port;
    const char *app_id, *key, *secret;
    int conns, channels;
    const char *prefix;
    int server_pid;
    int idle;
    double settle_s;
    int subscribe_idle;
    int pub_conns;
    int payload;
    double timeout_s;
    double drain_s;
    int connect_batch;
    phase_cfg phases[16];
    int nphases;
} cfg = {.host = "127.0.0.1",
         .port = 6001,
         .app_id = "4242",
         .key = "lwkey",
         .secret = "lwsecret",
         .conns = 100,
         .channels = 1,
         .prefix = "bench",
         .settle_s = 3.0,
         .pub_conns = 8,
         .payload = 64,
         .timeout_s = 120.0,
         .drain_s = 5.0,
         .connect_batch = 200};

/* ------------------------------------------------------------------ connections */

enum { K_WS = 0, K_PUB = 1 };
enum { S_CONNECTING, S_HANDSHAKE, S_OPEN, S_ESTABLISHED, S_SUBSCRIBED, S_CLOSED };

typedef struct conn {
    int fd, kind, state, idx, channel;
    char *in;
    size_t in_len, in_cap;
    char *out;
    size_t out_len, out_off, out_cap;
    int want_out;
    /* publisher */
    int busy, reconnect;
    long expect; /* deliveries the request in flight should cause */
    int64_t sent_ns;
    int phase;
} conn_t;

static int ep;
static conn_t *ws;   /* [conns] */
static conn_t *pubs; /* [pub_conns] */
static int *subs_per_channel;

static struct {
    long started, opened, established, subscribed, closed, errors, handshake_failed, connect_failed;
    long pings, ws_close_frames, other_frames;
    int first_close_code;
    char first_error[256];
} st;

/* per-phase results */
typedef struct {
    long published, acked, http_errors, late, expected, received, unknown;
    int64_t t_start, t_first_pub, t_last_ack, t_last_rx, t_end;
    double cpu_self0, cpu_self1, cpu_srv0, cpu_srv1, cpu_main0, cpu_main1;
    long per_sec[600];
    int per_sec_n;
    hist_t hist;
    int http_status_other;
} phase_res;

static phase_res *res; /* [nphases] */
static int cur_phase = -1;
static int64_t t0_ns;

static void ep_mod(conn_t *c) {
    struct epoll_event ev = {.events = EPOLLIN | (c->want_out ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static void conn_close(conn_t *c, const char *why) {
    if (c->fd < 0) return;
    if (c->kind == K_WS) {
        st.closed++;
        if (why && !st.first_error[0]) snprintf(st.first_error, sizeof st.first_error, "ws %d: %s", c->idx, why);
    } else if (why && !st.first_error[0])
        snprintf(st.first_error, sizeof st.first_error, "publisher %d: %s", c->idx, why);
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    struct linger lg = {1, 0}; /* RST: leaves no TIME_WAIT behind between runs */
    setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(c->fd);
    c->fd = -1;
    c->state = S_CLOSED;
}

static void conn_write(conn_t *c, const void *data, size_t len) {
    if (c->fd < 0) return;
    if (c->out_len == c->out_off) {
        c->out_len = c->out_off = 0;
        ssize_t w = write(c->fd, data, len);
        if (w == (ssize_t)len) return;
        if (w < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                conn_close(c, strerror(errno));
                return;
            }
            w = 0;
        }
        data = (const char *)data + w;
        len -= (size_t)w;
    }
    if (c->out_len + len > c->out_cap) {
        c->out_cap = (c->out_len + len) * 2;
        c->out = xrealloc(c->out, c->out_cap);
    }
    memcpy(c->out + c->out_len, data, len);
    c->out_len += len;
    if (!c->want_out) {
        c->want_out = 1;
        ep_mod(c);
    }
}

static void conn_flush(conn_t *c) {
    while (c->out_off < c->out_len) {
        ssize_t w = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            conn_close(c, strerror(errno));
            return;
        }
        c->out_off += (size_t)w;
    }
    c->out_len = c->out_off = 0;
    if (c->want_out) {
        c->want_out = 0;
        ep_mod(c);
    }
}

static int tcp_connect(conn_t *c) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket: %s", strerror(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)cfg.port)};
    inet_pton(AF_INET, cfg.host, &sa.sin_addr);
    c->fd = fd;
    c->state = S_CONNECTING;
    c->want_out = 1;
    c->in_len = c->out_len = c->out_off = 0;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl: %s", strerror(errno));
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EINPROGRESS) {
        conn_close(c, strerror(errno));
        return -1;
    }
    return 0;
}

/* a masked client text frame */
static void ws_send(conn_t *c, int opcode, const char *payload, size_t n) {
    uint8_t hdr[14];
    size_t h = 0;
    hdr[h++] = (uint8_t)(0x80 | opcode);
    if (n < 126) hdr[h++] = (uint8_t)(0x80 | n);
    else if (n < 65536) hdr[h++] = 0x80 | 126, hdr[h++] = (uint8_t)(n >> 8), hdr[h++] = (uint8_t)n;
    else {
        hdr[h++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--) hdr[h++] = (uint8_t)((uint64_t)n >> (8 * i));
    }
    uint32_t r = (uint32_t)rand();
    uint8_t mask[4] = {(uint8_t)r, (uint8_t)(r >> 8), (uint8_t)(r >> 16), (uint8_t)(r >> 24) | 1};
    memcpy(hdr + h, mask, 4);
    h += 4;
    char stackbuf[1024];
    char *buf = h + n <= sizeof stackbuf ? stackbuf : xrealloc(NULL, h + n);
    memcpy(buf, hdr, h);
    for (size_t i = 0; i < n; i++) buf[h + i] = (char)(payload[i] ^ mask[i & 3]);
    conn_write(c, buf, h + n);
    if (buf != stackbuf) free(buf);
}

static void ws_send_text(conn_t *c, const char *s) { ws_send(c, 1, s, strlen(s)); }

static void ws_start_handshake(conn_t *c) {
    char req[512];
    int n = snprintf(req, sizeof req,
                     "GET /app/%s?protocol=7&client=lwbench&version=1.0 HTTP/1.1\r\n"
                     "Host: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                     cfg.key, cfg.host, cfg.port);
    c->state = S_HANDSHAKE;
    conn_write(c, req, (size_t)n);
}

static void record_error(const char *what, const char *p, size_t n) {
    st.errors++;
    if (!st.first_error[0])
        snprintf(st.first_error, sizeof st.first_error, "%s: %.*s", what, (int)(n > 200 ? 200 : n), p);
}

static void on_delivery(const char *p, size_t n, int64_t now) {
    /* data "lw:PHASE:SEQ:TNS:padding" */
    const char *d = memmem(p, n, "\"lw:", 4);
    if (!d) return;
    d += 4;
    const char *end = p + n;
    long ph = 0;
    int64_t sent = 0;
    while (d < end && isdigit((unsigned char)*d)) ph = ph * 10 + (*d++ - '0');
    if (d < end && *d == ':') d++;
    while (d < end && isdigit((unsigned char)*d)) d++; /* seq */
    if (d < end && *d == ':') d++;
    while (d < end && isdigit((unsigned char)*d)) sent = sent * 10 + (*d++ - '0');
    if (ph < 0 || ph >= cfg.nphases) {
        st.other_frames++;
        return;
    }
    phase_res *r = &res[ph];
    r->received++;
    r->t_last_rx = now;
    hist_add(&r->hist, (now - sent) / 1000);
    if (r->t_first_pub) {
        int64_t sec = (now - r->t_first_pub) / 1000000000LL;
        if (sec >= 0 && sec < 600) {
            r->per_sec[sec]++;
            if (sec + 1 > r->per_sec_n) r->per_sec_n = (int)sec + 1;
        }
    }
}

static void ws_on_text(conn_t *c, const char *p, size_t n, int64_t now) {
    if (n > 12 && memmem(p, n < 64 ? n : 64, "\"lwb\"", 5)) {
        on_delivery(p, n, now);
        return;
    }
    if (memmem(p, n, "pusher:connection_established", 29)) {
        if (c->state < S_ESTABLISHED) {
            c->state = S_ESTABLISHED;
            st.established++;
            if (!cfg.idle || cfg.subscribe_idle) {
                char msg[300];
                snprintf(msg, sizeof msg, "{\"event\":\"pusher:subscribe\",\"data\":{\"channel\":\"%s-%d\"}}",
                         cfg.prefix, c->channel);
                ws_send_text(c, msg);
            }
        }
    } else if (memmem(p, n, "pusher_internal:subscription_succeeded", 38)) {
        if (c->state == S_ESTABLISHED) {
            c->state = S_SUBSCRIBED;
            st.subscribed++;
        }
    } else if (memmem(p, n, "\"pusher:ping\"", 13)) {
        st.pings++;
        ws_send_text(c, "{\"event\":\"pusher:pong\",\"data\":{}}");
    } else if (memmem(p, n, "pusher:error", 12) || memmem(p, n, "subscription_error", 18)) {
        record_error("server error frame", p, n);
    } else if (memmem(p, n, "\"lw:", 4)) {
        on_delivery(p, n, now);
    } else {
        st.other_frames++;
    }
}

/* parse complete frames from buf; returns bytes consumed */
static size_t ws_parse(conn_t *c, const char *buf, size_t len, int64_t now) {
    size_t off = 0;
    while (len - off >= 2 && c->fd >= 0) {
        const uint8_t *b = (const uint8_t *)buf + off;
        int opcode = b[0] & 0x0f, masked = b[1] & 0x80;
        uint64_t plen = b[1] & 0x7f;
        size_t h = 2;
        if (plen == 126) {
            if (len - off < 4) break;
            plen = (uint64_t)b[2] << 8 | b[3];
            h = 4;
        } else if (plen == 127) {
            if (len - off < 10) break;
            plen = 0;
            for (int i = 0; i < 8; i++) plen = plen << 8 | b[2 + i];
            h = 10;
        }
        if (masked) h += 4;
        if (len - off < h + plen) break;
        char *payload = (char *)buf + off + h;
        if (masked)
            for (uint64_t i = 0; i < plen; i++) payload[i] ^= (char)b[h - 4 + (i & 3)];
        if (opcode == 1 || opcode == 0) ws_on_text(c, payload, (size_t)plen, now);
        else if (opcode == 9) ws_send(c, 0xA, payload, (size_t)plen);
        else if (opcode == 8) {
            st.ws_close_frames++;
            int code = plen >= 2 ? ((uint8_t)payload[0] << 8 | (uint8_t)payload[1]) : 1005;
            if (!st.first_close_code) st.first_close_code = code;
            char why[200];
            snprintf(why, sizeof why, "server closed with %d %.*s", code, (int)(plen > 2 ? plen - 2 : 0),
                     payload + 2);
            conn_close(c, why);
            return len;
        }
        off += h + (size_t)plen;
    }
    return off;
}

/* ------------------------------------------------------------------ publisher (REST) */

static char pad_buf[8192];

static void pub_send(conn_t *c, long seq, int64_t now) {
    phase_res *r = &res[cur_phase];
    int per = cfg.phases[cur_phase].per_publish;
    char body[20000];
    int bl;
    if (per <= 1) {
        int ch = (int)(seq % cfg.channels);
        bl = snprintf(body, sizeof body, "{\"name\":\"lwb\",\"channel\":\"%s-%d\",\"data\":\"lw:%d:%ld:%lld:%s\"}",
                      cfg.prefix, ch, cur_phase, seq, (long long)now, pad_buf);
        c->expect = subs_per_channel[ch];
    } else {
        /* several channels per trigger (REST "channels", at most 100): round-robin blocks of `per` */
        bl = snprintf(body, sizeof body, "{\"name\":\"lwb\",\"channels\":[");
        c->expect = 0;
        for (int k = 0; k < per; k++) {
            int ch = (int)((seq * per + k) % cfg.channels);
            bl += snprintf(body + bl, sizeof body - (size_t)bl, "%s\"%s-%d\"", k ? "," : "", cfg.prefix, ch);
            c->expect += subs_per_channel[ch];
        }
        bl += snprintf(body + bl, sizeof body - (size_t)bl, "],\"data\":\"lw:%d:%ld:%lld:%s\"}", cur_phase, seq,
                       (long long)now, pad_buf);
    }
    char md5[33], qs[256], sts[512], sig[65];
    md5_hex(body, (size_t)bl, md5);
    long ts = (long)time(NULL);
    int ql = snprintf(qs, sizeof qs, "auth_key=%s&auth_timestamp=%ld&auth_version=1.0&body_md5=%s", cfg.key, ts, md5);
    int sl = snprintf(sts, sizeof sts, "POST\n/apps/%s/events\n%.*s", cfg.app_id, ql, qs);
    hmac_sha256_hex(cfg.secret, sts, (size_t)sl, sig);
    char req[21000];
    int n = snprintf(req, sizeof req,
                     "POST /apps/%s/events?%s&auth_signature=%s HTTP/1.1\r\nHost: %s:%d\r\n"
                     "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
                     cfg.app_id, qs, sig, cfg.host, cfg.port, bl, body);
    c->busy = 1;
    c->sent_ns = now;
    c->phase = cur_phase;
    r->published++;
    if (!r->t_first_pub) r->t_first_pub = now;
    conn_write(c, req, (size_t)n);
}

/* parse HTTP responses in c->in; returns bytes consumed */
static size_t pub_parse(conn_t *c, const char *buf, size_t len, int64_t now) {
    size_t off = 0;
    while (off < len) {
        const char *hend = memmem(buf + off, len - off, "\r\n\r\n", 4);
        if (!hend) break;
        size_t hlen = (size_t)(hend - (buf + off)) + 4;
        int status = 0;
        if (sscanf(buf + off, "HTTP/1.%*d %d", &status) != 1) {
            conn_close(c, "bad HTTP response");
            return len;
        }
        long clen = 0;
        int close_after = 0;
        for (const char *p = buf + off; p < hend; p++) {
            if (*p != '\n') continue;
            if (strncasecmp(p + 1, "content-length:", 15) == 0) clen = strtol(p + 16, NULL, 10);
            else if (strncasecmp(p + 1, "connection: close", 17) == 0) close_after = 1;
        }
        if (len - off < hlen + (size_t)clen) break;
        if (c->busy) {
            phase_res *r = &res[c->phase];
            c->busy = 0;
            if (status == 200) {
                r->acked++;
                r->expected += c->expect;
                r->t_last_ack = now;
            } else {
                r->http_errors++;
                record_error("HTTP error", buf + off, hlen + (size_t)clen);
            }
        }
        off += hlen + (size_t)clen;
        if (close_after) {
            /* Soketi answers every REST call with "Connection: close": open a fresh connection */
            c->reconnect = 1;
            return len;
        }
    }
    return off;
}

/* ------------------------------------------------------------------ event loop */

static char rbuf[1 << 18];

static long pub_reconnects, pub_unexpected_closes;

static void pub_reopen(conn_t *c) {
    conn_close(c, NULL);
    c->reconnect = 0;
    pub_reconnects++;
    tcp_connect(c);
}

/* a publisher connection ended: planned (Connection: close) or not */
static void pub_lost(conn_t *c, const char *why) {
    if (c->busy) {
        res[c->phase].http_errors++;
        c->busy = 0;
        record_error("publisher connection lost with a request in flight", why, strlen(why));
    }
    if (++pub_unexpected_closes > 1000) {
        conn_close(c, why);
        return;
    }
    pub_reopen(c);
}

static void on_readable(conn_t *c, int64_t now) {
    for (int rounds = 0; rounds < 4 && c->fd >= 0; rounds++) {
        /* leftover bytes first, then fresh ones, contiguous in rbuf */
        size_t have = c->in_len;
        if (have) memcpy(rbuf, c->in, have);
        ssize_t n = read(c->fd, rbuf + have, sizeof rbuf - have);
        if (n == 0) {
            if (c->kind == K_PUB) pub_lost(c, "server closed the connection");
            else conn_close(c, "server closed the connection");
            return;
        }
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            if (c->kind == K_PUB) pub_lost(c, strerror(errno));
            else conn_close(c, strerror(errno));
            return;
        }
        now = mono_ns();
        size_t len = have + (size_t)n, off = 0;
        if (c->kind == K_WS && c->state == S_HANDSHAKE) {
            const char *hend = memmem(rbuf, len, "\r\n\r\n", 4);
            if (!hend) {
                off = 0;
            } else {
                if (strncmp(rbuf, "HTTP/1.1 101", 12) != 0) {
                    st.handshake_failed++;
                    conn_close(c, "handshake refused");
                    return;
                }
                off = (size_t)(hend - rbuf) + 4;
                c->state = S_OPEN;
                st.opened++;
            }
        }
        if (c->kind == K_WS && c->state >= S_OPEN) off += ws_parse(c, rbuf + off, len - off, now);
        else if (c->kind == K_PUB) off += pub_parse(c, rbuf, len, now);
        if (c->kind == K_PUB && c->reconnect) {
            pub_reopen(c);
            return;
        }
        if (c->fd < 0) return;
        size_t left = len - off;
        if (left > c->in_cap) {
            c->in_cap = left * 2;
            c->in = xrealloc(c->in, c->in_cap);
        }
        if (left) memmove(c->in, rbuf + off, left);
        c->in_len = left;
        if ((size_t)n < sizeof rbuf - have) return; /* drained */
    }
}

static void on_event(conn_t *c, uint32_t events, int64_t now) {
    if (c->fd < 0) return;
    if (c->state == S_CONNECTING && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
        int err = 0;
        socklen_t l = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
        if (err) {
            if (c->kind == K_WS) st.connect_failed++;
            conn_close(c, strerror(err));
            return;
        }
        c->want_out = 0;
        ep_mod(c);
        if (c->kind == K_WS) ws_start_handshake(c);
        else c->state = S_OPEN;
        return;
    }
    if (events & EPOLLOUT) conn_flush(c);
    if (c->fd >= 0 && (events & (EPOLLIN | EPOLLERR | EPOLLHUP))) on_readable(c, now);
}

static void poll_once(int timeout_ms) {
    struct epoll_event evs[512];
    int n = epoll_wait(ep, evs, 512, timeout_ms);
    if (n < 0 && errno != EINTR) die("epoll_wait: %s", strerror(errno));
    int64_t now = mono_ns();
    for (int i = 0; i < n; i++) on_event(evs[i].data.ptr, evs[i].events, now);
}

static double secs(int64_t ns) { return (double)ns / 1e9; }

/* ------------------------------------------------------------------ phases */

static int run_phase(int pi, int64_t hard_deadline) {
    phase_cfg *p = &cfg.phases[pi];
    phase_res *r = &res[pi];
    cur_phase = pi;
    r->t_start = mono_ns();
    r->cpu_self0 = cpu_self_s();
    r->cpu_srv0 = cpu_pid_s(cfg.server_pid);
    r->cpu_main0 = cpu_main_thread_s(cfg.server_pid);
    int64_t stop_at = r->t_start + (int64_t)(p->max_s * 1e9);
    int64_t interval = p->rate > 0 ? (int64_t)(1e9 / p->rate) : 0;
    int64_t next_due = r->t_start;
    long issued = 0;
    int free_rr = 0;
    /* publish */
    while (1) {
        int64_t now = mono_ns();
        if (now > hard_deadline) {
            r->t_end = now;
            return -1;
        }
        int stop_issuing = issued >= p->count || now >= stop_at;
        int busy = 0;
        for (int i = 0; i < cfg.pub_conns; i++) busy += pubs[i].busy;
        if (stop_issuing && !busy) break;
        if (stop_issuing && now >= stop_at + (int64_t)(cfg.drain_s * 1e9)) break; /* unacknowledged */
        if (!stop_issuing) {
            for (int k = 0; k < cfg.pub_conns && issued < p->count; k++) {
                conn_t *c = &pubs[(free_rr + k) % cfg.pub_conns];
                if (c->fd < 0 || c->busy || c->state != S_OPEN) continue;
                if (interval && now < next_due) break;
                if (interval && now - next_due > 5000000) r->late++;
                pub_send(c, issued, now);
                issued++;
                free_rr = (free_rr + k + 1) % cfg.pub_conns;
                if (interval) next_due += interval;
                now = mono_ns();
                k = -1; /* rescan from the next connection */
            }
        }
        int timeout = 20;
        if (interval && !stop_issuing) {
            int64_t wait = next_due - mono_ns();
            timeout = wait <= 0 ? 0 : (int)((wait + 999999) / 1000000);
            if (timeout > 20) timeout = 20;
        }
        poll_once(timeout);
        int alive = 0;
        for (int i = 0; i < cfg.pub_conns; i++) alive += pubs[i].fd >= 0;
        if (!alive) {
            fprintf(stderr, "lwbench: every publisher connection was closed\n");
            r->t_end = mono_ns();
            r->cpu_self1 = cpu_self_s();
            r->cpu_srv1 = cpu_pid_s(cfg.server_pid);
            r->cpu_main1 = cpu_main_thread_s(cfg.server_pid);
            return -1;
        }
    }
    /* drain deliveries */
    int64_t drain_until = mono_ns() + (int64_t)(cfg.drain_s * 1e9);
    while (r->received < r->expected && mono_ns() < drain_until && mono_ns() < hard_deadline) poll_once(10);
    r->t_end = mono_ns();
    r->cpu_self1 = cpu_self_s();
    r->cpu_srv1 = cpu_pid_s(cfg.server_pid);
    r->cpu_main1 = cpu_main_thread_s(cfg.server_pid);
    /* a short pause so that stragglers of this phase do not land in the next one */
    int64_t pause_until = mono_ns() + 200000000LL;
    while (mono_ns() < pause_until) poll_once(10);
    return 0;
}

static void print_phase_json(int pi, int last) {
    phase_cfg *p = &cfg.phases[pi];
    phase_res *r = &res[pi];
    int64_t first = r->t_first_pub ? r->t_first_pub : r->t_start;
    double pub_s = r->t_last_ack > first ? secs(r->t_last_ack - first) : 0;
    double rx_s = r->t_last_rx > first ? secs(r->t_last_rx - first) : 0;
    double wall = secs(r->t_end - r->t_start);
    double cpu_self = r->cpu_self1 - r->cpu_self0;
    double cpu_srv = r->cpu_srv0 >= 0 ? r->cpu_srv1 - r->cpu_srv0 : -1;
    double cpu_main = r->cpu_main0 >= 0 ? r->cpu_main1 - r->cpu_main0 : -1;
    printf("    {\"name\": \"%s\", \"rate\": %g, \"count\": %ld, \"channels_per_publish\": %d, \"published\": %ld, "
           "\"acked\": %ld, \"http_errors\": %ld, \"late_publishes\": %ld,\n",
           p->name, p->rate, p->count, p->per_publish, r->published, r->acked, r->http_errors, r->late);
    printf("     \"expected\": %ld, \"deliveries\": %ld, \"lost\": %ld, \"publish_seconds\": %.4f, "
           "\"receive_seconds\": %.4f, \"wall_seconds\": %.4f,\n",
           r->expected, r->received, r->expected - r->received, pub_s, rx_s, wall);
    printf("     \"publishes_per_s\": %.1f, \"deliveries_per_s\": %.1f,\n", pub_s > 0 ? r->acked / pub_s : 0,
           rx_s > 0 ? r->received / rx_s : 0);
    printf("     \"latency_us\": {\"p50\": %.0f, \"p90\": %.0f, \"p99\": %.0f, \"p999\": %.0f, \"max\": %llu, "
           "\"mean\": %.1f, \"samples\": %llu},\n",
           hist_pct(&r->hist, 50), hist_pct(&r->hist, 90), hist_pct(&r->hist, 99), hist_pct(&r->hist, 99.9),
           (unsigned long long)r->hist.max_us, r->hist.n ? r->hist.sum_us / r->hist.n : 0,
           (unsigned long long)r->hist.n);
    printf("     \"deliveries_per_second_bucket\": [");
    for (int i = 0; i < r->per_sec_n; i++) printf("%s%ld", i ? ", " : "", r->per_sec[i]);
    printf("],\n");
    printf("     \"harness_cpu_s\": %.3f, \"harness_cpu_pct\": %.1f, \"server_cpu_s\": %.3f, "
           "\"server_cpu_pct\": %.1f, \"server_main_thread_cpu_pct\": %.1f}%s\n",
           cpu_self, wall > 0 ? 100 * cpu_self / wall : 0, cpu_srv, wall > 0 && cpu_srv >= 0 ? 100 * cpu_srv / wall : -1,
           wall > 0 && cpu_main >= 0 ? 100 * cpu_main / wall : -1, last ? "" : ",");
}

/* ------------------------------------------------------------------ main */

static void usage(void) {
    fprintf(stderr,
            "usage: lwbench [--host H] --port P --app-id ID --key K --secret S --conns N [--channels C]\n"
            "               [--prefix NAME] [--server-pid PID] [--pub-conns K] [--payload BYTES]\n"
            "               [--phase NAME:RATE:COUNT:MAXSEC[:CHANNELS_PER_PUBLISH]]... (RATE 0 = as fast as acked)\n"
            "               [--idle [--settle SEC] [--subscribe]] [--timeout SEC] [--drain SEC]\n");
    exit(2);
}

static void raise_nofile(long need) {
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if ((long)rl.rlim_cur >= need) return;
    rlim_t want = (rlim_t)need;
    if (rl.rlim_max < want) rl.rlim_max = want; /* needs root (CAP_SYS_RESOURCE) */
    rl.rlim_cur = want;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
        getrlimit(RLIMIT_NOFILE, &rl);
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        if ((long)rl.rlim_cur < need)
            die("cannot raise RLIMIT_NOFILE to %ld (hard limit %ld): %s", need, (long)rl.rlim_max, strerror(errno));
    }
}

static int self_test(void) {
    char md5[33], sig[65];
    const char *body = "{\"name\":\"foo\",\"channels\":[\"project-3\"],\"data\":\"{\\\"some\\\":\\\"data\\\"}\"}";
    md5_hex(body, strlen(body), md5);
    const char *sts = "POST\n/apps/3/events\nauth_key=278d425bdf160c739803&auth_timestamp=1353088179"
                      "&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f";
    hmac_sha256_hex("7ad3773142a6692b25b8", sts, strlen(sts), sig);
    int ok = strcmp(md5, "ec365a775a4cd0599faeb73354201b6f") == 0 &&
             strcmp(sig, "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c") == 0;
    printf("{\"self_test\": %s, \"md5\": \"%s\", \"signature\": \"%s\"}\n", ok ? "true" : "false", md5, sig);
    return ok ? 0 : 1;
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
#define ARG (i + 1 < argc ? argv[++i] : (usage(), ""))
        if (!strcmp(a, "--self-test")) return self_test();
        else if (!strcmp(a, "--host")) cfg.host = ARG;
        else if (!strcmp(a, "--port")) cfg.port = atoi(ARG);
        else if (!strcmp(a, "--app-id")) cfg.app_id = ARG;
        else if (!strcmp(a, "--key")) cfg.key = ARG;
        else if (!strcmp(a, "--secret")) cfg.secret = ARG;
        else if (!strcmp(a, "--conns")) cfg.conns = atoi(ARG);
        else if (!strcmp(a, "--channels")) cfg.channels = atoi(ARG);
        else if (!strcmp(a, "--prefix")) cfg.prefix = ARG;
        else if (!strcmp(a, "--server-pid")) cfg.server_pid = atoi(ARG);
        else if (!strcmp(a, "--pub-conns")) cfg.pub_conns = atoi(ARG);
        else if (!strcmp(a, "--payload")) cfg.payload = atoi(ARG);
        else if (!strcmp(a, "--timeout")) cfg.timeout_s = atof(ARG);
        else if (!strcmp(a, "--drain")) cfg.drain_s = atof(ARG);
        else if (!strcmp(a, "--connect-batch")) cfg.connect_batch = atoi(ARG);
        else if (!strcmp(a, "--idle")) cfg.idle = 1;
        else if (!strcmp(a, "--subscribe")) cfg.subscribe_idle = 1;
        else if (!strcmp(a, "--settle")) cfg.settle_s = atof(ARG);
        else if (!strcmp(a, "--phase")) {
            if (cfg.nphases >= 16) die("at most 16 phases");
            phase_cfg *p = &cfg.phases[cfg.nphases++];
            p->per_publish = 1;
            int got = sscanf(ARG, "%31[^:]:%lf:%ld:%lf:%d", p->name, &p->rate, &p->count, &p->max_s, &p->per_publish);
            if (got < 4 || p->per_publish < 1 || p->per_publish > 100) usage();
        } else
            usage();
    }
    if (cfg.conns < 1 || cfg.channels < 1 || cfg.pub_conns < 1 || cfg.pub_conns > 64) usage();
    if (cfg.channels > cfg.conns) cfg.channels = cfg.conns;
    if (cfg.payload < 0 || cfg.payload >= (int)sizeof pad_buf) usage();
    memset(pad_buf, 'x', (size_t)cfg.payload);
    pad_buf[cfg.payload] = 0;
    srand((unsigned)getpid());
    raise_nofile(cfg.conns + cfg.pub_conns + 256);

    ep = epoll_create1(EPOLL_CLOEXEC);
    ws = calloc((size_t)cfg.conns, sizeof *ws);
    pubs = calloc((size_t)cfg.pub_conns, sizeof *pubs);
    subs_per_channel = calloc((size_t)cfg.channels, sizeof(int));
    res = calloc((size_t)(cfg.nphases ? cfg.nphases : 1), sizeof *res);
    if (!ws || !pubs || !subs_per_channel || !res) die("out of memory");
    for (int i = 0; i < cfg.conns; i++) {
        ws[i].fd = -1, ws[i].kind = K_WS, ws[i].idx = i, ws[i].channel = i % cfg.channels;
        subs_per_channel[ws[i].channel]++;
    }
    t0_ns = mono_ns();
    int64_t hard_deadline = t0_ns + (int64_t)(cfg.timeout_s * 1e9);
    double cpu0 = cpu_self_s(), srv_cpu0 = cpu_pid_s(cfg.server_pid);
    long rss_before = rss_kib(cfg.server_pid);

    /* connect, a bounded number of handshakes in flight */
    int target_state = (cfg.idle && !cfg.subscribe_idle) ? S_ESTABLISHED : S_SUBSCRIBED;
    long next = 0;
    int64_t last_progress = mono_ns();
    long last_done = -1;
    int failed = 0;
    while (1) {
        long done = target_state == S_SUBSCRIBED ? st.subscribed : st.established;
        if (done >= cfg.conns) break;
        int64_t now = mono_ns();
        if (done != last_done) last_done = done, last_progress = now;
        if (now > hard_deadline || now - last_progress > 15000000000LL || st.closed > 0) {
            failed = 1;
            break;
        }
        long in_flight = st.started - (target_state == S_SUBSCRIBED ? st.subscribed : st.established) - st.closed;
        while (next < cfg.conns && in_flight < cfg.connect_batch) {
            ws[next].state = S_CONNECTING;
            st.started++;
            tcp_connect(&ws[next++]);
            in_flight++;
        }
        poll_once(10);
    }
    int64_t t_connected = mono_ns();
    double connect_s = secs(t_connected - t0_ns);
    double cpu_connect = cpu_self_s() - cpu0;
    double srv_cpu_connect = srv_cpu0 >= 0 ? cpu_pid_s(cfg.server_pid) - srv_cpu0 : -1;
    if (failed) fprintf(stderr, "lwbench: connecting failed: %ld/%d ready, %ld closed; %s\n", last_done, cfg.conns,
                        st.closed, st.first_error);

    long rss_after = -1;
    int phases_ok = 1;
    if (!failed && cfg.idle) {
        int64_t until = mono_ns() + (int64_t)(cfg.settle_s * 1e9);
        while (mono_ns() < until && st.closed == 0) poll_once(50);
        rss_after = rss_kib(cfg.server_pid);
    } else if (!failed) {
        for (int i = 0; i < cfg.pub_conns; i++) {
            pubs[i].fd = -1, pubs[i].kind = K_PUB, pubs[i].idx = i;
            tcp_connect(&pubs[i]);
        }
        int64_t until = mono_ns() + 5000000000LL;
        while (mono_ns() < until) {
            int open = 0;
            for (int i = 0; i < cfg.pub_conns; i++) open += pubs[i].state == S_OPEN;
            if (open == cfg.pub_conns) break;
            poll_once(10);
        }
        for (int pi = 0; pi < cfg.nphases; pi++) {
            fprintf(stderr, "lwbench: phase %s\n", cfg.phases[pi].name);
            if (run_phase(pi, hard_deadline) < 0) {
                phases_ok = 0;
                break;
            }
        }
    }
    double total_s = secs(mono_ns() - t0_ns);
    double cpu_total = cpu_self_s() - cpu0;

    printf("{\n  \"ok\": %s,\n", !failed && phases_ok && st.closed == 0 ? "true" : "false");
    printf("  \"conns\": %d, \"channels\": %d, \"pub_conns\": %d, \"payload\": %d, \"server_pid\": %d,\n", cfg.conns,
           cfg.channels, cfg.pub_conns, cfg.payload, cfg.server_pid);
    printf("  \"connect\": {\"established\": %ld, \"subscribed\": %ld, \"seconds\": %.3f, \"per_s\": %.1f, "
           "\"harness_cpu_s\": %.3f, \"server_cpu_s\": %.3f},\n",
           st.established, st.subscribed, connect_s, connect_s > 0 ? cfg.conns / connect_s : 0, cpu_connect,
           srv_cpu_connect);
    printf("  \"closed\": %ld, \"connect_failed\": %ld, \"handshake_failed\": %ld, \"server_errors\": %ld, "
           "\"close_frames\": %ld, \"first_close_code\": %d, \"pings\": %ld, \"other_frames\": %ld,\n",
           st.closed, st.connect_failed, st.handshake_failed, st.errors, st.ws_close_frames, st.first_close_code,
           st.pings, st.other_frames);
    printf("  \"first_error\": \"");
    for (const char *p = st.first_error; *p; p++) {
        if (*p == '"' || *p == '\\') putchar('\\');
        putchar((unsigned char)*p < 32 ? ' ' : *p);
    }
    printf("\",\n");
    if (cfg.idle) {
        printf("  \"rss_before_kib\": %ld, \"rss_after_kib\": %ld, \"rss_per_conn_bytes\": %.1f,\n", rss_before,
               rss_after, rss_after > 0 && rss_before > 0 ? (rss_after - rss_before) * 1024.0 / cfg.conns : -1);
    }
    printf("  \"publisher_reconnects\": %ld, \"publisher_unexpected_closes\": %ld,\n", pub_reconnects,
           pub_unexpected_closes);
    printf("  \"harness_cpu_s\": %.3f, \"total_seconds\": %.3f,\n  \"phases\": [\n", cpu_total, total_s);
    for (int pi = 0; pi < cfg.nphases && !cfg.idle; pi++) print_phase_json(pi, pi == cfg.nphases - 1);
    printf("  ]\n}\n");
    fflush(stdout);
    for (int i = 0; i < cfg.conns; i++) conn_close(&ws[i], NULL);
    for (int i = 0; i < cfg.pub_conns; i++) conn_close(&pubs[i], NULL);
    return !failed && phases_ok ? 0 : 1;
}
