/*
 * Test program for fake-keyd.test.ts: signs through the delegator provider (OPENSSL_CONF
 * loads it) before and after a fork(), as a server that forks workers after it has used
 * its key would:
 *
 *   sign-fork REFERENCE-FILE
 *
 * signs once ("parent signed 1": the provider now keeps a keyd connection), forks; the child
 * signs ("child signed") and exits; once it has, the parent signs again ("parent signed 2"),
 * opens /dev/null (inheritable) and execs a shell that prints what its descriptors above 2
 * are ("fd N: TARGET"), as a server that re-executes itself (nginx's binary upgrade) would
 * carry them.
 * Each message is a TLS 1.3 server CertificateVerify content (RFC 8446 §4.4.3).
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <openssl/err.h>
#include "test-program.h"

int main(int argc, char **argv)
{
    EVP_PKEY *key;
    pid_t child;
    int status;

    if (argc != 2)
        return 2;
    key = load_key(argv[1]);
    if (key == NULL || !sign_once(key, 0x22))
        goto failed;
    printf("parent signed 1\n");
    fflush(stdout);
    if ((child = fork()) < 0)
        goto failed;
    if (child == 0) {
        if (!sign_once(key, 0x22)) {
            ERR_print_errors_fp(stderr);
            _exit(1);
        }
        printf("child signed\n");
        fflush(stdout);
        _exit(0);
    }
    if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0 || !sign_once(key, 0x22))
        goto failed;
    printf("parent signed 2\n");
    fflush(stdout);
    if (open("/dev/null", O_RDONLY) < 0) /* inheritable: the listing's control */
        goto failed;
    execl("/bin/sh", "sh", "-c", "for f in /proc/$$/fd/*; do n=${f##*/}; [ \"$n\" -gt 2 ] && echo \"fd $n: $(readlink $f)\"; done; exit 0",
          (char *)NULL);
    perror("execl");
    return 1;
failed:
    ERR_print_errors_fp(stderr);
    EVP_PKEY_free(key);
    return 1;
}
