/*
 * DECODER (provider-decoder(7)): a "key file" that holds only a reference to a key in keyd.
 *
 *   -----BEGIN DELEGATOR KEY REFERENCE-----
 *   base64 of DER:
 *     DelegatorKeyReference ::= SEQUENCE {
 *       version     INTEGER (1),
 *       socketPath  UTF8String,            -- keyd's signing socket
 *       serverName  UTF8String,            -- the name keyd checks the grant and key for
 *       keyRef      UTF8String,            -- keyd's key reference (docs/PROTOCOL.md, identity)
 *       publicKey   SubjectPublicKeyInfo } -- RFC 5280 §4.1.2.7, the certificate's key
 *   -----END DELEGATOR KEY REFERENCE-----
 *
 * Two steps, as OpenSSL chains decoders: "pem" -> DER tagged with our structure name, then
 * "der" + structure -> a key object passed by reference (provider-object(7)) to our KEYMGMT's
 * load. The file has no private part; `delegator admin export-ref NAME` writes it.
 */
#include <string.h>
#include <openssl/asn1t.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/core_object.h>
#include <openssl/ec.h>
#include <openssl/obj_mac.h>
#include <openssl/objects.h>
#include <openssl/params.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include "delegator.h"

typedef struct {
    X509_ALGOR *algorithm;
    ASN1_BIT_STRING *public_key;
} DLG_SPKI;

/* Our own SubjectPublicKeyInfo template: plain ASN.1, no key decoding behind it. */
ASN1_SEQUENCE(DLG_SPKI) = {
    ASN1_SIMPLE(DLG_SPKI, algorithm, X509_ALGOR),
    ASN1_SIMPLE(DLG_SPKI, public_key, ASN1_BIT_STRING),
} static_ASN1_SEQUENCE_END(DLG_SPKI)

typedef struct {
    ASN1_INTEGER *version;
    ASN1_UTF8STRING *socket_path;
    ASN1_UTF8STRING *server_name;
    ASN1_UTF8STRING *key_ref;
    DLG_SPKI *public_key;
} DLG_REF_ASN1;

ASN1_SEQUENCE(DLG_REF_ASN1) = {
    ASN1_SIMPLE(DLG_REF_ASN1, version, ASN1_INTEGER),
    ASN1_SIMPLE(DLG_REF_ASN1, socket_path, ASN1_UTF8STRING),
    ASN1_SIMPLE(DLG_REF_ASN1, server_name, ASN1_UTF8STRING),
    ASN1_SIMPLE(DLG_REF_ASN1, key_ref, ASN1_UTF8STRING),
    ASN1_SIMPLE(DLG_REF_ASN1, public_key, DLG_SPKI),
} static_ASN1_SEQUENCE_END(DLG_REF_ASN1)

/* RFC 8017 §A.1.1 RSAPublicKey. */
typedef struct {
    BIGNUM *n;
    BIGNUM *e;
} DLG_RSA_PUB;

ASN1_SEQUENCE(DLG_RSA_PUB) = {
    ASN1_SIMPLE(DLG_RSA_PUB, n, BIGNUM),
    ASN1_SIMPLE(DLG_RSA_PUB, e, BIGNUM),
} static_ASN1_SEQUENCE_END(DLG_RSA_PUB)

static void *dlg_decoder_newctx(void *provctx)
{
    return provctx; /* nothing per operation: the provider context is enough */
}

static void dlg_decoder_freectx(void *ctx)
{
    (void)ctx;
}

/* "pem" -> "DER": only our PEM label; anything else is left to the other decoders. */
static int dlg_pem_decode(void *ctx, OSSL_CORE_BIO *cin, int selection, OSSL_CALLBACK *data_cb,
                          void *data_cbarg, OSSL_PASSPHRASE_CALLBACK *pw_cb, void *pw_cbarg)
{
    DLG_PROV *prov = ctx;
    BIO *in = BIO_new_from_core_bio(prov->libctx, cin);
    char *label = NULL, *header = NULL;
    unsigned char *der = NULL;
    long der_len = 0;
    int ret = 1; /* provider-decoder(7): 1 with no object means "not mine, carry on" */

    (void)selection, (void)pw_cb, (void)pw_cbarg;
    if (in == NULL)
        return 1;
    if (PEM_read_bio(in, &label, &header, &der, &der_len) > 0 && strcmp(label, DLG_PEM_LABEL) == 0) {
        OSSL_PARAM params[3];
        params[0] = OSSL_PARAM_construct_octet_string(OSSL_OBJECT_PARAM_DATA, der, (size_t)der_len);
        params[1] = OSSL_PARAM_construct_utf8_string(OSSL_OBJECT_PARAM_DATA_STRUCTURE, (char *)DLG_STRUCTURE, 0);
        params[2] = OSSL_PARAM_construct_end();
        ret = data_cb(params, data_cbarg);
    }
    OPENSSL_free(label);
    OPENSSL_free(header);
    OPENSSL_free(der);
    BIO_free(in);
    return ret;
}

