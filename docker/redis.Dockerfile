# facedit Redis: redis-server from Debian's redis-server package (the latent cache and the direction
# registry), AOF on (appendfsync everysec), maxmemory with volatile-lru (only cached latents have TTLs),
# password from a mounted file (REDIS_PASSWORD_FILE, e.g. the Secret facedit-redis key password) or
# REDIS_PASSWORD; it refuses to start without one unless REDIS_ALLOW_NO_PASSWORD=1. Data in /data.
# One stage: nothing is built, the package is the artefact (apt lists are removed in the same layer).
ARG BASE_IMAGE=localhost/debian-base:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server=5:7.0.15-1~deb12u7 \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /data && chown 10001:10001 /data
COPY docker/redis-entrypoint.sh /usr/local/bin/facedit-redis
ENV REDIS_MAXMEMORY=512mb
VOLUME /data
WORKDIR /data
USER 10001:10001
EXPOSE 6379
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 CMD ["/bin/sh", "/usr/local/bin/facedit-redis", "health"]
ENTRYPOINT ["/bin/sh", "/usr/local/bin/facedit-redis"]
