package server

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/herald-sse/herald/internal/auth"
	"github.com/herald-sse/herald/pkg/broker"
	"github.com/herald-sse/herald/pkg/sse"
)

// The admin API: GET /api/nodes, /api/topics, /api/topics/{topic} and the
// status page's stream GET /api/status/stream. It needs the admin key or a
// token granting admin; with neither configured, a loopback peer (or any
// peer with --admin-allow).

const adminRemoteNotice = "the admin API is allowed from loopback addresses only because no admin key or tokens are configured; " +
	"set --admin-key (HERALD_ADMIN_KEY), or start herald with --admin-allow (HERALD_ADMIN_ALLOW=true) to accept any address"

// historySamples is how many snapshots the status stream keeps for a page
// that connects: 5 minutes at the default interval.
const historySamples = 300

// statusLinger is how long the status hub keeps polling after its last
// watcher left, so a page reloaded within it finds its history.
const statusLinger = 5 * time.Minute

func (s *Server) adminOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case s.auth.AdminProtected():
			if _, err := s.auth.AuthorizeAdmin(r); err != nil {
				if c := auth.Challenge(err); c != "" {
					w.Header().Set("WWW-Authenticate", c)
				}
				writeJSON(w, auth.Status(err), map[string]string{"error": auth.Message(err)})
				return
			}
		case !s.cfg.AdminAllow && !isLoopback(r.RemoteAddr):
			writeJSON(w, http.StatusForbidden, map[string]string{"error": adminRemoteNotice})
			return
		}
		h.ServeHTTP(w, r)
	})
}

func (s *Server) mountAdmin(mux *http.ServeMux) {
	mux.Handle("GET /api/nodes", s.adminOnly(http.HandlerFunc(s.apiNodes)))
	mux.Handle("GET /api/topics", s.adminOnly(http.HandlerFunc(s.apiTopics)))
	mux.Handle("GET /api/topics/{topic...}", s.adminOnly(http.HandlerFunc(s.apiTopic)))
	mux.Handle("GET /api/status/stream", s.adminOnly(s.status.handler))
	for _, p := range []string{"/api/nodes", "/api/topics", "/api/topics/", "/api/status/stream"} {
		mux.Handle(p, s.adminOnly(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", "GET, HEAD")
			writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "use GET"})
		})))
	}
}

func (s *Server) queryCtx(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), s.cfg.PublishTimeout)
}

type nodesAnswer struct {
	Nodes    []json.RawMessage `json:"nodes"`
	Complete bool              `json:"complete"`
	Error    string            `json:"error,omitempty"`
}

func (s *Server) apiNodes(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := s.queryCtx(r)
	defer cancel()
	v := s.nodes.fleet(ctx)
	writeJSON(w, http.StatusOK, nodesAnswer{Nodes: v.nodes, Complete: v.complete, Error: v.err})
}

func (s *Server) apiTopics(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	prefix := q.Get("prefix")
	if len(prefix) > broker.MaxTopicLen {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "prefix is longer than a topic may be"})
		return
	}
	limit, err := parseLimit(q.Get("limit"), 50, maxRecordTopics)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	ctx, cancel := s.queryCtx(r)
	defer cancel()
	v := s.nodes.fleet(ctx)
	topics, complete := v.busiest(prefix, limit)
	writeJSON(w, http.StatusOK, struct {
		Topics   []topicSummary `json:"topics"`
		Complete bool           `json:"complete"`
		Error    string         `json:"error,omitempty"`
	}{topics, complete, v.err})
}

type topicHistory struct {
	Length  int64  `json:"length"`
	FirstID string `json:"first_id,omitempty"`
	LastID  string `json:"last_id"`
	Epoch   string `json:"epoch"`
}

func (s *Server) apiTopic(w http.ResponseWriter, r *http.Request) {
	topic := r.PathValue("topic")
	if err := broker.ValidateTopic(topic); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	ctx, cancel := s.queryCtx(r)
	defer cancel()
	v := s.nodes.fleet(ctx)
	per, total, complete := v.subscribers(topic)
	ans := struct {
		Topic       string            `json:"topic"`
		Subscribers int               `json:"subscribers"`
		Nodes       []nodeSubscribers `json:"nodes"`
		History     *topicHistory     `json:"history,omitempty"`
		Complete    bool              `json:"complete"`
		Error       string            `json:"error,omitempty"`
	}{Topic: topic, Subscribers: total, Nodes: per, Complete: complete, Error: v.err}
	if insp, ok := s.broker.(broker.Inspector); ok {
		info, err := insp.TopicInfo(ctx, topic)
		if err != nil {
			ans.Complete = false
			ans.Error = "history: " + err.Error()
			if v.err != "" {
				ans.Error = v.err + "; " + ans.Error
			}
		} else {
			ans.History = &topicHistory{Length: info.Length, FirstID: info.FirstID, LastID: info.LastID, Epoch: info.Epoch}
		}
	}
	writeJSON(w, http.StatusOK, ans)
}

