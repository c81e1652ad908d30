#!/usr/bin/env bash
# Conformance gate: the curated tlsfuzzer TLS 1.3 suite, the TLS 1.2 suite, then the
# client-certificate suite (`--suite client-auth`, with a required client CA), against
#   1. `delegator serve` (the engine alone, in-process ECDSA P-256 key), and
#   2. the whole product (`npm start`: edge + keyd + demo upstream; keyd signs the TLS 1.3
#      CertificateVerify and the TLS 1.2 ServerKeyExchange),
# as docs/CONFORMANCE.md describes. Fails when any probe fails that OpenSSL 3.0.19 does
# not also fail (the runner's baseline), or when a script times out or crashes.
#
# Needs ../shared/tools/tlsfuzzer beside the checkout (or TLSFUZZER_TOOLS) and python3
# with python3-ecdsa (setup.sh installs it from Debian). Run on its own:
#   bash .ci/conformance.sh
#   bash .ci/conformance.sh --target serve -- --only finished   # one target, run.sh options after --
#   bash .ci/conformance.sh --suite tls12 --target serve        # one suite (tls13|tls12|both)
# Exit status: 0 clean, 1 a probe failed outside the baseline, 2 setup error.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

TARGET=both
SUITES=both
EXTRA=()
while [ $# -gt 0 ]; do
  case $1 in
    --target) TARGET=$2; shift 2 ;;
    --suite) SUITES=$2; shift 2 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) echo "usage: conformance.sh [--target serve|product|both] [--suite tls13|tls12|both] [-- run.sh options]" >&2; exit 2 ;;
  esac
done
case $TARGET in serve|product|both) ;; *) echo "conformance: --target must be serve, product or both" >&2; exit 2 ;; esac
case $SUITES in tls13|tls12|both) ;; *) echo "conformance: --suite must be tls13, tls12 or both" >&2; exit 2 ;; esac

TOOLS=${TLSFUZZER_TOOLS:-$ROOT/../shared/tools/tlsfuzzer}
if [ ! -x "$TOOLS/run.sh" ]; then
  echo "conformance: $TOOLS/run.sh not found (set TLSFUZZER_TOOLS)" >&2
  exit 2
