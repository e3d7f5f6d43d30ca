/* openloop: the testbed's constant-rate (open-loop) HTTP/1.1 load generator.
 *
 *   openloop --host ADDR --port N --rate R --connections C --duration S [--timeout S]
 *            [--route WEIGHT:PATH ...] [--seed N] [--vary none|query|header] [--interval-ms N]
 *
 * Request k (k = 0, 1, ...) is due at t0 + k/R and goes on connection k mod C, whether or not the
 * earlier answers on that connection have arrived (HTTP/1.1 pipelining keeps the schedule on
 * keep-alive connections). Each answer (framed by Content-Length) is recorded twice, in nanoseconds:
 *   corrected   from the request's intended send time (wrk2's correction: no coordinated omission);
 *   uncorrected from when a closed-loop client could have sent it: its actual send or the previous
 *               answer on its connection, whichever is later (what wrk measures).
 * Histograms are log-linear (HdrHistogram's layout, 128 sub-buckets per power of two: value error
 * <= 1/128 from 1 ns to 2^36 ns, 68 s). A request is never abandoned: one slower than --timeout is
 * recorded at its latency and counted as a timeout; one unanswered when the drain (--timeout after
 * the schedule) ends is recorded at its latency so far and counted as unanswered and as a timeout.
 * A connection the server closes is opened again and its unanswered requests are sent again (their
 * intended times kept). A generator behind its schedule catches up until the drain ends; requests never
 * sent are "unsent", and so are the rest of the schedule once MAX_WAITING requests wait for answers
 * ("capped": the server, not the generator, fell behind; it bounds the memory). One JSON line on stdout
 * at the end; every run is bounded by 2 s of connecting + duration + timeout.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define SUB_BITS 7                     /* 128 sub-buckets per power of two */
#define HALF (1 << SUB_BITS)
#define MAX_NS ((int64_t)1 << 36)
#define BUCKETS ((36 - SUB_BITS + 1) * HALF + HALF)
#define MAX_ROUTES 16
#define IN_SIZE 65536
#define MAX_HEAD 16384
#define MAX_WAITING 2000000 /* sent, unanswered: past it the rest of the schedule is unsent ("capped") */

typedef struct { uint64_t counts[BUCKETS]; } histogram;

static int bucket_of(int64_t v) {
    if (v < 0) v = 0;
    if (v >= MAX_NS) v = MAX_NS - 1;
    int msb = 63 - __builtin_clzll((uint64_t)v | (2 * HALF - 1));
    int shift = msb - SUB_BITS;
    return (shift + 1) * HALF + (int)(v >> shift) - HALF;
}

static int64_t lowest_of(int index) {
    if (index < 2 * HALF) return index;
    int shift = index / HALF - 1;
    return (int64_t)(index % HALF + HALF) << shift;
}

static void record(histogram *h, int64_t v) { h->counts[bucket_of(v)]++; }

typedef struct { int64_t intended, sent; uint64_t id; int route; } request;

typedef struct {
    int fd, connecting, reconnect;
    char *out; size_t out_len, out_off, out_cap;
    uint64_t written;                 /* bytes handed to the kernel since the connection opened */
    request *q; size_t q_head, q_len, q_cap, q_unsent; /* q_unsent: entries at the tail not fully written */
    uint64_t *q_end;                  /* per entry: `written` once its last byte is out */
    char in[IN_SIZE]; size_t in_len;
    int64_t body_left; int status; int in_body;
    int64_t head_since;               /* when the head request could have been sent by a closed loop */
    int want_out;
} conn;

static struct {
    const char *host, *port; double rate; int connections; double duration, timeout;
    int routes; const char *paths[MAX_ROUTES]; double weights[MAX_ROUTES]; uint64_t seed;
    int vary; /* 0 none, 1 query, 2 header */ int interval_ms;
} opt = {.port = "80", .connections = 1, .timeout = 2, .seed = 1, .interval_ms = 250};

static struct addrinfo *target;
static int ep;
static conn *conns;
static histogram corrected, uncorrected, per_route[MAX_ROUTES];
static uint64_t answered, bytes, e_connect, e_read, e_write, e_status, e_timeout, unanswered, reconnects,
    resent, route_count[MAX_ROUTES];