static char *asn1_string_dup(const ASN1_STRING *s)
{
    int len = ASN1_STRING_length(s);
    const unsigned char *data = ASN1_STRING_get0_data(s);
    if (len <= 0 || len > 4096 || memchr(data, 0, (size_t)len) != NULL)
        return NULL;
    return OPENSSL_strndup((const char *)data, (size_t)len);
}

/* The public key of the reference as our key object, or NULL with the reason in *why. */
static DLG_KEY *key_from_spki(DLG_PROV *prov, const DLG_SPKI *spki, const char **why)
{
    const ASN1_OBJECT *oid = NULL;
    const void *param = NULL;
    int param_type = 0;
    const unsigned char *bits = ASN1_STRING_get0_data(spki->public_key);
    int bits_len = ASN1_STRING_length(spki->public_key);
    DLG_KEY *key = NULL;

    X509_ALGOR_get0(&oid, &param_type, &param, spki->algorithm);
    switch (OBJ_obj2nid(oid)) {
    case NID_X9_62_id_ecPublicKey: {
        /* RFC 5480 §2.1.1: namedCurve only; the point uncompressed (§2.2). */
        int curve = param_type == V_ASN1_OBJECT ? OBJ_obj2nid(param) : NID_undef;
        size_t point_len = curve == NID_X9_62_prime256v1 ? 65 : curve == NID_secp384r1 ? 97 : 0;
        if (point_len == 0) {
            *why = "EC key not on P-256 or P-384";
            return NULL;
        }
        if ((size_t)bits_len != point_len || bits[0] != 0x04) {
            *why = "EC point not uncompressed or of the wrong length";
            return NULL;
        }
        if ((key = dlg_key_new(prov, DLG_EC)) == NULL)
            return NULL;
        strcpy(key->group, OBJ_nid2sn(curve));
        break;
    }
    case NID_rsaEncryption: {
        const unsigned char *p = bits;
        DLG_RSA_PUB *rsa = (DLG_RSA_PUB *)ASN1_item_d2i(NULL, &p, bits_len, ASN1_ITEM_rptr(DLG_RSA_PUB));
        if (rsa == NULL || p != bits + bits_len || BN_num_bits(rsa->n) < 2048 || BN_num_bits(rsa->n) > 8192) {
            ASN1_item_free((ASN1_VALUE *)rsa, ASN1_ITEM_rptr(DLG_RSA_PUB));
            *why = "RSA public key malformed or not 2048..8192 bits";
            return NULL;
        }
        if ((key = dlg_key_new(prov, DLG_RSA)) != NULL) {
            key->n = rsa->n, key->e = rsa->e;
            rsa->n = rsa->e = NULL;
        }
        ASN1_item_free((ASN1_VALUE *)rsa, ASN1_ITEM_rptr(DLG_RSA_PUB));
        return key;
    }
    case NID_ED25519:
        if (bits_len != 32) { /* RFC 8410 §4 */
            *why = "Ed25519 public key not 32 bytes";
            return NULL;
        }
        if ((key = dlg_key_new(prov, DLG_ED25519)) == NULL)
            return NULL;
        break;
    default:
        *why = "key algorithm not EC, RSA or Ed25519";
        return NULL;
    }
    if ((key->pub = OPENSSL_memdup(bits, (size_t)bits_len)) == NULL) {
        dlg_key_free(key);
        return NULL;
    }
    key->pub_len = (size_t)bits_len;
    return key;
}

