// Package redisbroker is the Broker of a herald fleet: every replica runs one
// against the same Redis, and every replica serves the same ordered stream
// of each topic.
//
// Data path: Publish (or FCALL <prefix>_publish from any service) appends
// the event to the topic's Redis stream and publishes it on the topic's
// channel in one atomic Redis Function call. Each Broker holds one pub/sub
// connection, subscribed once per topic that has local subscribers
// (reference-counted), decodes each event once and fans it out to the local
// subscriptions' queues. The stream is the source of truth, pub/sub only the
// wake-up: a new subscription is served from the stream and then live; when
// the pub/sub connection drops and comes back, every active topic is
// refilled from its stream before live delivery resumes.
//
// # Keys
//
// For prefix P (default "herald") and topic T:
//
//	P:{T}:s   stream: one entry per event, fields t (type) and d (data)
//	P:{T}:e   epoch: a token that changes when the stream was lost
//	P:{T}     pub/sub channel: "<id>\n<type>\n<data>" per event
//	P:{T}:k:K idempotency record of key K: "<id> <sha1 of type LF data>",
//	          expiring after Config.IdempotencyWindow
//
// One topic's keys share the hash tag {T}, hence one Redis Cluster slot.
// The function library is named "herald" ("herald_P" for another prefix)
// and defines P_publish and P_read (herald_publish, herald_read by default).
//
// # Publishing from another service
//
//	FCALL herald_publish 1 <topic> <event-type> <data> [<idempotency-key>]
//
// returns the event ID: for a key seen within the window, the first
// publish's ID; for a key seen with other content, the error reply
// "ERR herald: idempotency key conflict: ...". The key argument is the
// topic name; the library is generated with the prefix and the history
// settings baked in, so the caller needs nothing else. An empty event type
// means the default "message". In Redis Cluster declare the topic's keys
// instead of its name (the library refuses the short form there: while a
// slot migrates, Redis routes by the declared keys, and a name is never a
// key):
//
//	FCALL herald_publish 2 herald:{<topic>}:s herald:{<topic>}:e <event-type> <data>
//	FCALL herald_publish 3 herald:{<topic>}:s herald:{<topic>}:e herald:{<topic>}:k:<key> <event-type> <data> <key>
//
// The broker itself always uses this declared-keys form, which every
// topology accepts.
//
// # Event IDs and cursors
//
// An ID is <epoch>-<ms>-<seq>: the topic's epoch (base-36 microseconds of
// the first publish after the stream was created or lost) and the stream
// entry ID that XADD assigned, so every replica reports the same ID and
// Event.Time is the entry's millisecond time. The position of a topic that
// has never been published to is "0-0-0".
//
// A cursor the broker cannot place yields a KindReset then a KindPosition
// just before the oldest retained entry and all retained history:
// ReasonEpoch for another epoch (Redis lost the stream: restart without
// persistence, failover, the stream key deleted or evicted — run Redis
// with maxmemory-policy noeviction, as an evicted stream is lost history),
// ReasonTruncated when entries after the cursor
// were trimmed, ReasonUnknown for anything unparseable or ahead of the
// stream. A live subscriber whose topic loses its stream receives the same
// reset, mid-stream, followed by the new epoch's events.
//
// # Redis unavailable
//
// Publish fails with an error wrapping broker.ErrUnavailable. Subscribe
// still succeeds: the subscription is registered locally and starts (its
// KindPosition, then events) once Redis answers again. See Subscribe for
// where a live-from-now subscription starts when the head cannot be read.
// Connected and Config.OnStateChange report the pub/sub connection's state.
//
// # Redis Sentinel
//
// With a Sentinel URL (see Config.URL) the broker's client asks the
// sentinels for the primary on every dial, and the broker checks every
// second that its pub/sub connection is on the primary (a demoted primary
// keeps its pub/sub clients and sends no redirect); when it is not, the
// connection is replaced (ReconnectDemoted) and every topic refilled.
// Publishes during a failover fail fast with broker.ErrUnavailable.
// Replication is asynchronous: a failover can lose the last acknowledged
// events. A live subscriber that received events its topic's stream no
// longer has gets a KindReset with broker.ReasonFailover at the refill,
// then the retained history; Config.WaitReplicas makes acknowledged
// events survive a failover instead.
//
// # Redis Cluster
//
// With Config.Cluster (or a *redis.ClusterClient) every topic lives on the
// shard that owns its hash slot: its keys, and its shard channel, on which
// the function publishes with SPUBLISH (sharded pub/sub: no broadcast over
// the cluster bus). The broker holds one pub/sub connection per primary
// and subscribes each topic's channel (SSUBSCRIBE) on the primary that owns
// its slot; it reads the slot map every second, and at once when a primary
// gives up a slot (Redis then ends its shard-channel subscriptions) or
// redirects a subscribe. A topic whose slot moved — a resharding, a
// failover — is subscribed on its new primary and its live subscribers are
// refilled from the stream, as after a reconnect; a failover that lost
// acknowledged events is reported with broker.ReasonFailover, as with
// Sentinel. The library is loaded on every primary, and again when any
// node answers that it is missing (a new shard starts empty). Every call
// of the library declares the topic's keys (see the declared-keys form
// above), so that a command for a slot being migrated reaches the node
// that holds the topic; WaitReplicas sends WAIT on the connection of
// each primary a publish went to.
package redisbroker
