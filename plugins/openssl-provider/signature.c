/*
 * SIGNATURE (provider-signature(7)) with digest-sign only: OpenSSL hands us the whole
 * message (EVP_DigestSign, or EVP_DigestSignUpdate + Final, buffered), never a digest, and
 * keyd decides whether that message is a TLS handshake signature content before it signs
 * (docs/PROTOCOL.md, signHandshakeContent). Signing a caller's digest (EVP_PKEY_sign) is
 * refused here: keyd is not a signing oracle.
 *
 * The SignatureScheme keyd is told (RFC 8446 §4.2.3) follows from the key type, the digest
 * of EVP_DigestSignInit and, for RSA, the padding libssl sets (PSS for TLS 1.3).
 */
#include <string.h>
#include <stdlib.h>
#include <strings.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/params.h>
#include <openssl/rsa.h>
#include "delegator.h"

#define MAX_MESSAGE 65535 /* keyd's content<1..2^16-1> */

typedef struct {
    DLG_PROV *prov;
    const DLG_KEY *key;    /* owned by the EVP_PKEY, which outlives this context */
    int hash_bits;         /* 256 | 384 | 512; 0 for Ed25519 */
    int pad;               /* RSA_PKCS1_PADDING | RSA_PKCS1_PSS_PADDING */
    int salt_is_hash_len;  /* PSS salt length = hash length: the one keyd produces */
    unsigned char *message; /* EVP_DigestSignUpdate data, signed at Final */
    size_t message_len;
} DLG_SIG_CTX;

static void *dlg_sig_newctx(void *provctx, const char *propq)
{
    DLG_SIG_CTX *ctx = OPENSSL_zalloc(sizeof(*ctx));
    (void)propq;
    if (ctx != NULL)
        ctx->prov = provctx;
    return ctx;
}

static void dlg_sig_freectx(void *vctx)
{
    DLG_SIG_CTX *ctx = vctx;
    if (ctx == NULL)
        return;
    OPENSSL_clear_free(ctx->message, ctx->message_len);
    OPENSSL_free(ctx);
}

static void *dlg_sig_dupctx(void *vctx)
{
    DLG_SIG_CTX *src = vctx, *ctx = OPENSSL_memdup(src, sizeof(*src));
    if (ctx == NULL)
        return NULL;
    /* Nothing buffered yet: nothing to copy (OPENSSL_memdup of 0 bytes returns NULL, which
     * failed EVP_MD_CTX_copy_ex as a malloc failure after an empty update). */
    ctx->message = NULL;
    if (src->message_len > 0 && (ctx->message = OPENSSL_memdup(src->message, src->message_len)) == NULL) {
        OPENSSL_free(ctx);
        return NULL;
    }
    return ctx;
}

/* SHA-2 digests by any name OpenSSL gives them; 0 for anything else (SHA-1 included, RFC 9155). */
static int hash_bits(const char *name)
{
    static const struct { const char *name; int bits; } names[] = {
        { "SHA256", 256 }, { "SHA2-256", 256 }, { "SHA-256", 256 },
        { "SHA384", 384 }, { "SHA2-384", 384 }, { "SHA-384", 384 },
        { "SHA512", 512 }, { "SHA2-512", 512 }, { "SHA-512", 512 },
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcasecmp(name, names[i].name) == 0)
            return names[i].bits;
    return 0;
}

