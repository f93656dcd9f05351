package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/herald-sse/herald/internal/auth"
	"github.com/herald-sse/herald/pkg/broker"
)

// retryAfterSeconds is sent with 503 answers.
const retryAfterSeconds = "2"

// publishHandler serves POST /publish: one event (form fields or a JSON
// object with topic, optional event, data and idempotency_key) answered
// 200 {"id":"..."} or an error status with {"error":"..."}; or a batch (a
// JSON array of such objects, or NDJSON: one per line) answered with one
// result per event.
type publishHandler struct {
	broker   broker.Broker
	metrics  *Metrics
	log      *slog.Logger
	maxBody  int64
	maxEvent int64
	maxBatch int
	timeout  time.Duration // of the broker call (--publish-timeout)
	// noWait: the broker never blocks (the in-process one): no timeout
	// context (and its timer) per request.
	noWait       bool
	allowRemote  bool // publish from non-loopback peers without auth
	crossOrigin  *http.CrossOriginProtection
	remoteNotice string
	// auth, if it protects publishing, must accept the request's bearer
	// credential; the loopback rule then does not apply.
	auth *auth.Authorizer
	// limit, if set, rate-limits requests per credential (per peer
	// address without authentication).
	limit *rateLimiter
}

// publishRequest is one event of a publish request.
type publishRequest struct {
	Topic string `json:"topic"`
	Event string `json:"event"`
	Data  string `json:"data"`
	Key   string `json:"idempotency_key"`
}

// httpError is an answer other than 200.
type httpError struct {
	status int
	msg    string
	header http.Header // extra answer headers (WWW-Authenticate, Retry-After)
}

func (e *httpError) Error() string { return e.msg }

func errorf(status int, format string, a ...any) *httpError {
	return &httpError{status: status, msg: fmt.Sprintf(format, a...)}
}

func (h *publishHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	grant, herr := h.admit(r)
	var body publishBody
	if herr == nil {
		body, herr = h.decode(w, r)
	}
	if herr == nil && body.batch {
		h.serveBatch(w, r, grant, body.items)
		return
	}
	var id string
	if herr == nil {
		id, herr = h.publishOne(r, grant, body.one)
	}
	if herr != nil {
		h.metrics.PublishError(herr.status)
		h.logError(r, herr)
		for k, v := range herr.header {
			w.Header()[k] = v
		}
		switch herr.status {
		case http.StatusMethodNotAllowed:
			w.Header().Set("Allow", "POST, OPTIONS")
		case http.StatusServiceUnavailable:
			w.Header().Set("Retry-After", retryAfterSeconds)
		}
		writeJSON(w, herr.status, map[string]string{"error": herr.msg})
		return
	}
	h.metrics.Published()
	writeID(w, id)
}

func (h *publishHandler) logError(r *http.Request, herr *httpError) {
	if herr.status >= 500 {
		h.log.Warn("publish failed", "status", herr.status, "error", herr.msg, "remote", r.RemoteAddr)
	} else {
		h.log.Debug("publish refused", "status", herr.status, "error", herr.msg, "remote", r.RemoteAddr)
	}
}

// admit checks what applies to the request as a whole: the method, the
// credential, the rate limit and the origin. It returns the credential's
// grant (nil without publish authentication).
func (h *publishHandler) admit(r *http.Request) (*auth.Grant, *httpError) {
	if r.Method != http.MethodPost {
		return nil, errorf(http.StatusMethodNotAllowed, "method %s not allowed: use POST", r.Method)
	}
	var grant *auth.Grant
	if h.auth.PublishProtected() {
		g, err := h.auth.PublishGrant(r)
		if err != nil {
			return nil, authError(err)
		}
		grant = g
	} else if !h.allowRemote && !isLoopback(r.RemoteAddr) {
		return nil, errorf(http.StatusForbidden, "%s", h.remoteNotice)
	}
	if h.limit != nil {
		rateKey := "ip:" + peerHost(r.RemoteAddr)
		if grant != nil {
			rateKey = grant.Principal
		}
		if ok, wait := h.limit.allow(rateKey); !ok {
			herr := errorf(http.StatusTooManyRequests, "publish rate limit reached (--publish-rate); retry later")
			herr.header = http.Header{"Retry-After": {strconv.Itoa(retryAfter(wait))}}
			return nil, herr
		}
	}
	if h.crossOrigin != nil {
		if err := h.crossOrigin.Check(r); err != nil {
			return nil, errorf(http.StatusForbidden, "cross-origin publish refused: add the page's origin to --cors-origins to allow it")
		}
	}
	return grant, nil
}

