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
#include <openssl/evp.h>
#include <openssl/store.h>

static int sign_once(EVP_PKEY *key)
{
    static const char context[] = "TLS 1.3, server CertificateVerify";
    unsigned char content[64 + sizeof(context) + 32], sig[1024];
    size_t siglen = sizeof(sig);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok;

    memset(content, 0x20, 64);
    memcpy(content + 64, context, sizeof(context)); /* with its 0x00 */
    memset(content + 64 + sizeof(context), 0x11, 32);
    ok = ctx != NULL && EVP_DigestSignInit_ex(ctx, NULL, "SHA256", NULL, NULL, key, NULL) > 0
         && EVP_DigestSign(ctx, sig, &siglen, content, sizeof(content)) > 0;
    EVP_MD_CTX_free(ctx);
    return ok;
}

int main(int argc, char **argv)
{
    OSSL_STORE_CTX *store;
    OSSL_STORE_INFO *info;
    EVP_PKEY *key = NULL;
    char line[16];

    signal(SIGPIPE, SIG_DFL);
    if (argc != 2 || (store = OSSL_STORE_open(argv[1], NULL, NULL, NULL, NULL)) == NULL)
        return 2;
    while (key == NULL && (info = OSSL_STORE_load(store)) != NULL) {
        if (OSSL_STORE_INFO_get_type(info) == OSSL_STORE_INFO_PKEY)
            key = OSSL_STORE_INFO_get1_PKEY(info);
        OSSL_STORE_INFO_free(info);
    }
    OSSL_STORE_close(store);
    if (key == NULL || !sign_once(key))
        goto failed;
    printf("signed 1\n");
    fflush(stdout);
    if (fgets(line, sizeof(line), stdin) == NULL || !sign_once(key))
        goto failed;
    printf("signed 2\n");
    EVP_PKEY_free(key);
    return 0;
failed:
    ERR_print_errors_fp(stderr);
    EVP_PKEY_free(key);
    return 1;
}
