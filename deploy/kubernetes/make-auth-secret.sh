#!/bin/sh
# Make the cluster's credentials and, with --apply, the Secret tensorwire-auth from them.
#
#   deploy/kubernetes/make-auth-secret.sh DIR [SERVER_NAME] [--apply]
#
# DIR receives exactly the Secret's keys:
#   token        a random cluster token (every call carries it)
#   server-name  the name the certificate is issued for (default tensorwire.cluster); every
#                client checks it instead of the address it dials (TENSORWIRE_TLS_SERVER_NAME)
#   tls.crt      the cluster certificate (server and client use), signed by ca.crt
#   tls.key      its private key
#   ca.crt       the CA that verifies it
# The CA's own key is deleted once it has signed: run again to rotate everything.
set -eu
if [ $# -lt 1 ]; then
    echo "usage: $0 DIR [SERVER_NAME] [--apply]" >&2
    exit 2
fi
dir=$1
name=${2:-tensorwire.cluster}
apply=${3:-}
umask 077
mkdir -p "$dir"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# No trailing newline: the values travel as gRPC metadata and TLS names.
printf %s "$(openssl rand -hex 32)" > "$dir/token"
printf %s "$name" > "$dir/server-name"
openssl req -x509 -new -nodes -days 365 -subj "/CN=tensorwire cluster CA" \
    -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -keyout "$work/ca.key" -out "$dir/ca.crt" 2>/dev/null
openssl req -new -nodes -subj "/CN=$name" \
    -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -keyout "$dir/tls.key" -out "$work/tls.csr" 2>/dev/null
printf 'subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n' \
    "$name" > "$work/extensions"
openssl x509 -req -days 365 -in "$work/tls.csr" -CA "$dir/ca.crt" -CAkey "$work/ca.key" \
    -CAcreateserial -CAserial "$work/ca.srl" -extfile "$work/extensions" \
    -out "$dir/tls.crt" 2>/dev/null
if [ "$apply" = "--apply" ]; then
    kubectl create secret generic tensorwire-auth --from-file="$dir"
else
    echo "credentials in $dir; create the Secret with:"
    echo "  kubectl create secret generic tensorwire-auth --from-file=$dir"
fi
