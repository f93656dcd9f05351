package redisbroker

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Topologies of Config.URL, in go-redis's own URL forms:
//
//	standalone  redis://[[user]:password@]host[:port][/db]           (redis.ParseURL)
//	Sentinel    redis://[[user]:password@]s1:26379?master_name=M&addr=s2:26379...
//	            (redis.ParseFailoverURL: the host and every addr are
//	            sentinels; user and password are the sentinels', the
//	            primary's are the username= and password= parameters)
//	Cluster     redis://n1:6379?addr=n2:6379... with Config.Cluster
//	            (redis.ParseClusterURL)
//
// rediss:// selects TLS in each.
type topology int

const (
	standalone topology = iota
	sentinel
	cluster
)

func (t topology) String() string {
	switch t {
	case sentinel:
		return "sentinel"
	case cluster:
		return "cluster"
	}
	return "standalone"
}

// CheckURL checks that url is one of the forms Config.URL accepts, with
// cluster as Config.Cluster, without connecting: the mistakes it finds
// wrap ErrTopology, other parse errors are go-redis's. New checks again,
// and also asks the servers what they are.
func CheckURL(url string, cluster bool) error {
	_, err := parseTopology(url, cluster)
	return err
}

// parseTopology classifies a Config.URL.
func parseTopology(rawurl string, clusterMode bool) (topology, error) {
	u, err := url.Parse(rawurl)
	if err != nil {
		return standalone, err
	}
	q := u.Query()
	switch {
	case clusterMode && q.Has("master_name"):
		return cluster, fmt.Errorf("%w: a Sentinel URL (master_name=) with Cluster mode on: drop one of them", ErrTopology)
	case clusterMode:
		if _, err := redis.ParseClusterURL(rawurl); err != nil {
			return cluster, err
		}
		return cluster, nil
	case q.Has("master_name"):
		opt, err := redis.ParseFailoverURL(rawurl)
		if err != nil {
			return sentinel, err
		}
		if opt.MasterName == "" {
			return sentinel, fmt.Errorf("%w: master_name= is empty: name the primary the sentinels monitor", ErrTopology)
		}
		if opt.ReplicaOnly {
			return sentinel, fmt.Errorf("%w: replica_only=true: herald needs the primary", ErrTopology)
		}
		return sentinel, nil
	case q.Has("addr"):
		return standalone, fmt.Errorf("%w: addr= lists more servers, which a standalone URL cannot have: add master_name=<name> for Redis Sentinel, or turn Cluster mode on for Redis Cluster", ErrTopology)
	}
	if _, err := redis.ParseURL(rawurl); err != nil {
		return standalone, err
	}
	return standalone, nil
}

// applyDefaults gives the options of a client built from Config.URL the
// broker's rules (see Config.URL); dial is the dialer to use.
func applyDefaults(maxRetries *int, ctxTimeout *bool, dialTimeout, readTimeout *time.Duration, dialerRetries *int) {
	// No go-redis retries (its default is 3): go-redis sends a command
	// again when the connection breaks or times out while it reads the
	// reply, but by then Redis may have run it, and a retried
	// FCALL <prefix>_publish appends the event a second time, under a
	// second ID: a duplicate for every subscriber. Publish reports the
	// failure instead (broker.ErrUnavailable, which the HTTP publisher
	// answers with 503), stream loads are retried with backoff by the
	// broker itself, and the pool still discards dead idle connections
	// before use.
	*maxRetries = -1
	// A publish returns by its ctx's deadline, not after ReadTimeout.
	*ctxTimeout = true
	if *dialTimeout == 0 {
		*dialTimeout = defaultDialTimeout
	}
	if *readTimeout == 0 {
		*readTimeout = defaultReadTimeout
	}
	if *dialerRetries == 0 { // not settable in a URL
		// go-redis's default, 5 attempts, keeps the pub/sub loop in a
		// dial for 5 dial timeouts when Redis's address does not answer.
		*dialerRetries = defaultDialAttempts
	}
}

// failoverOptions parses a Sentinel Config.URL into the options of the
// broker's own client.
func failoverOptions(rawurl string) (*redis.FailoverOptions, error) {
	opt, err := redis.ParseFailoverURL(rawurl)
	if err != nil {
		return nil, err
	}
	applyDefaults(&opt.MaxRetries, &opt.ContextTimeoutEnabled, &opt.DialTimeout, &opt.ReadTimeout, &opt.DialerRetries)
	opt.Dialer = newDialer(opt.DialTimeout, opt.TLSConfig)
	return opt, nil
}

// probeTimeout bounds each question New asks a server about its topology.
const probeTimeout = 2 * time.Second

