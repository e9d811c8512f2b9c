/*
 * fsync_eio: an LD_PRELOAD shim that makes one fdatasync(2) or fsync(2) of a running
 * process fail with EIO, as a disk whose write-back failed would (fsyncgate), for
 * crates/server/tests/disk_faults.rs. Not linked into anything; the test compiles it
 * with `cc -shared -fPIC -o libfsync_eio.so fsync_eio.c -ldl`.
 *
 * Environment:
 *   FSYNC_EIO_TRIGGER  a path; the shim is armed while this file exists (the test
 *                      creates it once the process started fine). Unset: never armed.
 *   FSYNC_EIO_MATCH    only a file whose path (readlink of /proc/self/fd/N) contains
 *                      this string is failed (e.g. "/member/wal/"); unset: any file.
 *
 * Once armed, the first matching call fails with EIO and the shim writes one line to
 * stderr naming the call, the fd and its path. Every later call passes through to libc
 * and succeeds, as Linux does after a failed write-back (the dirty pages were dropped,
 * so a retried fsync reports success for data that never reached the disk): a program
 * that retries its fsync would be told, falsely, that its data is durable.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile int fired;

static int should_fail(const char *call, int fd) {
    const char *trigger = getenv("FSYNC_EIO_TRIGGER");
    if (fired || trigger == NULL || access(trigger, F_OK) != 0)
        return 0;
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    path[n < 0 ? 0 : n] = '\0';
    const char *match = getenv("FSYNC_EIO_MATCH");
    if (match != NULL && strstr(path, match) == NULL)
        return 0;
    if (__sync_lock_test_and_set(&fired, 1))
        return 0;
    char line[4352];
    int len = snprintf(line, sizeof line, "fsync_eio shim: failing %s(fd %d: %s) with EIO\n",
                       call, fd, path);
    if (len > 0)
        (void)!write(2, line, (size_t)len < sizeof line ? (size_t)len : sizeof line - 1);
    return 1;
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (real == NULL)
        real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    if (should_fail("fdatasync", fd)) {
        errno = EIO;
        return -1;
    }
    return real(fd);
}

int fsync(int fd) {
    static int (*real)(int);
    if (real == NULL)
        real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    if (should_fail("fsync", fd)) {
        errno = EIO;
        return -1;
    }
    return real(fd);
}
