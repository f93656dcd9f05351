# Multi-stage build of herald's image for machines that can pull the golang
# image (docker compose uses it when the herald image is not present yet).
# Offline machines use scripts/images.sh and deployments/herald/Dockerfile,
# which produce the same image from a binary built on the host.
#
#   docker build -t herald:local -f deployments/herald/build.Dockerfile .
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -o /out/herald ./cmd/server

FROM scratch
COPY --from=build /out/herald /herald
USER 65532:65532
EXPOSE 8080
ENV HERALD_ADDR=:8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
	CMD ["/herald", "healthcheck"]
ENTRYPOINT ["/herald"]
