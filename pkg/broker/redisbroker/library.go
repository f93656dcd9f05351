package redisbroker

import (
	"context"
	_ "embed"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// readBytes bounds one page of <fn>_read: with 1 MiB events, a 1000-entry
// page would be a 1 GB reply that never arrives within a read timeout (and
// stalls Redis for every replica meanwhile).
const readBytes = 2 << 20

// touchTTL is how long the keys that a subscription to a topic without
// events creates (<fn>_touch) live unless a publish comes (with a history
// TTL, that TTL instead).
const touchTTL = 24 * time.Hour

// libraryLua is the Redis Function library, library.lua: the library as
// herald loads it with its defaults on a standalone Redis, plus notes (a
// comment after the first line) on its functions, keys and replies and on
// what library rewrites for another configuration.
//
//go:embed library.lua
var libraryLua string

// What library rewrites in libraryLua (see the notes there).
var (
	libraryNotes   = regexp.MustCompile(`(?s)\A(#!lua name=\w+\n)--\[\[.*?\]\]\n`)
	libraryName    = regexp.MustCompile(`\A#!lua name=\w+\n`)
	libraryPrefix  = regexp.MustCompile(`(?m)^(-- herald \S+: generated for key prefix )"\w+"`)
	librarySetting = regexp.MustCompile(`(?m)^local ([A-Z_]+) = .*$`)
	libraryFunc    = regexp.MustCompile(`\bherald(_publish|_read|_touch)\b`)
)

// library returns the library name, the publish and read function names
// and the Lua source for a configuration: libraryLua without its notes,
// with the configuration's name, prefix, settings and function names.
func library(prefix string, maxLen int, ttlMillis, keyMillis int64, sharded bool) (name, publishFn, readFn, touchFn, code string) {
	name = "herald"
	if prefix != DefaultPrefix {
		name = "herald_" + prefix
	}
	publishFn = prefix + "_publish"
	readFn = prefix + "_read"
	touchFn = prefix + "_touch"
	settings := map[string]string{
		"PREFIX":       strconv.Quote(prefix),
		"MAXLEN":       strconv.Itoa(maxLen),
		"TTL_MS":       strconv.FormatInt(ttlMillis, 10),
		"READ_BYTES":   strconv.Itoa(readBytes),
		"TOUCH_TTL_MS": strconv.FormatInt(touchTTL.Milliseconds(), 10),
		"KEY_MS":       strconv.FormatInt(keyMillis, 10),
		"PUBLISH":      strconv.Quote(map[bool]string{false: "PUBLISH", true: "SPUBLISH"}[sharded]),
		"CLUSTER":      strconv.FormatBool(sharded),
	}
	code = libraryNotes.ReplaceAllString(libraryLua, "$1")
	code = libraryName.ReplaceAllLiteralString(code, "#!lua name="+name+"\n")
	code = libraryPrefix.ReplaceAllStringFunc(code, func(s string) string {
		return libraryPrefix.FindStringSubmatch(s)[1] + strconv.Quote(prefix)
	})
	code = librarySetting.ReplaceAllStringFunc(code, func(line string) string {
		k := librarySetting.FindStringSubmatch(line)[1]
		if v, ok := settings[k]; ok {
			return "local " + k + " = " + v
		}
		return line
	})
	code = libraryFunc.ReplaceAllStringFunc(code, func(fn string) string {
		return prefix + libraryFunc.FindStringSubmatch(fn)[1]
	})
	return name, publishFn, readFn, touchFn, code
}

// isFunctionMissing reports whether err says the library is not loaded
// (Redis restarted without persistence, or FUNCTION FLUSH).
func isFunctionMissing(err error) bool {
	return err != nil && strings.Contains(err.Error(), "Function not found")
}

// load (re)loads the library: on every primary in Redis Cluster (FUNCTION
// LOAD is not propagated between shards, and a shard added later starts
// without it). Concurrent callers may each load it; FUNCTION LOAD REPLACE
// is idempotent.
func (b *Broker) load(ctx context.Context) error {
	var err error
	if cc, ok := b.rdb.(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
			return c.FunctionLoadReplace(ctx, b.code).Err()
		})
	} else {
		err = b.rdb.FunctionLoadReplace(ctx, b.code).Err()
	}
	if err != nil {
		return err
	}
	b.loaded.Store(true)
	return nil
}

// keys returns the keys a call of the library declares for topic (the
// declared-keys form): its stream and its epoch, and with an idempotency
// key the key's record.
func (b *Broker) keys(topic, key string) []string {
	base := b.channel(topic)
	if key == "" {
		return []string{base + ":s", base + ":e"}
	}
	return []string{base + ":s", base + ":e", base + ":k:" + key}
}

// fcall calls a function of the library, loading the library first if it
// was never loaded and once more if Redis answers that it is missing.
func (b *Broker) fcall(ctx context.Context, readOnly bool, fn string, keys []string, args ...any) (any, error) {
	if !b.loaded.Load() {
		if err := b.load(ctx); err != nil {
			return nil, err
		}
	}
	var rdb redis.Cmdable = b.rdb
	cc, isCluster := b.rdb.(*redis.ClusterClient)
	call := func() (any, error) {
		if isCluster {
			// The primary's own client, tried once (see primaryFor).
			node, err := b.primaryFor(ctx, cc, keys[0])
			if err != nil {
				return nil, err
			}
			rdb = node
		}
		var v any
		var err error
		if readOnly {
			v, err = rdb.FCallRO(ctx, fn, keys, args...).Result()
		} else {
			v, err = rdb.FCall(ctx, fn, keys, args...).Result()
		}
		if isCluster && err != nil && !isFunctionMissing(err) && (!isServerError(err) || transientServerError(err.Error())) {
			cc.ReloadState(ctx)
			b.signalRoute()
		}
		return v, err
	}
	v, err := call()
	if isFunctionMissing(err) {
		b.log.Warn("redisbroker: function library missing on the server; loading it again", "library", b.libName)
		if err := b.load(ctx); err != nil {
			return nil, err
		}
		v, err = call()
	}
	return v, err
}
