/*
 * Test program for fake-keyd.test.ts: an OpenSSL 3 application that keeps SIGPIPE's
 * default action (terminate the process), as a server that does not ignore it would, and
 * signs twice with one key through the delegator provider (OPENSSL_CONF loads it):
 *
 *   sign-twice REFERENCE-FILE
 *
 * prints "signed 1", waits for a line on stdin, signs again and prints "signed 2". Each
 * message signed is a TLS 1.3 server CertificateVerify content (RFC 8446 §4.4.3).
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <openssl/err.h>
#include "test-program.h"

int main(int argc, char **argv)
{
    EVP_PKEY *key;
    char line[16];

    signal(SIGPIPE, SIG_DFL);
    if (argc != 2)
        return 2;
    key = load_key(argv[1]);
    if (key == NULL || !sign_once(key, 0x11))
        goto failed;
    printf("signed 1\n");
    fflush(stdout);
    if (fgets(line, sizeof(line), stdin) == NULL || !sign_once(key, 0x11))
        goto failed;
    printf("signed 2\n");
    EVP_PKEY_free(key);
    return 0;
failed:
    ERR_print_errors_fp(stderr);
    EVP_PKEY_free(key);
    return 1;
}
