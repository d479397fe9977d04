#!/usr/bin/env bash
# Generates Kiseki's TLS material with the openssl CLI: one cluster CA, and certificates
# signed by it for storage nodes, key servers, the control plane, the admin and tenants.
# Every key is ECDSA P-256. Re-running keeps what is still valid (idempotent).
#
# This script is the single source of Kiseki's certificate identities: the subject OU names
# the kind of holder (node, keyserver, control, admin, tenant) and CN the holder; a tenant's
# certificate also carries the URI SAN kiseki://tenant/<ID>. mod/transport/peer_identity.ts
# reads them back (its test issues certificates with this script), and the services
# authorise each call by them. Change the scheme here and there together.
set -euo pipefail

PROG=$(basename "$0")

usage() {
  cat <<EOF
Usage: $PROG [--out DIR] [--node NAME:SAN[,SAN...]]... [--keyserver NAME:SAN[,SAN...]]...
       [--control NAME:SAN[,SAN...]]... [--tenant ID]... [--admin]
       [--days N] [--ca-days N] [--force]

Writes a cluster CA and certificates signed by it (ECDSA P-256, SHA-256) into DIR
(default: \$KISEKI_DATA_DIR/config/tls):

  DIR/ca.crt, DIR/ca.key                 the cluster CA (keep ca.key off the nodes)
  DIR/<node>/      ca.crt server.crt server.key         --node      (serverAuth+clientAuth)
  DIR/<keysrv>/    ca.crt keyserver.crt keyserver.key   --keyserver (serverAuth+clientAuth)
  DIR/<control>/   ca.crt control.crt control.key       --control   (serverAuth+clientAuth)
  DIR/admin/       ca.crt admin.crt admin.key           --admin     (clientAuth)
  DIR/tenant-<id>/ ca.crt client.crt client.key         --tenant    (clientAuth)

Each folder holds what one host needs, under the names the systemd units use
(/etc/kiseki/tls/...).

What each identity may do on a node's data-path gRPC (9100): a node (OU=node) appends and
reads every tenant's deltas; a tenant's client appends and reads its own tenant's deltas
only; the admin (OU=admin) sets maintenance mode; all of them may ask for shard health.

  --node NAME:SANS       a storage node; NAME is its certificate CN and a DNS SAN; SANS is a
                         comma-separated list of further DNS names and IP addresses
  --keyserver NAME:SANS  a system key server (same form)
  --control NAME:SANS    a control plane server (same form)
  --tenant ID            a tenant client certificate: subject OU=tenant, CN=ID and the URI
                         SAN kiseki://tenant/ID (ID: letters, digits, '.', '_', '-'); for
                         the data path, ID is the tenant's id: 32 hex digits, with or
                         without the UUID's hyphens
  --admin                the operator's client certificate (OU=admin, URI kiseki://admin)
  --days N               leaf certificate lifetime in days (default 825)
  --ca-days N            CA lifetime in days (default 3650)
  --force                replace the CA and every requested certificate
  -h, --help             this text

An existing CA is never replaced without --force. A requested certificate is kept when it
still verifies against the CA, matches its key, has the requested names and has more than 30
days left; otherwise it is reissued with a new key. Keys are written mode 0600.

Example:
  $PROG --out DIR --node node1:127.0.0.1,node1.example.com --tenant acme \\
    --keyserver keysrv1:127.0.0.1 --admin
EOF
}

say() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() {
  say "$*"
  exit 2
}

OUT=""
FORCE=0
ADMIN=0
DAYS=825
CA_DAYS=3650
NODES=()
KEYSERVERS=()
CONTROLS=()
TENANTS=()

need_value() {
  if [ $# -lt 2 ] || [ -z "$2" ]; then die "$1 needs a value (see --help)"; fi
}

while [ $# -gt 0 ]; do
  case "$1" in
    -h | --help)
      usage
      exit 0
      ;;
    --out)
      need_value "$@"
      OUT=$2
      shift 2
      ;;
    --node)
      need_value "$@"
      NODES+=("$2")
      shift 2
      ;;
    --keyserver)
      need_value "$@"
      KEYSERVERS+=("$2")
      shift 2
      ;;
    --control)
      need_value "$@"
      CONTROLS+=("$2")
      shift 2
      ;;
    --tenant)
      need_value "$@"
      TENANTS+=("$2")
      shift 2
      ;;
    --admin)
      ADMIN=1
      shift
      ;;
    --days)
      need_value "$@"
      DAYS=$2
      shift 2
      ;;
    --ca-days)
      need_value "$@"
      CA_DAYS=$2
      shift 2
      ;;
    --force)
      FORCE=1
      shift
      ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

