package server

import (
	"flag"
	"net/url"
	"strings"
)

// Command describes a subcommand of the herald binary that reads the
// server's settings as well as flags of its own (see ParseCommand).
type Command struct {
	// Usage is the start of the subcommand's --help text, followed by its
	// own flags and then the server's settings. Empty: the server's usage.
	Usage string
	// Flags defines the subcommand's own flags on the server's flag set.
	// They are not read from the environment and are not Settings.
	Flags func(fs *flag.FlagSet)
}

// define adds the command's flags to fs and returns their names.
func (c Command) define(fs *flag.FlagSet) map[string]bool {
	own := map[string]bool{}
	if c.Flags == nil {
		return own
	}
	before := map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) { before[f.Name] = true })
	c.Flags(fs)
	fs.VisitAll(func(f *flag.Flag) {
		if !before[f.Name] {
			own[f.Name] = true
		}
	})
	return own
}

// Source tells where a setting's effective value came from.
type Source string

// The sources of a setting, in the order they win.
const (
	SourceFlag    Source = "flag"
	SourceEnv     Source = "env"
	SourceDefault Source = "default"
)

// Setting is one server setting as the parser resolved it.
type Setting struct {
	Flag    string // "redis-url"
	Env     string // "HERALD_REDIS_URL"
	Value   string // the effective value as the flag prints it; secrets masked
	Default string // the default, as --help shows it
	Source  Source
	// Secret is true for a setting whose value is a credential; Value then
	// shows only whether it is set. A URL's password is masked in Value
	// without making the setting Secret.
	Secret bool
}

// secretSettings hold credentials: never printed.
var secretSettings = map[string]bool{"jwt-secret": true, "api-key": true}

// urlSettings may carry a password in their user info.
var urlSettings = map[string]bool{"redis-url": true}

// Masked is what a set secret prints as.
const Masked = "<set, hidden>"

func collectSettings(fs *flag.FlagSet, given, own map[string]bool, getenv func(string) string) []Setting {
	var out []Setting
	fs.VisitAll(func(f *flag.Flag) {
		if own[f.Name] {
			return
		}
		s := Setting{Flag: f.Name, Env: EnvName(f.Name), Value: f.Value.String(), Default: f.DefValue, Source: SourceDefault}
		if given[f.Name] {
			s.Source = SourceFlag
		} else if _, ok := lookup(getenv, s.Env); ok {
			s.Source = SourceEnv
		}
		switch {
		case secretSettings[f.Name]:
			s.Secret = true
			if s.Value != "" {
				s.Value = Masked
			}
		case urlSettings[f.Name]:
			s.Value = maskURL(s.Value)
		}
		out = append(out, s)
	})
	return out
}

// maskURL hides the password of a URL ("redis://:secret@host" ->
// "redis://:xxxxx@host") and of query parameters named like one
// ("?sentinel_password=..."), and the whole value when it does not parse
// (it could hold a password anywhere).
func maskURL(v string) string {
	if v == "" {
		return v
	}
	u, err := url.Parse(v)
	if err != nil {
		return Masked
	}
	if u.RawQuery != "" {
		q, masked := u.Query(), false
		for k := range q {
			if strings.Contains(strings.ToLower(k), "password") {
				q[k], masked = []string{"xxxxx"}, true
			}
		}
		if masked {
			u.RawQuery = q.Encode()
		}
	}
	return u.Redacted()
}
