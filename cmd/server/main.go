// Command server runs herald, the Server-Sent Events service.
//
//	go run ./cmd/server --help
//	go run ./cmd/server <config|token|healthcheck> --help
//
// See internal/server for the configuration, routes and drain sequence.
package main

import (
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/herald-sse/herald/internal/server"
)

func main() {
	// herald config, token, healthcheck: the everyday commands (commands.go).
	if code, ok := dispatch(os.Args[1:], os.Getenv, os.Stdout, os.Stderr); ok {
		os.Exit(code)
	}
	// At least two Ps unless GOMAXPROCS is set: with one (a process pinned
	// to one CPU), Go polls the network only when no goroutine is
	// runnable, so a fan-out in progress would hold back the next publish
	// and the coalescing of events it brings (see docs/benchmarks.md). Go's
	// own default under a CPU quota has the same floor of two.
	if os.Getenv("GOMAXPROCS") == "" && runtime.GOMAXPROCS(0) < 2 {
		runtime.GOMAXPROCS(2)
	}
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	os.Exit(server.Main(os.Args[1:], os.Getenv, os.Stderr, signals))
}