[[ "$DAYS" =~ ^[1-9][0-9]{0,4}$ ]] || die "--days must be a whole number of days, got '$DAYS'"
[[ "$CA_DAYS" =~ ^[1-9][0-9]{0,4}$ ]] || die "--ca-days must be a whole number of days, got '$CA_DAYS'"
if [ -z "$OUT" ]; then
  [ -n "${KISEKI_DATA_DIR:-}" ] || die "no output folder: give --out DIR or set KISEKI_DATA_DIR"
  OUT="$KISEKI_DATA_DIR/config/tls"
fi
command -v openssl >/dev/null 2>&1 || die "the openssl CLI is required (apt-get install openssl)"

CA_CRT="$OUT/ca.crt"
CA_KEY="$OUT/ca.key"

new_key() {
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
    -pkeyopt ec_param_enc:named_curve -out "$1" 2>/dev/null
}

serial() { printf '0x%s' "$(openssl rand -hex 16)"; }

ensure_ca() {
  if [ "$FORCE" -eq 0 ] && [ -f "$CA_CRT" ] && [ -f "$CA_KEY" ]; then
    say "keeping the existing CA $CA_CRT"
    return
  fi
  if [ "$FORCE" -eq 0 ] && { [ -f "$CA_CRT" ] || [ -f "$CA_KEY" ]; }; then
    die "only one of $CA_CRT and $CA_KEY exists; restore the other or pass --force"
  fi
  cat "$WORK/req.cnf" - >"$WORK/ca.cnf" <<'EOF'
[v3]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EOF
  new_key "$WORK/ca.key"
  openssl req -new -x509 -config "$WORK/ca.cnf" -extensions v3 -key "$WORK/ca.key" -sha256 \
    -days "$CA_DAYS" -set_serial "$(serial)" -subj "/O=Kiseki/OU=cluster CA/CN=Kiseki Cluster CA" \
    -out "$WORK/ca.crt" 2>"$WORK/err" || {
    cat "$WORK/err" >&2
    die "could not create the CA"
  }
  chmod 0644 "$WORK/ca.crt"
  mv -f "$WORK/ca.key" "$CA_KEY"
  mv -f "$WORK/ca.crt" "$CA_CRT"
  say "created the CA $CA_CRT"
}

