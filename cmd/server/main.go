// Command server runs herald, the Server-Sent Events service.
//
//	go run ./cmd/server --help
//
// See internal/server for the configuration, routes and drain sequence.
package main

import (
	"os"
	"os/signal"
	"syscall"

	"github.com/herald-sse/herald/internal/server"
)

func main() {
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	os.Exit(server.Main(os.Args[1:], os.Getenv, os.Stderr, signals))
}