static int set_digest(DLG_SIG_CTX *ctx, const char *mdname)
{
    int empty = mdname == NULL || mdname[0] == '\0';
    if (ctx->key->type == DLG_ED25519) {
        if (!empty) {
            dlg_error(ctx->prov, DLG_R_UNSUPPORTED, "Ed25519 takes no digest (RFC 8032), got %s", mdname);
            return 0;
        }
        ctx->hash_bits = 0;
        return 1;
    }
    if (empty)
        mdname = ctx->key->type == DLG_EC && strcmp(ctx->key->group, "secp384r1") == 0 ? "SHA384" : "SHA256";
    /* libssl asks this for each scheme it considers (EVP_PKEY_digestsign_supports_digest);
     * a refusal just drops the scheme from its choice. */
    if ((ctx->hash_bits = hash_bits(mdname)) == 0) {
        dlg_error(ctx->prov, DLG_R_UNSUPPORTED, "digest %s: keyd signs with SHA-256, SHA-384 or SHA-512 only", mdname);
        return 0;
    }
    if (ctx->key->type == DLG_EC) {
        /* keyd pairs the curve with its hash, as RFC 8446 §4.2.3 names the ECDSA schemes
         * (docs/PROTOCOL.md): so a TLS 1.2 handshake must pick that pair too. */
        int curve_bits = strcmp(ctx->key->group, "secp384r1") == 0 ? 384 : 256;
        if (ctx->hash_bits != curve_bits) {
            dlg_error(ctx->prov, DLG_R_UNSUPPORTED, "digest %s: keyd signs with this key's curve hash (SHA-%d) only", mdname, curve_bits);
            return 0;
        }
    }
    return 1;
}

static int dlg_sig_set_ctx_params(void *vctx, const OSSL_PARAM params[]);

/* provider-signature(7) OSSL_FUNC_signature_digest_sign_init: no keyd traffic here. */
static int dlg_sig_digest_sign_init(void *vctx, const char *mdname, void *provkey, const OSSL_PARAM params[])
{
    DLG_SIG_CTX *ctx = vctx;
    if (provkey != NULL)
        ctx->key = provkey;
    if (ctx->key == NULL)
        return 0;
    if (ctx->key->key_ref == NULL) {
        dlg_error(ctx->prov, DLG_R_NO_PRIVATE_PART, "a public key cannot sign");
        return 0;
    }
    ctx->pad = RSA_PKCS1_PADDING; /* OpenSSL's default for RSA; libssl sets PSS for TLS 1.3 */
    ctx->salt_is_hash_len = 1;
    OPENSSL_clear_free(ctx->message, ctx->message_len);
    ctx->message = NULL, ctx->message_len = 0;
    return set_digest(ctx, mdname) && dlg_sig_set_ctx_params(ctx, params);
}

/* RFC 8446 §4.2.3 SignatureScheme for this key, digest and padding; 0 when there is none. */
static uint16_t scheme_of(const DLG_SIG_CTX *ctx)
{
    int i = ctx->hash_bits == 256 ? 0 : ctx->hash_bits == 384 ? 1 : ctx->hash_bits == 512 ? 2 : -1;
    static const uint16_t ecdsa[] = { 0x0403, 0x0503, 0x0603 };
    static const uint16_t pss_rsae[] = { 0x0804, 0x0805, 0x0806 };
    static const uint16_t pkcs1[] = { 0x0401, 0x0501, 0x0601 };

    switch (ctx->key->type) {
    case DLG_ED25519:
        return 0x0807;
    case DLG_EC:
        return i < 0 ? 0 : ecdsa[i];
    case DLG_RSA:
        if (i < 0)
            return 0;
        if (ctx->pad == RSA_PKCS1_PSS_PADDING)
            return ctx->salt_is_hash_len ? pss_rsae[i] : 0;
        return ctx->pad == RSA_PKCS1_PADDING ? pkcs1[i] : 0;
    }
    return 0;
}

static int sign_message(DLG_SIG_CTX *ctx, unsigned char *sig, size_t *siglen, size_t sigsize,
                        const unsigned char *tbs, size_t tbslen)
{
    uint16_t scheme;
    if (sig == NULL) { /* the size query: answered locally */
        *siglen = (size_t)dlg_key_max_signature_size(ctx->key);
        return 1;
    }
    if (sigsize < (size_t)dlg_key_max_signature_size(ctx->key)) {
        /* Checked before keyd signs: a signature that cannot be returned is not made. */
        dlg_error(ctx->prov, DLG_R_UNSUPPORTED, "signature buffer of %zu bytes is too small", sigsize);
        return 0;
    }
    if ((scheme = scheme_of(ctx)) == 0) {
        dlg_error(ctx->prov, DLG_R_UNSUPPORTED, "no TLS signature scheme for this padding / salt length");
        return 0;
    }
    return dlg_keyd_sign(ctx->key, scheme, tbs, tbslen, sig, siglen, sigsize);
}