// publishOne publishes the event of a single-event request.
func (h *publishHandler) publishOne(r *http.Request, grant *auth.Grant, it batchItem) (string, *httpError) {
	if it.err != nil {
		return "", it.err
	}
	p, herr := h.check(grant, it.req)
	if herr != nil {
		return "", herr
	}
	ctx := r.Context()
	if !h.noWait {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, h.timeout)
		defer cancel()
	}
	id, err := h.broker.Publish(ctx, p.Topic, p.Message)
	if err != nil {
		return "", h.brokerError(r, err)
	}
	return id, nil
}

// check validates one event and the credential's right to publish it.
func (h *publishHandler) check(grant *auth.Grant, req publishRequest) (broker.Publication, *httpError) {
	p := broker.Publication{Topic: req.Topic, Message: broker.Message{Type: req.Event, Data: req.Data, Key: req.Key}}
	if err := broker.ValidateTopic(req.Topic); err != nil {
		if req.Topic == "" {
			return p, errorf(http.StatusBadRequest, "missing topic")
		}
		return p, errorf(http.StatusBadRequest, "%v", err)
	}
	if grant != nil && !grant.Allows(auth.Publish, req.Topic) {
		return p, authError(fmt.Errorf("%w: the credential does not allow publishing to %q", auth.ErrForbidden, req.Topic))
	}
	if err := broker.ValidateMessage(p.Message); err != nil {
		return p, errorf(http.StatusBadRequest, "%v", err)
	}
	if int64(len(req.Data)) > h.maxEvent {
		return p, errorf(http.StatusRequestEntityTooLarge, "data is %d bytes, the limit is %d (--max-event-bytes)", len(req.Data), h.maxEvent)
	}
	return p, nil
}

// brokerError maps a broker's publish error to an answer.
func (h *publishHandler) brokerError(r *http.Request, err error) *httpError {
	switch {
	case errors.Is(err, broker.ErrKeyConflict):
		return errorf(http.StatusUnprocessableEntity, "%v", err)
	case errors.Is(err, broker.ErrInvalidTopic), errors.Is(err, broker.ErrInvalidMessage):
		return errorf(http.StatusBadRequest, "%v", err)
	case errors.Is(err, broker.ErrUnavailable), errors.Is(err, broker.ErrClosed):
		return errorf(http.StatusServiceUnavailable, "broker unavailable, retry later (with the same idempotency key, the retry cannot publish twice): %v", err)
	case errors.Is(err, context.DeadlineExceeded) && r.Context().Err() == nil:
		return errorf(http.StatusServiceUnavailable, "broker did not answer within %v (--publish-timeout), retry later (with the same idempotency key, the retry cannot publish twice)", h.timeout)
	default:
		return errorf(http.StatusInternalServerError, "publish failed: %v", err)
	}
}

// batchItem is one decoded event, or why it could not be decoded.
type batchItem struct {
	req publishRequest
	err *httpError
}

// publishBody is a decoded request body: one event, or a batch.
type publishBody struct {
	batch bool
	one   batchItem   // the event, unless batch
	items []batchItem // the events of a batch
}

// batchResult is one event's entry in a batch answer.
type batchResult struct {
	ID     string `json:"id,omitempty"`
	Index  *int   `json:"index,omitempty"` // of a failed event, from 0
	Status int    `json:"status,omitempty"`
	Error  string `json:"error,omitempty"`
}

// serveBatch publishes a batch in one broker call and answers one result
// per event, in order: 200 when all were published; when some failed, 207
// Multi-Status, or, if none was published and all failed alike, their
// common status (503 with Retry-After when the broker is down).
func (h *publishHandler) serveBatch(w http.ResponseWriter, r *http.Request, grant *auth.Grant, items []batchItem) {
	results := make([]batchResult, len(items))
	errs := make([]*httpError, len(items))
	pubs := make([]broker.Publication, 0, len(items))
	idx := make([]int, 0, len(items))
	for i, it := range items {
		if it.err != nil {
			errs[i] = it.err
			continue
		}
		p, herr := h.check(grant, it.req)
		if herr != nil {
			errs[i] = herr
			continue
		}
		pubs = append(pubs, p)
		idx = append(idx, i)
	}
	if len(pubs) > 0 {
		ctx, cancel := context.WithTimeout(r.Context(), h.timeout)
		res := broker.PublishBatch(ctx, h.broker, pubs)
		cancel()
		for k, i := range idx {
			if res[k].Err != nil {
				errs[i] = h.brokerError(r, res[k].Err)
			} else {
				results[i].ID = res[k].ID
			}
		}
	}
	ok, common, retry := 0, 0, false
	for i, herr := range errs {
		if herr == nil {
			ok++
			h.metrics.Published()
			continue
		}
		h.metrics.PublishError(herr.status)
		results[i].Index, results[i].Status, results[i].Error = &i, herr.status, herr.msg
		if common == 0 {
			common = herr.status
		} else if common != herr.status {
			common = -1
		}
		retry = retry || herr.status == http.StatusServiceUnavailable
	}
	status := http.StatusOK
	switch {
	case ok == len(items):
	case ok > 0 || common < 0:
		status = http.StatusMultiStatus
	default:
		status = common
	}
	if status != http.StatusOK {
		h.log.Debug("publish batch: some events failed", "events", len(items), "failed", len(items)-ok, "status", status, "remote", r.RemoteAddr)
	}
	if retry {
		w.Header().Set("Retry-After", retryAfterSeconds)
	}
	writeJSON(w, status, struct {
		Results []batchResult `json:"results"`
	}{results})
}