// checkStandalone asks the server of a standalone URL what it is: a
// Sentinel or a Cluster node there is a configuration mistake (ErrTopology).
// An unreachable server is not (New starts anyway); nil then.
func checkStandalone(ctx context.Context, rdb redis.UniversalClient, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	info, err := rdb.Info(ctx, "server", "cluster").Result()
	if err != nil {
		return nil // unreachable, or INFO refused (ACL): the library load tells
	}
	switch infoField(info, "redis_mode") {
	case "sentinel":
		return fmt.Errorf("%w: %s is a Redis Sentinel, not a Redis server: add master_name=<name> to the URL (redis://%s?master_name=<name>&addr=<sentinel2>...)", ErrTopology, addr, addr)
	case "cluster":
		return fmt.Errorf("%w: %s is a Redis Cluster node: Cluster mode and a cluster URL (redis://node1:6379?addr=node2:6379...) are needed", ErrTopology, addr)
	}
	if infoField(info, "cluster_enabled") == "1" {
		return fmt.Errorf("%w: %s is a Redis Cluster node: Cluster mode and a cluster URL (redis://node1:6379?addr=node2:6379...) are needed", ErrTopology, addr)
	}
	return nil
}

// checkSentinels asks the sentinels of opt for the primary: the first that
// answers decides. A server that is no Sentinel, or a master name it does
// not know, is a configuration mistake (ErrTopology); sentinels that are
// all unreachable are not (New starts anyway): nil then.
func checkSentinels(ctx context.Context, opt *redis.FailoverOptions) error {
	for _, addr := range opt.SentinelAddrs {
		err := func() error {
			c := redis.NewSentinelClient(&redis.Options{
				Addr: addr, Username: opt.SentinelUsername, Password: opt.SentinelPassword,
				TLSConfig: opt.TLSConfig, Dialer: opt.Dialer, DialTimeout: opt.DialTimeout,
				MaxRetries: -1, DialerRetries: 1, ContextTimeoutEnabled: true,
			})
			defer c.Close()
			pctx, cancel := context.WithTimeout(ctx, probeTimeout)
			defer cancel()
			_, err := c.GetMasterAddrByName(pctx, opt.MasterName).Result()
			switch {
			case errors.Is(err, redis.Nil):
				return fmt.Errorf("%w: the Sentinel at %s monitors no primary named %q (master_name=)", ErrTopology, addr, opt.MasterName)
			case err != nil && isServerError(err) && strings.Contains(strings.ToLower(err.Error()), "unknown command"):
				return fmt.Errorf("%w: %s is not a Redis Sentinel (it does not know SENTINEL): drop master_name= for a standalone Redis", ErrTopology, addr)
			case err != nil && isServerError(err) && strings.Contains(err.Error(), "No such master"):
				return fmt.Errorf("%w: the Sentinel at %s monitors no primary named %q (master_name=)", ErrTopology, addr, opt.MasterName)
			}
			return err
		}()
		if err == nil || errors.Is(err, ErrTopology) {
			return err
		}
	}
	return nil
}

// clusterOptions parses a Cluster Config.URL into the options of the
// broker's own client.
func clusterOptions(rawurl string) (*redis.ClusterOptions, error) {
	opt, err := redis.ParseClusterURL(rawurl)
	if err != nil {
		return nil, err
	}
	applyDefaults(&opt.MaxRetries, &opt.ContextTimeoutEnabled, &opt.DialTimeout, &opt.ReadTimeout, &opt.DialerRetries)
	opt.Dialer = newDialer(opt.DialTimeout, opt.TLSConfig)
	return opt, nil
}

// checkCluster asks the nodes of a cluster URL whether they are cluster
// nodes: the first that answers decides. One that answers as a standalone
// server (or a Sentinel) is a configuration mistake (ErrTopology); nodes
// that are all unreachable are not (New starts anyway): nil then.
func checkCluster(ctx context.Context, opt *redis.ClusterOptions) error {
	for _, addr := range opt.Addrs {
		err := func() error {
			c := redis.NewClient(&redis.Options{
				Addr: addr, Username: opt.Username, Password: opt.Password, TLSConfig: opt.TLSConfig,
				Dialer: opt.Dialer, DialTimeout: opt.DialTimeout, MaxRetries: -1, DialerRetries: 1, ContextTimeoutEnabled: true,
			})
			defer c.Close()
			pctx, cancel := context.WithTimeout(ctx, probeTimeout)
			defer cancel()
			info, err := c.Info(pctx, "server", "cluster").Result()
			if err != nil {
				return err
			}
			if infoField(info, "cluster_enabled") != "1" {
				return fmt.Errorf("%w: %s is not a Redis Cluster node (cluster_enabled:0, redis_mode:%s): turn Cluster mode off for a standalone Redis, or use a Sentinel URL (master_name=) for Sentinel", ErrTopology, addr, infoField(info, "redis_mode"))
			}
			return nil
		}()
		if err == nil || errors.Is(err, ErrTopology) {
			return err
		}
	}
	return nil
}

// infoField returns the value of field in an INFO reply ("" if absent).
func infoField(info, field string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			return v
		}
	}
	return ""
}
