package redisbroker

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/redis/go-redis/v9"
)

// Defaults of Config.
const (
	DefaultPrefix      = "herald"
	DefaultHistorySize = 1000
	DefaultWaitTimeout = time.Second
)

// Config configures a Broker. Only URL or Client is required.
type Config struct {
	// URL of the Redis server, in the form redis.ParseURL accepts:
	// redis://[[user]:password@]host[:port][/db], rediss:// for TLS; or,
	// with a master_name parameter, of Redis Sentinel, in the form
	// redis.ParseFailoverURL accepts:
	// redis://[[user]:password@]sentinel1:26379?master_name=M&addr=sentinel2:26379...
	// (the host and every addr are sentinels; the URL's user and password
	// are the sentinels', the primary's are the username= and password=
	// parameters); or, with Cluster, of Redis Cluster (see Cluster).
	// New asks the servers what they are: a Sentinel or a Cluster node
	// behind a standalone URL, a master name the sentinels do not know, or
	// a standalone server with Cluster, fail New with an error wrapping
	// ErrTopology.
	// Ignored when Client is set. The Broker closes the client it creates.
	// That client never retries a command (MaxRetries -1, whatever the
	// URL's max_retries): see Client. It honours ctx deadlines
	// (ContextTimeoutEnabled), dials with NewDialer (TCP keepalive and
	// TCP_USER_TIMEOUT), and unless the URL says otherwise uses a dial
	// timeout of 2 s, read and write timeouts of 3 s and 2 dial attempts.
	URL string
	// Cluster says that URL names Redis Cluster nodes, in the form
	// redis.ParseClusterURL accepts: redis://node1:6379?addr=node2:6379...
	// (any of the nodes: the rest are discovered). New checks the nodes: a
	// standalone server fails it with ErrTopology. See the package
	// documentation for what the broker does in Redis Cluster.
	Cluster bool
	// WaitReplicas, if positive, makes every publish durable on that many
	// replicas before it is acknowledged: WAIT WaitReplicas WaitTimeout is
	// pipelined after the FCALL on the same connection, and a publish
	// whose WAIT counts fewer replicas fails with an error wrapping
	// broker.ErrUnavailable and ErrNotReplicated (the event was appended
	// on the primary and may or may not survive a failover; a retry with
	// the same idempotency key is safe). Default 0: acknowledged once the
	// primary ran it (asynchronous replication: a failover may lose the
	// last acknowledged events; see ReasonFailover).
	WaitReplicas int
	// WaitTimeout bounds each WAIT (with WaitReplicas). Default
	// DefaultWaitTimeout; it is added to the publish's time, so keep it
	// well below the publisher's deadline.
	WaitTimeout time.Duration
	// Client, if set, is used instead of URL; Close does not close it.
	// Standalone, Sentinel and Cluster clients (*redis.ClusterClient) are
	// supported.
	//
	// Give it MaxRetries: -1 (redis.Options, FailoverOptions,
	// ClusterOptions, UniversalOptions). With go-redis's default of 3
	// retries, a publish whose reply was lost (connection reset, EOF, read
	// timeout after Redis ran the FCALL) is sent again and the event is
	// appended twice, under two IDs: every subscriber gets a duplicate.
	//
	// Every command must reach the primary: replays are read with FCALL,
	// never FCALL_RO, so a client that routes read-only commands to
	// replicas (ClusterOptions.ReadOnly, RouteByLatency, RouteRandomly)
	// still reads the primary's history — a replica's lags behind the
	// primary's pub/sub, and a replay from it would skip events. A client
	// that sends everything to replicas (FailoverOptions.ReplicaOnly) is
	// refused: New fails when the library load is answered READONLY.
	//
	// Give it ContextTimeoutEnabled: true too, or a Publish waits for the
	// client's ReadTimeout rather than its ctx's deadline; and Dialer:
	// NewDialer(opt), or a Redis host that dies without a RST blocks the
	// client's pool connections until the kernel gives up (minutes). The
	// pub/sub connection is replaced by the broker itself when it stops
	// answering, whatever the client.
	Client redis.UniversalClient
	// Prefix of every key, channel and function name: 1-64 letters, digits
	// or '_' (see ValidatePrefix). Default "herald". Deployments sharing one Redis use different
	// prefixes.
	Prefix string
	// HistorySize is the number of events kept per topic, approximately
	// (XADD MAXLEN ~: Redis trims whole nodes of about 100 entries, so a
	// little more is kept). Default DefaultHistorySize; negative keeps no
	// history (every cursor but the head then gets a ReasonTruncated
	// reset), as in membroker. Every replica of a deployment must use the
	// same value: it is baked into the function library, and the last
	// loader wins.
	HistorySize int
	// HistoryTTL, if positive, also trims events older than this
	// (XTRIM MINID ~, at each publish, millisecond resolution). Default 0:
	// no age limit. Same rule as HistorySize across replicas.
	HistoryTTL time.Duration
	// IdempotencyWindow is how long Redis remembers a publish's
	// idempotency key (broker.Message.Key, or the fourth argument of
	// FCALL <prefix>_publish): a second publish to the topic with the same
	// key within it appends nothing and returns the first publish's ID, on
	// every replica. The record is one Redis string per key,
	// P:{T}:k:<key>, written in the same function call as the event and
	// expiring after the window: about 150 bytes plus the lengths of the
	// topic and the key (Redis MEMORY USAGE: 184 bytes for a 10-byte topic
	// and a UUID; at most 200 bytes plus 1.25 times the record's name, see
	// TestKeyRecordMemory). 0 means
	// broker.DefaultIdempotencyWindow (5 minutes); negative turns keys off
	// (a publish with a key is then an ordinary publish). Same rule as
	// HistorySize across replicas.
	IdempotencyWindow time.Duration
	// QueueLimit is the number of pending items a subscriber may fall
	// behind before it is disconnected with broker.ErrSlowConsumer.
	// Default broker.DefaultQueueLimit.
	QueueLimit int
	// Logger receives connectivity changes and errors. Default
	// slog.Default().
	Logger *slog.Logger
	// OnStateChange, if set, is called with true when the pub/sub
	// connection to Redis works again and false when it broke or stopped
	// answering, from the broker's receive goroutine (keep it fast). Use it
	// for metrics; Connected reports the same state.
	OnStateChange func(up bool)
	// OnReconnect, if set, is called each time a replacement pub/sub
	// connection answers for the first time, with the reason the previous
	// one was given up (ReconnectUnanswered, ReconnectError), from the
	// receive goroutine (keep it fast). Reconnects counts the same events.
	OnReconnect func(reason string)

	// wrapDial, if set (tests), wraps the dialer of the client built from
	// URL: a fault proxy's switch keeps the broker's socket options.
	wrapDial func(dialFunc) dialFunc
}

type dialFunc = func(ctx context.Context, network, addr string) (net.Conn, error)

// ValidatePrefix checks a key prefix (Config.Prefix: New checks it, once
// an empty one became DefaultPrefix): 1-64 bytes of [A-Za-z0-9_], so that
// it is also a valid part of a function name and cannot contain a hash tag.
func ValidatePrefix(p string) error {
	if p == "" || len(p) > 64 {
		return fmt.Errorf("redisbroker: prefix must be 1-64 characters, got %d", len(p))
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return fmt.Errorf("redisbroker: prefix %q: only letters, digits and '_' are allowed", p)
		}
	}
	return nil
}
