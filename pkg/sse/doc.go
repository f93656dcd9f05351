// Package sse serves and consumes Server-Sent Events over net/http.
//
// It has three layers, each usable on its own:
//
//   - Encoding: AppendEvent, AppendComment, AppendID and AppendRetry write
//     spec-exact frames (see the WHATWG HTML "server-sent events" rules);
//     IDs and event types that would inject fields are refused.
//   - Handler: mount a stream function and an on-connect hook
//     (Serve(stream, onConnect)); the hook decides status and headers
//     (authentication, sessions), the stream function sends events. The
//     handler owns the connection: heartbeats without a timer per
//     connection, flushing through http.ResponseController, per-write
//     deadlines, drain on shutdown.
//   - TopicHandler: GET /events?topic=a&topic=b backed by a broker.Broker,
//     with Last-Event-ID resume across topics, the herald.reset event when a
//     cursor cannot be honoured exactly, and a bounded queue per connection.
//     By default it writes through the ResponseWriter like any handler.
//     Its fast path (TopicHandler.Hijack) takes HTTP/1.x connections over,
//     bypassing net/http's response writing, middleware and
//     http.Server.Shutdown: on Linux, a live event for an idle stream is
//     then written by a small pool of flushers (one per P) with one
//     non-blocking writev, coalescing whatever queued meanwhile, and an
//     idle stream holds no goroutine. Run it with GOMAXPROCS >= 2 (Go's
//     default on any multi-core machine or CPU quota): with a single P the
//     network is polled only when no goroutine is runnable, so a large
//     fan-out delays reading the next publish and events coalesce less.
//
// Decoder and Client are the consuming side: a spec-exact parser and a
// reconnecting client that sends Last-Event-ID.
//
// In herald's data path this package is the last hop: broker ->
// Subscription -> TopicHandler -> client. It knows nothing about Redis.
package sse
