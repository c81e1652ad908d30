/*
 * What the provider's test programs (sign-twice.c, sign-fork.c, set-params.c) share: the
 * reference file's key, and the message they sign, a TLS 1.3 server CertificateVerify content
 * (RFC 8446 §4.4.3: 64 spaces, the context string with its 0x00, the transcript hash).
 */
#ifndef DELEGATOR_TEST_PROGRAM_H
#define DELEGATOR_TEST_PROGRAM_H

#include <string.h>
#include <openssl/evp.h>
#include <openssl/store.h>

static const char CV_CONTEXT[] = "TLS 1.3, server CertificateVerify";
#define CV_CONTENT_LEN (64 + sizeof(CV_CONTEXT) + 32)

/* The content with every transcript-hash byte `hash_byte` (so each program's messages differ). */
static inline void cv_content(unsigned char content[CV_CONTENT_LEN], unsigned char hash_byte)
{
    memset(content, 0x20, 64);
    memcpy(content + 64, CV_CONTEXT, sizeof(CV_CONTEXT)); /* with its 0x00 */
    memset(content + 64 + sizeof(CV_CONTEXT), hash_byte, 32);
}

/* The first private key the reference file gives (through the provider's decoder), or NULL. */
static inline EVP_PKEY *load_key(const char *file)
{
    OSSL_STORE_CTX *store = OSSL_STORE_open(file, NULL, NULL, NULL, NULL);
    OSSL_STORE_INFO *info;
    EVP_PKEY *key = NULL;
    if (store == NULL)
        return NULL;
    while (key == NULL && (info = OSSL_STORE_load(store)) != NULL) {
        if (OSSL_STORE_INFO_get_type(info) == OSSL_STORE_INFO_PKEY)
            key = OSSL_STORE_INFO_get1_PKEY(info);
        OSSL_STORE_INFO_free(info);
    }
    OSSL_STORE_close(store);
    return key;
}

/* One SHA-256 signature of a CertificateVerify content through keyd; 1 when it was made. */
static inline int sign_once(EVP_PKEY *key, unsigned char hash_byte)
{
    unsigned char content[CV_CONTENT_LEN], sig[1024];
    size_t siglen = sizeof(sig);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok;

    cv_content(content, hash_byte);
    ok = ctx != NULL && EVP_DigestSignInit_ex(ctx, NULL, "SHA256", NULL, NULL, key, NULL) > 0
         && EVP_DigestSign(ctx, sig, &siglen, content, sizeof(content)) > 0;
    EVP_MD_CTX_free(ctx);
    return ok;
}

#endif
