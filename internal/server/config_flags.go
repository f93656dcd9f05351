package server

import (
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"
)

// stringList is a comma-separated list flag.
type stringList struct{ list *[]string }

func (s *stringList) String() string {
	if s == nil || s.list == nil {
		return ""
	}
	return strings.Join(*s.list, ",")
}

func (s *stringList) Set(v string) error {
	*s.list = nil
	for _, part := range strings.Split(v, ",") {
		if part = strings.TrimSpace(part); part != "" {
			*s.list = append(*s.list, strings.TrimSuffix(part, "/"))
		}
	}
	return nil
}

type levelValue struct{ p *slog.Level }

func (l *levelValue) String() string {
	if l == nil || l.p == nil {
		return "info"
	}
	return strings.ToLower(l.p.String())
}

func (l *levelValue) Set(v string) error {
	switch strings.ToLower(v) {
	case "debug":
		*l.p = slog.LevelDebug
	case "info":
		*l.p = slog.LevelInfo
	case "warn", "warning":
		*l.p = slog.LevelWarn
	case "error":
		*l.p = slog.LevelError
	default:
		return fmt.Errorf("unknown log level %q (want debug, info, warn or error)", v)
	}
	return nil
}

type choiceValue struct {
	p       *string
	choices []string
}

func (c *choiceValue) String() string {
	if c == nil || c.p == nil {
		return ""
	}
	return *c.p
}

func (c *choiceValue) Set(v string) error {
	for _, ch := range c.choices {
		if v == ch {
			*c.p = v
			return nil
		}
	}
	return fmt.Errorf("%q is not one of %s", v, strings.Join(c.choices, ", "))
}

// sizeValue is a byte count: "65536", "64KiB", "64K", "1MiB", "1M".
type sizeValue struct{ p *int64 }

func (s *sizeValue) String() string {
	if s == nil || s.p == nil {
		return "0"
	}
	return formatSize(*s.p)
}

func (s *sizeValue) Set(v string) error {
	n, err := parseSize(v)
	if err != nil {
		return err
	}
	*s.p = n
	return nil
}

func parseSize(v string) (int64, error) {
	s := strings.TrimSpace(v)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSuffix(s, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("%q is not a size (e.g. 65536, 64KiB, 1MiB)", v)
	}
	return n * mult, nil
}

func formatSize(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return strconv.FormatInt(n>>20, 10) + "MiB"
	case n >= 1<<10 && n%(1<<10) == 0:
		return strconv.FormatInt(n>>10, 10) + "KiB"
	}
	return strconv.FormatInt(n, 10)
}

// durationValue is a Go duration ("15s", "1m30s") with time's own error
// messages.
type durationValue struct{ p *time.Duration }

func (d durationValue) String() string {
	if d.p == nil {
		return "0s"
	}
	return d.p.String()
}

func (d durationValue) Set(v string) error {
	x, err := time.ParseDuration(strings.TrimSpace(v))
	if err != nil {
		return fmt.Errorf("not a duration like 15s or 2m (%v)", err)
	}
	*d.p = x
	return nil
}
