#!/bin/sh
# The compose farm's secrets, made once by the farm-secrets service
# (docker-compose run --rm farm-secrets), each in a volume that only the services
# needing it mount:
#   CACHE_DIR/cache-secret  the balancers' cache secret (the key of the entries' MAC):
#                           mounted by the balancers alone; root's, 0400
#   REDIS_DIR/password      Redis's password, the balancers' copy: root's, 0400
#   REDIS_DIR/redis.conf    Redis's config, which requires that password: the redis
#                           user's, 0400 (Redis runs as that user)
# Secrets that exist are kept, so the farm keeps its cache across runs.
# Usage: farm-secrets.sh CACHE_DIR REDIS_DIR  (REDIS_USER: the user Redis runs as)
set -eu
cache_dir=$1
redis_dir=$2
redis_user=${REDIS_USER:-redis}
umask 077

# 48 random bytes as 64 characters of base64: text, no newline, nothing to quote.
make_secret() {
    if [ ! -s "$1" ]; then
        head -c 48 /dev/urandom | base64 | tr -d '\n' > "$1.new"
        mv "$1.new" "$1"
    fi
    chmod 0400 "$1"
}

make_secret "$cache_dir/cache-secret"
make_secret "$redis_dir/password"
{
    printf 'requirepass %s\n' "$(cat "$redis_dir/password")"
    # A cache: bounded, evicting the least recently used, nothing kept on disk.
    printf 'maxmemory 256mb\nmaxmemory-policy allkeys-lru\nsave ""\nappendonly no\n'
} > "$redis_dir/redis.conf.new"
chown "$redis_user" "$redis_dir/redis.conf.new"
chmod 0400 "$redis_dir/redis.conf.new"
mv "$redis_dir/redis.conf.new" "$redis_dir/redis.conf"