// decode reads the request body: a form, a multipart form or a JSON
// object (one event); a JSON array or NDJSON (a batch).
func (h *publishHandler) decode(w http.ResponseWriter, r *http.Request) (publishBody, *httpError) {
	if r.ContentLength > h.maxBody {
		return publishBody{}, tooLarge(h.maxBody)
	}
	key, herr := headerKey(r.Header)
	if herr != nil {
		return publishBody{}, herr
	}
	r.Body = http.MaxBytesReader(w, r.Body, h.maxBody)
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return publishBody{}, errorf(http.StatusUnsupportedMediaType, "missing Content-Type: %s", mediaTypes)
	}
	mediaType := ct
	if ct != formType && ct != jsonType { // the common cases need no parsing
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil {
			return publishBody{}, errorf(http.StatusUnsupportedMediaType, "bad Content-Type %q: %v", ct, err)
		}
		mediaType = mt
	}
	var req publishRequest
	switch mediaType {
	case jsonType:
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return publishBody{}, bodyError(err, h.maxBody, "reading the body")
		}
		if t := bytes.TrimLeft(b, " \t\r\n"); len(t) > 0 && t[0] == '[' {
			items, herr := decodeArray(b)
			return h.batch(key, items, herr)
		}
		if req, herr = decodeJSON(b); herr != nil {
			return publishBody{}, herr
		}
	case ndjsonType, jsonlType:
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return publishBody{}, bodyError(err, h.maxBody, "reading the body")
		}
		items, herr := decodeLines(b)
		return h.batch(key, items, herr)
	case formType:
		// The body alone (not the URL's query, as r.PostForm), parsed
		// without building a url.Values.
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return publishBody{}, bodyError(err, h.maxBody, "reading the body")
		}
		if req, herr = parseForm(b); herr != nil {
			return publishBody{}, herr
		}
	case "multipart/form-data":
		// Everything fits in memory: the body is capped at maxBody.
		if err := r.ParseMultipartForm(h.maxBody); err != nil {
			return publishBody{}, bodyError(err, h.maxBody, "bad multipart body")
		}
		defer func() { _ = r.MultipartForm.RemoveAll() }()
		if len(r.MultipartForm.File) > 0 {
			return publishBody{}, errorf(http.StatusBadRequest, "file parts are not accepted: send topic, event, data and idempotency_key as plain fields")
		}
		if req, herr = formFields(r.MultipartForm.Value); herr != nil {
			return publishBody{}, herr
		}
	default:
		return publishBody{}, errorf(http.StatusUnsupportedMediaType, "unsupported Content-Type %q: %s", mediaType, mediaTypes)
	}
	switch {
	case key == "":
	case req.Key == "":
		req.Key = key
	case req.Key != key:
		return publishBody{}, errorf(http.StatusBadRequest, "the Idempotency-Key header and the idempotency_key field differ: give one")
	}
	return publishBody{one: batchItem{req: req}}, nil
}

// batch checks a decoded batch as a whole.
func (h *publishHandler) batch(headerKey string, items []batchItem, herr *httpError) (publishBody, *httpError) {
	switch {
	case herr != nil:
		return publishBody{}, herr
	case headerKey != "":
		return publishBody{}, errorf(http.StatusBadRequest, "an Idempotency-Key header names one event: give each event of a batch its own idempotency_key field")
	case len(items) == 0:
		return publishBody{}, errorf(http.StatusBadRequest, "empty batch: send at least one event")
	case len(items) > h.maxBatch:
		return publishBody{}, errorf(http.StatusRequestEntityTooLarge, "batch of %d events, the limit is %d (--max-batch)", len(items), h.maxBatch)
	}
	return publishBody{batch: true, items: items}, nil
}