/* One-shot EVP_DigestSign: the whole message, as libssl signs CertificateVerify and ServerKeyExchange. */
static int dlg_sig_digest_sign(void *vctx, unsigned char *sig, size_t *siglen, size_t sigsize,
                               const unsigned char *tbs, size_t tbslen)
{
    return sign_message(vctx, sig, siglen, sigsize, tbs, tbslen);
}

static int dlg_sig_digest_sign_update(void *vctx, const unsigned char *data, size_t datalen)
{
    DLG_SIG_CTX *ctx = vctx;
    unsigned char *grown;
    if (datalen == 0) /* provider-signature(7) allows it; data may then be NULL */
        return 1;
    if (datalen > MAX_MESSAGE - ctx->message_len) {
        dlg_error(ctx->prov, DLG_R_NOT_WHOLE_MESSAGE, "message longer than %d bytes", MAX_MESSAGE);
        return 0;
    }
    if ((grown = OPENSSL_clear_realloc(ctx->message, ctx->message_len, ctx->message_len + datalen + 1)) == NULL)
        return 0;
    memcpy(grown + ctx->message_len, data, datalen);
    ctx->message = grown;
    ctx->message_len += datalen;
    return 1;
}

static int dlg_sig_digest_sign_final(void *vctx, unsigned char *sig, size_t *siglen, size_t sigsize)
{
    DLG_SIG_CTX *ctx = vctx;
    return sign_message(ctx, sig, siglen, sigsize, ctx->message, ctx->message_len);
}

/* EVP_PKEY_sign hands over a digest: keyd never signs one (docs/KEYD.md, non-oracle rule). */
static int dlg_sig_sign_init(void *vctx, void *provkey, const OSSL_PARAM params[])
{
    DLG_SIG_CTX *ctx = vctx;
    (void)provkey, (void)params;
    dlg_error(ctx->prov, DLG_R_NOT_WHOLE_MESSAGE, "keyd signs TLS handshake contents, never a digest: use digest-sign");
    return 0;
}

static int dlg_sig_sign(void *vctx, unsigned char *sig, size_t *siglen, size_t sigsize, const unsigned char *tbs, size_t tbslen)
{
    (void)vctx, (void)sig, (void)siglen, (void)sigsize, (void)tbs, (void)tbslen;
    return 0;
}

