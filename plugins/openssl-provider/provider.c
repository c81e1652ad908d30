/*
 * Provider entry point (provider-base(7)): OSSL_provider_init hands OpenSSL the tables
 * of DECODER, KEYMGMT and SIGNATURE algorithms, all with the property provider=delegator.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/params.h>
#include "delegator.h"

/* Hands the core's vset_error an already formatted text, as "%s". */
static void set_error_text(DLG_PROV *prov, int reason, const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    prov->vset_error(prov->handle, reason, fmt, args);
    va_end(args);
}

void dlg_error_at(DLG_PROV *prov, const char *file, int line, const char *func, int reason, const char *fmt, ...)
{
    /* ERR_vset_error formats into ERR_MAX_DATA_SIZE (1024) bytes and keeps nothing of a
     * text that does not fit (OpenSSL 3.0: BIO_vsnprintf fails, the data is left empty), so
     * an error naming keyd's long message lost keyd's code too. Formatted here, a long text
     * is cut and keeps its beginning. */
    char text[ERR_MAX_DATA_SIZE - 24];
    static const char cut[] = "... (cut)";
    va_list args;
    int n;

    /* provider-base(7): errors go through the core's error upcalls, so that they carry
     * this provider's name and reason strings wherever the application prints them. */
    if (prov == NULL || prov->new_error == NULL || prov->vset_error == NULL)
        return;
    prov->new_error(prov->handle);
    if (prov->set_error_debug != NULL)
        prov->set_error_debug(prov->handle, file, line, func);
    va_start(args, fmt);
    n = vsnprintf(text, sizeof(text), fmt, args);
    va_end(args);
    if (n < 0)
        text[0] = '\0';
    else if ((size_t)n >= sizeof(text))
        memcpy(text + sizeof(text) - sizeof(cut), cut, sizeof(cut));
    set_error_text(prov, reason, "%s", text);
}

int dlg_param_get_name(DLG_PROV *prov, const OSSL_PARAM *p, char *buf, size_t size)
{
    /* Not OSSL_PARAM_get_utf8_string_ptr: it hands back p->data as is, which may be NULL (a
     * template such as OSSL_PARAM_utf8_string(name, NULL, 0)) or not NUL-terminated, and a
     * strcmp on it crashed or read past the caller's buffer. OSSL_PARAM_get_utf8_string
     * refuses NULL data and copies data_size bytes at most, as the default provider reads
     * these parameters. */
    if (p->data_type != OSSL_PARAM_UTF8_STRING || p->data == NULL || !OSSL_PARAM_get_utf8_string(p, &buf, size)) {
        dlg_error(prov, DLG_R_UNSUPPORTED, "parameter %s: not a UTF8 string of at most %zu bytes", p->key, size - 1);
        return 0;
    }
    return 1;
}

static const OSSL_ITEM reason_strings[] = {
    { DLG_R_BAD_REFERENCE, "malformed DELEGATOR KEY REFERENCE" },
    { DLG_R_KEYD_UNAVAILABLE, "keyd unavailable" },
    { DLG_R_KEYD_TIMEOUT, "keyd did not answer in time" },
    { DLG_R_KEYD_REFUSED, "keyd refused to sign" },
    { DLG_R_KEYD_PROTOCOL, "keyd protocol error" },
    { DLG_R_UNSUPPORTED, "unsupported signature parameters" },
    { DLG_R_NOT_WHOLE_MESSAGE, "a delegator key signs whole messages only" },
    { DLG_R_NO_PRIVATE_PART, "a delegator key has no private part" },
    { DLG_R_BAD_CONFIG, "bad provider configuration" },
    { DLG_R_INIT_FAILED, "provider initialisation failed" },
    { 0, NULL },
};

