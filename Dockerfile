# fintoc-refresh: the `serve` binary on a minimal glibc base, as a non-root user.
#
#   docker build -t fintoc-refresh:0.1.0 .
#   docker run --rm -p 50051:50051 -p 8080:8080 -v fintoc-data:/data fintoc-refresh:0.1.0 serve --simulate
#
# Build stage: Debian 12 (bookworm), the same glibc (2.36) as the runtime stage, so the binary
# links against no newer symbol versions than the runtime has.
FROM rust:1.95.0-bookworm AS build
WORKDIR /src

# 1. Dependencies only, from the manifests and the lock file: this layer is rebuilt only when
#    Cargo.toml, client/Cargo.toml or Cargo.lock change. Stub sources and build scripts stand
#    in for the real ones (benches/harness/main.rs because Cargo.toml names that target).
COPY Cargo.toml Cargo.lock ./
COPY client/Cargo.toml client/Cargo.toml
RUN mkdir -p src client/src benches/harness \
    && for stub in src/main.rs build.rs client/build.rs benches/harness/main.rs; do \
         echo 'fn main() {}' > "$stub"; \
       done \
    && touch src/lib.rs client/src/lib.rs \
    && cargo build --release --locked --bin fintoc-refresh \
    && rm -rf src client/src build.rs client/build.rs benches

# 2. The service itself. build.rs compiles proto/ (protox, no protoc needed) and the store
#    embeds migrations/. The stubs above were newer than these files may be: touch the crate
#    roots so cargo rebuilds both workspace crates instead of keeping the stubs.
COPY build.rs ./
COPY proto proto
COPY migrations migrations
COPY benches benches
COPY client client
COPY src src
RUN touch build.rs client/build.rs src/main.rs src/lib.rs client/src/lib.rs \
    && cargo build --release --locked --bin fintoc-refresh \
    && mkdir -p /out/data \
    && cp target/release/fintoc-refresh /out/fintoc-refresh

# Runtime stage: distroless "cc" (Debian 12): glibc, libgcc_s, CA certificates
# (/etc/ssl/certs/ca-certificates.crt, read for Fintoc's API and verify-full PostgreSQL TLS),
# /etc/passwd with the nonroot user 65532, tzdata; no shell, no package manager. The binary
# needs nothing else: `ldd` lists only glibc's libraries and libgcc_s (rustls, SQLite and the
# PostgreSQL driver are compiled in), and tests/it/deploy.rs runs it in a directory holding
# just those files.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/fintoc-refresh /usr/local/bin/fintoc-refresh
# The SQLite store (and its .lock file) live in /data, owned by the runtime user; mount a
# volume there. With PostgreSQL (a postgres:// DATABASE_URL) nothing is written to disk.
COPY --from=build --chown=65532:65532 /out/data /data
# Listen on every interface: the flags' defaults are loopback, which no probe, Service or
# port mapping can reach from outside the container.
ENV GRPC_ADDR=0.0.0.0:50051 \
    HTTP_ADDR=0.0.0.0:8080 \
    DATABASE_URL=/data/fintoc-refresh.db \
    LOG_FORMAT=json
VOLUME ["/data"]
WORKDIR /data
EXPOSE 50051 8080
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/fintoc-refresh"]
CMD ["serve"]
