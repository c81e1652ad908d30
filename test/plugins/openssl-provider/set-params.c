/*
 * Test program for params.test.ts: hands the delegator provider UTF8 string parameters
 * as an OpenSSL application may build them (OSSL_PARAM(3)), and prints what each call
 * returned:
 *
 *   set-params sign REFERENCE-FILE NAME[=VALUE[/SIZE]]|SIGN...
 *       EVP_DigestSignInit (SHA-256) with the reference's key, then one
 *       EVP_PKEY_CTX_set_params per argument: "NAME -> r"; SIGN signs a TLS 1.3 server
 *       CertificateVerify content (RFC 8446 §4.4.3) with a copy of the context as it is
 *       then, through keyd: "SIGN -> r"
 *   set-params stream REFERENCE-FILE
 *       EVP_DigestSignInit (SHA-256), an empty EVP_DigestSignUpdate, EVP_MD_CTX_copy_ex
 *       ("copy -> r"), then the content in two updates on the copy and EVP_DigestSignFinal
 *       with the size query first ("final -> r")
 *   set-params import NAME[=VALUE[/SIZE]]...
 *       EVP_PKEY_fromdata with the provider's EC key manager, one parameter per call
 *
 * NAME alone: data NULL, data_size 0 (a template, as OSSL_PARAM_utf8_string(NAME, NULL, 0)).
 * NAME=VALUE: VALUE with data_size its length. NAME=VALUE/SIZE: data_size SIZE, the '/'
 * turned into 'X', so that the bytes after SIZE are in the buffer but not in the string
 * (no NUL ends it there): pss/3 is "pssX3" in memory, and the string "pss".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include "test-program.h"

static OSSL_PARAM param_of(char *arg)
{
    char *value = strchr(arg, '='), *size;
    OSSL_PARAM p = OSSL_PARAM_utf8_string(NULL, NULL, 0);
    if (value != NULL)
        *value++ = '\0';
    p.key = arg;
    if (value != NULL) {
        p.data = value;
        p.data_size = strlen(value);
        if ((size = strrchr(value, '/')) != NULL) {
            *size = 'X'; /* the byte after the string is not a NUL */
            p.data_size = strtoul(size + 1, NULL, 10);
        }
    }
    return p;
}

int main(int argc, char **argv)
{
    int i;
    if (argc >= 3 && strcmp(argv[1], "sign") == 0) {
        EVP_PKEY *key = load_key(argv[2]);
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        EVP_PKEY_CTX *pctx = NULL;
        if (key == NULL || ctx == NULL || EVP_DigestSignInit_ex(ctx, &pctx, "SHA256", NULL, NULL, key, NULL) <= 0)
            goto failed;
        for (i = 3; i < argc; i++) {
            if (strcmp(argv[i], "SIGN") == 0) {
                unsigned char content[CV_CONTENT_LEN], sig[1024];
                size_t siglen = sizeof(sig);
                EVP_MD_CTX *copy = EVP_MD_CTX_new();
                cv_content(content, 0x44);
                printf("SIGN -> %d\n", copy != NULL && EVP_MD_CTX_copy_ex(copy, ctx) > 0
                                           && EVP_DigestSign(copy, sig, &siglen, content, sizeof(content)) > 0);
                fflush(stdout);
                ERR_print_errors_fp(stderr);
                EVP_MD_CTX_free(copy);
                continue;
            }
            OSSL_PARAM params[2] = { param_of(argv[i]), OSSL_PARAM_END };
            printf("%s -> %d\n", params[0].key, EVP_PKEY_CTX_set_params(pctx, params));
            fflush(stdout);
            ERR_print_errors_fp(stderr);
        }
        EVP_MD_CTX_free(ctx);
        EVP_PKEY_free(key);
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "stream") == 0) {
        unsigned char content[CV_CONTENT_LEN], sig[1024];
        size_t siglen = 0;
        EVP_PKEY *key = load_key(argv[2]);
        EVP_MD_CTX *ctx = EVP_MD_CTX_new(), *copy = EVP_MD_CTX_new();
        int ok;
        cv_content(content, 0x55);
        if (key == NULL || ctx == NULL || copy == NULL || EVP_DigestSignInit_ex(ctx, NULL, "SHA256", NULL, NULL, key, NULL) <= 0
            || EVP_DigestSignUpdate(ctx, content, 0) <= 0)
            goto failed;
        printf("copy -> %d\n", ok = EVP_MD_CTX_copy_ex(copy, ctx));
        fflush(stdout);
        ERR_print_errors_fp(stderr);
        ok = ok && EVP_DigestSignUpdate(copy, content, 60) > 0 && EVP_DigestSignUpdate(copy, content + 60, sizeof(content) - 60) > 0
             && EVP_DigestSignFinal(copy, NULL, &siglen) > 0 && siglen <= sizeof(sig) && EVP_DigestSignFinal(copy, sig, &siglen) > 0;
        printf("final -> %d\n", ok);
        ERR_print_errors_fp(stderr);
        EVP_MD_CTX_free(copy);
        EVP_MD_CTX_free(ctx);
        EVP_PKEY_free(key);
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "import") == 0) {
        for (i = 2; i < argc; i++) {
            EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", "provider=delegator");
            EVP_PKEY *key = NULL;
            OSSL_PARAM params[2] = { param_of(argv[i]), OSSL_PARAM_END };
            if (ctx == NULL || EVP_PKEY_fromdata_init(ctx) <= 0)
                goto failed;
            printf("%s -> %d\n", params[0].key, EVP_PKEY_fromdata(ctx, &key, EVP_PKEY_PUBLIC_KEY, params));
            fflush(stdout);
            ERR_print_errors_fp(stderr);
            EVP_PKEY_free(key);
            EVP_PKEY_CTX_free(ctx);
        }
        return 0;
    }
failed:
    ERR_print_errors_fp(stderr);
    return 2;
}