valid_ipv4() {
  local IFS=. octets o
  [[ "$1" =~ ^[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$ ]] || return 1
  read -r -a octets <<<"$1"
  for o in "${octets[@]}"; do ((10#$o <= 255)) || return 1; done
}
valid_ipv6() { [[ "$1" == *:* && "$1" =~ ^[0-9A-Fa-f:.]+$ ]]; }
# A DNS name; all digits and dots is a mistyped IPv4 address, not a name.
valid_name() {
  [[ "$1" =~ ^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$ && ! "$1" =~ ^[0-9.]+$ ]]
}

# The plan: every certificate to issue, checked before anything is written.
JOB_KIND=()
JOB_DIR=()
JOB_BASE=()
JOB_SUBJECT=()
JOB_EKU=()
JOB_SANS=()
declare -A SEEN=()
plan() {
  [ -z "${SEEN[$2]:-}" ] || die "two certificates would share the folder $OUT/$2"
  SEEN[$2]=1
  JOB_KIND+=("$1")
  JOB_DIR+=("$2")
  JOB_BASE+=("$3")
  JOB_SUBJECT+=("$4")
  JOB_EKU+=("$5")
  JOB_SANS+=("$6")
}

# plan_server KIND FILEBASE SPEC   with SPEC = NAME:SAN[,SAN...]
plan_server() {
  local kind=$1 base=$2 arg=$3
  local name rest sans item items=()
  name=${arg%%:*}
  rest=""
  [ "$name" = "$arg" ] || rest=${arg#*:}
  valid_name "$name" || die "--$kind '$arg': '$name' is not a valid host name"
  sans="DNS:$name"
  [ -z "$rest" ] || IFS=, read -r -a items <<<"$rest"
  for item in "${items[@]}"; do
    [ -n "$item" ] || continue
    if valid_ipv4 "$item" || valid_ipv6 "$item"; then
      sans="$sans,IP:$item"
    elif valid_name "$item"; then
      sans="$sans,DNS:$item"
    else
      die "--$kind '$arg': '$item' is neither an IP address nor a DNS name"
    fi
  done
  plan "$kind" "$name" "$base" "/O=Kiseki/OU=$kind/CN=$name" "serverAuth, clientAuth" "$sans"
}

for a in "${NODES[@]}"; do plan_server node server "$a"; done
for a in "${KEYSERVERS[@]}"; do plan_server keyserver keyserver "$a"; done
for a in "${CONTROLS[@]}"; do plan_server control control "$a"; done
for t in "${TENANTS[@]}"; do
  [[ "$t" =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$ ]] ||
    die "--tenant '$t': a tenant id is 1-63 letters, digits, '.', '_' or '-'"
  plan tenant "tenant-$t" client "/O=Kiseki/OU=tenant/CN=$t" "clientAuth" "URI:kiseki://tenant/$t"
done
if [ "$ADMIN" -eq 1 ]; then
  plan admin admin admin "/O=Kiseki/OU=admin/CN=kiseki-admin" "clientAuth" "URI:kiseki://admin"
fi

# issue KIND DIRNAME FILEBASE SUBJECT EKU SANS
#   SANS: the subjectAltName value (e.g. "DNS:node1,IP:127.0.0.1").
issue() {
  local kind=$1 dir=$2 base=$3 subject=$4 eku=$5 sans=$6
  local dest="$OUT/$dir" crt key spec
  crt="$dest/$base.crt"
  key="$dest/$base.key"
  spec="subject=$subject;eku=$eku;san=$sans;days=$DAYS"

  if [ "$FORCE" -eq 1 ] || ! [ -f "$crt" ] || ! [ -f "$key" ] || ! [ -f "$dest/.$base.spec" ] ||
    [ "$(cat "$dest/.$base.spec")" != "$spec" ] ||
    ! openssl verify -CAfile "$CA_CRT" "$crt" >/dev/null 2>&1 ||
    ! openssl x509 -in "$crt" -noout -checkend $((30 * 86400)) >/dev/null 2>&1 ||
    [ "$(openssl x509 -in "$crt" -noout -pubkey)" != "$(openssl pkey -in "$key" -pubout)" ]; then
    cat >"$WORK/leaf.ext" <<EOF
[v3]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = $eku
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
subjectAltName = $sans
EOF
    new_key "$WORK/leaf.key"
    openssl req -new -config "$WORK/req.cnf" -key "$WORK/leaf.key" -subj "$subject" \
      -out "$WORK/leaf.csr" 2>"$WORK/err" || {
      cat "$WORK/err" >&2
      die "could not create the request for $kind $dir"
    }
    openssl x509 -req -in "$WORK/leaf.csr" -CA "$CA_CRT" -CAkey "$CA_KEY" \
      -set_serial "$(serial)" -days "$DAYS" -sha256 -extfile "$WORK/leaf.ext" -extensions v3 \
      -out "$WORK/leaf.crt" 2>"$WORK/err" || {
      cat "$WORK/err" >&2
      die "could not sign the certificate for $kind $dir (SANs: $sans)"
    }
    chmod 0644 "$WORK/leaf.crt"
    mkdir -p "$dest"
    mv -f "$WORK/leaf.key" "$key"
    mv -f "$WORK/leaf.crt" "$crt"
    printf '%s' "$spec" >"$dest/.$base.spec"
    say "issued $kind $dir ($crt)"
  else
    say "keeping $kind $dir ($crt)"
  fi
  if ! cmp -s "$CA_CRT" "$dest/ca.crt"; then
    cp "$CA_CRT" "$WORK/bundle-ca.crt"
    chmod 0644 "$WORK/bundle-ca.crt"
    mv -f "$WORK/bundle-ca.crt" "$dest/ca.crt"
  fi
}

# Keys are created 0600 by this umask; certificates are chmod 0644 explicitly.
umask 077
mkdir -p "$OUT"
WORK=$(mktemp -d "$OUT/.gen_certs.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# A minimal config, so that the local openssl.cnf cannot add extensions we did not ask for.
cat >"$WORK/req.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
EOF

ensure_ca
for i in "${!JOB_KIND[@]}"; do
  issue "${JOB_KIND[$i]}" "${JOB_DIR[$i]}" "${JOB_BASE[$i]}" "${JOB_SUBJECT[$i]}" \
    "${JOB_EKU[$i]}" "${JOB_SANS[$i]}"
done

# Certificates not requested this time that the current CA no longer vouches for (after
# --force made a new CA): say so rather than leave them to fail at a TLS handshake.
for crt in "$OUT"/*/*.crt; do
  if [ ! -f "$crt" ] || [ "$(basename "$crt")" = ca.crt ]; then continue; fi
  openssl verify -CAfile "$CA_CRT" "$crt" >/dev/null 2>&1 ||
    say "warning: $crt is not signed by the current CA; reissue it (name it again)"
done
