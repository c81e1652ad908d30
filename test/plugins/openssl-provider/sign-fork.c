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
    memset(content + 64 + sizeof(context), 0x22, 32);
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
    pid_t child;
    int status;

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
    printf("parent signed 1\n");
    fflush(stdout);
    if ((child = fork()) < 0)
        goto failed;
    if (child == 0) {
        if (!sign_once(key)) {
            ERR_print_errors_fp(stderr);
            _exit(1);
        }
        printf("child signed\n");
        fflush(stdout);
        _exit(0);
    }
    if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0 || !sign_once(key))
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
