# The creditgate image the Helm chart runs: `docker build -t creditgate:0.1.0 .`
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin creditgate

FROM debian:bookworm-slim
COPY --from=build /src/target/release/creditgate /usr/local/bin/creditgate
# The embedded ledger's data directory when none is given (the chart mounts a volume here).
RUN mkdir -p /var/lib/creditgate && chown 65532:65532 /var/lib/creditgate
WORKDIR /var/lib/creditgate
# The chart runs it as this user, with a read-only root filesystem.
USER 65532:65532
ENTRYPOINT ["creditgate"]
CMD ["serve", "--listen", "0.0.0.0:50051", "--admin-listen", "0.0.0.0:50052"]
