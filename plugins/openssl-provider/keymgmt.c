/*
 * KEYMGMT (provider-keymgmt(7)) for EC P-256/P-384, RSA and Ed25519 keys that live in keyd.
 *
 * A key object holds the public parts (for matching the certificate and for libssl's choice
 * of signature scheme) and where to ask keyd to sign. It never holds a private part: import
 * refuses one, and export of the private part is refused, so that OpenSSL can never move a
 * delegator key into another provider and sign there.
 */
#include <string.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/objects.h>
#include <openssl/param_build.h>
#include <openssl/params.h>
#include "delegator.h"

DLG_KEY *dlg_key_new(DLG_PROV *prov, enum dlg_key_type type)
{
    DLG_KEY *key = OPENSSL_zalloc(sizeof(*key));
    if (key != NULL)
        key->prov = prov, key->type = type;
    return key;
}

void dlg_key_free(DLG_KEY *key)
{
    if (key == NULL)
        return;
    OPENSSL_free(key->socket_path);
    OPENSSL_free(key->server_name);
    OPENSSL_free(key->key_ref);
    OPENSSL_free(key->pub);
    BN_free(key->n);
    BN_free(key->e);
    OPENSSL_free(key);
}

DLG_KEY *dlg_key_dup(const DLG_KEY *src)
{
    DLG_KEY *key = dlg_key_new(src->prov, src->type);
    if (key == NULL)
        return NULL;
    memcpy(key->group, src->group, sizeof(key->group));
    if ((src->socket_path && !(key->socket_path = OPENSSL_strdup(src->socket_path)))
        || (src->server_name && !(key->server_name = OPENSSL_strdup(src->server_name)))
        || (src->key_ref && !(key->key_ref = OPENSSL_strdup(src->key_ref)))
        || (src->pub && !(key->pub = OPENSSL_memdup(src->pub, src->pub_len)))
        || (src->n && !(key->n = BN_dup(src->n)))
        || (src->e && !(key->e = BN_dup(src->e)))) {
        dlg_key_free(key);
        return NULL;
    }
    key->pub_len = src->pub_len;
    return key;
}

static int is_p384(const DLG_KEY *key)
{
    return strcmp(key->group, "secp384r1") == 0;
}

int dlg_key_max_signature_size(const DLG_KEY *key)
{
    switch (key->type) {
    case DLG_EC:
        /* DER SEQUENCE of two INTEGERs of at most order length + 1 (a leading zero). */
        return is_p384(key) ? 104 : 72;
    case DLG_RSA:
        return key->n ? BN_num_bytes(key->n) : 0;
    case DLG_ED25519:
        return 64;
    }
    return 0;
}

static int key_bits(const DLG_KEY *key)
{
    switch (key->type) {
    case DLG_EC:
        return is_p384(key) ? 384 : 256;
    case DLG_RSA:
        return key->n ? BN_num_bits(key->n) : 0;
    case DLG_ED25519:
        return 256;
    }
    return 0;
}

static int key_security_bits(const DLG_KEY *key)
{
    switch (key->type) {
    case DLG_EC:
        return is_p384(key) ? 192 : 128;
    case DLG_RSA:
        return BN_security_bits(key_bits(key), -1);
    case DLG_ED25519:
        return 128;
    }
    return 0;
}

static int has_public(const DLG_KEY *key)
{
    return key->type == DLG_RSA ? key->n != NULL && key->e != NULL : key->pub != NULL;
}

#define KEYMGMT_NEW(lower, TYPE)                                                 \
    static void *dlg_keymgmt_new_##lower(void *provctx)                          \
    {                                                                            \
        return dlg_key_new(provctx, TYPE);                                       \
    }
KEYMGMT_NEW(ec, DLG_EC)
KEYMGMT_NEW(rsa, DLG_RSA)
KEYMGMT_NEW(ed25519, DLG_ED25519)

static void dlg_keymgmt_free(void *keydata)
{
    dlg_key_free(keydata);
}

/* provider-keymgmt(7) OSSL_FUNC_keymgmt_load: the reference our decoder passed. */
static void *dlg_keymgmt_load(const void *reference, size_t reference_sz)
{
    const DLG_REFERENCE *ref = reference;
    if (reference_sz != sizeof(*ref) || ref->magic != DLG_REFERENCE_MAGIC || ref->key == NULL)
        return NULL;
    return dlg_key_dup(ref->key);
}

static void *dlg_keymgmt_dup(const void *keydata, int selection)
{
    (void)selection;
    return dlg_key_dup(keydata);
}

static int dlg_keymgmt_has(const void *keydata, int selection)
{
    const DLG_KEY *key = keydata;
    if (key == NULL)
        return 0;
    if ((selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY) && !has_public(key))
        return 0;
    /* "Private key" here means: keyd holds it and will sign with it for us. */
    if ((selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) && key->key_ref == NULL)
        return 0;
    if ((selection & OSSL_KEYMGMT_SELECT_DOMAIN_PARAMETERS) && key->type == DLG_EC && key->group[0] == '\0')
        return 0;
    return 1;
}

