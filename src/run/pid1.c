/* The container's PID 1 after it started the command: forwards signals, reaps orphans,
 * and exits with the command's status.
 *
 * Why a separate program, and why C without a libc: the init must not be rootpack's host
 * binary, or a container with CAP_SYS_PTRACE opens /proc/1/exe and rewrites rootpack
 * (CVE-2019-5736). It runs from a sealed memfd copy, made from these few kilobytes on
 * every start, after pivot_root, where no dynamic loader or libc of the host is in reach:
 * so it is static and freestanding, a few system calls and nothing else (as tini and
 * catatonit are small C programs for the same job).
 *
 * Usage (by rootpack only): rootpack-init CHILD_PID ERR_FD
 * The forwarded signals arrive blocked (the mask survives execve); they are taken with
 * rt_sigtimedwait. When the command dies of a signal, "\0killed by signal N" is written
 * to ERR_FD, which rootpack reads (the init's own status can only say 128+N). */

typedef unsigned long u64;

#define SYS_write 1
#define SYS_kill 62
#define SYS_wait4 61
#define SYS_exit_group 231
#define SYS_rt_sigtimedwait 128
#define SYS_prctl 157
#define PR_SET_DUMPABLE 4
#define WNOHANG 1
#define SIGCHLD 17

static long syscall6(long n, long a, long b, long c, long d, long e, long f) {
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    long ret;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}

static void leave(int code) {
    for (;;)
        syscall6(SYS_exit_group, code, 0, 0, 0, 0, 0);
}

static long parse(const char *s) {
    long n = 0;
    if (!s || !*s)
        return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || n > 1000000000)
            return -1;
        n = n * 10 + (*s - '0');
    }
    return n;
}

static void report_signal(long fd, int sig) {
    char text[32] = "\0killed by signal ";
    int len = 18;
    char digits[4];
    int n = 0;
    do {
        digits[n++] = (char)('0' + sig % 10);
        sig /= 10;
    } while (sig && n < 4);
    while (n)
        text[len++] = digits[--n];
    syscall6(SYS_write, fd, (long)text, len, 0, 0, 0);
}

/* The signals rootpack's run::init::FORWARDED lists, and SIGCHLD. */
static const int forwarded[] = {2, 15, 1, 3, 10, 12, 28};

__attribute__((used)) void start(long *sp) {
    long argc = sp[0];
    char **argv = (char **)(sp + 1);
    long child = argc > 1 ? parse(argv[1]) : -1;
    long err_fd = argc > 2 ? parse(argv[2]) : -1;
    if (child <= 0 || err_fd < 0) {
        static const char usage[] = "rootpack-init: the container's init, started by rootpack run only\n";
        syscall6(SYS_write, 2, (long)usage, sizeof usage - 1, 0, 0, 0);
        leave(125);
    }
    syscall6(SYS_prctl, PR_SET_DUMPABLE, 0, 0, 0, 0, 0);
    u64 set = 1UL << (SIGCHLD - 1);
    for (unsigned i = 0; i < sizeof forwarded / sizeof forwarded[0]; i++)
        set |= 1UL << (forwarded[i] - 1);
    char info[128];
    for (;;) {
        long sig = syscall6(SYS_rt_sigtimedwait, (long)&set, (long)info, 0, 8, 0, 0);
        if (sig == SIGCHLD) {
            for (;;) {
                int status = 0;
                long pid = syscall6(SYS_wait4, -1, (long)&status, WNOHANG, 0, 0, 0);
                if (pid == child) {
                    int termsig = status & 0x7f;
                    if (termsig && termsig != 0x7f) {
                        report_signal(err_fd, termsig);
                        leave(128 + termsig);
                    }
                    /* Leaving kills whatever else is left in the namespace. */
                    leave((status >> 8) & 0xff);
                }
                if (pid <= 0)
                    break;
            }
        } else if (sig > 0) {
            syscall6(SYS_kill, child, sig, 0, 0, 0, 0);
        }
    }
}

__asm__(".text\n"
        ".global _start\n"
        "_start:\n"
        "  xor %rbp, %rbp\n"
        "  mov %rsp, %rdi\n"
        "  and $-16, %rsp\n"
        "  call start\n"
        "  hlt\n");
