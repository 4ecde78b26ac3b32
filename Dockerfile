# The pgha-exporter image: the release binary on Debian bookworm, run as nobody (65534).
#
#   compose/release                       # builds dist/linux-amd64/pgha-exporter
#   docker build -t pgha-exporter:0.1.0 .
#   docker run -p 9744:9744 -v "$PWD/pgha-exporter.yml:/etc/pgha-exporter/pgha-exporter.yml:ro" \
#     -e PGHA_PROBE_PASSWORD=... pgha-exporter:0.1.0
#
# The binary is built on the host and copied in (it must not need a newer glibc than bookworm's
# 2.36: compose/release warns when it does), as the
# Prometheus exporters' images do; nothing is compiled inside (Dockerfile.source compiles it, on
# a machine that reaches a registry). BASE is any bookworm image: the
# official one by default, or a local one (compose/base-image) where no registry is reachable.
# Written for the classic builder too: no BuildKit features.
ARG BASE=debian:bookworm-slim
FROM ${BASE}

ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="pgha-exporter" \
      org.opencontainers.image.description="Prometheus exporter for Patroni + etcd + HAProxy PostgreSQL clusters" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/pgha-exporter/pgha-exporter" \
      org.opencontainers.image.version="${VERSION}"

# CA certificates, for targets whose certificates chain to a public CA.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin

COPY dist/linux-amd64/pgha-exporter /usr/bin/pgha-exporter
COPY LICENSE /usr/share/doc/pgha-exporter/LICENSE
COPY packaging/pgha-exporter.yml.example /etc/pgha-exporter/pgha-exporter.yml.example
# The state file's directory: mount a volume here to keep events and the write ledger across
# container restarts.
RUN mkdir -p /var/lib/pgha-exporter && chown 65534:65534 /var/lib/pgha-exporter

USER 65534:65534
EXPOSE 9744
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
  CMD ["/usr/bin/pgha-exporter", "healthcheck", "--url", "http://127.0.0.1:9744/-/healthy"]
ENTRYPOINT ["/usr/bin/pgha-exporter"]
CMD ["--config.file=/etc/pgha-exporter/pgha-exporter.yml", "--web.listen-address=0.0.0.0:9744", "--state.file=/var/lib/pgha-exporter/state.json"]