static int dlg_keymgmt_match(const void *keydata1, const void *keydata2, int selection)
{
    const DLG_KEY *a = keydata1, *b = keydata2;
    if (a->type != b->type)
        return 0;
    if ((selection & OSSL_KEYMGMT_SELECT_DOMAIN_PARAMETERS) && a->type == DLG_EC && strcmp(a->group, b->group) != 0)
        return 0;
    if (selection & OSSL_KEYMGMT_SELECT_KEYPAIR) {
        /* Keys are the same when their public parts are (the certificate check). */
        if (!has_public(a) || !has_public(b))
            return 0;
        if (a->type == DLG_RSA)
            return BN_cmp(a->n, b->n) == 0 && BN_cmp(a->e, b->e) == 0;
        return strcmp(a->group, b->group) == 0 && a->pub_len == b->pub_len && memcmp(a->pub, b->pub, a->pub_len) == 0;
    }
    return 1;
}

/* EC group names as the default provider spells them, by NIST name or by short name. */
static int set_group(DLG_KEY *key, const char *name)
{
    int nid = OBJ_sn2nid(name);
    if (nid == NID_undef)
        nid = EC_curve_nist2nid(name);
    if (nid != NID_X9_62_prime256v1 && nid != NID_secp384r1)
        return 0;
    strcpy(key->group, OBJ_nid2sn(nid));
    return 1;
}

/* Public parts only: a private part offered here is refused (we never hold one). */
static int dlg_keymgmt_import(void *keydata, int selection, const OSSL_PARAM params[])
{
    DLG_KEY *key = keydata;
    const OSSL_PARAM *p;
    char group[DLG_PARAM_NAME_SIZE];
    const void *pub = NULL;
    size_t pub_len = 0;

    (void)selection;
    if (OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_PRIV_KEY) != NULL
        || OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_RSA_D) != NULL) {
        dlg_error(key->prov, DLG_R_NO_PRIVATE_PART, "import of a private key refused");
        return 0;
    }
    if (key->type == DLG_RSA) {
        if ((p = OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_RSA_N)) != NULL && !OSSL_PARAM_get_BN(p, &key->n))
            return 0;
        if ((p = OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_RSA_E)) != NULL && !OSSL_PARAM_get_BN(p, &key->e))
            return 0;
        return 1;
    }
    if (key->type == DLG_EC && (p = OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_GROUP_NAME)) != NULL
        && (!dlg_param_get_name(key->prov, p, group, sizeof(group)) || !set_group(key, group)))
        return 0;
    if ((p = OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_PUB_KEY)) != NULL) {
        if (!OSSL_PARAM_get_octet_string_ptr(p, &pub, &pub_len) || pub_len == 0)
            return 0;
        OPENSSL_free(key->pub);
        if ((key->pub = OPENSSL_memdup(pub, pub_len)) == NULL)
            return 0;
        key->pub_len = pub_len;
    }
    return 1;
}

static const OSSL_PARAM ec_public_types[] = {
    OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, NULL, 0),
    OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, NULL, 0),
    OSSL_PARAM_END,
};
static const OSSL_PARAM rsa_public_types[] = {
    OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_N, NULL, 0),
    OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_E, NULL, 0),
    OSSL_PARAM_END,
};
static const OSSL_PARAM ed25519_public_types[] = {
    OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, NULL, 0),
    OSSL_PARAM_END,
};

static const OSSL_PARAM *ec_types(int selection) { (void)selection; return ec_public_types; }
static const OSSL_PARAM *rsa_types(int selection) { (void)selection; return rsa_public_types; }
static const OSSL_PARAM *ed25519_types(int selection) { (void)selection; return ed25519_public_types; }

static int dlg_keymgmt_export(void *keydata, int selection, OSSL_CALLBACK *cb, void *cbarg)
{
    DLG_KEY *key = keydata;
    OSSL_PARAM_BLD *bld;
    OSSL_PARAM *params = NULL;
    int ok = 0;

    if ((selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) && key->key_ref != NULL)
        return 0; /* the private part is keyd's; OpenSSL then keeps the key in this provider */
    if ((bld = OSSL_PARAM_BLD_new()) == NULL)
        return 0;
    if (key->type == DLG_RSA)
        ok = OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, key->n)
             && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, key->e);
    else
        ok = (key->type != DLG_EC || OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, key->group, 0))
             && OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, key->pub, key->pub_len);
    if (ok && (params = OSSL_PARAM_BLD_to_param(bld)) != NULL)
        ok = cb(params, cbarg);
    else
        ok = 0;
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    return ok;
}