static const OSSL_ALGORITHM decoders[] = {
    /* PEM -> DER of our structure, then DER -> a key object (provider-decoder(7)). */
    { "DER", DLG_PROPS ",input=pem", dlg_pem_decoder_functions, "DELEGATOR KEY REFERENCE (PEM)" },
    { DLG_NAMES_EC, DLG_PROPS ",input=der,structure=" DLG_STRUCTURE, dlg_der_decoder_ec_functions, NULL },
    { DLG_NAMES_RSA, DLG_PROPS ",input=der,structure=" DLG_STRUCTURE, dlg_der_decoder_rsa_functions, NULL },
    { DLG_NAMES_ED25519, DLG_PROPS ",input=der,structure=" DLG_STRUCTURE, dlg_der_decoder_ed25519_functions, NULL },
    { NULL, NULL, NULL, NULL },
};

static const OSSL_ALGORITHM keymgmts[] = {
    { DLG_NAMES_EC, DLG_PROPS, dlg_keymgmt_ec_functions, "EC key held by keyd" },
    { DLG_NAMES_RSA, DLG_PROPS, dlg_keymgmt_rsa_functions, "RSA key held by keyd" },
    { DLG_NAMES_ED25519, DLG_PROPS, dlg_keymgmt_ed25519_functions, "Ed25519 key held by keyd" },
    { NULL, NULL, NULL, NULL },
};

static const OSSL_ALGORITHM signatures[] = {
    { "ECDSA", DLG_PROPS, dlg_signature_ecdsa_functions, "ECDSA signed by keyd" },
    { DLG_NAMES_RSA, DLG_PROPS, dlg_signature_rsa_functions, "RSA signed by keyd" },
    { DLG_NAMES_ED25519, DLG_PROPS, dlg_signature_ed25519_functions, "Ed25519 signed by keyd" },
    { NULL, NULL, NULL, NULL },
};

static const OSSL_ALGORITHM *dlg_query(void *provctx, int operation_id, int *no_cache)
{
    (void)provctx;
    *no_cache = 0;
    switch (operation_id) {
    case OSSL_OP_DECODER:
        return decoders;
    case OSSL_OP_KEYMGMT:
        return keymgmts;
    case OSSL_OP_SIGNATURE:
        return signatures;
    }
    return NULL;
}

static const OSSL_PARAM *dlg_gettable_params(void *provctx)
{
    static const OSSL_PARAM table[] = {
        OSSL_PARAM_utf8_ptr(OSSL_PROV_PARAM_NAME, NULL, 0),
        OSSL_PARAM_int(OSSL_PROV_PARAM_STATUS, NULL),
        OSSL_PARAM_END,
    };
    (void)provctx;
    return table;
}

static int dlg_get_params(void *provctx, OSSL_PARAM params[])
{
    OSSL_PARAM *p;
    (void)provctx;
    if ((p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_NAME)) != NULL
        && !OSSL_PARAM_set_utf8_ptr(p, "delegator: keys held by keyd"))
        return 0;
    if ((p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_STATUS)) != NULL && !OSSL_PARAM_set_int(p, 1))
        return 0;
    return 1;
}

static const OSSL_ITEM *dlg_reason_strings(void *provctx)
{
    (void)provctx;
    return reason_strings;
}

static void dlg_teardown(void *provctx)
{
    DLG_PROV *prov = provctx;
    dlg_keyd_pool_free(prov);
    pthread_mutex_destroy(&prov->pool_lock);
    OSSL_LIB_CTX_free(prov->libctx);
    free(prov);
}

static const OSSL_DISPATCH dlg_dispatch[] = {
    { OSSL_FUNC_PROVIDER_TEARDOWN, (void (*)(void))dlg_teardown },
    { OSSL_FUNC_PROVIDER_GETTABLE_PARAMS, (void (*)(void))dlg_gettable_params },
    { OSSL_FUNC_PROVIDER_GET_PARAMS, (void (*)(void))dlg_get_params },
    { OSSL_FUNC_PROVIDER_QUERY_OPERATION, (void (*)(void))dlg_query },
    { OSSL_FUNC_PROVIDER_GET_REASON_STRINGS, (void (*)(void))dlg_reason_strings },
    { 0, NULL },
};

/* openssl.cnf's `timeout_ms`: decimal digits only, 1..600000; 0 for anything else. */
static int parse_timeout_ms(const char *s)
{
    long ms = 0;
    if (*s == '\0')
        return 0;
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '9')
            return 0;
        ms = ms * 10 + (*s - '0');
        if (ms > 600000)
            return 0;
    }
    return (int)ms;
}

