#!/bin/sh
# The redis image's entry point (docker/redis.Dockerfile).
#   facedit-redis [extra redis-server arguments]   start redis-server (config on stdin: no password in argv or on disk)
#   facedit-redis health                           exit 0 when it answers PING (the HEALTHCHECK)
# Password: the first line of $REDIS_PASSWORD_FILE, else $REDIS_PASSWORD; characters A-Z a-z 0-9 . _ ~ + / = -
set -eu

password() {
    if [ -n "${REDIS_PASSWORD_FILE:-}" ]; then
        head -n 1 "$REDIS_PASSWORD_FILE" | tr -d '\r\n'
    else
        printf '%s' "${REDIS_PASSWORD:-}"
    fi
}

if [ "${1:-}" = health ]; then
    REDISCLI_AUTH=$(password) redis-cli -h 127.0.0.1 -p 6379 ping | grep -q PONG
    exit $?
fi

pw=$(password)
if [ -z "$pw" ] && [ "${REDIS_ALLOW_NO_PASSWORD:-0}" != 1 ]; then
    echo "no password: set REDIS_PASSWORD_FILE (a mounted secret) or REDIS_PASSWORD, or REDIS_ALLOW_NO_PASSWORD=1" >&2
    exit 1
fi
case "$pw" in
    *[!A-Za-z0-9._~+/=-]*) echo "the password may hold only A-Z a-z 0-9 . _ ~ + / = -" >&2; exit 1 ;;
esac

exec redis-server - "$@" <<CONF
bind 0.0.0.0 -::*
port 6379
protected-mode $( [ -n "$pw" ] && echo no || echo yes )
dir /data
appendonly yes
appendfsync everysec
save ""
maxmemory ${REDIS_MAXMEMORY:-512mb}
maxmemory-policy volatile-lru
$( [ -n "$pw" ] && echo "requirepass \"$pw\"" )
CONF
