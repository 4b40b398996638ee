#!/bin/sh
# The secrets the overlays need, made locally with openssl, into the components' generated/ folders
# (ignored by git; kubectl kustomize reads them from there):
#   components/secrets/generated/    redis-password, redis-url, tokens.json (sha256 of two clients'
#                                    tokens) and client-tokens.txt (the tokens themselves: hand them
#                                    out, they are in no Secret)
#   components/tls-files/generated/  ca.crt + ca.key (the internal CA: keep ca.key offline), and
#                                    <name>.crt/.key for gateway, encoder, directions, generator, admin
# Files that exist are kept (run it again safely); --force makes everything anew.
#
#   k8s/generate-secrets.sh [--force]
#   GATEWAY_HOSTS="api.example.com 203.0.113.7" k8s/generate-secrets.sh   # names clients dial
# Environment: NAMESPACE (facedit), DAYS (certificate lifetime, 90), GATEWAY_HOSTS (none).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
app="$here/components/secrets/generated"
tls="$here/components/tls-files/generated"
ns="${NAMESPACE:-facedit}"
days="${DAYS:-90}"
if [ "${1:-}" = "--force" ]; then rm -rf "$app" "$tls"; fi
umask 077
mkdir -p "$app" "$tls"

if [ ! -s "$app/redis-password" ]; then
  openssl rand -hex 32 | tr -d '\n' > "$app/redis-password"
  printf 'redis://:%s@redis:6379/0' "$(cat "$app/redis-password")" > "$app/redis-url"
  echo "made the Redis password"
fi

sha256() { printf '%s' "$1" | openssl dgst -sha256 -r | cut -d' ' -f1; }
if [ ! -s "$app/tokens.json" ]; then
  ops=$(openssl rand -hex 24)
  app_token=$(openssl rand -hex 24)
  cat > "$app/tokens.json" <<JSON
{"default_custom_quota": 10,
 "clients": [
   {"name": "ops", "token_sha256": "$(sha256 "$ops")", "roles": ["admin"]},
   {"name": "app", "token_sha256": "$(sha256 "$app_token")", "roles": ["edit", "create"]}]}
JSON
  printf 'ops=%s\napp=%s\n' "$ops" "$app_token" > "$app/client-tokens.txt"
  echo "made tokens.json; the clients' tokens are in $app/client-tokens.txt"
fi

if [ ! -s "$tls/ca.crt" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -subj "/CN=facedit internal CA" -keyout "$tls/ca.key" -out "$tls/ca.crt" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  echo "made the internal CA"
fi
for name in gateway encoder directions generator admin; do
  [ -s "$tls/$name.crt" ] && continue
  san="DNS:$name,DNS:$name.$ns,DNS:$name.$ns.svc,DNS:$name.$ns.svc.cluster.local,DNS:localhost,IP:127.0.0.1"
  if [ "$name" = gateway ]; then
    san="$san,DNS:gateway-public.$ns.svc,DNS:gateway-public.$ns.svc.cluster.local"
    for host in ${GATEWAY_HOSTS:-}; do
      case "$host" in *[!0-9.]*) san="$san,DNS:$host" ;; *) san="$san,IP:$host" ;; esac
    done
  fi
  printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=critical,digitalSignature\n' \
    "$san" > "$tls/$name.ext"
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$name" \
    -keyout "$tls/$name.key" -out "$tls/$name.csr" 2>/dev/null
  openssl x509 -req -in "$tls/$name.csr" -CA "$tls/ca.crt" -CAkey "$tls/ca.key" -CAcreateserial \
    -days "$days" -out "$tls/$name.crt" -extfile "$tls/$name.ext" 2>/dev/null
  rm -f "$tls/$name.csr" "$tls/$name.ext"
  echo "made the certificate of $name ($days days)"
done