static int64_t t0, timeout_ns, interval_ns;
static uint64_t *series; /* per interval: issued, answered, sum corrected us, max corrected us */
static size_t intervals;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void die(const char *what) { fprintf(stderr, "openloop: %s\n", what); exit(2); }

static void *grow(void *p, size_t size) {
    p = realloc(p, size);
    if (!p) die("out of memory");
    return p;
}

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void append(conn *c, const char *s, size_t n) {
    if (c->out_len + n > c->out_cap) {
        if (c->out_off) { memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
                          c->out_len -= c->out_off; c->out_off = 0; }
        while (c->out_len + n > c->out_cap) { c->out_cap = c->out_cap ? 2 * c->out_cap : 4096;
                                              c->out = grow(c->out, c->out_cap); }
    }
    memcpy(c->out + c->out_len, s, n);
    c->out_len += n;
}

static void format_request(conn *c, const request *r) {
    char buf[MAX_HEAD];
    const char *path = opt.paths[r->route];
    int n;
    if (opt.vary == 1)
        n = snprintf(buf, sizeof buf, "GET %s%cn=%llu HTTP/1.1\r\nHost: %s\r\n\r\n", path,
                     strchr(path, '?') ? '&' : '?', (unsigned long long)r->id, opt.host);
    else if (opt.vary == 2)
        n = snprintf(buf, sizeof buf, "GET %s HTTP/1.1\r\nHost: %s\r\nX-Request-Id: %llu\r\n\r\n", path,
                     opt.host, (unsigned long long)r->id);
    else
        n = snprintf(buf, sizeof buf, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, opt.host);
    append(c, buf, (size_t)n);
}

static request *q_at(conn *c, size_t i) { return &c->q[(c->q_head + i) % c->q_cap]; }

static void q_push(conn *c, request r) {
    if (c->q_len == c->q_cap) { /* grow the ring, unrolled to start at 0 */
        size_t cap = c->q_cap ? 2 * c->q_cap : 64;
        request *q = grow(NULL, cap * sizeof *q);
        uint64_t *end = grow(NULL, cap * sizeof *end);
        for (size_t i = 0; i < c->q_len; i++) {
            q[i] = *q_at(c, i);
            end[i] = c->q_end[(c->q_head + i) % c->q_cap];
        }
        free(c->q); free(c->q_end);
        c->q = q; c->q_end = end; c->q_cap = cap; c->q_head = 0;
    }
    size_t at = (c->q_head + c->q_len) % c->q_cap;
    c->q[at] = r;
    format_request(c, &c->q[at]);
    c->q_end[at] = c->written + (c->out_len - c->out_off);
    c->q_len++;
    c->q_unsent++;
}

static void set_events(conn *c, int want_out) {
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | (want_out ? EPOLLOUT : 0), .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) == 0) c->want_out = want_out;
}

static void open_conn(conn *c) {
    c->fd = socket(target->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) die("socket() failed (open-file limit?)");
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->connecting = 1;
    if (connect(c->fd, target->ai_addr, target->ai_addrlen) < 0 && errno != EINPROGRESS) e_connect++;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
    c->want_out = 1;
    c->written = 0; c->in_len = 0; c->in_body = 0; c->body_left = 0;
}

/* The server closed or broke the connection: open it again and send its unanswered requests again. */
static void reopen(conn *c, int64_t now) {
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    reconnects++;
    open_conn(c);
    c->out_len = c->out_off = 0;
    for (size_t i = 0; i < c->q_len; i++) {
        request *r = q_at(c, i);
        format_request(c, r);
        c->q_end[(c->q_head + i) % c->q_cap] = c->out_len;
        r->sent = 0;
    }
    resent += c->q_len;
    c->q_unsent = c->q_len;
    c->head_since = now;
}

static void flush(conn *c, int64_t now) {
    if (c->connecting || c->out_off == c->out_len) return;
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN) break;
            e_write++;
            reopen(c, now);
            return;
        }
        c->out_off += (size_t)n;
        c->written += (uint64_t)n;
    }
    while (c->q_unsent) { /* requests whose last byte is now out count as sent */
        size_t i = c->q_len - c->q_unsent;
        if (c->q_end[(c->q_head + i) % c->q_cap] > c->written) break;
        q_at(c, i)->sent = now;
        c->q_unsent--;
    }
    if (c->out_off == c->out_len) c->out_off = c->out_len = 0;
    int pending = c->out_len > 0;
    if (pending != c->want_out) set_events(c, pending);
}