// statusHub polls the fleet every interval while a status page watches
// (and statusLinger after), keeps the last historySamples snapshots and
// wakes the watchers' streams.
type statusHub struct {
	nodes   *nodes
	handler *sse.Handler

	mu       sync.Mutex
	samples  [][]byte // snapshots, oldest first
	seq      uint64   // number of the newest snapshot; samples[len-1]
	watchers map[chan struct{}]struct{}
	running  bool
	idleFrom time.Time // when the last watcher left
	stopped  bool
}

func newStatusHub(n *nodes, heartbeat, writeTimeout time.Duration) *statusHub {
	h := &statusHub{nodes: n, watchers: map[chan struct{}]struct{}{}}
	h.handler = &sse.Handler{Stream: h.stream, Heartbeat: heartbeat, WriteTimeout: writeTimeout, QueueSize: 4}
	return h
}

type snapshot struct {
	Time     time.Time         `json:"time"`
	Nodes    []json.RawMessage `json:"nodes"`
	Complete bool              `json:"complete"`
	Error    string            `json:"error,omitempty"`
}

// watch registers a watcher and starts polling if needed.
func (h *statusHub) watch() (chan struct{}, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped {
		return nil, false
	}
	c := make(chan struct{}, 1)
	h.watchers[c] = struct{}{}
	if !h.running {
		h.running = true
		go h.poll()
	}
	return c, true
}

func (h *statusHub) unwatch(c chan struct{}) {
	h.mu.Lock()
	delete(h.watchers, c)
	if len(h.watchers) == 0 {
		h.idleFrom = time.Now()
	}
	h.mu.Unlock()
}

// since returns the snapshots after number seq and the newest number.
func (h *statusHub) since(seq uint64) ([][]byte, uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := h.seq - seq
	if seq > h.seq || n > uint64(len(h.samples)) {
		n = uint64(len(h.samples))
	}
	return append([][]byte(nil), h.samples[uint64(len(h.samples))-n:]...), h.seq
}

func (h *statusHub) poll() {
	t := time.NewTicker(h.nodes.interval)
	defer t.Stop()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), h.nodes.interval)
		v := h.nodes.fleet(ctx)
		cancel()
		b, _ := json.Marshal(snapshot{Time: time.Now().UTC(), Nodes: v.nodes, Complete: v.complete, Error: v.err})
		h.mu.Lock()
		h.samples = append(h.samples, b)
		if len(h.samples) > historySamples {
			h.samples = append(h.samples[:0], h.samples[len(h.samples)-historySamples:]...)
		}
		h.seq++
		for c := range h.watchers {
			select {
			case c <- struct{}{}:
			default:
			}
		}
		h.mu.Unlock()
		<-t.C
		h.mu.Lock()
		if h.stopped || len(h.watchers) == 0 && time.Since(h.idleFrom) > statusLinger {
			h.running = false
			h.samples, h.seq = nil, 0
			h.mu.Unlock()
			return
		}
		h.mu.Unlock()
	}
}

// stream is one status page's stream: the history, then each snapshot.
func (h *statusHub) stream(ctx context.Context, st *sse.Stream) error {
	c, ok := h.watch()
	if !ok {
		return nil
	}
	defer h.unwatch(c)
	past, seq := h.since(0)
	hist := []byte(`{"interval_ms":` + strconv.FormatInt(h.nodes.interval.Milliseconds(), 10) + `,"samples":[`)
	for i, p := range past {
		if i > 0 {
			hist = append(hist, ',')
		}
		hist = append(hist, p...)
	}
	hist = append(hist, "]}"...)
	if err := st.Send(sse.Event{Type: "history", Data: string(hist)}); err != nil {
		return nil
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-c:
		}
		var next [][]byte
		next, seq = h.since(seq)
		for _, b := range next {
			if err := st.Send(sse.Event{Type: "nodes", Data: string(b)}); err != nil {
				return nil
			}
		}
	}
}

// shutdown ends the streams (drain) and stops polling.
func (h *statusHub) shutdown(ctx context.Context, retry time.Duration) error {
	h.mu.Lock()
	h.stopped = true
	h.mu.Unlock()
	return h.handler.Drain(ctx, retry)
}
