/*
 * cpu-time: runs a program and prints the user and system CPU time it used, to the
 * microsecond, on standard error once it ends:
 *
 *     pub-bench: cpu user=0.012345 sys=0.001234
 *
 * usage: cpu-time PROGRAM [ARG...]
 *
 * pub-bench runs the sensor, the analyzers and the libnids peer under it. A shell's `time`
 * reports milliseconds, too coarse for the runs of about ten milliseconds that the smaller
 * real-traffic captures take. The times come from wait4's resource usage of the child, so
 * they cover every thread of the process and nothing of this wrapper. The exit status is the
 * program's, or 128 plus the signal that ended it (as a shell reports it).
 */
#define _DEFAULT_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static double secs(struct timeval t) { return (double)t.tv_sec + (double)t.tv_usec / 1e6; }

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: cpu-time PROGRAM [ARG...]\n");
        return 2;
    }
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "cpu-time: fork: %s\n", strerror(errno));
        return 126;
    }
    if (pid == 0) {
        execvp(argv[1], argv + 1);
        fprintf(stderr, "cpu-time: %s: %s\n", argv[1], strerror(errno));
        _exit(127);
    }
    int status = 0;
    struct rusage ru;
    pid_t r;
    do {
        r = wait4(pid, &status, 0, &ru);
    } while (r < 0 && errno == EINTR);
    if (r < 0) {
        fprintf(stderr, "cpu-time: wait4: %s\n", strerror(errno));
        return 126;
    }
    fprintf(stderr, "pub-bench: cpu user=%.6f sys=%.6f\n", secs(ru.ru_utime), secs(ru.ru_stime));
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return WEXITSTATUS(status);
}