const mediaTypes = "send application/x-www-form-urlencoded, multipart/form-data or application/json (one event, or an array of events), or application/x-ndjson (one event per line)"

// headerKey returns the Idempotency-Key header's key: a Structured Field
// string ("...", as the IETF httpapi draft writes it) or a bare token.
func headerKey(h http.Header) (string, *httpError) {
	vals := h.Values("Idempotency-Key")
	switch len(vals) {
	case 0:
		return "", nil
	case 1:
	default:
		return "", errorf(http.StatusBadRequest, "Idempotency-Key given %d times; give it once", len(vals))
	}
	v := strings.TrimSpace(vals[0])
	if len(v) > 0 && v[0] == '"' {
		k, ok := unquoteSF(v)
		if !ok {
			return "", errorf(http.StatusBadRequest, "bad Idempotency-Key %.140q: a quoted key must be one Structured Field string", v)
		}
		v = k
	}
	if err := broker.ValidateKey(v); err != nil {
		return "", errorf(http.StatusBadRequest, "bad Idempotency-Key header: %v", err)
	}
	return v, nil
}

// unquoteSF decodes an RFC 8941 string: "...", with \" and \\ escapes.
func unquoteSF(v string) (string, bool) {
	if len(v) < 2 || v[len(v)-1] != '"' {
		return "", false
	}
	var b strings.Builder
	for i := 1; i < len(v)-1; i++ {
		c := v[i]
		switch {
		case c == '\\':
			i++
			if i == len(v)-1 || v[i] != '"' && v[i] != '\\' {
				return "", false
			}
			b.WriteByte(v[i])
		case c == '"' || c < 0x20 || c > 0x7e:
			return "", false
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), true
}

// decodeJSON decodes exactly one JSON object with the fields of an event.
func decodeJSON(b []byte) (publishRequest, *httpError) {
	var req publishRequest
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		if err == io.EOF {
			return req, errorf(http.StatusBadRequest, "empty JSON body: send {\"topic\":...,\"data\":...}")
		}
		return req, errorf(http.StatusBadRequest, "bad JSON: %v", err)
	}
	// Exactly one value: anything but whitespace after it is an error.
	if _, err := dec.Token(); err != io.EOF {
		return req, errorf(http.StatusBadRequest, "bad JSON: unexpected data after the object")
	}
	return req, nil
}

// decodeArray decodes a JSON array of events; an element that is not a
// valid event fails alone.
func decodeArray(b []byte) ([]batchItem, *httpError) {
	var raw []json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, errorf(http.StatusBadRequest, "bad JSON array: %v", err)
	}
	items := make([]batchItem, len(raw))
	for i, m := range raw {
		items[i].req, items[i].err = decodeJSON(m)
	}
	return items, nil
}

// decodeLines decodes NDJSON: one event per line; blank lines are
// skipped; a line that is not a valid event fails alone.
func decodeLines(b []byte) ([]batchItem, *httpError) {
	var items []batchItem
	for len(b) > 0 {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		if line = bytes.TrimSpace(line); len(line) == 0 {
			continue
		}
		var it batchItem
		it.req, it.err = decodeJSON(line)
		items = append(items, it)
	}
	return items, nil
}

const (
	formType   = "application/x-www-form-urlencoded"
	jsonType   = "application/json"
	ndjsonType = "application/x-ndjson"
	jsonlType  = "application/jsonl"
)

