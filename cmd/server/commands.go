package main

import (
	"fmt"
	"io"
	"strings"
)

// A command is one of the binary's everyday subcommands beside the server
// itself: herald <name> [flags]. run returns the exit code: 0 done, 1 the
// command failed, 2 bad flags or configuration.
type command struct {
	name    string
	summary string
	run     func(args []string, getenv func(string) string, stdout, stderr io.Writer) int
}

var commands = []command{
	{"config", "print the effective configuration with the source of each setting, and validate it", configCommand},
	{"token", "mint an HS256 token with the configured --jwt-secret", tokenCommand},
	{"publish", "publish an event (or an NDJSON batch) over HTTP or into Redis, retried safely with an idempotency key", publishCommand},
	{"subscribe", "follow topics and print their events (readable or JSON lines), resuming with --last-event-id", subscribeCommand},
	{"healthcheck", "check a running server's /healthz (or --path /readyz); for images without curl", func(args []string, getenv func(string) string, _, stderr io.Writer) int {
		return healthcheck(args, getenv, stderr)
	}},
}

// dispatch runs the subcommand args[0] names; ok is false when args are
// the server's own. For the server's --help it first lists the commands.
func dispatch(args []string, getenv func(string) string, stdout, stderr io.Writer) (code int, ok bool) {
	if len(args) == 0 {
		return 0, false
	}
	for _, c := range commands {
		if args[0] == c.name {
			return c.run(args[1:], getenv, stdout, stderr), true
		}
	}
	if args[0] == "help" {
		if len(args) > 1 {
			return dispatch([]string{args[1], "--help"}, getenv, stdout, stderr)
		}
		writeCommands(stderr)
		return 0, true
	}
	if helpAsked(args) {
		writeCommands(stderr)
	}
	return 0, false
}

// helpAsked reports whether the server's flags ask for help (the server
// then prints its flags).
func helpAsked(args []string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		switch a {
		case "-h", "-help", "--help", "-h=true", "--help=true":
			return true
		}
	}
	return false
}

func writeCommands(w io.Writer) {
	var b strings.Builder
	b.WriteString("Usage:\n  herald [flags]              run the server (flags below)\n  herald <command> [flags]    run one of the commands\n\nCommands:\n")
	for _, c := range commands {
		fmt.Fprintf(&b, "  %-12s %s\n", c.name, c.summary)
	}
	b.WriteString("\nRun 'herald <command> --help' for a command's flags.\n\n")
	_, _ = io.WriteString(w, b.String())
}
