/* A static probe run inside containers by the tests: it tries system calls a container
 * must not be able to make and prints one line per call, "NAME OK" or "NAME ERRNO-NAME".
 * Usage: probe calls | probe thread | probe int80 | probe addkey session|user | probe readkey ID
 * | probe revokekey ID | probe tiocsti TEXT | probe openexe | probe mq | probe x32
 * | probe privileges (ids, capability sets, no_new_privs, a raw socket)
 * | probe icmp (an unprivileged ICMP echo to 127.0.0.1) */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/keyctl.h>
#include <netinet/in.h>
#include <netinet/ip_icmp.h>
#include <linux/perf_event.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <mqueue.h>
#include <sys/ioctl.h>
#include <sys/personality.h>
#include <sys/quota.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void report(const char *name, long r) {
    if (r >= 0)
        printf("%s OK\n", name);
    else
        printf("%s %s\n", name, strerrorname_np(errno));
}

static void *thread_main(void *arg) { return arg; }

/* "euid N", then the capability sets and NoNewPrivs of /proc/self/status as "KEY VALUE",
 * then whether a raw socket (CAP_NET_RAW) opens. */
static int privileges(void) {
    printf("uid %d\neuid %d\n", (int)getuid(), (int)geteuid());
    FILE *status = fopen("/proc/self/status", "r");
    char line[256], key[64], value[128];
    while (status && fgets(line, sizeof line, status))
        if ((!strncmp(line, "Cap", 3) || !strncmp(line, "NoNewPrivs", 10)) &&
            sscanf(line, "%63[^:]: %127s", key, value) == 2)
            printf("%s %s\n", key, value);
    report("socket_raw", socket(AF_INET, SOCK_RAW, IPPROTO_ICMP));
    return 0;
}

/* An echo request to 127.0.0.1 through an unprivileged ICMP socket
 * (net.ipv4.ping_group_range must hold our group) and its reply. */