static int dlg_keymgmt_get_params(void *keydata, OSSL_PARAM params[])
{
    DLG_KEY *key = keydata;
    OSSL_PARAM *p;

    if ((p = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_BITS)) != NULL && !OSSL_PARAM_set_int(p, key_bits(key)))
        return 0;
    if ((p = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_SECURITY_BITS)) != NULL
        && !OSSL_PARAM_set_int(p, key_security_bits(key)))
        return 0;
    if ((p = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_MAX_SIZE)) != NULL
        && !OSSL_PARAM_set_int(p, dlg_key_max_signature_size(key)))
        return 0;
    if (key->type == DLG_ED25519) {
        /* Ed25519 signs the message itself (RFC 8032): no digest to choose. */
        if ((p = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_MANDATORY_DIGEST)) != NULL && !OSSL_PARAM_set_utf8_string(p, ""))
            return 0;
    } else if ((p = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_DEFAULT_DIGEST)) != NULL
               && !OSSL_PARAM_set_utf8_string(p, is_p384(key) ? "SHA384" : "SHA256")) {
        return 0;
    }
    if (key->type == DLG_EC) {
        if ((p = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_GROUP_NAME)) != NULL && !OSSL_PARAM_set_utf8_string(p, key->group))
            return 0;
        if ((p = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT)) != NULL
            && !OSSL_PARAM_set_utf8_string(p, "uncompressed"))
            return 0;
    }
    if (key->type != DLG_RSA) {
        if ((p = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_PUB_KEY)) != NULL && !OSSL_PARAM_set_octet_string(p, key->pub, key->pub_len))
            return 0;
        if ((p = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY)) != NULL
            && !OSSL_PARAM_set_octet_string(p, key->pub, key->pub_len))
            return 0;
    } else {
        if ((p = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_RSA_N)) != NULL && !OSSL_PARAM_set_BN(p, key->n))
            return 0;
        if ((p = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_RSA_E)) != NULL && !OSSL_PARAM_set_BN(p, key->e))
            return 0;
    }
    return 1;
}

static const OSSL_PARAM *dlg_keymgmt_gettable_params(void *provctx)
{
    static const OSSL_PARAM table[] = {
        OSSL_PARAM_int(OSSL_PKEY_PARAM_BITS, NULL),
        OSSL_PARAM_int(OSSL_PKEY_PARAM_SECURITY_BITS, NULL),
        OSSL_PARAM_int(OSSL_PKEY_PARAM_MAX_SIZE, NULL),
        OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_DEFAULT_DIGEST, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_MANDATORY_DIGEST, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT, NULL, 0),
        OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, NULL, 0),
        OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, NULL, 0),
        OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_N, NULL, 0),
        OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_E, NULL, 0),
        OSSL_PARAM_END,
    };
    (void)provctx;
    return table;
}

/* provider-keymgmt(7): the name of the SIGNATURE algorithm libcrypto fetches for the key. */
static const char *ec_operation_name(int op) { return op == OSSL_OP_SIGNATURE ? "ECDSA" : NULL; }
static const char *rsa_operation_name(int op) { return op == OSSL_OP_SIGNATURE ? "RSA" : NULL; }
static const char *ed25519_operation_name(int op) { return op == OSSL_OP_SIGNATURE ? "ED25519" : NULL; }

#define KEYMGMT_FUNCTIONS(lower)                                                                 \
    const OSSL_DISPATCH dlg_keymgmt_##lower##_functions[] = {                                   \
        { OSSL_FUNC_KEYMGMT_NEW, (void (*)(void))dlg_keymgmt_new_##lower },                     \
        { OSSL_FUNC_KEYMGMT_FREE, (void (*)(void))dlg_keymgmt_free },                           \
        { OSSL_FUNC_KEYMGMT_LOAD, (void (*)(void))dlg_keymgmt_load },                           \
        { OSSL_FUNC_KEYMGMT_DUP, (void (*)(void))dlg_keymgmt_dup },                             \
        { OSSL_FUNC_KEYMGMT_HAS, (void (*)(void))dlg_keymgmt_has },                             \
        { OSSL_FUNC_KEYMGMT_MATCH, (void (*)(void))dlg_keymgmt_match },                         \
        { OSSL_FUNC_KEYMGMT_IMPORT, (void (*)(void))dlg_keymgmt_import },                       \
        { OSSL_FUNC_KEYMGMT_IMPORT_TYPES, (void (*)(void))lower##_types },                      \
        { OSSL_FUNC_KEYMGMT_EXPORT, (void (*)(void))dlg_keymgmt_export },                       \
        { OSSL_FUNC_KEYMGMT_EXPORT_TYPES, (void (*)(void))lower##_types },                      \
        { OSSL_FUNC_KEYMGMT_GET_PARAMS, (void (*)(void))dlg_keymgmt_get_params },               \
        { OSSL_FUNC_KEYMGMT_GETTABLE_PARAMS, (void (*)(void))dlg_keymgmt_gettable_params },     \
        { OSSL_FUNC_KEYMGMT_QUERY_OPERATION_NAME, (void (*)(void))lower##_operation_name },     \
        { 0, NULL },                                                                            \
    };
KEYMGMT_FUNCTIONS(ec)
KEYMGMT_FUNCTIONS(rsa)
KEYMGMT_FUNCTIONS(ed25519)