static int dlg_sig_set_ctx_params(void *vctx, const OSSL_PARAM params[])
{
    DLG_SIG_CTX *ctx = vctx, next;
    const OSSL_PARAM *p;

    if (params == NULL)
        return 1;
    /* Worked out on a copy and kept only when every parameter is accepted: a refused one
     * used to stay set (a P-256 key's refused SHA-384 then asked keyd for
     * ecdsa_secp384r1_sha384, a refused padding made every later signature fail), where
     * EVP_PKEY_CTX_set_params failing should leave the operation as it was. */
    next = *ctx;
    if ((p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_DIGEST)) != NULL) {
        char md[DLG_PARAM_NAME_SIZE];
        if (!dlg_param_get_name(next.prov, p, md, sizeof(md)) || !set_digest(&next, md))
            return 0;
    }
    if ((p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_PAD_MODE)) != NULL) {
        /* An int (RSA_PKCS1_*_PADDING) or its name, as EVP_PKEY_CTX_set_rsa_padding sends it. */
        char s[DLG_PARAM_NAME_SIZE];
        if (p->data_type == OSSL_PARAM_UTF8_STRING) {
            if (!dlg_param_get_name(next.prov, p, s, sizeof(s)))
                return 0;
            next.pad = strcmp(s, OSSL_PKEY_RSA_PAD_MODE_PSS) == 0 ? RSA_PKCS1_PSS_PADDING
                       : strcmp(s, OSSL_PKEY_RSA_PAD_MODE_PKCSV15) == 0 ? RSA_PKCS1_PADDING : -1;
        } else if (!OSSL_PARAM_get_int(p, &next.pad)) {
            return 0;
        }
        if (next.key == NULL || next.key->type != DLG_RSA
            || (next.pad != RSA_PKCS1_PSS_PADDING && next.pad != RSA_PKCS1_PADDING)) {
            dlg_error(next.prov, DLG_R_UNSUPPORTED, "padding: PSS or PKCS#1 v1.5 on RSA keys only");
            return 0;
        }
    }
    if ((p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_PSS_SALTLEN)) != NULL) {
        /* keyd's PSS salt is the hash length (RFC 8446 §4.2.3): "digest", -1 or that number. */
        char s[DLG_PARAM_NAME_SIZE];
        int n = 0;
        if (p->data_type == OSSL_PARAM_UTF8_STRING) {
            if (!dlg_param_get_name(next.prov, p, s, sizeof(s)))
                return 0;
            next.salt_is_hash_len = strcmp(s, OSSL_PKEY_RSA_PSS_SALT_LEN_DIGEST) == 0
                                    || atoi(s) == next.hash_bits / 8;
        } else if (OSSL_PARAM_get_int(p, &n)) {
            next.salt_is_hash_len = n == RSA_PSS_SALTLEN_DIGEST || n == next.hash_bits / 8;
        } else {
            return 0;
        }
        if (!next.salt_is_hash_len) {
            dlg_error(next.prov, DLG_R_UNSUPPORTED, "PSS salt length other than the hash length");
            return 0;
        }
    }
    if ((p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_MGF1_DIGEST)) != NULL) {
        char md[DLG_PARAM_NAME_SIZE];
        if (!dlg_param_get_name(next.prov, p, md, sizeof(md)) || hash_bits(md) != next.hash_bits) {
            dlg_error(next.prov, DLG_R_UNSUPPORTED, "MGF1 digest other than the signature digest");
            return 0;
        }
    }
    ctx->hash_bits = next.hash_bits;
    ctx->pad = next.pad;
    ctx->salt_is_hash_len = next.salt_is_hash_len;
    return 1;
}

static const OSSL_PARAM *dlg_sig_settable_ctx_params(void *vctx, void *provctx)
{
    static const OSSL_PARAM table[] = {
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PAD_MODE, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PSS_SALTLEN, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_MGF1_DIGEST, NULL, 0),
        OSSL_PARAM_END,
    };
    (void)vctx, (void)provctx;
    return table;
}

#define SIGNATURE_FUNCTIONS(lower)                                                                     \
    const OSSL_DISPATCH dlg_signature_##lower##_functions[] = {                                       \
        { OSSL_FUNC_SIGNATURE_NEWCTX, (void (*)(void))dlg_sig_newctx },                               \
        { OSSL_FUNC_SIGNATURE_FREECTX, (void (*)(void))dlg_sig_freectx },                             \
        { OSSL_FUNC_SIGNATURE_DUPCTX, (void (*)(void))dlg_sig_dupctx },                               \
        { OSSL_FUNC_SIGNATURE_SIGN_INIT, (void (*)(void))dlg_sig_sign_init },                         \
        { OSSL_FUNC_SIGNATURE_SIGN, (void (*)(void))dlg_sig_sign },                                   \
        { OSSL_FUNC_SIGNATURE_DIGEST_SIGN_INIT, (void (*)(void))dlg_sig_digest_sign_init },           \
        { OSSL_FUNC_SIGNATURE_DIGEST_SIGN_UPDATE, (void (*)(void))dlg_sig_digest_sign_update },       \
        { OSSL_FUNC_SIGNATURE_DIGEST_SIGN_FINAL, (void (*)(void))dlg_sig_digest_sign_final },         \
        { OSSL_FUNC_SIGNATURE_DIGEST_SIGN, (void (*)(void))dlg_sig_digest_sign },                     \
        { OSSL_FUNC_SIGNATURE_SET_CTX_PARAMS, (void (*)(void))dlg_sig_set_ctx_params },               \
        { OSSL_FUNC_SIGNATURE_SETTABLE_CTX_PARAMS, (void (*)(void))dlg_sig_settable_ctx_params },     \
        { 0, NULL },                                                                                  \
    };
SIGNATURE_FUNCTIONS(ecdsa)
SIGNATURE_FUNCTIONS(rsa)
SIGNATURE_FUNCTIONS(ed25519)
