/*
 * Test program for reference-file.test.ts: reads a key file as nginx and haproxy read theirs
 * (PEM_read_bio_PrivateKey, through the delegator provider when OPENSSL_CONF loads it):
 *
 *   load-pem KEY-FILE
 *
 * prints "loaded" and exits 0, or prints OpenSSL's errors on stderr and exits 1. The errors
 * are the server's log line: OSSL_STORE (the openssl commands) keeps only its own
 * "unsupported", PEM_read_bio_PrivateKey keeps the decoder's reason.
 */
#include <stdio.h>
#include <openssl/err.h>
#include <openssl/pem.h>

int main(int argc, char **argv)
{
    BIO *in;
    EVP_PKEY *key;

    if (argc != 2)
        return 2;
    if ((in = BIO_new_file(argv[1], "r")) == NULL)
        goto failed;
    key = PEM_read_bio_PrivateKey(in, NULL, NULL, NULL);
    BIO_free(in);
    if (key == NULL)
        goto failed;
    printf("loaded\n");
    EVP_PKEY_free(key);
    return 0;
failed:
    ERR_print_errors_fp(stderr);
    return 1;
}