// parseForm reads an application/x-www-form-urlencoded body as
// url.ParseQuery does (pairs separated by '&', a ';' is an error, names
// and values unescaped) and picks the fields of an event; others are
// ignored.
func parseForm(b []byte) (publishRequest, *httpError) {
	var req publishRequest
	var seen [4]int
	for len(b) > 0 {
		pair := b
		if i := bytes.IndexByte(b, '&'); i >= 0 {
			pair, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		if bytes.IndexByte(pair, ';') >= 0 {
			return req, errorf(http.StatusBadRequest, "bad form body: invalid semicolon separator in query")
		}
		if len(pair) == 0 {
			continue
		}
		name, value, _ := bytes.Cut(pair, []byte{'='})
		n, err := unescapeForm(name)
		if err != nil {
			return req, errorf(http.StatusBadRequest, "bad form body: %v", err)
		}
		var dst *string
		k := -1
		switch n {
		case "topic":
			dst, k = &req.Topic, 0
		case "event":
			dst, k = &req.Event, 1
		case "data":
			dst, k = &req.Data, 2
		case "idempotency_key":
			dst, k = &req.Key, 3
		default: // ignored, but it must be well-formed
			if _, err := unescapeForm(value); err != nil {
				return req, errorf(http.StatusBadRequest, "bad form body: %v", err)
			}
			continue
		}
		v, err := unescapeForm(value)
		if err != nil {
			return req, errorf(http.StatusBadRequest, "bad form body: %v", err)
		}
		if seen[k]++; seen[k] == 1 {
			*dst = v
		}
	}
	for k, name := range [...]string{"topic", "event", "data", "idempotency_key"} {
		if seen[k] > 1 {
			return req, errorf(http.StatusBadRequest, "field %q given %d times; publish one event per form, or send a JSON array or NDJSON for a batch", name, seen[k])
		}
	}
	return req, nil
}

// unescapeForm is url.QueryUnescape without a copy when there is nothing
// to unescape.
func unescapeForm(b []byte) (string, error) {
	if bytes.IndexByte(b, '%') < 0 && bytes.IndexByte(b, '+') < 0 {
		return string(b), nil
	}
	return url.QueryUnescape(string(b))
}

// formFields picks topic, event, data and idempotency_key; each may appear
// once.
func formFields(v map[string][]string) (publishRequest, *httpError) {
	var req publishRequest
	for _, f := range [...]struct {
		name string
		dst  *string
	}{{"topic", &req.Topic}, {"event", &req.Event}, {"data", &req.Data}, {"idempotency_key", &req.Key}} {
		name, dst := f.name, f.dst
		switch vals := v[name]; len(vals) {
		case 0:
		case 1:
			*dst = vals[0]
		default:
			return req, errorf(http.StatusBadRequest, "field %q given %d times; publish one event per form, or send a JSON array or NDJSON for a batch", name, len(vals))
		}
	}
	return req, nil
}

func bodyError(err error, maxBody int64, what string) *httpError {
	if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
		return tooLarge(maxBody)
	}
	return errorf(http.StatusBadRequest, "%s: %v", what, err)
}

func tooLarge(maxBody int64) *httpError {
	return errorf(http.StatusRequestEntityTooLarge, "request body over %d bytes (--max-body-bytes)", maxBody)
}

// authError answers an authorization failure: 401 with a Bearer
// challenge, or 403.
func authError(err error) *httpError {
	herr := errorf(auth.Status(err), "%s", auth.Message(err))
	if c := auth.Challenge(err); c != "" {
		herr.header = http.Header{"Www-Authenticate": {c}}
	}
	return herr
}

// peerHost is the address part of a peer "host:port".
func peerHost(remoteAddr string) string {
	if host, _, err := net.SplitHostPort(remoteAddr); err == nil {
		return host
	}
	return remoteAddr
}

// isLoopback reports whether the TCP peer (never a forwarded header) is a
// loopback address: 127.0.0.0/8 or ::1.
func isLoopback(remoteAddr string) bool {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	return ip.Unmap().IsLoopback()
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"internal error"}`)
	}
	writeJSONBytes(w, status, append(b, '\n'))
}

// writeID answers a publish: {"id":"..."}. Event IDs are plain ASCII
// (brokers make them), written without encoding/json; anything else takes
// the general path.
func writeID(w http.ResponseWriter, id string) {
	for i := 0; i < len(id); i++ {
		if c := id[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			writeJSON(w, http.StatusOK, map[string]string{"id": id})
			return
		}
	}
	var buf [160]byte
	b := append(append(append(buf[:0], `{"id":"`...), id...), "\"}\n"...)
	writeJSONBytes(w, http.StatusOK, b)
}

// Header values shared by every JSON answer (net/http only reads them).
var (
	jsonContentType = []string{"application/json"}
	noStore         = []string{"no-store"}
	noSniff         = []string{"nosniff"}
)

// contentLengths holds the Content-Length values of short answers (every
// publish answer {"id":...}), shared read-only: no allocation per answer.
var contentLengths = func() [][]string {
	v := make([][]string, 256)
	for i := range v {
		v[i] = []string{strconv.Itoa(i)}
	}
	return v
}()

func contentLength(n int) []string {
	if n < len(contentLengths) {
		return contentLengths[n]
	}
	return []string{strconv.Itoa(n)}
}

func writeJSONBytes(w http.ResponseWriter, status int, b []byte) {
	h := w.Header()
	h["Content-Type"] = jsonContentType
	h["Content-Length"] = contentLength(len(b))
	h["Cache-Control"] = noStore
	h["X-Content-Type-Options"] = noSniff
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