static int icmp(void) {
    int s = socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP);
    report("icmp_socket", s);
    if (s < 0)
        return 0;
    struct timeval two = {.tv_sec = 2};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &two, sizeof two);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct icmphdr echo = {.type = ICMP_ECHO, .un.echo.sequence = htons(1)};
    report("icmp_send", sendto(s, &echo, sizeof echo, 0, (struct sockaddr *)&to, sizeof to));
    char reply[64];
    long n = recv(s, reply, sizeof reply, 0);
    if (n >= 0 && (n < (long)sizeof echo || ((struct icmphdr *)reply)->type != ICMP_ECHOREPLY)) {
        errno = EPROTO;
        n = -1;
    }
    report("icmp_reply", n);
    return 0;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "calls";
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (!strcmp(mode, "calls")) {
        /* clone first: after a successful unshare we would no longer be root. */
        long pid = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
        if (pid == 0)
            _exit(0);
        if (pid > 0)
            waitpid(pid, NULL, 0);
        report("clone_newuser", pid);
        report("unshare_user", unshare(CLONE_NEWUSER));
        report("clone3", syscall(SYS_clone3, NULL, 0));
        report("add_key", syscall(SYS_add_key, "user", "probe", "x", 1, KEY_SPEC_SESSION_KEYRING));
        report("keyctl", syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_USER_KEYRING, 0));
        report("socket_vsock", socket(AF_VSOCK, SOCK_STREAM, 0));
        report("socket_alg", socket(AF_ALG, SOCK_SEQPACKET, 0));
        report("socket_inet", socket(AF_INET, SOCK_STREAM, 0));
        struct perf_event_attr attr = {.type = PERF_TYPE_SOFTWARE, .size = sizeof attr,
                                       .config = PERF_COUNT_SW_CPU_CLOCK};
        report("perf_event_open", syscall(SYS_perf_event_open, &attr, 0, -1, -1, 0));
        report("quotactl", quotactl(QCMD(Q_GETFMT, USRQUOTA), "/", 0, NULL));
        report("kcmp", syscall(SYS_kcmp, getpid(), getpid(), 0, 0, 0));
        report("personality", personality(ADDR_NO_RANDOMIZE));
        report("mount", syscall(SYS_mount, "none", "/tmp", "tmpfs", 0, NULL));
        return 0;
    }
    if (!strcmp(mode, "thread")) {
        pthread_t t;
        int e = pthread_create(&t, NULL, thread_main, NULL);
        if (e == 0)
            e = pthread_join(t, NULL);
        printf("thread %s\n", e ? strerrorname_np(e) : "OK");
        return e != 0;
    }
    if (!strcmp(mode, "int80")) {
        /* getpid and unshare(CLONE_NEWUSER) through the i386 entry point, with i386's
         * numbers: the filter must apply its rules there too. */
        long r;
        __asm__ volatile("int $0x80" : "=a"(r) : "a"(20) : "memory");
        printf("int80_getpid %s\n", r > 0 ? "OK" : "FAILED");
        __asm__ volatile("int $0x80" : "=a"(r) : "a"(310), "b"(CLONE_NEWUSER) : "memory");
        printf("int80_unshare %s\n", r == -EPERM ? "EPERM" : r == 0 ? "OK" : "OTHER");
        return 0;
    }
    if (!strcmp(mode, "x32")) {
        /* getpid with the x32 bit set: still a foreign ABI. */
        long r = syscall(0x40000000 | SYS_getpid);
        printf("x32 returned %ld\n", r);
        return 0;
    }
    if (!strcmp(mode, "tiocsti") && argc > 2) {
        /* Push TEXT into the input of the controlling terminal, then of stdin. */
        int tty = open("/dev/tty", O_RDWR);
        if (tty < 0) {
            report("open_tty", tty);
        } else {
            long r = 0;
            for (const char *c = argv[2]; *c && r >= 0; c++)
                r = ioctl(tty, TIOCSTI, c);
            report("tiocsti_tty", r);
        }
        long r = 0;
        for (const char *c = argv[2]; *c && r >= 0; c++)
            r = ioctl(0, TIOCSTI, c);
        report("tiocsti_stdin", r);
        return 0;
    }
    if (!strcmp(mode, "privileges"))
        return privileges();
    if (!strcmp(mode, "icmp"))
        return icmp();
    if (!strcmp(mode, "openexe")) {
        report("open_init_exe", open("/proc/1/exe", O_WRONLY));
        return 0;
    }
    if (!strcmp(mode, "mq")) {
        struct mq_attr attr = {.mq_maxmsg = 4, .mq_msgsize = 16};
        mqd_t q = mq_open("/probe", O_CREAT | O_RDWR, 0600, &attr);
        report("mq_open", q);
        if (q >= 0)
            report("mq_send", mq_send(q, "x", 1, 0));
        return 0;
    }
    if (!strcmp(mode, "addkey") && argc > 2) {
        int ring = !strcmp(argv[2], "user") ? KEY_SPEC_USER_KEYRING : KEY_SPEC_SESSION_KEYRING;
        long id = syscall(SYS_add_key, "user", "rootpack-probe", "host-secret", 11, ring);
        if (id < 0) {
            perror("add_key");
            return 1;
        }
        printf("%ld\n", id);
        return 0;
    }
    if (!strcmp(mode, "readkey") && argc > 2) {
        char buf[64] = {0};
        long n = syscall(SYS_keyctl, KEYCTL_READ, atol(argv[2]), buf, sizeof buf - 1);
        if (n >= 0)
            printf("read %s\n", buf);
        else
            report("readkey", n);
        n = syscall(SYS_keyctl, KEYCTL_SEARCH, KEY_SPEC_USER_KEYRING, "user", "rootpack-probe", 0);
        report("searchkey", n);
        if (n >= 0) {
            n = syscall(SYS_keyctl, KEYCTL_READ, n, buf, sizeof buf - 1);
            if (n >= 0)
                printf("read %s\n", buf);
            else
                report("readfound", n);
        }
        return 0;
    }
    if (!strcmp(mode, "revokekey") && argc > 2) {
        report("revokekey", syscall(SYS_keyctl, KEYCTL_REVOKE, atol(argv[2])));
        return 0;
    }
    fprintf(stderr, "usage: probe calls|thread|int80|addkey session|user|readkey ID\n");
    return 2;
}
