/*
 * Test program for init-failure.test.ts: loads the delegator provider with one of its
 * initialisation steps made to fail, as they can in a server short of memory, and checks
 * that the load fails with the provider's error instead of handing out a broken provider:
 *
 *   init-fail none|libctx|mutex PROVIDER-SO REFERENCE-FILE
 *
 * libctx: OSSL_LIB_CTX_new_from_dispatch returns NULL; mutex: pthread_mutex_init, called by
 * the provider (its caller inside PROVIDER-SO), fails with ENOMEM. Both are replaced by this
 * program's own definitions (linked with -rdynamic: a module's symbols resolve to the
 * executable's first, ld.so(8)); every other call goes to the real function. Prints
 * "provider loaded" or "provider not loaded" with OpenSSL's errors; then, the failure
 * switched off, loads the provider again and reads the reference file with it as nginx
 * reads a key (PEM_read_bio_PrivateKey): "key loaded". Exit 0 when both lines are printed.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/provider.h>

static int fail_libctx, fail_mutex;

OSSL_LIB_CTX *OSSL_LIB_CTX_new_from_dispatch(const OSSL_CORE_HANDLE *handle, const OSSL_DISPATCH *in)
{
    OSSL_LIB_CTX *(*real)(const OSSL_CORE_HANDLE *, const OSSL_DISPATCH *);
    if (fail_libctx)
        return NULL;
    *(void **)&real = dlsym(RTLD_NEXT, "OSSL_LIB_CTX_new_from_dispatch");
    return real(handle, in);
}

int pthread_mutex_init(pthread_mutex_t *mutex, const pthread_mutexattr_t *attr)
{
    int (*real)(pthread_mutex_t *, const pthread_mutexattr_t *);
    Dl_info caller;
    if (fail_mutex && dladdr(__builtin_return_address(0), &caller) != 0 && caller.dli_fname != NULL
        && strstr(caller.dli_fname, "delegator.so") != NULL)
        return ENOMEM;
    *(void **)&real = dlsym(RTLD_NEXT, "pthread_mutex_init");
    return real(mutex, attr);
}

int main(int argc, char **argv)
{
    OSSL_PROVIDER *deflt, *prov;
    EVP_PKEY *key = NULL;
    BIO *in;

    if (argc != 4)
        return 2;
    fail_libctx = strcmp(argv[1], "libctx") == 0;
    fail_mutex = strcmp(argv[1], "mutex") == 0;
    if ((deflt = OSSL_PROVIDER_load(NULL, "default")) == NULL)
        goto failed;
    prov = OSSL_PROVIDER_load(NULL, argv[2]);
    printf("provider %s\n", prov != NULL ? "loaded" : "not loaded");
    fflush(stdout);
    ERR_print_errors_fp(stderr);
    if (prov != NULL && (fail_libctx || fail_mutex))
        return 1;

    fail_libctx = fail_mutex = 0;
    if (prov == NULL && (prov = OSSL_PROVIDER_load(NULL, argv[2])) == NULL)
        goto failed;
    if ((in = BIO_new_file(argv[3], "r")) == NULL)
        goto failed;
    key = PEM_read_bio_PrivateKey(in, NULL, NULL, NULL);
    BIO_free(in);
    if (key == NULL)
        goto failed;
    printf("key loaded\n");
    EVP_PKEY_free(key);
    OSSL_PROVIDER_unload(prov);
    OSSL_PROVIDER_unload(deflt);
    return 0;
failed:
    ERR_print_errors_fp(stderr);
    return 1;
}
