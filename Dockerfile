# syntax=docker/dockerfile:1
#
# dicomgw container image: a static binary on distroless, run as non-root.
#
#   docker build -t dicomgw:dev --build-arg VERSION=0.1.0 --build-arg COMMIT=$(git rev-parse --short HEAD) .
#   (or: make docker)
#   docker run -d --name dicomgw --stop-timeout 45 \
#     -p 11112:11112 -p 9477:9477 \
#     -v dicomgw-spool:/var/lib/dicomgw/spool \
#     -v "$PWD/dicomgw.flags:/etc/dicomgw/dicomgw.flags:ro" \
#     dicomgw:dev
#
# NOT BUILT WHERE IT WAS WRITTEN (no Docker engine there): `docker build .`
# is the first thing to run when reviewing it. What could be checked without
# an engine is, by deploy/deploy_test.go: the same go build commands (static,
# stamped), the healthcheck against a running gateway, and this file's
# ports, user, volumes, entrypoint and Go version against the repository.

# The builder's Go must match go.mod's go line (deploy_test.go checks).
ARG GO_VERSION=1.26

FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
# Stamped like `make build` (Makefile LDFLAGS): `dicomgw version`, the
# dicomgw_build_info metric and the DICOM implementation version name.
ARG VERSION=0.1.0-dev
ARG COMMIT=unknown
ENV CGO_ENABLED=0 GOFLAGS=-buildvcs=false
COPY . .
# The module and build caches persist between builds (BuildKit); go build
# fetches only the modules the two binaries need.
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    go build -trimpath -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" \
        -o /out/usr/local/bin/dicomgw ./cmd/dicomgw && \
    go build -trimpath -ldflags "-s -w" -o /out/usr/local/bin/dicomgw-healthcheck ./deploy/healthcheck && \
    /out/usr/local/bin/dicomgw version && \
    /out/usr/local/bin/dicomgw check-config --flagfile deploy/etc/dicomgw.flags >/dev/null && \
    mkdir -p /out/var/lib/dicomgw/spool /out/var/lib/dicomgw/archive && \
    install -D -m 0644 deploy/etc/dicomgw.flags /out/etc/dicomgw/dicomgw.flags

# distroless/static: no shell, no package manager; CA certificates (for
# https STOW-RS endpoints), tzdata, and a passwd with nonroot (65532).
# Pin it by digest in production (gcr.io/distroless/static-debian12@sha256:...).
FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=0.1.0-dev
LABEL org.opencontainers.image.title="dicomgw" \
      org.opencontainers.image.description="DICOM C-STORE SCP -> durable spool -> STOW-RS gateway" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/dicomgw/dicomgw"
COPY --from=build /out/usr/local/bin/ /usr/local/bin/
COPY --from=build /out/etc/dicomgw/ /etc/dicomgw/
COPY --from=build --chown=65532:65532 /out/var/lib/dicomgw/ /var/lib/dicomgw/
USER 65532:65532
# DICOM, DICOM TLS (when --tls-listen=:2762), metrics and health, the
# operator console (when --console-listen=:9480).
EXPOSE 11112 2762 9477 9480
# One spool per container, never shared (the gateway locks it); the
# archive is used only without --stow-url.
VOLUME ["/var/lib/dicomgw/spool", "/var/lib/dicomgw/archive"]
# /healthz on the metrics port; set DICOMGW_HEALTHCHECK_URL if the flags
# file moves --metrics-listen.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["/usr/local/bin/dicomgw-healthcheck"]
# SIGTERM drains for --shutdown-timeout (30s): give `docker stop` more than
# that (--stop-timeout 45 / docker stop -t 45), or running associations are
# killed (nothing acknowledged is lost, but senders must resend).
STOPSIGNAL SIGTERM
# Extra flags after the image name are appended (and win over the file):
#   docker run ... dicomgw:dev --stow-url=https://pacs.example/dicom-web
# Other commands: docker exec dicomgw dicomgw spool stats --spool-dir /var/lib/dicomgw/spool
ENTRYPOINT ["/usr/local/bin/dicomgw", "serve", "--flagfile", "/etc/dicomgw/dicomgw.flags"]
