/*
 * delegator OpenSSL 3 provider: keys that exist only as references to keyd.
 * See docs/OPENSSL-PROVIDER.md for what it does and docs/PROTOCOL.md for the wire format.
 */
#ifndef DELEGATOR_PROVIDER_H
#define DELEGATOR_PROVIDER_H

#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <openssl/core.h>
#include <openssl/core_dispatch.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>

/* Every algorithm this provider offers carries this property (provider(7), "Properties"). */
#define DLG_PROPS "provider=delegator"
/* The DER structure name our PEM decoder hands to our DER decoders (provider-decoder(7)). */
#define DLG_STRUCTURE "delegator-ref"
#define DLG_PEM_LABEL "DELEGATOR KEY REFERENCE"

#define DLG_NAMES_EC "EC:id-ecPublicKey:1.2.840.10045.2.1"
#define DLG_NAMES_RSA "RSA:rsaEncryption:1.2.840.113549.1.1.1"
#define DLG_NAMES_ED25519 "ED25519:1.3.101.112"

enum dlg_key_type { DLG_EC = 1, DLG_RSA, DLG_ED25519 };

/* Reason codes, named by OSSL_FUNC_provider_get_reason_strings (provider-base(7)). */
enum dlg_reason {
    DLG_R_BAD_REFERENCE = 1,
    DLG_R_KEYD_UNAVAILABLE,
    DLG_R_KEYD_TIMEOUT,
    DLG_R_KEYD_REFUSED,
    DLG_R_KEYD_PROTOCOL,
    DLG_R_UNSUPPORTED,
    DLG_R_NOT_WHOLE_MESSAGE,
    DLG_R_NO_PRIVATE_PART,
    DLG_R_BAD_CONFIG,
    DLG_R_INIT_FAILED,
};

struct dlg_conn;

typedef struct dlg_prov {
    const OSSL_CORE_HANDLE *handle;
    OSSL_LIB_CTX *libctx;           /* for BIO_new_from_core_bio */
    OSSL_FUNC_core_new_error_fn *new_error;
    OSSL_FUNC_core_set_error_debug_fn *set_error_debug;
    OSSL_FUNC_core_vset_error_fn *vset_error;
    int timeout_ms;                 /* per keyd request, connect included */
    char config_error[128];         /* a bad openssl.cnf value: every signature fails with it */
    pthread_mutex_t pool_lock;      /* guards idle */
    struct dlg_conn *idle;          /* idle keyd connections, reused across operations */
} DLG_PROV;

typedef struct dlg_key {
    DLG_PROV *prov;
    enum dlg_key_type type;
    /* Set for a key decoded from a reference file; NULL for a public key imported for matching. */
    char *socket_path;
    char *server_name;
    char *key_ref;
    /* Public parts only; "has private key" (provider-keymgmt(7)) means: keyd holds it for us. */
    char group[16];                 /* EC: "P-256" | "P-384" */
    unsigned char *pub;             /* EC: uncompressed point; Ed25519: 32 bytes */
    size_t pub_len;
    BIGNUM *n, *e;                  /* RSA */
} DLG_KEY;

/*
 * The reference a decoder passes to OSSL_FUNC_keymgmt_load (provider-object(7)). Its size
 * is deliberately not sizeof(void *): another provider's load, handed our reference by
 * mistake, checks the size and refuses instead of reading our object as its own.
 */
typedef struct dlg_reference {
    uint64_t magic;
    DLG_KEY *key;
} DLG_REFERENCE;
#define DLG_REFERENCE_MAGIC 0x444c475245463031ULL /* "DLGREF01" */

void dlg_error_at(DLG_PROV *prov, const char *file, int line, const char *func, int reason, const char *fmt, ...);
/* Raises an OpenSSL error with this provider's reason code, at the caller's file and line. */
#define dlg_error(prov, reason, ...) dlg_error_at((prov), OPENSSL_FILE, OPENSSL_LINE, OPENSSL_FUNC, (reason), __VA_ARGS__)

/*
 * A UTF8_STRING parameter (a digest, padding or group name) copied into buf, NUL-terminated;
 * 0 with an error when p is of another type, has no data or does not fit. OSSL_PARAM(3): a
 * caller's UTF8_STRING may have NULL data, and data_size, not a NUL, ends it.
 */
#define DLG_PARAM_NAME_SIZE 64
int dlg_param_get_name(DLG_PROV *prov, const OSSL_PARAM *p, char *buf, size_t size);

DLG_KEY *dlg_key_new(DLG_PROV *prov, enum dlg_key_type type);
DLG_KEY *dlg_key_dup(const DLG_KEY *key);
void dlg_key_free(DLG_KEY *key);
int dlg_key_max_signature_size(const DLG_KEY *key);

/* Sends signHandshakeContent (docs/PROTOCOL.md, opcode 0x05) and returns the signature. */
int dlg_keyd_sign(const DLG_KEY *key, uint16_t scheme, const unsigned char *content, size_t content_len,
                  unsigned char *sig, size_t *siglen, size_t sigsize);
void dlg_keyd_pool_free(DLG_PROV *prov);

extern const OSSL_DISPATCH dlg_pem_decoder_functions[];
extern const OSSL_DISPATCH dlg_der_decoder_ec_functions[];
extern const OSSL_DISPATCH dlg_der_decoder_rsa_functions[];
extern const OSSL_DISPATCH dlg_der_decoder_ed25519_functions[];
extern const OSSL_DISPATCH dlg_keymgmt_ec_functions[];
extern const OSSL_DISPATCH dlg_keymgmt_rsa_functions[];
extern const OSSL_DISPATCH dlg_keymgmt_ed25519_functions[];
extern const OSSL_DISPATCH dlg_signature_ecdsa_functions[];
extern const OSSL_DISPATCH dlg_signature_rsa_functions[];
extern const OSSL_DISPATCH dlg_signature_ed25519_functions[];

#endif