static void complete(conn *c, int64_t now) {
    if (c->q_len == 0) { e_read++; return; } /* an answer to nothing */
    request *r = q_at(c, 0);
    int64_t late = now - r->intended;
    int64_t start = r->sent > c->head_since ? r->sent : c->head_since;
    if (r->sent == 0) start = now; /* answered before we saw the send finish: same instant */
    record(&corrected, late);
    record(&uncorrected, now - start);
    record(&per_route[r->route], late);
    route_count[r->route]++;
    answered++;
    if (late > timeout_ns) e_timeout++;
    if (c->status > 399) e_status++;
    size_t slot = (size_t)((r->intended - t0) / interval_ns);
    if (slot < intervals) {
        uint64_t us = (uint64_t)(late / 1000);
        series[4 * slot + 1]++;
        series[4 * slot + 2] += us;
        if (us > series[4 * slot + 3]) series[4 * slot + 3] = us;
    }
    c->q_head = (c->q_head + 1) % c->q_cap;
    c->q_len--;
    if (c->q_unsent > c->q_len) c->q_unsent = c->q_len;
    c->head_since = now;
}

static int64_t content_length(const char *head, size_t len) {
    for (const char *p = head; p < head + len; ) {
        const char *eol = memmem(p, (size_t)(head + len - p), "\r\n", 2);
        if (!eol) break;
        if ((size_t)(eol - p) > 15 && strncasecmp(p, "content-length:", 15) == 0) return atoll(p + 15);
        p = eol + 2;
    }
    return -1;
}

static void on_readable(conn *c, int64_t now) {
    ssize_t n = recv(c->fd, c->in + c->in_len, IN_SIZE - c->in_len, 0);
    if (n <= 0) {
        if (n < 0 && errno == EAGAIN) return;
        if (n < 0) e_read++; /* a close (nginx: keepalive_requests) only resends */
        reopen(c, now);
        return;
    }
    bytes += (uint64_t)n;
    c->in_len += (size_t)n;
    size_t pos = 0;
    while (pos < c->in_len) {
        if (c->in_body) {
            size_t take = (size_t)c->body_left < c->in_len - pos ? (size_t)c->body_left : c->in_len - pos;
            pos += take;
            c->body_left -= (int64_t)take;
            if (c->body_left == 0) { c->in_body = 0; complete(c, now); }
            continue;
        }
        char *end = memmem(c->in + pos, c->in_len - pos, "\r\n\r\n", 4);
        if (!end) {
            if (c->in_len - pos > MAX_HEAD) { e_read++; reopen(c, now); return; }
            break;
        }
        size_t head = (size_t)(end - (c->in + pos)) + 4;
        int64_t length = content_length(c->in + pos, head);
        if (c->in_len - pos < 12 || length < 0) { e_read++; reopen(c, now); return; } /* no framing we read */
        c->status = atoi(c->in + pos + 9);
        pos += head;
        c->body_left = length;
        c->in_body = 1;
        if (length == 0) { c->in_body = 0; complete(c, now); }
    }
    memmove(c->in, c->in + pos, c->in_len - pos);
    c->in_len -= pos;
}

static void on_connected(conn *c, int64_t now) {
    int error = 0;
    socklen_t len = sizeof error;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &error, &len);
    if (error) { e_connect++; c->reconnect = 1; return; }
    c->connecting = 0;
    if (c->head_since < now && c->q_len == 0) c->head_since = now;
    set_events(c, c->out_len > 0);
    flush(c, now);
}

static void print_histogram(const char *name, const histogram *h) {
    printf("\"%s\":[", name);
    int first = 1;
    for (int i = 0; i < BUCKETS; i++)
        if (h->counts[i]) { printf("%s[%lld,%llu]", first ? "" : ",", (long long)lowest_of(i),
                                   (unsigned long long)h->counts[i]); first = 0; }
    printf("]");
}

