package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// The healthcheck subcommand lets a container image without a shell or curl
// (FROM scratch) check the server with its own binary:
//
//	herald healthcheck [--addr host:port] [--path /healthz] [--timeout 2s]
//
// It GETs http://<addr><path> and exits 0 on a 200 answer, 1 otherwise.
// The address defaults to $HERALD_ADDR, then ":8080"; an empty or wildcard
// host means the loopback interface. Docker's HEALTHCHECK runs it with the
// container's environment, so it follows HERALD_ADDR by itself.

// healthcheck runs the subcommand and returns its exit code: 0 healthy,
// 1 unhealthy or unreachable, 2 bad arguments.
func healthcheck(args []string, getenv func(string) string, stderr io.Writer) int {
	fs := flag.NewFlagSet("herald healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	defAddr := getenv("HERALD_ADDR")
	if defAddr == "" {
		defAddr = ":8080"
	}
	addr := fs.String("addr", defAddr, "address the server listens on (host:port); default $HERALD_ADDR or :8080")
	path := fs.String("path", "/healthz", "path to check: /healthz (alive) or /readyz (ready for new streams)")
	timeout := fs.Duration("timeout", 2*time.Second, "deadline of the check")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	url, err := checkURL(*addr, *path)
	if err != nil {
		fmt.Fprintf(stderr, "herald healthcheck: %v\n", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		fmt.Fprintf(stderr, "herald healthcheck: %v\n", err)
		return 2
	}
	client := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "herald healthcheck: %v\n", err)
		return 1
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "herald healthcheck: %s answered %s\n", url, resp.Status)
		return 1
	}
	return 0
}

// checkURL turns a listen address into the URL to check: a wildcard or
// empty host becomes the loopback address.
func checkURL(addr, path string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("--addr %q is not host:port: %v", addr, err)
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	if path == "" || path[0] != '/' {
		path = "/" + path
	}
	return "http://" + net.JoinHostPort(host, port) + path, nil
}
