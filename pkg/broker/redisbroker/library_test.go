package redisbroker

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/herald-sse/herald/internal/testredis"
	"github.com/herald-sse/herald/pkg/broker"
	"github.com/redis/go-redis/v9"
)

// libraryAsIs is library.lua without its notes: what FUNCTION LOAD of the
// file holds, the notes aside.
func libraryAsIs(t *testing.T) string {
	t.Helper()
	if !libraryNotes.MatchString(libraryLua) {
		t.Fatalf("library.lua does not start with the shebang line and the notes comment")
	}
	return libraryNotes.ReplaceAllString(libraryLua, "$1")
}

// library.lua is the library of herald's defaults on a standalone Redis,
// and library rewrites exactly the name, the prefix, the settings and the
// function names for another configuration.
func TestLibraryFile(t *testing.T) {
	defaults := func(sharded bool) string {
		_, _, _, _, code := library(DefaultPrefix, DefaultHistorySize, 0, broker.DefaultIdempotencyWindow.Milliseconds(), sharded)
		return code
	}
	asIs := libraryAsIs(t)
	if got := defaults(false); got != asIs {
		t.Errorf("the library of the defaults is not library.lua as it is (notes aside):\n%s", got)
	}

	name, publishFn, readFn, touchFn, code := library("stg", 150, 3000, 1, true)
	if name != "herald_stg" || publishFn != "stg_publish" || readFn != "stg_read" || touchFn != "stg_touch" {
		t.Errorf("names %q %q %q %q", name, publishFn, readFn, touchFn)
	}
	for _, want := range []string{
		"#!lua name=herald_stg\n-- herald ",
		`: generated for key prefix "stg"; loaded by herald at start.`,
		"\nlocal PREFIX = \"stg\"\n",
		"\nlocal MAXLEN = 150\n",
		"\nlocal TTL_MS = 3000\n",
		"\nlocal READ_BYTES = 2097152\n",
		"\nlocal TOUCH_TTL_MS = 86400000\n",
		"\nlocal KEY_MS = 1\n",
		"\nlocal PUBLISH = \"SPUBLISH\"\n",
		"\nlocal CLUSTER = true\n",
		"topic_of(keys, 3, 'stg_publish')",
		"topic_of(keys, 2, 'stg_read')",
		"topic_of(keys, 2, 'stg_touch')",
		"FCALL stg_publish 1 <topic>",
		"redis.register_function('stg_publish', publish)",
		"redis.register_function('stg_touch', touch)",
		"function_name = 'stg_read'",
	} {
		if strings.Count(code, want) != 1 {
			t.Errorf("the library of prefix stg holds %q %d times, want once", want, strings.Count(code, want))
		}
	}
	if m := regexp.MustCompile(`herald_(publish|read|touch)`).FindString(code); m != "" {
		t.Errorf("the library of prefix stg still names %s", m)
	}
	// Every setting line of the file is rewritten (none is left at its
	// default by a Config that changes them all), and nothing else is.
	old, cur := strings.Split(asIs, "\n"), strings.Split(code, "\n")
	if len(old) != len(cur) {
		t.Fatalf("the library of prefix stg has %d lines, library.lua %d", len(cur), len(old))
	}
	for i := range old {
		setting := librarySetting.MatchString(old[i])
		changed := old[i] != cur[i]
		fnName := libraryFunc.MatchString(old[i])
		switch {
		case setting && old[i] == "local READ_BYTES = 2097152", setting && old[i] == "local TOUCH_TTL_MS = 86400000":
			// Constants of the package, the same for every Config.
		case setting && !changed:
			t.Errorf("line %d, %q, is a setting the Config does not rewrite", i+1, old[i])
		case !setting && !fnName && i > 1 && changed:
			t.Errorf("line %d changed from %q to %q", i+1, old[i], cur[i])
		}
	}
	if defaults(true) == asIs {
		t.Errorf("the Cluster library is the standalone one")
	}
}

// What Redis holds after New loaded the library is the library's text for
// the Config: library.lua, notes aside, with the Config's values. The file
// itself loads as it is, and its functions work.
func TestLibraryLoaded(t *testing.T) {
	r := testredis.Start(t)
	c := r.Client(t)
	ctx := t.Context()

	if err := c.FunctionLoadReplace(ctx, libraryLua).Err(); err != nil {
		t.Fatalf("FUNCTION LOAD REPLACE of library.lua as it is: %v", err)
	}
	topic := uniqueTopic("lua")
	id, err := c.FCall(ctx, "herald_publish", []string{topic}, "greet", "hello").Text()
	if err != nil || !idPattern.MatchString(id) {
		t.Fatalf("FCALL herald_publish of library.lua as it is: %q, %v", id, err)
	}
	if log := logIDs(t, c, DefaultPrefix, topic); len(log) != 1 || log[0] != id {
		t.Errorf("stream holds %q, want [%q]", log, id)
	}

	for _, tc := range []struct {
		cfg Config
		// library's arguments for cfg
		prefix   string
		maxLen   int
		ttl, key int64
	}{
		{Config{}, DefaultPrefix, DefaultHistorySize, 0, broker.DefaultIdempotencyWindow.Milliseconds()},
		{Config{Prefix: "stg", HistorySize: 150, HistoryTTL: 3 * time.Second, IdempotencyWindow: -1}, "stg", 150, 3000, 0},
		{Config{Prefix: "nohist", HistorySize: -1, HistoryTTL: time.Microsecond, IdempotencyWindow: time.Hour}, "nohist", 0, 1, 3600000},
	} {
		tc.cfg.Logger = warnLogger()
		b := newBroker(t, r, tc.cfg)
		_, _, _, _, want := library(tc.prefix, tc.maxLen, tc.ttl, tc.key, false)
		if b.code != want {
			t.Errorf("Config %+v: the broker's library is not library's text for it:\n%s", tc.cfg, b.code)
		}
		if tc.prefix == DefaultPrefix && want != libraryAsIs(t) {
			t.Errorf("the library of the defaults is not library.lua as it is (notes aside)")
		}
		libs, err := c.FunctionList(ctx, redis.FunctionListQuery{LibraryNamePattern: b.libName, WithCode: true}).Result()
		if err != nil || len(libs) != 1 {
			t.Fatalf("FUNCTION LIST LIBRARYNAME %s WITHCODE: %v, %v", b.libName, libs, err)
		}
		if libs[0].Code != want {
			t.Errorf("Config %+v: Redis holds\n%s\nwant\n%s", tc.cfg, libs[0].Code, want)
		}
	}
}