static void usage(void) {
    die("usage: openloop --host ADDR --port N --rate R --connections C --duration S [--timeout S] "
        "[--route WEIGHT:PATH ...] [--seed N] [--vary none|query|header] [--interval-ms N]");
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) usage();
        i++;
        if (!strcmp(a, "--host")) opt.host = v;
        else if (!strcmp(a, "--port")) opt.port = v;
        else if (!strcmp(a, "--rate")) opt.rate = atof(v);
        else if (!strcmp(a, "--connections")) opt.connections = atoi(v);
        else if (!strcmp(a, "--duration")) opt.duration = atof(v);
        else if (!strcmp(a, "--timeout")) opt.timeout = atof(v);
        else if (!strcmp(a, "--seed")) opt.seed = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--interval-ms")) opt.interval_ms = atoi(v);
        else if (!strcmp(a, "--vary")) opt.vary = !strcmp(v, "query") ? 1 : !strcmp(v, "header") ? 2 : 0;
        else if (!strcmp(a, "--route")) {
            char *colon = strchr(v, ':');
            if (!colon || opt.routes == MAX_ROUTES) usage();
            opt.weights[opt.routes] = atof(v);
            opt.paths[opt.routes++] = colon + 1;
        } else usage();
    }
    if (!opt.host || opt.rate <= 0 || opt.connections < 1 || opt.duration <= 0 || opt.interval_ms < 1) usage();
    if (!opt.routes) { opt.paths[0] = "/"; opt.weights[0] = 1; opt.routes = 1; }
    double weight_total = 0;
    for (int r = 0; r < opt.routes; r++) weight_total += opt.weights[r];
    signal(SIGPIPE, SIG_IGN);

    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST};
    if (getaddrinfo(opt.host, opt.port, &hints, &target)) die("--host must be a numeric address");
    ep = epoll_create1(EPOLL_CLOEXEC);
    conns = calloc((size_t)opt.connections, sizeof *conns);
    if (!conns) die("out of memory");
    timeout_ns = (int64_t)(opt.timeout * 1e9);
    interval_ns = (int64_t)opt.interval_ms * 1000000;
    intervals = (size_t)((opt.duration * 1000 + opt.interval_ms - 1) / opt.interval_ms);
    series = calloc(4 * intervals, sizeof *series);

    int64_t start = now_ns();
    for (int i = 0; i < opt.connections; i++) { open_conn(&conns[i]); conns[i].head_since = start; }
    /* Connect first (at most 2 s), then start the schedule. */
    struct epoll_event events[256];
    int open = 0;
    while (open < opt.connections && now_ns() - start < 2000000000LL) {
        int n = epoll_wait(ep, events, 256, 100);
        for (int i = 0; i < n; i++) {
            conn *c = events[i].data.ptr;
            if (c->connecting && (events[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
                on_connected(c, now_ns());
                if (c->reconnect) { c->reconnect = 0; reopen(c, now_ns()); } else open++;
            }
        }
    }

    const uint64_t total = (uint64_t)(opt.rate * opt.duration + 0.5);
    const double step_ns = 1e9 / opt.rate;
    t0 = now_ns();
    const int64_t t_end = t0 + (int64_t)(opt.duration * 1e9), drain_end = t_end + timeout_ns;
    uint64_t k = 0, seed = opt.seed;
    int64_t late_max = 0, last_issue = t0;
    int capped = 0;
    int any_reconnect = 0;
    for (;;) {
        int64_t now = now_ns();
        if (k < total && now < drain_end && !capped) { /* a generator behind its schedule catches up, up to the drain's end */
            int64_t due = t0 + (int64_t)(k * step_ns);
            if (due <= now) {
                if (now - due > late_max) late_max = now - due;
                for (; k < total && (due = t0 + (int64_t)(k * step_ns)) <= now; k++) {
                    if (answered + MAX_WAITING <= k) { capped = 1; break; } /* the server took too few */
                    int route = 0;
                    if (opt.routes > 1) {
                        double pick = (double)(splitmix(&seed) >> 11) / 9007199254740992.0 * weight_total;
                        while (route < opt.routes - 1 && (pick -= opt.weights[route]) >= 0) route++;
                    }
                    conn *c = &conns[k % (uint64_t)opt.connections];
                    q_push(c, (request){.intended = due, .sent = 0, .id = k, .route = route});
                    size_t slot = (size_t)((due - t0) / interval_ns);
                    if (slot < intervals) series[4 * slot]++;
                }
                for (int i = 0; i < opt.connections; i++) /* a full socket waits for EPOLLOUT */
                    if (!conns[i].want_out) flush(&conns[i], now);
                last_issue = now;
            }
        }
        int issuing = k < total && now < drain_end && !capped;
        if (!issuing) {
            uint64_t waiting = 0;
            for (int i = 0; i < opt.connections; i++) waiting += conns[i].q_len;
            if (waiting == 0 || now >= drain_end) break;
        }
        if (any_reconnect) {
            any_reconnect = 0;
            for (int i = 0; i < opt.connections; i++)
                if (conns[i].reconnect) { conns[i].reconnect = 0; reopen(&conns[i], now); }
        }
        int64_t wait = issuing ? t0 + (int64_t)(k * step_ns) - now : drain_end - now;
        if (wait > 10000000) wait = 10000000; /* look at the clock at least every 10 ms */
        if (wait < 0) wait = 0;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = wait};
        int n = epoll_pwait2(ep, events, 256, &ts, NULL);
        now = now_ns();
        for (int i = 0; i < n; i++) {
            conn *c = events[i].data.ptr;
            uint32_t e = events[i].events;
            if (c->connecting) {
                if (e & (EPOLLOUT | EPOLLERR | EPOLLHUP)) {
                    on_connected(c, now);
                    if (c->reconnect) any_reconnect = 1;
                }
                continue;
            }
            if (e & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP)) on_readable(c, now);
            if ((e & EPOLLOUT) && !c->connecting) flush(c, now);
        }
    }
    int64_t finished = now_ns();
    for (int i = 0; i < opt.connections; i++) { /* never dropped: recorded at their latency so far */
        conn *c = &conns[i];
        for (size_t j = 0; j < c->q_len; j++) {
            request *r = q_at(c, j);
            record(&corrected, finished - r->intended);
            record(&uncorrected, finished - (r->sent ? r->sent : finished));
            record(&per_route[r->route], finished - r->intended);
            route_count[r->route]++;
            unanswered++;
            e_timeout++;
        }
    }

    printf("{\"tool\":\"openloop\",\"rate\":%.3f,\"connections\":%d,\"duration_us\":%lld,\"scheduled\":%llu,"
           "\"sent\":%llu,\"unsent\":%llu,\"requests\":%llu,\"unanswered\":%llu,\"bytes\":%llu,\"reconnects\":%llu,"
           "\"resent\":%llu,\"capped\":%s,\"late_max_us\":%lld,\"issued_us\":%lld,\"drain_us\":%lld,"
           "\"errors\":{\"connect\":%llu,\"read\":%llu,\"write\":%llu,\"status\":%llu,\"timeout\":%llu},",
           opt.rate, opt.connections, (long long)((t_end - t0) / 1000), (unsigned long long)total,
           (unsigned long long)k, (unsigned long long)(total - k), (unsigned long long)answered,
           (unsigned long long)unanswered, (unsigned long long)bytes, (unsigned long long)reconnects,
           (unsigned long long)resent, capped ? "true" : "false", (long long)(late_max / 1000), (long long)((last_issue - t0) / 1000),
           (long long)((finished - t_end) / 1000),
           (unsigned long long)e_connect, (unsigned long long)e_read, (unsigned long long)e_write,
           (unsigned long long)e_status, (unsigned long long)e_timeout);
    print_histogram("histogram_ns", &corrected);
    printf(",");
    print_histogram("uncorrected_ns", &uncorrected);
    printf(",\"routes\":[");
    for (int r = 0; r < opt.routes; r++) {
        printf("%s{\"path\":\"%s\",\"weight\":%g,\"requests\":%llu,", r ? "," : "", opt.paths[r], opt.weights[r],
               (unsigned long long)route_count[r]);
        print_histogram("histogram_ns", &per_route[r]);
        printf("}");
    }
    printf("],\"interval_ms\":%d,\"series\":[", opt.interval_ms);
    for (size_t s = 0; s < intervals; s++)
        printf("%s[%llu,%llu,%llu,%llu]", s ? "," : "", (unsigned long long)series[4 * s],
               (unsigned long long)series[4 * s + 1], (unsigned long long)series[4 * s + 2],
               (unsigned long long)series[4 * s + 3]);
    printf("]}\n");
    return 0;
}