/* "der" + structure delegator-ref -> a key object of `want` type, by reference. */
static int dlg_der_decode(DLG_PROV *prov, enum dlg_key_type want, const char *data_type, OSSL_CORE_BIO *cin,
                          OSSL_CALLBACK *object_cb, void *object_cbarg)
{
    BIO *in = BIO_new_from_core_bio(prov->libctx, cin);
    unsigned char buf[16384];
    const unsigned char *p = buf;
    int len = 0, n;
    DLG_REF_ASN1 *ref = NULL;
    DLG_KEY *key = NULL;
    const char *why = "does not decode";
    int ret = 0;

    if (in == NULL)
        return 0;
    while (len < (int)sizeof(buf) && (n = BIO_read(in, buf + len, (int)sizeof(buf) - len)) > 0)
        len += n;
    BIO_free(in);
    ref = (DLG_REF_ASN1 *)ASN1_item_d2i(NULL, &p, len, ASN1_ITEM_rptr(DLG_REF_ASN1));
    if (ref == NULL || p != buf + len)
        goto bad;
    if (ASN1_INTEGER_get(ref->version) != 1) {
        why = "version is not 1";
        goto bad;
    }
    if ((key = key_from_spki(prov, ref->public_key, &why)) == NULL)
        goto bad;
    if (key->type != want) {
        ret = 1; /* another of our DER decoders (the key's type) takes it */
        goto done;
    }
    key->socket_path = asn1_string_dup(ref->socket_path);
    key->server_name = asn1_string_dup(ref->server_name);
    key->key_ref = asn1_string_dup(ref->key_ref);
    if (key->socket_path == NULL || key->server_name == NULL || key->key_ref == NULL
        || strlen(key->server_name) > 255 || strlen(key->key_ref) > 255) {
        why = "socket path, server name or key reference empty or too long";
        goto bad;
    }
    if (key->socket_path[0] != '/') {
        /* A relative path would be resolved from the server's working directory (nginx's is
         * its prefix or /), not from the reference file's, which a decoder is never told (it
         * reads a BIO). `delegator admin export-ref` writes an absolute path. */
        dlg_error(prov, DLG_R_BAD_REFERENCE, "keyd socket path \"%s\" is relative: a reference must name keyd's socket by an absolute path (export it again with delegator admin export-ref)", key->socket_path);
        goto done;
    }
    {
        int object_type = OSSL_OBJECT_PKEY;
        DLG_REFERENCE reference = { DLG_REFERENCE_MAGIC, key };
        OSSL_PARAM params[4];
        params[0] = OSSL_PARAM_construct_int(OSSL_OBJECT_PARAM_TYPE, &object_type);
        params[1] = OSSL_PARAM_construct_utf8_string(OSSL_OBJECT_PARAM_DATA_TYPE, (char *)data_type, 0);
        params[2] = OSSL_PARAM_construct_octet_string(OSSL_OBJECT_PARAM_REFERENCE, &reference, sizeof(reference));
        params[3] = OSSL_PARAM_construct_end();
        /* The keymgmt's load makes its own copy: this one is ours to free. */
        ret = object_cb(params, object_cbarg);
    }
    goto done;
bad:
    dlg_error(prov, DLG_R_BAD_REFERENCE, "%s", why);
done:
    dlg_key_free(key);
    ASN1_item_free((ASN1_VALUE *)ref, ASN1_ITEM_rptr(DLG_REF_ASN1));
    return ret;
}

#define DER_DECODER(lower, TYPE, data_type)                                                          \
    static int dlg_der_decode_##lower(void *ctx, OSSL_CORE_BIO *cin, int selection,                   \
                                      OSSL_CALLBACK *object_cb, void *object_cbarg,                   \
                                      OSSL_PASSPHRASE_CALLBACK *pw_cb, void *pw_cbarg)                \
    {                                                                                                 \
        (void)selection, (void)pw_cb, (void)pw_cbarg;                                                 \
        return dlg_der_decode(ctx, TYPE, data_type, cin, object_cb, object_cbarg);                    \
    }                                                                                                 \
    const OSSL_DISPATCH dlg_der_decoder_##lower##_functions[] = {                                     \
        { OSSL_FUNC_DECODER_NEWCTX, (void (*)(void))dlg_decoder_newctx },                             \
        { OSSL_FUNC_DECODER_FREECTX, (void (*)(void))dlg_decoder_freectx },                           \
        { OSSL_FUNC_DECODER_DECODE, (void (*)(void))dlg_der_decode_##lower },                         \
        { 0, NULL },                                                                                  \
    };

DER_DECODER(ec, DLG_EC, "EC")
DER_DECODER(rsa, DLG_RSA, "RSA")
DER_DECODER(ed25519, DLG_ED25519, "ED25519")

const OSSL_DISPATCH dlg_pem_decoder_functions[] = {
    { OSSL_FUNC_DECODER_NEWCTX, (void (*)(void))dlg_decoder_newctx },
    { OSSL_FUNC_DECODER_FREECTX, (void (*)(void))dlg_decoder_freectx },
    { OSSL_FUNC_DECODER_DECODE, (void (*)(void))dlg_pem_decode },
    { 0, NULL },
};