/* The one exported symbol: OpenSSL looks it up when it loads the module (provider(7)). */
__attribute__((visibility("default")))
int OSSL_provider_init(const OSSL_CORE_HANDLE *handle, const OSSL_DISPATCH *in,
                       const OSSL_DISPATCH **out, void **provctx)
{
    OSSL_FUNC_core_get_params_fn *core_get_params = NULL;
    DLG_PROV upcalls = { 0 }, *prov;
    char *timeout = NULL;
    int err;

    /* The core's error upcalls first, so that a failure below can be said (provider-base(7)). */
    upcalls.handle = handle;
    for (const OSSL_DISPATCH *d = in; d->function_id != 0; d++) {
        switch (d->function_id) {
        case OSSL_FUNC_CORE_GET_PARAMS:
            core_get_params = OSSL_FUNC_core_get_params(d);
            break;
        case OSSL_FUNC_CORE_NEW_ERROR:
            upcalls.new_error = OSSL_FUNC_core_new_error(d);
            break;
        case OSSL_FUNC_CORE_SET_ERROR_DEBUG:
            upcalls.set_error_debug = OSSL_FUNC_core_set_error_debug(d);
            break;
        case OSSL_FUNC_CORE_VSET_ERROR:
            upcalls.vset_error = OSSL_FUNC_core_vset_error(d);
            break;
        }
    }
    if ((prov = calloc(1, sizeof(*prov))) == NULL) {
        dlg_error(&upcalls, DLG_R_INIT_FAILED, "provider context: out of memory");
        return 0;
    }
    *prov = upcalls;
    prov->timeout_ms = 5000;
    /* `timeout_ms = N` in the provider's openssl.cnf section (config(5)) reaches us as a
     * core parameter of that name. */
    if (core_get_params != NULL) {
        OSSL_PARAM req[] = { OSSL_PARAM_utf8_ptr("timeout_ms", &timeout, 0), OSSL_PARAM_END };
        if (core_get_params(handle, req) && timeout != NULL && (prov->timeout_ms = parse_timeout_ms(timeout)) == 0) {
            /* A typo ("10s", "5 000", "0") used to be read as far as it went (10 ms: handshakes
             * failing under load) or replaced by the default without a word. Failing
             * OSSL_provider_init would not say why: OpenSSL's automatic config loading ignores
             * a module's failure and drops its errors (CONF_modules_load_file(3), CONF_MFLAGS_IGNORE_RETURN_CODES),
             * and the server would then report its key file as undecodable. So the provider
             * loads, and every signature fails with this, before any keyd traffic. */
            snprintf(prov->config_error, sizeof(prov->config_error),
                     "timeout_ms = \"%.40s\": not a whole number of milliseconds from 1 to 600000", timeout);
            prov->timeout_ms = 5000;
        }
    }
    /* A library context wired to the core's BIO upcalls, for BIO_new_from_core_bio. Without
     * it every decode would get no BIO and every reference file would read, silently, as
     * "not ours": the load fails instead. (A bad timeout_ms is different: a value the
     * provider can name at each signature. A resource failure here is for OpenSSL to report,
     * as "init fail" of the module, with this error before it.) */
    if ((prov->libctx = OSSL_LIB_CTX_new_from_dispatch(handle, in)) == NULL) {
        dlg_error(prov, DLG_R_INIT_FAILED, "OSSL_LIB_CTX_new_from_dispatch failed");
        free(prov);
        return 0;
    }
    /* The pool's lock (keyd.c); used uninitialised it would be undefined behaviour. */
    if ((err = pthread_mutex_init(&prov->pool_lock, NULL)) != 0) {
        dlg_error(prov, DLG_R_INIT_FAILED, "pthread_mutex_init: %s", strerror(err));
        OSSL_LIB_CTX_free(prov->libctx);
        free(prov);
        return 0;
    }
    *out = dlg_dispatch;
    *provctx = prov;
    return 1;
}