fi
BASELINE=$TOOLS/baseline/openssl-3.0.19-ecdsa-p256.failures.txt
CLIENT_AUTH_BASELINE=$TOOLS/baseline/openssl-3.0.19-client-auth-ecdsa-p256.failures.txt
# All twelve client-auth scripts: three TLS 1.3, nine TLS 1.2 (docs/CONFORMANCE.md).
CLIENT_AUTH_SCRIPTS=tls13-certificate-request,tls13-certificate-verify,tls13-ecdsa-in-certificate-verify,certificate-request,certificate-verify,certificate-verify-malformed,certificate-verify-malformed-sig,certificate-malformed,extended-master-secret-extension-with-client-cert,rsa-sigs-on-certificate-verify,rsa-pss-sigs-on-certificate-verify,ecdsa-in-certificate-verify
# Our CertificateRequest's signature_algorithms, in order (src/tls/handshake/client-certificate-verify.ts).
CR13_SIGALGS="ecdsa_secp256r1_sha256 ecdsa_secp384r1_sha384 ecdsa_secp521r1_sha512 ed25519 rsa_pss_rsae_sha256 rsa_pss_rsae_sha384 rsa_pss_rsae_sha512"
CR12_SIGALGS="ecdsa_secp256r1_sha256 ecdsa_secp384r1_sha384 ecdsa_secp521r1_sha512 ed25519 rsa_pss_rsae_sha256 rsa_pss_rsae_sha384 rsa_pss_rsae_sha512 rsa_pkcs1_sha256 rsa_pkcs1_sha384 rsa_pkcs1_sha512 ecdsa_sha224"
BASELINE12=$TOOLS/baseline/openssl-3.0.19-tls12-ecdsa-p256.failures.txt
# Own work directory: several checkouts may run conformance on one machine at once.
WORK=$(mktemp -d /tmp/conformance-XXXXXX)
export TLSFUZZER_WORK=$WORK/tlsfuzzer
SERVER_PID=
cleanup() {
  if [ -n "$SERVER_PID" ]; then kill -TERM "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

log() { printf '\n== %s ==\n' "$*"; }

log "tlsfuzzer setup (vendored archives)"
"$TOOLS/setup.sh" --vendored

log "build"
npm run build --silent

free_port() {
  node -e "const s=require('node:net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})"
}

# Waits until something accepts TCP connections on 127.0.0.1:$1 (the server prints no
# machine-readable ready line), failing if the server process exits first.
wait_listening() {
  local port=$1 i
  for i in $(seq 1 600); do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then echo "conformance: server exited before listening" >&2; return 1; fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.2
  done
  echo "conformance: server did not listen on $port within 120 s" >&2
  return 1
}

stop_server() {
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
}

# Every group the engine supports: `serve` is started with all of them so the suite covers
# each. The product runs the engine's defaults, which leave out ffdhe4096/6144/8192 (their
# exchange costs 3-13 ms, and a client picks the group: src/tls/crypto/key-exchange.ts).
GROUPS_ALL=x25519,secp256r1,secp384r1,secp521r1,x448,ffdhe2048,ffdhe3072,ffdhe4096,ffdhe6144,ffdhe8192
GROUPS_DEFAULT=x25519,secp256r1,secp384r1,secp521r1,x448,ffdhe2048,ffdhe3072
status=0

# $1 label, $2 port, $3 CA file, $4 unknown-SNI behaviour, $5 the server's groups: runs the
# suite(s), then compares the failures with the baselines.
run_suite() {
  local label=$1 port=$2 ca=$3 groups=$5 out rc
  if [ "$SUITES" != tls12 ]; then
    out=$WORK/results-$label-tls13 rc=0
    log "tlsfuzzer tls13 against $label (port $port)"
    # --timeout: test-tls13-finished alone takes 106 s on a quiet 2-core machine and up to
    # 300 s (the runner's default limit) on a loaded one; a slow machine is not a failure.
    "$TOOLS/run.sh" --suite tls13 --groups "$groups" --tickets 2 --hrr-cookie --timeout 600 \
      --out "$out" ${EXTRA[@]+"${EXTRA[@]}"} 127.0.0.1 "$port" localhost "$ca" || rc=$?
    if [ "$rc" -eq 2 ]; then echo "conformance: run.sh setup error against $label" >&2; status=1; return; fi
    node .ci/tlsfuzzer-baseline.mjs "$out" "$BASELINE" .ci/tlsfuzzer-deviations.txt || status=1
  fi
  if [ "$SUITES" != tls13 ]; then
    out=$WORK/results-$label-tls12 rc=0
    log "tlsfuzzer tls12 against $label (port $port)"
    # The TLS 1.2 profile of docs/TLS12.md: ECDHE with x25519, P-256, P-384; the edge refuses
    # names it has no route for (fatal unrecognized_name), serve answers every name.
    # large-hello takes ~60 s on a quiet machine, several minutes on a loaded one.
    "$TOOLS/run.sh" --suite tls12 --groups x25519,secp256r1,secp384r1 --sni-unknown "$4" --timeout 900 \
      --out "$out" ${EXTRA[@]+"${EXTRA[@]}"} 127.0.0.1 "$port" localhost "$ca" || rc=$?
    if [ "$rc" -eq 2 ]; then echo "conformance: run.sh setup error against $label (tls12)" >&2; status=1; return; fi
    node .ci/tlsfuzzer-baseline.mjs "$out" "$BASELINE12" || status=1
  fi
}

# $1 label, $2 port, $3 CA file: the client-certificate suite against a server requiring
# a certificate from $CLIENT_CERTS/ca.pem (generated by run.sh at run time, outside the tree).
CLIENT_CERTS=$WORK/client-certs
run_client_auth() {
  local label=$1 port=$2 ca=$3 out=$WORK/results-client-auth-$1 rc=0
  log "tlsfuzzer client-auth against $label (port $port)"
  "$TOOLS/run.sh" --suite client-auth --no-preflight --client-certs "$CLIENT_CERTS" --only "$CLIENT_AUTH_SCRIPTS" \
    --cr13-sigalgs "$CR13_SIGALGS" --cr12-sigalgs "$CR12_SIGALGS" --cr-ca-names --cv-illegal-parameter --timeout 1200 \
    --out "$out" ${EXTRA[@]+"${EXTRA[@]}"} 127.0.0.1 "$port" localhost "$ca" || rc=$?
  if [ "$rc" -eq 2 ]; then echo "conformance: run.sh setup error against $label" >&2; status=1; return; fi
  node .ci/tlsfuzzer-baseline.mjs "$out" "$CLIENT_AUTH_BASELINE" || status=1
}
"$TOOLS/run.sh" --gen-client-certs --client-certs "$CLIENT_CERTS" >/dev/null

if [ "$TARGET" != product ]; then
  PORT=$(free_port)
  node dist/src/cli/main.js serve --port "$PORT" --hrr-cookie --tickets 2 --groups "$GROUPS_ALL" --dir "$WORK/serve" --log-level warn &
  SERVER_PID=$!
  wait_listening "$PORT"
  run_suite serve "$PORT" "$WORK/serve/ca.pem" continue "$GROUPS_ALL"
  stop_server
  PORT=$(free_port)
  node dist/src/cli/main.js serve --port "$PORT" --dir "$WORK/serve" --log-level warn --client-ca "$CLIENT_CERTS/ca.pem" &
  SERVER_PID=$!
  wait_listening "$PORT"
  run_client_auth serve "$PORT" "$WORK/serve/ca.pem"
  stop_server
fi

if [ "$TARGET" = both ] && [ "$status" -ne 0 ]; then
  # The product runs the same engine: its run would repeat the failures, at length.
  echo "conformance: the engine alone failed; the whole-product run is skipped" >&2
elif [ "$TARGET" != serve ]; then
  # The whole product: edge + keyd (keyd signs every CertificateVerify) + the demo upstream.
  PORT=$(free_port)
  DELEGATOR_HOME=$WORK/product node dist/src/cli/main.js demo --port "$PORT" >"$WORK/product.log" 2>&1 &
  SERVER_PID=$!
  wait_listening "$PORT"
  run_suite product "$PORT" "$WORK/product/demo-ca/ca.pem" fatal "$GROUPS_DEFAULT"
  stop_server
  PORT=$(free_port)
  DELEGATOR_HOME=$WORK/product node dist/src/cli/main.js demo --port "$PORT" --client-ca "$CLIENT_CERTS/ca.pem" >>"$WORK/product.log" 2>&1 &
  SERVER_PID=$!
  wait_listening "$PORT"
  run_client_auth product "$PORT" "$WORK/product/demo-ca/ca.pem"
  stop_server
fi

log "conformance: $([ $status -eq 0 ] && echo clean || echo FAILED)"
exit $status
