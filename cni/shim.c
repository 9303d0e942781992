/* podnet-cni, compiled form: `podnet-cni install --form c` compiles it on the node; the podnet
 * image builds it with -static (deploy/Containerfile) and `podnet-cni install --form static`
 * copies that build, which needs no libc, loader or interpreter on the host. Uses only libc
 * calls that link statically without NSS (no name lookups).
 *
 * Byte-for-byte the same protocol as shim.py (see podnet.cni.daemon for the wire
 * format): VERSION is answered here; every other verb is forwarded, CNI_* variables
 * plus stdin, to the node daemon's unix socket, and the daemon's stdout and exit
 * status are passed back. Daemon unreachable: error 11 (STATUS: 50), a permission error on
 * the socket: 5, as in shim.py.
 * The socket comes from the config's top-level "socket" string, else the path baked
 * in at install (PODNET_BAKED_SOCKET), else $PODNET_CNI_SOCKET, else the default.
 * Why it exists: a Python start costs 6-8 ms per exec on an idle 2-vCPU VM and far more
 * under load; this costs about 1 ms (bench/results/cni.md).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#ifndef PODNET_BAKED_SOCKET
#define PODNET_BAKED_SOCKET ""
#endif
#define DEFAULT_SOCKET "/run/podnet/cni.sock"

extern char **environ;

struct buf { char *p; size_t n, cap; };

static void put(struct buf *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 4096;
        if (!(b->p = realloc(b->p, b->cap))) { perror("podnet-cni"); exit(1); }
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}

static int read_all(int fd, struct buf *b) {
    char chunk[65536];
    ssize_t r;
    while ((r = read(fd, chunk, sizeof chunk)) != 0) {
        if (r < 0) { if (errno == EINTR) continue; return -1; }
        put(b, chunk, (size_t)r);
    }
    return 0;
}

static void json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputc('"', f);
}

static int fail(int code, const char *path, const char *why) {
    char msg[1024];
    if (code == 50) snprintf(msg, sizeof msg, "podnet-cni daemon at %s is not available: %s", path, why);
    else if (code == 5) snprintf(msg, sizeof msg, "podnet-cni daemon at %s refuses this plugin (%s): run the plugin "
                                 "as a user that may connect to the socket", path, why);
    else snprintf(msg, sizeof msg, "podnet-cni daemon at %s is not reachable (%s); try again later", path, why);
    printf("{\"cniVersion\": \"1.1.0\", \"code\": %d, \"msg\": ", code);
    json_string(stdout, msg);
    printf("}\n");
    return 1;
}

/* The error code for a failed socket call, as shim.py maps it: STATUS 50; a permission error 5 (I/O
 * failure: retrying cannot help); anything else (daemon down or starting) 11, try again later. */
static int unreachable(int status, int err) {
    return status ? 50 : (err == EACCES || err == EPERM) ? 5 : 11;
}

/* The string value of the top-level "socket" key, without a JSON parser (as shim.py does). */
static int socket_from_config(const char *in, size_t n, char *out, size_t cap) {
    const char *k = memmem(in, n, "\"socket\"", 8), *end = in + n;
    if (!k) return 0;
    const char *p = k + 8;
    while (p < end && strchr(" \t\r\n", *p)) p++;
    if (p >= end || *p++ != ':') return 0;
    while (p < end && strchr(" \t\r\n", *p)) p++;
    if (p >= end || *p++ != '"') return 0;
    const char *q = memchr(p, '"', (size_t)(end - p));
    if (!q || memchr(p, '\\', (size_t)(q - p)) || (size_t)(q - p) >= cap) return 0;
    memcpy(out, p, (size_t)(q - p));
    out[q - p] = 0;
    return 1;
}

int main(void) {
    const char *cmd = getenv("CNI_COMMAND");
    if (cmd && !strcmp(cmd, "VERSION")) {
        puts("{\"cniVersion\": \"1.1.0\", \"supportedVersions\": [\"0.3.0\", \"0.3.1\", \"0.4.0\", \"1.0.0\", \"1.1.0\"]}");
        return 0;
    }
    int status = cmd && !strcmp(cmd, "STATUS");
    struct buf in = {0}, req = {0}, resp = {0};
    if (read_all(0, &in) < 0) return fail(11, "-", "cannot read stdin");

    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    const char *env = getenv("PODNET_CNI_SOCKET");
    if (!socket_from_config(in.p ? in.p : "", in.n, path, sizeof path))
        snprintf(path, sizeof path, "%s", PODNET_BAKED_SOCKET[0] ? PODNET_BAKED_SOCKET : env && *env ? env : DEFAULT_SOCKET);

    for (char **e = environ; *e; e++)
        if (!strncmp(*e, "CNI_", 4)) put(&req, *e, strlen(*e) + 1);
    put(&req, "", 1);
    if (in.n) put(&req, in.p, in.n);

    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
    struct timeval tv = {.tv_sec = 300};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof a) < 0) return fail(unreachable(status, errno), path, strerror(errno));
    for (size_t off = 0; off < req.n;) {
        ssize_t w = write(s, req.p + off, req.n - off);
        if (w < 0) { if (errno == EINTR) continue; return fail(unreachable(status, errno), path, strerror(errno)); }
        off += (size_t)w;
    }
    shutdown(s, SHUT_WR);
    if (read_all(s, &resp) < 0) return fail(unreachable(status, errno), path, strerror(errno));
    char *nl = resp.n ? memchr(resp.p, '\n', resp.n) : NULL;
    if (!nl || nl == resp.p) return fail(status ? 50 : 11, path, "daemon closed the connection without an answer");
    int code = atoi(resp.p);
    fwrite(nl + 1, 1, resp.n - (size_t)(nl + 1 - resp.p), stdout);
    return code ? 1 : 0;
}
