package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/herald-sse/herald/internal/server"
)

const configUsage = `Usage: herald config [--json] [server settings]

Prints the configuration the server would run with — every setting's
effective value and where it came from (flag, env, default), with secrets
and URL passwords masked — and validates it with the server's own parser:
exit 0 when the server would start with it, 2 (and the parser's message)
when it would refuse. Nothing is contacted: Redis is not dialled.

Flags:
`

// configCommand is herald config.
func configCommand(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	var asJSON bool
	cmd := server.Command{Usage: configUsage, Flags: func(fs *flag.FlagSet) {
		fs.BoolVar(&asJSON, "json", false, "print the settings and the verdict as one JSON object")
	}}
	cfg, settings, err := server.ParseCommand(args, getenv, stderr, cmd)
	if errors.Is(err, server.ErrHelp) {
		return 0
	}
	if settings == nil && err != nil {
		fmt.Fprintf(stderr, "herald config: invalid configuration: %v\n", err)
		return 2
	}
	if asJSON {
		out := struct {
			Settings []jsonSetting `json:"settings"`
			Valid    bool          `json:"valid"`
			Error    string        `json:"error,omitempty"`
		}{Valid: err == nil}
		for _, s := range settings {
			out.Settings = append(out.Settings, jsonSetting{s.Flag, s.Env, s.Value, s.Default, string(s.Source), s.Secret})
		}
		if err != nil {
			out.Error = err.Error()
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if werr := enc.Encode(out); werr != nil {
			fmt.Fprintf(stderr, "herald config: %v\n", werr)
			return 1
		}
	} else {
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "SETTING\tVALUE\tSOURCE")
		for _, s := range settings {
			v := s.Value
			if v == "" {
				v = `""`
			}
			src := string(s.Source)
			if s.Source == server.SourceEnv {
				src += " " + s.Env
			}
			fmt.Fprintf(tw, "--%s\t%s\t%s\n", s.Flag, v, src)
		}
		if werr := tw.Flush(); werr != nil {
			fmt.Fprintf(stderr, "herald config: %v\n", werr)
			return 1
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "herald config: invalid configuration: %v\n", err)
		return 2
	}
	if !asJSON {
		fmt.Fprintf(stdout, "\nvalid: %s\n", summary(cfg))
	}
	return 0
}

type jsonSetting struct {
	Flag    string `json:"flag"`
	Env     string `json:"env"`
	Value   string `json:"value"`
	Default string `json:"default"`
	Source  string `json:"source"`
	Secret  bool   `json:"secret,omitempty"`
}

// summary says in a line what the configuration amounts to.
func summary(cfg server.Config) string {
	broker := "in-memory broker (one replica)"
	if cfg.RedisURL != "" {
		broker = "Redis broker"
	}
	authn := "no authentication (publishing from loopback only)"
	if cfg.PublishAllow {
		authn = "no authentication (publishing from any address)"
	}
	switch tokens, key := cfg.JWTSecret != "" || cfg.JWTPublicKeyFile != "", cfg.APIKey != "" || cfg.APIKeyFile != ""; {
	case tokens && key:
		authn = "tokens and an API key"
	case tokens:
		authn = "tokens"
	case key:
		authn = "an API key for publishing"
	}
	return fmt.Sprintf("listens on %s, %s, %s", cfg.Addr, broker, authn)
}
